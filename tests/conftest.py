"""Shared test set-up: quiet TensorFlow, a private KERAS_HOME, the non-interactive plot backend,
where the real data and weights live (``SHARED_DATA``, ``SHARED_WEIGHTS``: ``from conftest import
SHARED_DATA``), and a `shared_data` fixture that skips cleanly when that folder is absent."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The real data and ImageNet weight files the tests read, never copied into the repository: env
# SHARED_DATA / SHARED_WEIGHTS, else ../shared/data and ../shared/weights beside the repository.
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
SHARED_WEIGHTS = Path(os.environ.get("SHARED_WEIGHTS") or REPO_ROOT.parent / "shared" / "weights")
# The product finds weight files in PIPELINES_WEIGHTS_DIR (config.WEIGHTS_DIR); set before pipelines is
# imported, so tests that use the local weights keep finding them.
os.environ.setdefault("PIPELINES_WEIGHTS_DIR", str(SHARED_WEIGHTS))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Two cores shared by BLAS threads and the tests: one BLAS thread avoids oversubscription.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from pipelines import config  # noqa: E402


@pytest.fixture
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def project_dirs(tmp_path, monkeypatch):
    """Point every generated-output folder of the project into tmp_path."""
    for name in ("DATA_DIR", "MODELS_DIR", "SUBMISSIONS_DIR", "REPORTS_DIR", "LOCKS_DIR"):
        path = tmp_path / name.lower().replace("_dir", "")
        path.mkdir()
        monkeypatch.setattr(config, name, path)
    return tmp_path
