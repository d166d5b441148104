"""Reading a competition's model runs for the comparison, the blend and the submit check: what is there.

    models/<comp>/<source>/<run>/   metrics.json, params.json, run.json, oof.parquet (the CV engine's format)

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
from pipelines.common.io import read_json

log = logging.getLogger(__name__)

BLEND = "blend"


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


def train_command(comp: str, source: str, model: str) -> str:
    """The make command that (re)creates one run: a model's own run by its name; a named run (RUN=), a seed's
    run or a bag (SEEDS=) from what its folder recorded (the options that differ from the defaults)."""
    if model == BLEND or model.startswith(BLEND + "_"):
        return f"make blend COMP={comp} SOURCE={source}"
    plain = f"make train COMP={comp} SOURCE={source} MODEL={model}"
    try:
        registry = competitions.get(comp).models
        if model in registry:
            return plain
        return _run_command(comp, source, model, registry) or plain
    except Exception as exc:  # a registry or run folder that cannot be read: the plain form is all there is
        log.debug("%s: no command from its records (%s)", model, exc)
        return plain


def _run_command(comp: str, source: str, run: str, registry) -> str | None:
    head = f"make train COMP={comp} SOURCE={source}"
    params = read_optional_json(config.model_dir(comp, source, run) / "params.json")
    inner = params.get("params") if isinstance(params.get("params"), dict) else {}
    if inner.get("bag_of") in registry:  # a bag: its members' options and seeds again
        members = inner.get("members") or []
        first = _recorded_flags(comp, source, members[0], registry) if members else None
        seeds = [str(read_optional_json(config.model_dir(comp, source, m) / "params.json").get("seed"))
                 for m in members]
        base = run.rsplit("-bag", 1)[0]
        named = f" RUN={base}" if base != inner["bag_of"] else ""
        flags = first[1] if first else []
        return (f"{head} MODEL={inner['bag_of']}{named} SEEDS={','.join(seeds)}"
                + (f" ARGS='{' '.join(flags)}'" if flags else ""))
    recorded = _recorded_flags(comp, source, run, registry)
    if recorded is None:
        return None
    model, flags, seed = recorded
    flags = flags + ([f"--seed {seed}"] if seed not in (None, config.SEED) else [])
    return f"{head} MODEL={model} RUN={run}" + (f" ARGS='{' '.join(flags)}'" if flags else "")


def _recorded_flags(comp: str, source: str, run: str, registry):
    """(model, the flags of the options that differ from the defaults, seed) of a run from its train lock."""
    from pipelines.common.models import resolve_options
    from pipelines.common.options import option_infos

    run_dir = config.model_dir(comp, source, run)
    model = read_optional_json(run_dir / "params.json").get("model")
    used = read_optional_json(run_dir / "train.lock.json").get("params_used") or {}
    if model not in registry or not isinstance(used.get("options"), dict):
        return None
    spec = registry[model]
    defaults = resolve_options(spec, {}, competitions.get(comp).profile(config.source_label(source), model))
    flags = []
    for info in option_infos(spec.options):
        if info.name not in used["options"]:
            continue
        value = used["options"][info.name]
        if value != getattr(defaults, info.name):
            flag = (info.flag if value else info.negate) if info.type is bool else f"{info.flag} {value}"
            if flag:
                flags.append(flag)
    return model, flags, used.get("seed")


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
    interrupted or unreadable run, each with the command that finishes or redoes it."""
    runs, problems = [], []
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return runs, problems
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        metrics_path = folder / "metrics.json"
        command = train_command(comp, source, folder.name)
        if not metrics_path.exists():
            done = sorted(folder.glob("folds/fold_*.npz"))
            if done:
                problems.append({"model": folder.name, "problem": f"incomplete: {len(done)} fold(s) done, "
                                 "no metrics.json yet", "command": command + " (resumes at the next fold)"})
            else:
                log.info("skipping %s: no metrics.json", folder)
            continue
        try:
            metrics = read_json(metrics_path)
            if not isinstance(metrics, dict) or "log_loss" not in metrics:
                raise ValueError("no 'log_loss' field")
        except (OSError, ValueError) as exc:
            problems.append({"model": folder.name, "problem": f"unreadable {metrics_path.name}: {exc}",
                             "command": command})
            log.warning("%s: %s is unreadable (%s); re-run `%s`", folder.name, metrics_path, exc, command)
            continue
        runs.append(ModelRun(folder.name, folder, metrics, read_optional_json(folder / "params.json"),
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
    # a model is trained when any run records it (a named run, a seed's run, a bag, tuned-<study>)
    have = {r.name for r in runs} | {r.params.get("model") for r in runs} | {p["model"] for p in problems}
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
