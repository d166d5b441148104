"""Shared fixtures for the data-stage tests: isolated project folders, a fake Kaggle API, tiny archives."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines import config

SECRET_TOKEN = "KGAT_0123456789abcdef-secret"
SECRET_KEY = "f00dfeedcafe0123456789-secret-key"
KAGGLE_ENV = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """Project output folders under tmp_path, so tests never write into the repository's data/ or models/."""
    root = tmp_path / "project"
    for name in ("DATA_DIR", "MODELS_DIR", "SUBMISSIONS_DIR", "REPORTS_DIR", "LOCKS_DIR"):
        monkeypatch.setattr(config, name, root / name.split("_")[0].lower())
    return root


@pytest.fixture
def no_credentials(tmp_path, monkeypatch) -> Path:
    """An empty home folder and no KAGGLE_* variables: no Kaggle credentials anywhere."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for var in KAGGLE_ENV:
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def fake_credentials(no_credentials, monkeypatch) -> Path:
    """A (fake) token in the environment and a legacy kaggle.json: values that must never be logged."""
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_TOKEN)
    kaggle_dir = no_credentials / ".kaggle"
    kaggle_dir.mkdir()
    (kaggle_dir / "kaggle.json").write_text('{"username": "someone", "key": "%s"}' % SECRET_KEY)
    return no_credentials


def http_error(status: int):
    """What KaggleApi raises for an HTTP failure: requests.HTTPError carrying the response."""
    import requests

    response = requests.Response()
    response.status_code = status
    response.url = "https://www.kaggle.com/api/v1/competitions/data/download-all/x"
    return requests.HTTPError(f"{status} Client Error for url: {response.url}", response=response)


class FakeKaggleApi:
    """Stands in for kaggle.api.kaggle_api_extended.KaggleApi (same method names and arguments).

    ``files`` are what a download writes (name -> bytes); ``error`` is raised by every call;
    ``scores`` is the sequence of (status, public_score) that competition_submissions reports in turn.
    """

    def __init__(self, files: dict[str, bytes] | None = None, error: BaseException | None = None,
                 submit_error: BaseException | None = None, scores=(("complete", "0.31415"),)):
        self.files = files or {}
        self.error = error
        self.submit_error = submit_error
        self.scores = list(scores)
        self.calls: list[tuple] = []

    def _write(self, path, names):
        if self.error is not None:
            raise self.error
        for name in names:
            Path(path, name).write_bytes(self.files[name])

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.calls.append(("competition_download_files", competition, force))
        self._write(path, list(self.files))

    def competition_download_file(self, competition, file_name, path=None, force=False, quiet=False):
        self.calls.append(("competition_download_file", competition, file_name))
        self._write(path, [file_name])

    def competition_submit(self, file_name, message, competition, quiet=False, sandbox=False):
        self.calls.append(("competition_submit", competition, Path(file_name).name, message))
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted = (Path(file_name).name, message)
        return SimpleNamespace(message="Successfully submitted to the competition", ref=4242)

    def competition_submissions(self, competition, group=None, sort=None, page_number=-1, page_token="",
                                page_size=20):
        self.calls.append(("competition_submissions", competition))
        status, score = self.scores.pop(0) if len(self.scores) > 1 else self.scores[0]
        name, message = self.submitted
        return [
            SimpleNamespace(ref=4242, status=SimpleNamespace(name=status.upper()), public_score=score,
                            private_score="", file_name=name, description=message, error_description="bad rows"),
            SimpleNamespace(ref=1, status=SimpleNamespace(name="COMPLETE"), public_score="0.9",
                            private_score="", file_name="old.csv", description="older", error_description=""),
        ]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_7z(path: Path, members: dict[str, bytes], password: str | None = None) -> Path:
    import py7zr

    with py7zr.SevenZipFile(path, "w", password=password) as sz:
        for name, data in members.items():
            sz.writestr(data, name)
    return path


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` as relative path -> bytes (to compare two folders exactly)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def quora_kaggle_zip(tmp_path: Path, n_train: int = 60, n_test: int = 20) -> bytes:
    """Kaggle's quora-question-pairs.zip layout: the CSVs each zipped again inside (train.csv.zip, ...)."""
    from pipelines.quora.data import generate_sample

    raw = tmp_path / "quora-files"
    generate_sample(raw, n_train=n_train, n_test=n_test, seed=3)
    inner = {f"{name}.zip": zip_bytes({name: (raw / name).read_bytes()})
             for name in ("train.csv", "test.csv", "sample_submission.csv")}
    return zip_bytes(inner)


def evil_7z(path: Path, name: str, data: bytes = b"evil") -> Path:
    """A 7z whose entry is called ``name`` verbatim ('../x', '/abs/x'): py7zr refuses to write such names, so
    write a same-length placeholder into a plain (unencoded) header, patch it, and fix the header CRCs."""
    import struct
    import zlib

    import py7zr

    placeholder = "Q" * len(name)
    with py7zr.SevenZipFile(path, "w") as sz:
        sz.set_encoded_header_mode(False)
        sz.writestr(data, placeholder)
    raw = bytearray(path.read_bytes())
    at = raw.find(placeholder.encode("utf-16-le"))
    assert at > 0, "placeholder name not found in the 7z header"
    raw[at:at + 2 * len(name)] = name.encode("utf-16-le")
    offset, size = struct.unpack("<QQ", raw[12:28])
    raw[28:32] = struct.pack("<I", zlib.crc32(bytes(raw[32 + offset:32 + offset + size])))
    raw[8:12] = struct.pack("<I", zlib.crc32(bytes(raw[12:32])))
    path.write_bytes(bytes(raw))
    return path
