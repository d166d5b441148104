"""Kaggle access without the real service: credential discovery, error translation, downloads, submit."""
from __future__ import annotations

import errno
import logging
import os
import sys
import types

import pandas as pd
import pytest

from data_helpers import (SECRET_KEY, SECRET_TOKEN, FakeKaggleApi, fake_credentials, http_error,  # noqa: F401
                          no_credentials, project)
from pipelines import config
from pipelines.__main__ import EXIT_STAGE_ERROR
from pipelines.common import io, kaggle_io, provenance, records
from pipelines.common.log import StageError

QUORA_SLUG = "quora-question-pairs"


def test_no_credentials_lists_every_place_and_never_imports_kaggle(no_credentials, monkeypatch):
    # With sys.modules["kaggle"] = None any `import kaggle` fails with ImportError: reaching the credentials
    # message proves the check happens before the import.
    monkeypatch.setitem(sys.modules, "kaggle", None)
    with pytest.raises(StageError) as err:
        kaggle_io.make_api()
    message = str(err.value)
    for place in ("KAGGLE_API_TOKEN", "~/.kaggle/access_token", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME",
                  "KAGGLE_KEY", "https://www.kaggle.com/settings/api"):
        assert place in message
    assert "\n" not in message


def test_credential_sources_names_places_not_values(fake_credentials, monkeypatch):
    found = kaggle_io.credential_sources()
    assert found[0] == "KAGGLE_API_TOKEN" and any(p.endswith("kaggle.json") for p in found)
    assert not any(SECRET_TOKEN in p or SECRET_KEY in p for p in found)
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    (fake_credentials / ".kaggle" / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET_KEY)
    assert kaggle_io.credential_sources() == ["KAGGLE_USERNAME/KAGGLE_KEY"]
    monkeypatch.delenv("KAGGLE_KEY")
    (fake_credentials / ".kaggle" / "access_token").write_text(SECRET_TOKEN + "\n")
    assert kaggle_io.credential_sources() == ["~/.kaggle/access_token"]


def test_broken_kaggle_json_is_a_clear_error(no_credentials):
    (no_credentials / ".kaggle").mkdir()
    (no_credentials / ".kaggle" / "kaggle.json").write_text("{not json")
    with pytest.raises(StageError, match="not valid JSON"):
        kaggle_io.check_credentials()


def test_http_401_and_403_messages():
    e401 = kaggle_io.translate(http_error(401), QUORA_SLUG, "downloading")
    assert "401" in str(e401) and "https://www.kaggle.com/settings/api" in str(e401)
    e403 = kaggle_io.translate(http_error(403), QUORA_SLUG, "downloading")
    assert "403" in str(e403) and f"https://www.kaggle.com/competitions/{QUORA_SLUG}/rules" in str(e403)
    assert "404" in str(kaggle_io.translate(http_error(404), QUORA_SLUG, "downloading"))


def test_network_disk_and_truncation_messages():
    import requests

    no_net = requests.ConnectionError("Max retries exceeded (NewConnectionError: Name or service not known)")
    assert "cannot reach Kaggle" in str(kaggle_io.translate(no_net, QUORA_SLUG, "downloading"))
    refused = OSError(errno.ECONNREFUSED, "Connection refused")
    assert "cannot reach Kaggle" in str(kaggle_io.translate(refused, QUORA_SLUG, "downloading"))
    full = OSError(errno.ENOSPC, "No space left on device")
    assert "disk full" in str(kaggle_io.translate(full, QUORA_SLUG, "downloading"))
    short = ValueError("Downloaded file size (10) does not match expected size (20)")
    assert "truncated" in str(kaggle_io.translate(short, QUORA_SLUG, "downloading"))


def test_unknown_errors_are_scrubbed_of_credentials(fake_credentials):
    err = kaggle_io.translate(RuntimeError(f"boom with header Bearer {SECRET_TOKEN} and key {SECRET_KEY}"),
                              QUORA_SLUG, "downloading")
    assert SECRET_TOKEN not in str(err) and SECRET_KEY not in str(err) and "***" in str(err)


def test_download_with_a_fake_api(tmp_path):
    api = FakeKaggleApi(files={"quora-question-pairs.zip": b"PK..."})
    got = kaggle_io.download("quora", tmp_path / "dl", api=api)
    assert [p.name for p in got] == ["quora-question-pairs.zip"]
    assert api.calls == [("competition_download_files", QUORA_SLUG, False)]
    api = FakeKaggleApi(files={"train.7z": b"7z", "test.7z": b"7z"})
    kaggle_io.download("cervix", tmp_path / "dl2", api=api, files=["train.7z", "test.7z"])
    assert [c[2] for c in api.calls] == ["train.7z", "test.7z"]


def test_download_leaving_a_partial_marker_is_incomplete(tmp_path):
    api = FakeKaggleApi(files={"quora-question-pairs.zip": b"PK", "quora-question-pairs.zip.kaggle-partial": b"{}"})
    with pytest.raises(StageError, match="did not finish"):
        kaggle_io.download("quora", tmp_path / "dl", api=api)


def test_download_errors_become_one_line(tmp_path):
    with pytest.raises(StageError, match="rules"):
        kaggle_io.download("quora", tmp_path / "dl", api=FakeKaggleApi(error=http_error(403)))
    with pytest.raises(StageError, match="empty"):
        kaggle_io.download("quora", tmp_path / "dl2", api=FakeKaggleApi(files={"x.zip": b""}))


# ---------------------------------------------------------------- submit
@pytest.fixture
def submission(tmp_path, project, monkeypatch):
    """A submission file, and a stand-in validator recording its calls (the real one lives in submission.py)."""
    path = tmp_path / "sub.csv"
    pd.DataFrame({"test_id": [0, 1], "is_duplicate": [0.2, 0.7]}).to_csv(path, index=False)
    provenance.write_record(path, "quora", "kaggle")  # what `make blend` writes beside every CSV
    calls = []

    def validate_submission_file(comp, file, source):
        calls.append((comp, file.name, source))
        if "bad" in file.name:
            raise StageError(f"{file.name}: wrong columns; expected test_id,is_duplicate")

    module = types.ModuleType("pipelines.common.submission")
    module.validate_submission_file = validate_submission_file
    monkeypatch.setitem(sys.modules, "pipelines.common.submission", module)
    return path, calls


def test_submit_uploads_and_reports_the_polled_score(submission, capsys):
    path, calls = submission
    api = FakeKaggleApi(scores=[("pending", ""), ("pending", ""), ("complete", "0.31415")])
    slept = []
    result = kaggle_io.submit("quora", path, "first try", api=api, source="kaggle", poll_seconds=5,
                              sleep=slept.append)
    assert calls == [("quora", "sub.csv", "kaggle")]
    assert result["status"] == "complete" and result["public_score"] == pytest.approx(0.31415)
    assert slept == [5, 5]
    assert "public score 0.31415" in capsys.readouterr().out
    record = config.submissions_dir("quora") / "sub.kaggle.json"
    assert '"public_score": 0.31415' in record.read_text()


def test_submit_records_the_read_back_score_with_the_submission(submission):
    path, _ = submission
    rec_path = provenance.record_path(path)
    before = io.read_json(rec_path)
    started = records.now()
    kaggle_io.submit("quora", path, "first try", api=FakeKaggleApi(scores=[("complete", "0.31415")]),
                     source="kaggle", sleep=lambda s: None)
    record = io.read_json(rec_path)
    leaderboard = record["leaderboard"]
    assert leaderboard["public_score"] == pytest.approx(0.31415) and leaderboard["private_score"] is None
    assert leaderboard["ref"] == 4242 and leaderboard["message"] == "first try" and leaderboard["status"] == "complete"
    assert started <= leaderboard["read_back"] <= records.now()
    assert record["uploads"] == [leaderboard]
    assert {k: v for k, v in record.items() if k not in ("leaderboard", "uploads")} == before  # the rest is kept
    assert provenance.upload_problem("quora", path, "kaggle") is None  # the record still describes the file

    # an upload Kaggle has not scored yet is recorded, the last score read back stays the leaderboard's
    kaggle_io.submit("quora", path, "again", api=FakeKaggleApi(scores=[("pending", "")]), source="kaggle",
                     timeout=0.0, sleep=lambda s: None)
    record = io.read_json(rec_path)
    assert [u["message"] for u in record["uploads"]] == ["first try", "again"]
    assert record["uploads"][1]["status"] == "pending" and record["uploads"][1]["read_back"] is None
    assert record["leaderboard"] == leaderboard


def test_a_forced_upload_leaves_a_record_of_another_file_alone(submission):
    path, _ = submission
    rec_path = provenance.record_path(path)
    path.write_text(path.read_text() + "2,0.5\n")  # no longer the file the record describes
    before = rec_path.read_bytes()
    result = kaggle_io.submit("quora", path, "m", api=FakeKaggleApi(), source="kaggle", force_upload=True,
                              sleep=lambda s: None)
    assert result["public_score"] == pytest.approx(0.31415)
    assert rec_path.read_bytes() == before
    assert provenance.record_submission(path.parent / "none.csv", result) is None  # no record at all


def test_the_score_is_written_into_the_record_atomically(submission, monkeypatch):
    path, _ = submission
    rec_path = provenance.record_path(path)
    before = rec_path.read_bytes()
    real_replace = os.replace

    def crash_on_record(src, dst):
        if str(dst).endswith(".record.json"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", crash_on_record)
    with pytest.raises(OSError, match="disk full"):
        kaggle_io.submit("quora", path, "m", api=FakeKaggleApi(), source="kaggle", sleep=lambda s: None)
    assert rec_path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []


def test_submit_stops_waiting_at_the_timeout(submission):
    path, _ = submission
    api = FakeKaggleApi(scores=[("pending", "")])
    result = kaggle_io.submit("quora", path, "m", api=api, source="kaggle", timeout=0.0, sleep=lambda s: None)
    assert result["status"] == "pending" and result["public_score"] is None


def test_submit_reports_kaggle_scoring_errors(submission):
    path, _ = submission
    with pytest.raises(StageError, match="could not score.*bad rows"):
        kaggle_io.submit("quora", path, "m", api=FakeKaggleApi(scores=[("error", "")]), source="kaggle",
                         sleep=lambda s: None)


def test_submit_403_names_the_rules_page(submission):
    path, _ = submission
    api = FakeKaggleApi(submit_error=http_error(403))
    with pytest.raises(StageError, match=f"https://www.kaggle.com/competitions/{QUORA_SLUG}/rules"):
        kaggle_io.submit("quora", path, "m", api=api, source="kaggle")


def test_invalid_file_is_refused_before_upload(submission, tmp_path):
    _, calls = submission
    bad = tmp_path / "bad.csv"
    bad.write_text("id,x\n1,2\n")
    provenance.write_record(bad, "quora", "kaggle")
    api = FakeKaggleApi()
    with pytest.raises(StageError, match="wrong columns"):
        kaggle_io.submit("quora", bad, "m", api=api, source="kaggle")
    assert calls and not any(c[0] == "competition_submit" for c in api.calls)


def test_submit_refuses_sample_and_missing_files(submission, tmp_path):
    path, calls = submission
    with pytest.raises(StageError, match="synthetic sample"):
        kaggle_io.submit("quora", path, "m", api=FakeKaggleApi(), source="sample")
    with pytest.raises(StageError, match="not found"):
        kaggle_io.submit("quora", tmp_path / "nope.csv", "m", api=FakeKaggleApi(), source="kaggle")
    assert calls == []


def test_submit_without_credentials_never_imports_kaggle(submission, no_credentials, monkeypatch, caplog):
    path, _ = submission
    monkeypatch.setitem(sys.modules, "kaggle", None)
    with caplog.at_level(logging.DEBUG), pytest.raises(StageError, match="no Kaggle credentials"):
        kaggle_io.submit("quora", path, "m", source="kaggle")


def test_submit_cli_main(submission, monkeypatch, capsys):
    from pipelines.__main__ import main

    path, _ = submission
    api = FakeKaggleApi()
    monkeypatch.setattr(kaggle_io, "make_api", lambda: api)
    rc = main(["submit", "--comp", "quora", "--source", "kaggle", "--file", str(path), "--message", "cli",
               "--poll-seconds", "0"])
    assert rc == 0 and "public score" in capsys.readouterr().out
    assert api.submitted == ("sub.csv", "cli")
    assert main(["submit", "--comp", "quora", "--file", str(path), "--message", "cli"]) == EXIT_STAGE_ERROR  # sample


def _fake_kaggle_package(monkeypatch, authenticate):
    """Install a stand-in `kaggle` package whose KaggleApi.authenticate does ``authenticate()``."""
    ext = types.ModuleType("kaggle.api.kaggle_api_extended")

    class KaggleApi:
        def authenticate(self):
            authenticate()

    ext.KaggleApi = KaggleApi
    pkg, sub = types.ModuleType("kaggle"), types.ModuleType("kaggle.api")
    pkg.api, sub.kaggle_api_extended = sub, ext
    for name, module in (("kaggle", pkg), ("kaggle.api", sub), ("kaggle.api.kaggle_api_extended", ext)):
        monkeypatch.setitem(sys.modules, name, module)


def test_rejected_credentials_become_one_line_without_banner_or_secret(fake_credentials, monkeypatch, capsys, caplog):
    def exits():
        print(f"Authentication required ... {SECRET_TOKEN}")  # what kaggle prints before exit(1)
        raise SystemExit(1)

    _fake_kaggle_package(monkeypatch, exits)
    with caplog.at_level(logging.DEBUG), pytest.raises(StageError, match="did not accept the credentials") as err:
        kaggle_io.make_api()
    out = capsys.readouterr()
    assert "Authentication required" not in out.out
    for text in (str(err.value), caplog.text, out.out, out.err):
        assert SECRET_TOKEN not in text and SECRET_KEY not in text

    def unauthorized():
        raise http_error(401)

    _fake_kaggle_package(monkeypatch, unauthorized)
    with pytest.raises(StageError, match="401"):
        kaggle_io.make_api()


def test_submit_with_the_real_validator(project, tmp_path):
    """End to end on imported (fake-Kaggle) data: a valid file is uploaded, a wrong one never is."""
    pytest.importorskip("pipelines.common.submission")
    from data_helpers import quora_kaggle_zip
    from pipelines.common.acquire import acquire

    acquire("quora", "kaggle", api=FakeKaggleApi(files={"quora-question-pairs.zip": quora_kaggle_zip(tmp_path)}))
    sample = pd.read_csv(config.raw_dir("quora", "kaggle") / "sample_submission.csv")
    good = tmp_path / "good.csv"
    sample.assign(is_duplicate=0.37).to_csv(good, index=False)
    provenance.write_record(good, "quora", "kaggle")
    api = FakeKaggleApi()
    assert kaggle_io.submit("quora", good, "ok", api=api, source="kaggle")["public_score"] == pytest.approx(0.31415)
    short = tmp_path / "short.csv"
    sample.iloc[:-1].to_csv(short, index=False)
    api = FakeKaggleApi()
    with pytest.raises(StageError):
        kaggle_io.submit("quora", short, "short", api=api, source="kaggle")
    assert not any(c[0] == "competition_submit" for c in api.calls)
