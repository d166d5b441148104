"""Paths and defaults, in one place.

Every stage reads and writes under these folders:

    data/<comp>/<source>/raw/          the competition's files exactly as Kaggle ships them (immutable)
    data/<comp>/<source>/manifest.json files, sizes, sha256, counts, class balance (data stage)
    data/<comp>/<source>/features/     cached model inputs (features stage), with folds.npy
    models/<comp>/<source>/<model>/    one run per model: oof.parquet, test.parquet, metrics.json, run.json
    submissions/<comp>/<name>.csv      leaderboard-format files, never overwritten
    reports/<comp>/<source>/           comparison table and plots

<source> is a label: ``sample``, ``kaggle``, or ``local-<name>`` for a folder/archive the user
downloaded by hand (``local-<name>-<hash>`` for a second path with the same folder name), so two
sources never mix and the sample can never overwrite real data.
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
# One lock file per output folder being written (pipelines/common/locks.py); git-ignored.
LOCKS_DIR = ROOT / ".locks"
# Keras writes ~/.keras on import; keep it inside the project's ignored folders.
KERAS_HOME = Path(os.environ.get("KERAS_HOME", ROOT / ".keras"))
os.environ.setdefault("KERAS_HOME", str(KERAS_HOME))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A folder of Keras weight files you keep (ImageNet no-top .h5 files named as Keras names them), from
# the environment variable PIPELINES_WEIGHTS_DIR: the cervix train stage takes a network's ImageNet
# weights from it when the Keras cache lacks them, with no download. None when unset.
WEIGHTS_DIR: Path | None = Path(os.environ["PIPELINES_WEIGHTS_DIR"]).expanduser() \
    if os.environ.get("PIPELINES_WEIGHTS_DIR") else None

SEED = 42
# Keras fits write their resumable checkpoint at most this often (seconds), and when training ends
# (pipelines/common/checkpoint.py); --checkpoint-every on the train stage overrides it.
CHECKPOINT_EVERY_S = 60.0
N_FOLDS = 5


def check_comp(comp: str) -> str:
    """``comp`` when it is a registered competition (pipelines.competitions); else exit naming the known ones."""
    from pipelines import competitions

    if comp not in competitions.names():
        raise SystemExit(f"error: unknown competition {comp!r}; use one of: {', '.join(competitions.names())}")
    return comp


# Beside manifest.json in every data folder of a user's path: {"label", "path"}, so that a path finds its
# folder again and a second path with the same folder name never shares it.
SOURCE_FILE = "source.json"


def local_path(source: str) -> str:
    """The absolute path a user's --source names, as the data stage records it."""
    return str(Path(source).expanduser().resolve())


def path_slug(source: str) -> str:
    name = Path(os.path.abspath(os.path.expanduser(source))).name
    for ext in (".tar.gz", ".zip", ".7z", ".gz", ".csv"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.").lower() or "data"


def label_owner(label: str) -> str | None:
    """The path whose data lives in ``data/<comp>/<label>/`` (any competition), or None."""
    import json

    if not DATA_DIR.is_dir():
        return None
    for comp_dir in sorted(DATA_DIR.iterdir()):
        folder = comp_dir / label
        # source.json is small; manifest.json (which also records the path) can be megabytes: read only
        # for data folders imported before source.json existed.
        for name, key in ((SOURCE_FILE, "path"), ("manifest.json", "source_path")):
            try:
                with open(folder / name, encoding="utf-8") as f:
                    owner = json.load(f).get(key)
            except (OSError, ValueError, AttributeError):
                continue
            if owner:
                return str(owner)
    return None


def labels_of_path(path: str) -> list[str]:
    """Labels of the data folders (any competition) imported from ``path``."""
    import json

    found = []
    for source_file in sorted(DATA_DIR.glob(f"*/local-*/{SOURCE_FILE}")) if DATA_DIR.is_dir() else []:
        try:
            with open(source_file, encoding="utf-8") as f:
                if json.load(f).get("path") == path:
                    found.append(source_file.parent.name)
        except (OSError, ValueError, AttributeError):
            continue
    return found


def source_label(source: str) -> str:
    """Folder name of a data source: 'sample', 'kaggle', or 'local-<slug>' for a user's path.

    Two different paths never share a folder: the first path imported with a folder name keeps
    ``local-<name>`` (so existing labels stay valid); another path with the same name gets
    ``local-<name>-<8 hex digits of its absolute path's sha256>``. A path already imported finds its
    folder through the ``source.json`` the data stage writes beside the manifest.
    """
    if source in ("sample", "kaggle"):
        return source
    if source.startswith("local-") and not os.path.exists(source):
        return source  # already a label
    import hashlib

    path = local_path(source)
    known = labels_of_path(path)
    base = f"local-{path_slug(source)}"
    if known:
        return base if base in known else known[0]
    owner = label_owner(base)
    if owner is None or owner == path:
        return base
    return f"{base}-{hashlib.sha256(path.encode('utf-8')).hexdigest()[:8]}"


def source_dir(comp: str, source: str) -> Path:
    return DATA_DIR / check_comp(comp) / source_label(source)


def raw_dir(comp: str, source: str) -> Path:
    return source_dir(comp, source) / "raw"


def features_dir(comp: str, source: str) -> Path:
    return source_dir(comp, source) / "features"


def models_dir(comp: str, source: str) -> Path:
    return MODELS_DIR / check_comp(comp) / source_label(source)


def model_dir(comp: str, source: str, key: str) -> Path:
    """The folder of a run by its key ``<model>/<run>`` (``pipelines.common.runs``), or of the blend (``blend``)."""
    return models_dir(comp, source) / key


def submissions_dir(comp: str) -> Path:
    return SUBMISSIONS_DIR / check_comp(comp)


def reports_dir(comp: str, source: str) -> Path:
    return REPORTS_DIR / check_comp(comp) / source_label(source)


def n_workers() -> int:
    return max(1, os.cpu_count() or 1)
