"""Reading a competition's model runs for the comparison, the blend and the submit check: what is there.

    models/<comp>/<source>/<model>/<run>/   metrics.json, params.json, run.json, oof.parquet (the CV engine's)
    models/<comp>/<source>/blend/           the blend

A run is named by its key ``<model>/<run>`` (``pipelines.common.runs``); the blend by ``blend``.

A folder with a readable metrics.json is a finished run (``ModelRun``); one with fold checkpoints and no
metrics.json an interrupted run, and an unreadable metrics.json a problem: each problem comes with the
command that finishes or redoes it (``train_command``). The models a competition expects are its model
registry's (``Competition.models``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines import competitions, config
from pipelines.common import runs as run_layout
from pipelines.common.io import read_json

log = logging.getLogger(__name__)

BLEND = run_layout.BLEND


@dataclass
class ModelRun:
    """One finished model run as read from its folder."""

    name: str
    path: Path
    metrics: dict
    params: dict = field(default_factory=dict)  # params.json
    record: dict = field(default_factory=dict)  # run.json
    stale_reasons: list[str] = field(default_factory=list)

    @property
    def is_blend(self) -> bool:
        return self.name == BLEND or self.name.startswith(BLEND + "_")

    @property
    def model(self) -> str:
        """The model the run belongs to (its folder's parent); a bag's is the model it bags."""
        return run_layout.split_key(self.name)[0]


def train_command(comp: str, source: str, key: str) -> str:
    """The make command that (re)creates one run (``key``: ``<model>/<run>``, or a model's name): its model, the
    options that differ from the defaults (ARGS=) and its seed, from what its folder recorded; RUN= when its name is
    not the one those options give; a bag: SEEDS= its members' seeds."""
    if key == BLEND or key.startswith(BLEND + "_"):
        return f"make blend COMP={comp} SOURCE={source}"
    model, _ = run_layout.split_key(key)
    plain = f"make train COMP={comp} SOURCE={source} MODEL={model}"
    try:
        registry = competitions.get(comp).models
        if "/" not in key or model not in registry:
            return plain
        return _run_command(comp, source, key, registry) or plain
    except Exception as exc:  # a registry or run folder that cannot be read: the plain form is all there is
        log.debug("%s: no command from its records (%s)", key, exc)
        return plain


def _run_command(comp: str, source: str, key: str, registry) -> str | None:
    head = f"make train COMP={comp} SOURCE={source}"
    model, name = run_layout.split_key(key)
    params = read_optional_json(run_layout.run_dir(comp, source, key) / "params.json")
    inner = params.get("params") if isinstance(params.get("params"), dict) else {}
    if inner.get("bag_of") in registry:  # a bag: its members' options and seeds again
        members = inner.get("members") or []
        first = _recorded_flags(comp, source, members[0], registry) if members else None
        seeds = [str(read_optional_json(run_layout.run_dir(comp, source, m) / "params.json").get("seed"))
                 for m in members]
        named = f" RUN={name.rsplit('-bag', 1)[0]}" if not name.startswith("bag-") else ""
        flags = first[1] if first else []
        return (f"{head} MODEL={inner['bag_of']}{named} SEEDS={','.join(seeds)}"
                + (f" ARGS='{' '.join(flags)}'" if flags else ""))
    recorded = _recorded_flags(comp, source, key, registry)
    if recorded is None:
        return None
    model, flags, seed, auto_name = recorded
    flags = flags + ([f"--seed {seed}"] if seed not in (None, config.SEED) else [])
    named = "" if name == auto_name else f" RUN={name}"
    return f"{head} MODEL={model}{named}" + (f" ARGS='{' '.join(flags)}'" if flags else "")


def _recorded_flags(comp: str, source: str, key: str, registry):
    """(model, the flags of the options that differ from the defaults, seed, the name those options give the run)
    of a run from its identity.json (else its train lock)."""
    from pipelines.common.options import option_infos

    model, _ = run_layout.split_key(key)
    run_dir = run_layout.run_dir(comp, source, key)
    ident = run_layout.recorded_identity(run_dir) or run_layout.lock_identity(run_dir, model)
    if model not in registry or ident is None or not isinstance(ident.get("options"), dict):
        return None
    known = competitions.get(comp)
    defaults = run_layout.default_identity(known, model, source)
    flags = []
    for part, declared in (("options", registry[model].options), ("train_options", known.train_options)):
        values, base = ident.get(part) or {}, defaults.get(part) or {}
        for info in option_infos(declared) if declared is not None else ():
            if info.name in values and values[info.name] != base.get(info.name):
                value = values[info.name]
                flag = (info.flag if value else info.negate) if info.type is bool else f"{info.flag} {value}"
                if flag:
                    flags.append(flag)
    return model, flags, ident.get("seed"), run_layout.default_run_name(ident, defaults)


def read_optional_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); treating it as absent", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def load_runs(models_dir: Path, comp: str, source: str) -> tuple[list[ModelRun], list[dict]]:
    """Finished runs (folders with a readable metrics.json) and problems: folders that hold an
    interrupted or unreadable run, each with the command that finishes or redoes it. Runs of the earlier
    one-run-per-model layout are moved under their model first (``runs.migrate_flat_runs``)."""
    runs, problems = [], []
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return runs, problems
    if models_dir.resolve() == config.models_dir(comp, source).resolve():
        try:
            run_layout.migrate_flat_runs(comp, source)
        except Exception as exc:  # e.g. a competition whose model registry cannot be read: report what is there
            log.warning("runs of the earlier one-run-per-model layout not moved (%s: %s); read where they are",
                        type(exc).__name__, exc)
    for key, folder in run_layout.run_folders(models_dir).items():
        metrics_path = folder / "metrics.json"
        command = train_command(comp, source, key)
        if not metrics_path.exists():
            done = sorted(folder.glob("folds/fold_*.npz"))
            if done:
                problems.append({"model": key, "problem": f"incomplete: {len(done)} fold(s) done, "
                                 "no metrics.json yet", "command": command + " (resumes at the next fold)"})
            else:
                log.info("skipping %s: no metrics.json", folder)
            continue
        try:
            metrics = read_json(metrics_path)
            if not isinstance(metrics, dict) or "log_loss" not in metrics:
                raise ValueError("no 'log_loss' field")
        except (OSError, ValueError) as exc:
            problems.append({"model": key, "problem": f"unreadable {metrics_path.name}: {exc}",
                             "command": command})
            log.warning("%s: %s is unreadable (%s); re-run `%s`", key, metrics_path, exc, command)
            continue
        runs.append(ModelRun(key, folder, metrics, read_optional_json(folder / "params.json"),
                             read_optional_json(folder / "run.json")))
    return runs, problems


def expected_models(comp: str) -> tuple[str, ...] | None:
    """The models of the competition's registry (``Competition.models``), or None (no expectations) when it
    cannot be read."""
    try:
        return tuple(str(m) for m in competitions.get(comp).models.names())
    except Exception as exc:  # any failure in a competition's declaration must not stop the report
        log.warning("could not read the expected model list of %s (its model registry: %s: %s); "
                    "not checking for missing models", comp, type(exc).__name__, exc)
        return None


def missing_models(comp: str, source: str, runs: list[ModelRun], expected: tuple[str, ...] | None,
                   problems: list[dict] = ()) -> list[dict]:
    """Expected models (and the blend) with no finished run, each with the command that trains it."""
    # a model is trained when any run of it is there (finished, or interrupted: a problem of its own)
    have = {r.model for r in runs} | {r.name for r in runs} | {run_layout.split_key(p["model"])[0] for p in problems}
    wanted = list(expected or ()) + [BLEND]
    return [{"model": m, "command": train_command(comp, source, m)} for m in dict.fromkeys(wanted) if m not in have]


def read_oof(run: ModelRun) -> pd.DataFrame | None:
    path = run.path / "oof.parquet"
    if not path.exists():
        log.warning("%s: no oof.parquet; left out of the curves and of the baselines", run.name)
        return None
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        log.warning("%s: %s is unreadable (%s); re-train it; left out of the curves", run.name, path, exc)
        return None


def display_path(path: Path) -> str:
    """A path relative to the project root when inside it."""
    try:
        return str(Path(path).resolve().relative_to(config.ROOT.resolve()))
    except ValueError:
        return str(path)
