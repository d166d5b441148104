"""Unpacking .zip / .7z / .gz: content, nested archives, unsafe entries, passwords, broken files."""
from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pytest

from data_helpers import evil_7z, folder_bytes, write_7z, zip_bytes
from pipelines.common import archives
from pipelines.common.log import StageError


def test_zip_unpacks_every_file(tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_bytes({"train.csv": b"a,b\n1,2\n", "sub/dir/x.txt": b"x"}))
    written = archives.extract(archive, tmp_path / "out")
    assert sorted(p.as_posix() for p in written) == ["sub/dir/x.txt", "train.csv"]
    assert folder_bytes(tmp_path / "out") == {"train.csv": b"a,b\n1,2\n", "sub/dir/x.txt": b"x"}


def test_7z_unpacks_every_file(tmp_path):
    archive = write_7z(tmp_path / "train.7z", {"train/Type_1/0.jpg": b"\xff\xd8jpeg", "train/Type_2/5.jpg": b"j2"})
    archives.extract(archive, tmp_path / "out")
    assert folder_bytes(tmp_path / "out") == {"train/Type_1/0.jpg": b"\xff\xd8jpeg", "train/Type_2/5.jpg": b"j2"}


def test_gz_holds_one_file(tmp_path):
    archive = tmp_path / "train.csv.gz"
    archive.write_bytes(gzip.compress(b"id\n1\n"))
    assert archives.extract(archive, tmp_path / "out") == [archives.Path("train.csv")]
    assert (tmp_path / "out" / "train.csv").read_bytes() == b"id\n1\n"


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "C:/evil.txt"])
def test_zip_entries_outside_the_destination_are_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(name), b"evil")  # ZipInfo keeps the name as given
    with pytest.raises(archives.UnsafeArchiveError, match="unsafe entry"):
        archives.extract(archive, tmp_path / "out" / "inner")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.txt"))
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_7z_entries_outside_the_destination_are_refused(tmp_path, name):
    archive = evil_7z(tmp_path / "bad.7z", name)
    with pytest.raises(archives.UnsafeArchiveError, match="unsafe entry"):
        archives.extract(archive, tmp_path / "out" / "inner")
    assert not list(tmp_path.rglob("evil.txt"))


def test_encrypted_7z_needs_the_password(tmp_path, monkeypatch):
    archive = write_7z(tmp_path / "test_stg2.7z", {"test_stg2/a.jpg": b"secret image"}, password="s3cret")
    with pytest.raises(archives.PasswordError) as err:
        archives.extract(archive, tmp_path / "none", password_env="CERVIX_7Z_PASSWORD")
    assert "--password or the CERVIX_7Z_PASSWORD environment variable" in str(err.value)
    with pytest.raises(archives.PasswordError) as err:  # a competition without a password variable
        archives.extract(archive, tmp_path / "none")
    assert "--password" in str(err.value) and "environment variable" not in str(err.value)
    with pytest.raises(archives.PasswordError, match="wrong password.*--password / CERVIX_7Z_PASSWORD"):
        archives.extract(archive, tmp_path / "wrong", password="nope", password_env="CERVIX_7Z_PASSWORD")
    with pytest.raises(archives.PasswordError, match=r"wrong password.*check --password, or download"):
        archives.extract(archive, tmp_path / "wrong", password="nope")
    archives.extract(archive, tmp_path / "ok", password="s3cret")
    assert (tmp_path / "ok" / "test_stg2" / "a.jpg").read_bytes() == b"secret image"


def test_truncated_archives_are_reported_not_crashed(tmp_path):
    good_zip = zip_bytes({"train.csv": bytes(range(256)) * 400})
    (tmp_path / "t.zip").write_bytes(good_zip[: len(good_zip) // 2])
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(bytes(range(256)) * 400)[:500])
    write_7z(tmp_path / "full.7z", {"a.bin": bytes(range(256)) * 400})
    (tmp_path / "t.7z").write_bytes((tmp_path / "full.7z").read_bytes()[:300])
    for name in ("t.zip", "t.csv.gz", "t.7z"):
        with pytest.raises(archives.BrokenArchiveError, match="broken or truncated"):
            archives.extract(tmp_path / name, tmp_path / f"out-{name}")


def test_corrupt_zip_member_fails_its_crc(tmp_path):
    stored = tmp_path / "stored.zip"
    with zipfile.ZipFile(stored, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"hello world " * 50)
    raw = bytearray(stored.read_bytes())
    raw[raw.index(b"hello")] = ord("j")  # flip a byte of the stored content: the CRC no longer matches
    stored.write_bytes(bytes(raw))
    with pytest.raises(archives.BrokenArchiveError):
        archives.extract(stored, tmp_path / "out")


def test_nested_archives_are_found_and_unpacked(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    inner = {"train.csv.zip": zip_bytes({"train.csv": b"train"}), "test.csv.zip": zip_bytes({"test.csv": b"test"})}
    (root / "quora-question-pairs.zip").write_bytes(zip_bytes(inner))
    assert [p.name for p in archives.find_archives(root)] == ["quora-question-pairs.zip"]
    done = archives.expand_nested(root)
    assert done == ["quora-question-pairs.zip", "test.csv.zip", "train.csv.zip"]
    assert folder_bytes(root) == {"train.csv": b"train", "test.csv": b"test"}
    assert archives.find_archives(root) == []


def test_common_names_no_competition_password_variable():
    import pipelines.common as common

    for path in Path(common.__file__).parent.glob("*.py"):
        assert "CERVIX_7Z_PASSWORD" not in path.read_text(), path.name


def test_plain_file_shipped_beside_its_zip_is_kept(tmp_path, caplog):
    root = tmp_path / "root"
    root.mkdir()
    (root / "test.csv").write_bytes(b"plain")
    (root / "test.csv.zip").write_bytes(zip_bytes({"test.csv": b"zipped"}))
    archives.expand_nested(root)
    assert folder_bytes(root) == {"test.csv": b"plain"}
    assert "differs" in caplog.text


def test_split_7z_volumes_are_joined(tmp_path):
    whole = write_7z(tmp_path / "whole.7z", {"test_stg2/1.jpg": bytes(range(256)) * 64}).read_bytes()
    src = tmp_path / "src"
    src.mkdir()
    third = len(whole) // 3 + 1
    for i in range(3):
        (src / f"test_stg2.7z.00{i + 1}").write_bytes(whole[i * third:(i + 1) * third])
    archives.expand_nested(src)
    assert folder_bytes(src) == {"test_stg2/1.jpg": bytes(range(256)) * 64}


def test_archive_kind_by_name():
    assert archives.archive_kind(archives.Path("a.ZIP")) == "zip"
    assert archives.archive_kind(archives.Path("train.7z")) == "7z"
    assert archives.archive_kind(archives.Path("x.7z.001")) == "7z-split"
    assert archives.archive_kind(archives.Path("x.7z.002")) is None and archives.is_archive(archives.Path("x.7z.002"))
    assert archives.archive_kind(archives.Path("train.csv.gz")) == "gz"
    assert archives.archive_kind(archives.Path("train.csv")) is None
    assert archives.unpacked_name(archives.Path("train.csv.zip")) == "train.csv"


def test_not_an_archive_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(StageError, match="not an archive"):
        archives.extract(tmp_path / "notes.txt", tmp_path / "out")
