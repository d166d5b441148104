"""The data stage end to end: the three sources, caching, atomicity, and every failure as one clear line."""
from __future__ import annotations

import errno
import functools
import logging
import sys

import pytest

from data_helpers import (SECRET_KEY, SECRET_TOKEN, FakeKaggleApi, fake_credentials, folder_bytes,  # noqa: F401
                          http_error, no_credentials, project, quora_kaggle_zip, write_7z, zip_bytes)
from pipelines import config
from pipelines.common import acquire as acq
from pipelines.common import archives
from pipelines.common.io import sha256_file
from pipelines.common.log import StageError

SMALL_QUORA = dict(n_train=120, n_test=40)
SMALL_CERVIX = dict(n_per_class=3, n_test=3, image_size=48)


def leftovers(comp: str, label: str) -> list[str]:
    folder = config.DATA_DIR / comp / label
    return sorted(p.name for p in folder.glob(".raw*")) if folder.exists() else []


# ---------------------------------------------------------------- sample
def test_sample_writes_raw_and_manifest(project, capsys):
    manifest = acq.acquire("quora", "sample", **SMALL_QUORA)
    raw = config.raw_dir("quora", "sample")
    assert sorted(p.name for p in raw.iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert manifest["files"]["train.csv"]["sha256"] == sha256_file(raw / "train.csv")
    assert manifest["counts"]["train_rows"] == 120 and manifest["source"] == "sample"
    assert (config.source_dir("quora", "sample") / "manifest.json").is_file()
    out = capsys.readouterr().out.strip().splitlines()
    assert 3 <= len(out) <= 6 and out[0].startswith("data quora/sample: 3 files")
    assert leftovers("quora", "sample") == []


def test_second_run_does_nothing_and_force_redoes(project, monkeypatch, caplog):
    from pipelines.quora import data as quora

    calls = []
    real = quora.generate_sample

    @functools.wraps(real)  # keeps the signature, whose defaults sample_options reads
    def counting(raw_dir, **kw):
        calls.append(kw)
        real(raw_dir, **kw)

    monkeypatch.setattr(quora, "generate_sample", counting)
    acq.acquire("quora", "sample", **SMALL_QUORA)
    train = config.raw_dir("quora", "sample") / "train.csv"
    mtime = train.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        acq.acquire("quora", "sample", **SMALL_QUORA)
    assert len(calls) == 1 and "up to date" in caplog.text and train.stat().st_mtime_ns == mtime
    acq.acquire("quora", "sample", force=True, **SMALL_QUORA)
    assert len(calls) == 2
    acq.acquire("quora", "sample", n_train=130, n_test=40)  # another parameter: re-done
    assert len(calls) == 3 and sum(1 for _ in open(train)) == 131
    train.unlink()  # raw/ damaged by hand: no longer up to date
    acq.acquire("quora", "sample", n_train=130, n_test=40)
    assert len(calls) == 4 and train.is_file()


def test_sample_never_touches_other_sources(project, tmp_path):
    api = FakeKaggleApi(files={"quora-question-pairs.zip": quora_kaggle_zip(tmp_path)})
    acq.acquire("quora", "kaggle", api=api)
    local = tmp_path / "mine"
    local.mkdir()
    (local / "train.csv").write_bytes((config.raw_dir("quora", "kaggle") / "train.csv").read_bytes())
    (local / "test.csv").write_bytes((config.raw_dir("quora", "kaggle") / "test.csv").read_bytes())
    acq.acquire("quora", str(local))
    before = {s: folder_bytes(config.source_dir("quora", s)) for s in ("kaggle", "local-mine")}
    acq.acquire("quora", "sample", force=True, **SMALL_QUORA)
    acq.acquire("quora", "sample", force=True, n_train=150, n_test=30)
    assert {s: folder_bytes(config.source_dir("quora", s)) for s in ("kaggle", "local-mine")} == before
    assert sorted(p.name for p in (config.DATA_DIR / "quora").iterdir()) == ["kaggle", "local-mine", "sample"]


def test_interrupted_run_leaves_nothing_that_looks_complete(project, monkeypatch):
    from pipelines.quora import data as quora

    acq.acquire("quora", "sample", **SMALL_QUORA)

    def interrupted(raw_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(quora, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        acq.acquire("quora", "sample", n_train=200, n_test=40)
    folder = config.source_dir("quora", "sample")
    assert leftovers("quora", "sample") == [] and not (folder / "data.lock.json").exists()
    monkeypatch.undo()
    assert not acq.Stage("data", folder, [], {}, ["raw"]).up_to_date()


def test_disk_full_is_one_line(project, monkeypatch):
    from pipelines.quora import data as quora

    def full(raw_dir, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(quora, "generate_sample", full)
    with pytest.raises(StageError, match="disk full"):
        acq.acquire("quora", "sample", **SMALL_QUORA)
    assert not config.source_dir("quora", "sample").exists()


def test_cervix_sample(project):
    manifest = acq.acquire("cervix", "sample", **SMALL_CERVIX)
    assert manifest["class_balance"] == {"Type_1": 3, "Type_2": 3, "Type_3": 3}
    assert len(manifest["excluded"]) == 3 and all(p in manifest["files"] for p in manifest["excluded"])


# ---------------------------------------------------------------- kaggle
def test_kaggle_download_unpacks_nested_zips(project, tmp_path):
    api = FakeKaggleApi(files={"quora-question-pairs.zip": quora_kaggle_zip(tmp_path)})
    manifest = acq.acquire("quora", "kaggle", api=api)
    raw = config.raw_dir("quora", "kaggle")
    assert sorted(p.name for p in raw.iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert folder_bytes(raw) == folder_bytes(tmp_path / "quora-files")  # exactly the shipped bytes
    assert manifest["source"] == "kaggle" and manifest["counts"]["train_rows"] == 60
    assert not (config.source_dir("quora", "kaggle") / "downloads").exists()
    acq.acquire("quora", "kaggle", api=api)  # cached: no second download
    assert [c[0] for c in api.calls] == ["competition_download_files"]


def test_kaggle_cervix_7z_files_and_password(project, tmp_path, monkeypatch):
    from pipelines.cervix.data import generate_sample

    src = tmp_path / "cervix-files"
    generate_sample(src, **SMALL_CERVIX)
    train = {p.relative_to(src).as_posix(): p.read_bytes() for p in (src / "train").rglob("*.jpg")}
    test = {p.relative_to(src).as_posix(): p.read_bytes() for p in (src / "test").rglob("*.jpg")}
    extra = {f"Type_1/{900 + i}.jpg": data for i, data in enumerate(list(test.values())[:2])}
    stg2 = {f"test_stg2/{i}.jpg": data for i, data in enumerate(test.values())}
    files = {
        "train.7z": write_7z(tmp_path / "train.7z", train).read_bytes(),
        "test.7z": write_7z(tmp_path / "test.7z", test).read_bytes(),
        "sample_submission_stg1.csv.zip": zip_bytes(
            {"sample_submission_stg1.csv": (src / "sample_submission_stg1.csv").read_bytes()}),
        "additional_Type_1_v2.7z": write_7z(tmp_path / "add.7z", extra).read_bytes(),
        "test_stg2.7z": write_7z(tmp_path / "stg2.7z", stg2, password="pw123").read_bytes(),
    }
    api = FakeKaggleApi(files=files)
    monkeypatch.delenv("CERVIX_7Z_PASSWORD", raising=False)
    with pytest.raises(StageError, match="CERVIX_7Z_PASSWORD"):
        acq.acquire("cervix", "kaggle", api=api, files=list(files))
    assert not config.raw_dir("cervix", "kaggle").exists()
    monkeypatch.setenv("CERVIX_7Z_PASSWORD", "pw123")  # the variable the cervix competition declares
    manifest = acq.acquire("cervix", "kaggle", api=api, files=list(files))
    raw = config.raw_dir("cervix", "kaggle")
    assert sorted(p.name for p in raw.iterdir()) == ["additional", "sample_submission_stg1.csv", "test", "test_stg2",
                                                    "train"]
    assert manifest["counts"]["additional_images"] == 2 and manifest["counts"]["test_stg2_images"] == 3
    assert manifest["class_balance"] == {"Type_1": 3, "Type_2": 3, "Type_3": 3}
    assert {c[2] for c in api.calls} == set(files)
    assert "pw123" not in (config.source_dir("cervix", "kaggle") / "data.lock.json").read_text()


@pytest.mark.parametrize("status, expected", [(401, "401.*settings/api"),
                                              (403, "403.*kaggle.com/competitions/quora-question-pairs/rules")])
def test_kaggle_http_errors(project, status, expected):
    with pytest.raises(StageError, match=expected):
        acq.acquire("quora", "kaggle", api=FakeKaggleApi(error=http_error(status)))
    assert not config.raw_dir("quora", "kaggle").exists()


def test_kaggle_no_network(project):
    import requests

    with pytest.raises(StageError, match="cannot reach Kaggle"):
        acq.acquire("quora", "kaggle", api=FakeKaggleApi(error=requests.ConnectionError("Failed to resolve")))


def test_kaggle_truncated_download_is_deleted_for_a_retry(project, tmp_path):
    whole = quora_kaggle_zip(tmp_path)
    api = FakeKaggleApi(files={"quora-question-pairs.zip": whole[: len(whole) // 2]})
    with pytest.raises(StageError, match="broken or truncated.*run the same command again"):
        acq.acquire("quora", "kaggle", api=api)
    downloads = config.source_dir("quora", "kaggle") / "downloads"
    assert not (downloads / "quora-question-pairs.zip").exists()
    assert not config.raw_dir("quora", "kaggle").exists() and leftovers("quora", "kaggle") == []


def test_kaggle_without_credentials_lists_the_places(project, no_credentials, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # importing kaggle would fail: the check must come first
    with pytest.raises(StageError) as err:
        acq.acquire("quora", "kaggle")
    for place in ("KAGGLE_API_TOKEN", "~/.kaggle/access_token", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME"):
        assert place in str(err.value)


def test_credentials_never_reach_logs_or_files(project, fake_credentials, capsys, caplog):
    api = FakeKaggleApi(error=RuntimeError(f"server said: bad token {SECRET_TOKEN} / {SECRET_KEY}"))
    with caplog.at_level(logging.DEBUG), pytest.raises(StageError) as err:
        acq.acquire("quora", "kaggle", api=api)
    out = capsys.readouterr()
    written = "".join(p.read_text(errors="replace") for p in config.DATA_DIR.rglob("*") if p.is_file()) \
        if config.DATA_DIR.exists() else ""
    for text in (str(err.value), caplog.text, out.out, out.err, written):
        assert SECRET_TOKEN not in text and SECRET_KEY not in text


# ---------------------------------------------------------------- a path downloaded by hand
def test_local_zip_with_a_wrapper_folder_and_extra_files(project, tmp_path, caplog):
    from pipelines.quora.data import generate_sample

    generate_sample(tmp_path / "q", n_train=40, n_test=10)
    archive = tmp_path / "My Quora Download.zip"
    archive.write_bytes(zip_bytes({
        "quora/train.csv": (tmp_path / "q" / "train.csv").read_bytes(),
        "quora/test.csv.zip": zip_bytes({"test.csv": (tmp_path / "q" / "test.csv").read_bytes()}),
        "quora/README.txt": b"notes",
        "__MACOSX/._train.csv": b"junk",
    }))
    with caplog.at_level(logging.WARNING):
        manifest = acq.acquire("quora", str(archive))
    raw = config.raw_dir("quora", str(archive))
    assert raw.parent.name == "local-my-quora-download"
    assert sorted(p.name for p in raw.iterdir()) == ["test.csv", "train.csv"]
    assert (raw / "train.csv").read_bytes() == (tmp_path / "q" / "train.csv").read_bytes()
    assert "sample_submission.csv absent" in caplog.text and manifest["counts"]["test_rows"] == 10


def test_local_folder_of_gzipped_csvs_is_cached_until_it_changes(project, tmp_path):
    import gzip

    from pipelines.quora.data import generate_sample

    generate_sample(tmp_path / "q", n_train=40, n_test=10)
    src = tmp_path / "download"
    src.mkdir()
    for name in ("train.csv", "test.csv"):
        (src / f"{name}.gz").write_bytes(gzip.compress((tmp_path / "q" / name).read_bytes()))
    (src / "MANIFEST.sha256").write_text(f"{sha256_file(tmp_path / 'q' / 'train.csv')}  train.csv\n")
    manifest = acq.acquire("quora", str(src))
    assert manifest["checksums"] == {"file": "MANIFEST.sha256", "verified": 1, "mismatched": []}
    lock = config.source_dir("quora", str(src)) / "data.lock.json"
    stamp = lock.stat().st_mtime_ns
    acq.acquire("quora", str(src))
    assert lock.stat().st_mtime_ns == stamp
    (src / "test.csv.gz").write_bytes(gzip.compress((tmp_path / "q" / "test.csv").read_bytes()[:-50] + b"\n"))
    acq.acquire("quora", str(src))  # the source changed: imported again
    assert lock.stat().st_mtime_ns != stamp


def test_local_cervix_folder_skips_what_is_not_competition_data(project, tmp_path):
    from pipelines.cervix.data import generate_sample

    src = tmp_path / "cervix"
    generate_sample(src, **SMALL_CERVIX)
    (src / "MANIFEST.sha256").write_text("0" * 64 + "  train/Type_1/0.jpg\n")
    (src / "notes.md").write_text("mine")
    manifest = acq.acquire("cervix", str(src))
    assert "notes.md" not in manifest["files"] and "MANIFEST.sha256" not in manifest["files"]
    assert manifest["counts"]["train_images"] == 9 and len(manifest["excluded"]) == 3


def test_wrong_competition_is_named(project, tmp_path):
    from pipelines.cervix.data import generate_sample

    generate_sample(tmp_path / "c", **SMALL_CERVIX)
    archive = tmp_path / "train.7z"
    write_7z(archive, {p.relative_to(tmp_path / "c").as_posix(): p.read_bytes()
                       for p in (tmp_path / "c" / "train").rglob("*.jpg")})
    with pytest.raises(StageError, match="looks like the cervix competition's data.*--comp cervix"):
        acq.acquire("quora", str(archive))
    assert not config.source_dir("quora", str(archive)).exists()


def test_zip_without_the_expected_files(project, tmp_path):
    archive = tmp_path / "stuff.zip"
    archive.write_bytes(zip_bytes({"data/results.csv": b"a,b\n1,2\n"}))
    with pytest.raises(StageError, match=r"train\.csv not found"):
        acq.acquire("quora", str(archive))


def test_missing_source_path(project, tmp_path):
    with pytest.raises(StageError, match="no such file or folder"):
        acq.acquire("quora", str(tmp_path / "nowhere"))


def test_cli(project, capsys):
    from pipelines.__main__ import EXIT_STAGE_ERROR, main

    assert main(["data", "--comp", "quora", "--source", "sample", "--n-train", "100", "--n-test", "20"]) == 0
    assert "train.csv 100 pairs" in capsys.readouterr().out
    assert main(["data", "--comp", "quora", "--source", "/nonexistent/quora.zip"]) == EXIT_STAGE_ERROR


def test_identical_data_redone_keeps_the_manifest_bytes(project):
    acq.acquire("quora", "sample", **SMALL_QUORA)
    manifest = config.source_dir("quora", "sample") / "manifest.json"
    before = manifest.read_bytes()
    acq.acquire("quora", "sample", force=True, **SMALL_QUORA)
    assert manifest.read_bytes() == before  # same seed, same bytes: downstream runs stay valid


def test_kaggle_zip_with_a_damaged_inner_zip(project, tmp_path):
    inner = zip_bytes({"train.csv": b"id\n" + b"1\n" * 5000})
    api = FakeKaggleApi(files={"quora-question-pairs.zip": zip_bytes({"train.csv.zip": inner[: len(inner) // 2]})})
    with pytest.raises(StageError, match=r"inside the Kaggle download is damaged \(train\.csv\.zip is broken"):
        acq.acquire("quora", "kaggle", api=api)
    assert not (config.source_dir("quora", "kaggle") / "downloads").exists()


def test_fresh_copy_of_the_same_files_keeps_raw_and_what_was_built_on_it(project, tmp_path, caplog):
    import os
    import shutil

    from pipelines.common.stage import Stage
    from pipelines.quora.data import generate_sample

    src = tmp_path / "download"
    generate_sample(src, n_train=40, n_test=10)
    acq.acquire("quora", str(src))
    raw = config.raw_dir("quora", str(src))
    downstream = Stage("features", tmp_path / "feat", deps=[raw / "train.csv"], params={}, outs=[])
    downstream.done()
    # The data folder re-created with the same bytes (new mtimes): re-imported, raw/ and what depends on it kept.
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    shutil.rmtree(src)
    os.replace(copy, src)
    for f in src.iterdir():
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO):
        acq.acquire("quora", str(src))
    assert "inputs changed" in caplog.text and "same files as the last import" in caplog.text
    assert downstream.up_to_date()
    # raw/ edited by hand (same size, other bytes): the import restores it, downstream is stale.
    train = raw / "train.csv"
    edited = bytearray(train.read_bytes())
    edited[-2] = ord("0") if edited[-2] != ord("0") else ord("1")
    train.write_bytes(bytes(edited))
    acq.acquire("quora", str(src))
    assert train.read_bytes() == (src / "train.csv").read_bytes()
    assert not downstream.up_to_date()


# ---------------------------------------------------------------- what the competition declares
def test_quora_password_error_names_no_other_competitions_variable(project, tmp_path, monkeypatch):
    from pipelines.quora.data import generate_sample

    monkeypatch.delenv("CERVIX_7Z_PASSWORD", raising=False)
    generate_sample(tmp_path / "q", n_train=40, n_test=10)
    archive = write_7z(tmp_path / "quora.7z", {name: (tmp_path / "q" / name).read_bytes()
                                               for name in ("train.csv", "test.csv")}, password="pw")
    with pytest.raises(archives.PasswordError) as err:
        acq.acquire("quora", str(archive))
    assert "quora.7z is password-protected: pass the password with --password" in str(err.value)
    assert "CERVIX" not in str(err.value) and "environment variable" not in str(err.value)
    monkeypatch.setenv("CERVIX_7Z_PASSWORD", "pw")  # another competition's variable is not quora's
    with pytest.raises(archives.PasswordError):
        acq.acquire("quora", str(archive))
    assert acq.acquire("quora", str(archive), password="pw")["counts"]["train_rows"] == 40


def test_sample_of_a_competition_without_one_is_one_clear_error(project, monkeypatch):
    import dataclasses

    from pipelines import competitions

    monkeypatch.setitem(competitions._loaded, "quora", dataclasses.replace(competitions.get("quora"), sample=None))
    with pytest.raises(StageError) as err:
        acq.acquire("quora", "sample")
    assert str(err.value) == ("--source sample: the quora competition has no built-in sample; use --source kaggle "
                              "or the path of the competition files you downloaded")
    assert not config.source_dir("quora", "sample").exists()


def test_data_options_are_the_competitions_own():
    import argparse

    def flags(comp=None):
        parser = argparse.ArgumentParser()
        acq.add_arguments(parser, comp)
        return {opt for action in parser._actions for opt in action.option_strings}

    assert {"--n-train", "--n-test", "--size"} <= flags("quora") and "--n-per-class" not in flags("quora")
    assert {"--n-per-class", "--n-test", "--image-size"} <= flags("cervix") and "--n-train" not in flags("cervix")
    assert not flags() & {"--n-train", "--n-test", "--n-per-class", "--image-size", "--size"}
    assert {"--force", "--password", "--files", "--max-ratio"} <= flags()
    parser = argparse.ArgumentParser()
    acq.add_arguments(parser, "cervix")
    assert "CERVIX_7Z_PASSWORD" in parser.format_help()
    parser = argparse.ArgumentParser()
    acq.add_arguments(parser, "quora")
    assert "CERVIX" not in parser.format_help()


def test_sample_options_come_from_the_competitions_options_dataclass():
    assert acq.sample_options("quora", "kaggle") == {"n_train": 404_290, "n_test": 2_345_796, "seed": config.SEED}
    assert acq.sample_options("cervix", "default", seed=1, n_test=7, n_train=5) == {
        "n_per_class": 40, "n_test": 7, "image_size": 192, "n_additional": 4, "n_test_stg2": 20, "seed": 1}
    with pytest.raises(StageError, match="--size huge: use default or kaggle"):
        acq.sample_options("quora", "huge")
