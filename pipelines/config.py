"""Paths and defaults, in one place.

Every stage reads and writes under these folders:

    data/<comp>/<source>/raw/          the competition's files exactly as Kaggle ships them (immutable)
    data/<comp>/<source>/manifest.json files, sizes, sha256, counts, class balance (data stage)
    data/<comp>/<source>/features/     cached model inputs (features stage), with folds.npy
    models/<comp>/<source>/<model>/    one run per model: oof.parquet, test.parquet, metrics.json, run.json
    submissions/<comp>/<name>.csv      leaderboard-format files, never overwritten
    reports/<comp>/<source>/           comparison table and plots

<source> is a label: ``sample``, ``kaggle``, or ``local-<name>`` for a folder/archive the user
downloaded by hand, so two sources never mix and the sample can never overwrite real data.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(os.environ.get("PIPELINES_ROOT", Path(__file__).resolve().parent.parent))
DATA_DIR = ROOT / "data"
MODELS_DIR = ROOT / "models"
SUBMISSIONS_DIR = ROOT / "submissions"
REPORTS_DIR = ROOT / "reports"
# Keras writes ~/.keras on import; keep it inside the project's ignored folders.
KERAS_HOME = Path(os.environ.get("KERAS_HOME", ROOT / ".keras"))
os.environ.setdefault("KERAS_HOME", str(KERAS_HOME))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Where the real data lives for tests and benchmarks (never copied into the repository).
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_WEIGHTS = Path(os.environ.get("SHARED_WEIGHTS", ROOT.parent / "shared" / "weights"))

COMPETITIONS = {
    "quora": "quora-question-pairs",
    "cervix": "intel-mobileodt-cervical-cancer-screening",
}

SEED = 42
# Keras fits write their resumable checkpoint at most this often (seconds), and when training ends
# (pipelines/common/checkpoint.py); --checkpoint-every on the train stage overrides it.
CHECKPOINT_EVERY_S = 60.0
N_FOLDS = 5


def check_comp(comp: str) -> str:
    if comp not in COMPETITIONS:
        raise SystemExit(f"error: unknown competition {comp!r}; use one of: {', '.join(COMPETITIONS)}")
    return comp


def source_label(source: str) -> str:
    """Folder name of a data source: 'sample', 'kaggle', or 'local-<slug>' for a user's path."""
    if source in ("sample", "kaggle"):
        return source
    if source.startswith("local-") and not os.path.exists(source):
        return source  # already a label
    name = Path(os.path.abspath(source)).name
    for ext in (".tar.gz", ".zip", ".7z", ".gz", ".csv"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.").lower() or "data"
    return f"local-{slug}"


def source_dir(comp: str, source: str) -> Path:
    return DATA_DIR / check_comp(comp) / source_label(source)


def raw_dir(comp: str, source: str) -> Path:
    return source_dir(comp, source) / "raw"


def features_dir(comp: str, source: str) -> Path:
    return source_dir(comp, source) / "features"


def models_dir(comp: str, source: str) -> Path:
    return MODELS_DIR / check_comp(comp) / source_label(source)


def model_dir(comp: str, source: str, model: str) -> Path:
    return models_dir(comp, source) / model


def submissions_dir(comp: str) -> Path:
    return SUBMISSIONS_DIR / check_comp(comp)


def reports_dir(comp: str, source: str) -> Path:
    return REPORTS_DIR / check_comp(comp) / source_label(source)


def n_workers() -> int:
    return max(1, os.cpu_count() or 1)
