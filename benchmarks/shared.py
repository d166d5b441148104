"""Where the benchmarks find the real data and the ImageNet weight files (never in the repository).

``SHARED_DATA`` / ``SHARED_WEIGHTS``: the environment variables of those names, else ``../shared/data``
and ``../shared/weights`` beside the repository. The pipeline itself knows nothing of them: a benchmark
that trains pretrained networks calls ``use_shared_weights()``, which points the pipeline's
``PIPELINES_WEIGHTS_DIR`` (``config.WEIGHTS_DIR``) at the shared weights unless the user set it.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
SHARED_WEIGHTS = Path(os.environ.get("SHARED_WEIGHTS") or REPO_ROOT.parent / "shared" / "weights")


def use_shared_weights() -> Path | None:
    """The weights folder the pipeline will use: ``PIPELINES_WEIGHTS_DIR`` when set, else the shared one
    (set in this process's environment, for stage subprocesses too, and in ``config.WEIGHTS_DIR``)."""
    from pipelines import config

    if not os.environ.get("PIPELINES_WEIGHTS_DIR"):
        os.environ["PIPELINES_WEIGHTS_DIR"] = str(SHARED_WEIGHTS)
        config.WEIGHTS_DIR = SHARED_WEIGHTS
    return config.WEIGHTS_DIR


def latest_run(comp: str, source: str, model: str) -> tuple[str, Path]:
    """(key, folder) of the model's most recently finished run (the one a stage command just trained)."""
    from pipelines.common import runs

    found = [(k, p) for k, p in runs.runs_of(comp, source, model).items() if (p / "metrics.json").exists()]
    if not found:
        raise SystemExit(f"no finished run of {model} under models/{comp}/{source}")
    return max(found, key=lambda kp: (kp[1] / "metrics.json").stat().st_mtime_ns)
