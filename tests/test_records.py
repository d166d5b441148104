"""The run record (run.json) every model run writes: each field present and true to the run."""
from __future__ import annotations

import datetime as dt
import hashlib
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn

from pipelines import config
from pipelines.common import records
from pipelines.common.io import read_json, write_json

from compare_helpers import NoisyOracleModel, fake_targets, point_config, train_fake, write_feature_file

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def project(tmp_path, monkeypatch):
    return point_config(monkeypatch, tmp_path)


def test_run_record_has_every_field_of_the_run(project):
    manifest = config.source_dir("quora", "sample") / "manifest.json"
    write_json(manifest, {"files": {"raw/train.csv": {"size": 3, "sha256": "x"}}, "counts": {"train": 3}})
    features = write_feature_file(project / "data" / "quora" / "sample" / "features" / "features.lock.json", "{}")
    y = fake_targets("quora", 60)
    model = NoisyOracleModel("tiny", y, 2, strength=1.0)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    train_fake("quora", "sample", model, y, [features], seed=7)
    after = dt.datetime.now(dt.timezone.utc)

    record = read_json(config.model_dir("quora", "sample", "tiny") / "run.json")
    assert set(record) >= {"competition", "comp", "source", "model", "params", "seed", "git", "versions", "python",
                           "platform", "data_manifest_sha256", "inputs", "started", "finished"}
    assert record["competition"] == "quora-question-pairs" and record["comp"] == "quora"
    assert record["source"] == "sample" and record["model"] == "tiny"
    assert record["params"] == model.params and record["seed"] == 7
    # git: the state of the code that ran (the project's own checkout, not the tmp folder)
    checkout = Path(records.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True)
    if head.returncode == 0:
        assert record["git"]["commit"] == head.stdout.strip() and isinstance(record["git"]["dirty"], bool)
    else:
        assert record["git"] == {"commit": None, "dirty": None}
    assert record["versions"]["numpy"] == np.__version__
    assert record["versions"]["pandas"] == pd.__version__
    assert record["versions"]["scikit-learn"] == sklearn.__version__
    assert record["python"] == platform.python_version() and record["platform"]
    assert record["data_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert record["inputs"] == {"data/quora/sample/features/features.lock.json":
                                hashlib.sha256(b"{}").hexdigest()}
    started, finished = (dt.datetime.fromisoformat(record[k]) for k in ("started", "finished"))
    assert started.tzinfo is not None and before <= started <= finished <= after

    params = read_json(config.model_dir("quora", "sample", "tiny") / "params.json")
    assert params == {"model": "tiny", "params": model.params, "seed": 7}


def test_run_record_without_manifest_or_inputs(project):
    record = records.run_record("cervix", "sample", "m", {"a": 1}, 3, records.now())
    assert record["data_manifest_sha256"] is None and record["inputs"] == {}
    assert record["competition"] == "intel-mobileodt-cervical-cancer-screening"


def test_input_fingerprints(tmp_path, monkeypatch):
    root = tmp_path / "project"
    monkeypatch.setattr(config, "ROOT", root)
    inside = write_feature_file(root / "data" / "features.lock.json", "lock v1")
    outside = write_feature_file(tmp_path / "elsewhere" / "extra.bin", "extra")
    fingerprints = records.input_fingerprints([inside, outside, root / "data" / "absent.npy"])
    assert fingerprints == {
        "data/features.lock.json": hashlib.sha256(b"lock v1").hexdigest(),  # relative to the project root
        str(outside.resolve()): hashlib.sha256(b"extra").hexdigest(),  # elsewhere: absolute
        "data/absent.npy": None,
    }
    inside.write_text("lock v2")
    assert records.input_fingerprints([inside])["data/features.lock.json"] == hashlib.sha256(b"lock v2").hexdigest()


@needs_git
def test_git_state_in_a_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-q", "-m", "first")
    state = records.git_state(repo)
    assert state == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert len(state["commit"]) == 40

    (repo / "notes.txt").write_text("untracked files do not change what ran\n")
    assert records.git_state(repo)["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    assert records.git_state(repo)["dirty"] is True


@needs_git
def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never look above tmp_path for a .git
    plain = tmp_path / "plain"
    plain.mkdir()
    assert records.git_state(plain) == {"commit": None, "dirty": None}


def test_library_versions_lists_installed_libraries_only():
    versions = records.library_versions()
    assert versions["numpy"] == np.__version__
    assert set(versions) <= set(records.LIBRARIES)
    assert all(isinstance(v, str) and v for v in versions.values())
