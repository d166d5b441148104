"""Shared test set-up: quiet TensorFlow, a private KERAS_HOME, the non-interactive plot backend,
and a `shared_data` fixture that skips cleanly when ../shared/data is absent."""
from __future__ import annotations

import os
import tempfile

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
    if not config.SHARED_DATA.exists():
        pytest.skip(f"real data folder {config.SHARED_DATA} is absent")
    return config.SHARED_DATA


@pytest.fixture
def project_dirs(tmp_path, monkeypatch):
    """Point every generated-output folder of the project into tmp_path."""
    for name in ("DATA_DIR", "MODELS_DIR", "SUBMISSIONS_DIR", "REPORTS_DIR"):
        path = tmp_path / name.lower().replace("_dir", "")
        path.mkdir()
        monkeypatch.setattr(config, name, path)
    return tmp_path
