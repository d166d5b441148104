"""When a run no longer matches what it was made from: the comparison's rules, shared by the blend (which
refuses stale runs) and the submit check (``pipelines.common.provenance``).

A model is STALE when a file it was trained from (run.json ``inputs``) changed or vanished since, when the
data manifest changed, or when it was made in another Python environment (run.json ``environment``: a
package version or Python differs from this process's); a blend also when one of its models was re-trained
after it, is gone, or is stale itself.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from pathlib import Path

from pipelines import config
from pipelines.common.compare_runs import ModelRun, load_runs
from pipelines.common.io import sha256_file
from pipelines.common.records import environment as records_environment
from pipelines.common.records import manifest_hash

log = logging.getLogger(__name__)


def _resolve_input(key: str) -> Path:
    p = Path(key)
    return p if p.is_absolute() else config.ROOT / p


def some(names: list[str], most: int = 3) -> str:
    """The first few names, and how many more."""
    return ", ".join(names[:most]) + (f" (+{len(names) - most} more)" if len(names) > most else "")


def changed_inputs(inputs: dict) -> list[str]:
    """Why run.json ``inputs`` ({path: sha256 at training}) no longer match the files: at most one
    reason per kind (changed, gone, new), so a blend of many models' files stays readable."""
    changed, gone, new = [], [], []
    for key, recorded in sorted((inputs or {}).items()):
        path = _resolve_input(key)
        if not path.exists():
            if recorded is not None:
                gone.append(key)
        elif path.is_dir():
            log.warning("cannot check input %s: it is a folder, not a file", key)
        elif recorded is None:
            new.append(key)
        elif sha256_file(path) != recorded:
            changed.append(key)
    reasons = []
    for keys, what in ((changed, "changed since training"), (gone, "no longer exist"),
                       (new, "did not exist at training time")):
        if keys:
            plural = len(keys) > 1
            what = what.replace("no longer exist", "no longer exists") if not plural else what
            reasons.append(f"input{'s' if plural else ''} {some(keys)} {what}")
    return reasons


def blend_members(params_json: dict) -> dict[str, float | None]:
    """{model: weight or None} of a blend's params.json (weights as a dict, or models and weights lists)."""
    found: dict[str, float | None] = {}
    for scope in (params_json.get("params") or {}, params_json):
        if not isinstance(scope, dict):
            continue
        weights, models = scope.get("weights"), scope.get("models")
        if isinstance(weights, dict):
            found = {str(k): _as_float(v) for k, v in weights.items()}
        elif isinstance(models, dict):
            found = {str(k): _as_float(v) for k, v in models.items()}
        elif isinstance(models, (list, tuple)):
            ws = weights if isinstance(weights, (list, tuple)) and len(weights) == len(models) else [None] * len(models)
            found = {str(m): _as_float(w) for m, w in zip(models, ws)}
        if found:
            break
    return found


def _as_float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def parse_time(value) -> dt.datetime | None:
    """A recorded ISO time (UTC when it names no zone), or None."""
    try:
        t = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def short_time(value) -> str:
    """A recorded time as ``YYYY-MM-DD HH:MM`` (UTC), or "?"."""
    t = parse_time(value)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if t else "?"


@functools.lru_cache(maxsize=1)
def current_environment() -> dict:
    """The environment this process runs in (records.environment), read once."""
    return records_environment()


def environment_reasons(recorded: dict | None, current: dict) -> list[str]:
    """Why a run was made in another Python environment than this one (its packages or Python
    differ), or nothing; a run recorded before environments were is not judged."""
    if not isinstance(recorded, dict) or not recorded.get("packages"):
        return []
    if recorded.get("packages_sha256") == current.get("packages_sha256") and \
            recorded.get("python") == current.get("python"):
        return []
    then, now_ = recorded.get("packages") or {}, current.get("packages") or {}
    diffs = [f"{n} {then.get(n, 'absent')} (now {now_.get(n, 'absent')})"
             for n in sorted(set(then) | set(now_)) if then.get(n) != now_.get(n)]
    if recorded.get("python") != current.get("python"):
        diffs.insert(0, f"python {recorded.get('python')} (now {current.get('python')})")
    if not diffs:
        return []
    lock = current.get("lock") or {}
    fix = "; install the lock (`make setup`) and re-train" if lock.get("file") and not lock.get("matches") else ""
    return [f"made in another environment: {some(diffs)}{fix}"]


def stale_reasons(run: ModelRun, runs_by_name: dict[str, ModelRun], current_manifest: str | None,
                  environment: bool = True) -> list[str]:
    """Why a run no longer matches its inputs: changed input files, a changed data manifest, and for a
    blend, models re-trained after it, stale or gone; with ``environment``, also a run made in another
    Python environment."""
    reasons = changed_inputs(run.record.get("inputs") or {})
    if environment:
        reasons += environment_reasons(run.record.get("environment"), current_environment())
    recorded_manifest = run.record.get("data_manifest_sha256")
    if recorded_manifest and recorded_manifest != current_manifest:
        reasons.append("data manifest changed since training" if current_manifest else
                       "data manifest no longer exists")
    if run.is_blend:
        finished = parse_time(run.record.get("finished"))
        gone, newer, stale = [], [], []
        for member in blend_members(run.params):
            other = runs_by_name.get(member)
            member_finished = parse_time(other.record.get("finished")) if other else None
            if other is None:
                gone.append(member)
            elif finished and member_finished and member_finished > finished:
                newer.append(f"{member} ({short_time(other.record.get('finished'))})")
            elif other.stale_reasons:
                stale.append(member)
        # One reason per kind: a blend of many models would otherwise list the same thing many times.
        if newer:
            reasons.append(f"re-trained after the blend ({short_time(run.record.get('finished'))}): "
                           + ", ".join(newer))
        if gone:
            reasons.append("no longer trained: " + ", ".join(gone))
        if stale:
            reasons.append("built on stale model(s): " + ", ".join(stale))
    return list(dict.fromkeys(reasons))


def stale_models(comp: str, source: str, names=None, environment: bool = True) -> dict[str, list[str]]:
    """{model: why it is stale} of the finished runs under models/<comp>/<source>/ (only ``names`` when
    given), by the same rules as the report: for the blend and submit stages, which refuse stale runs.
    ``environment=False`` leaves out "made in another environment": a package upgrade does not make
    predictions wrong, so the blend warns about it instead of refusing."""
    runs, _ = load_runs(config.models_dir(comp, source), comp, source)
    by_name = {r.name: r for r in runs}
    current_manifest = manifest_hash(comp, source)
    found = {}
    for run in sorted(runs, key=lambda r: r.is_blend):  # members first, as in build_comparison
        run.stale_reasons = stale_reasons(run, by_name, current_manifest, environment)
        if run.stale_reasons and (names is None or run.name in names):
            found[run.name] = run.stale_reasons
    return found
