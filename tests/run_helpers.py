"""Finding a trained model's run folder in tests: models/<comp>/<source>/<model>/<run>/ (pipelines.common.runs)."""
from __future__ import annotations

from pathlib import Path

from pipelines import config
from pipelines.common import runs


def run_of(comp: str, source: str, model: str) -> Path:
    """The one run folder of ``model`` (an AssertionError when it has none or several)."""
    found = runs.runs_of(comp, source, model)
    assert len(found) == 1, f"{model}: expected one run under {config.models_dir(comp, source) / model}, found {list(found)}"
    return next(iter(found.values()))


def default_run(comp: str, source: str, model: str) -> Path:
    """The run folder of ``model`` whose name says every option is at its default (``default-<hash>``)."""
    found = [p for k, p in runs.runs_of(comp, source, model).items() if runs.split_key(k)[1].startswith("default-")]
    assert len(found) == 1, f"{model}: expected one default-<hash> run, found {found}"
    return found[0]
