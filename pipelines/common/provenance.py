"""Where a submission CSV came from: the record ``make blend`` writes beside every CSV, and the checks
``make submit`` makes on it before anything is uploaded.

    submissions/<comp>/<name>.csv           the leaderboard file
    submissions/<comp>/<name>.record.json   its record: the CSV's sha256, the data source (label, path,
                                            manifest hash), the blend and every model run it was built
                                            from (each with the input fingerprints of its run.json),
                                            the features fingerprint, rows filled for want of a
                                            prediction, and whether stale runs were allowed; the blend
                                            entry carries the blend's CV scores (its metrics.json when
                                            the CSV was written); after ``make submit``: "uploads" (every
                                            upload: Kaggle's ref, message, status, scores) and
                                            "leaderboard" (the latest score read back, and when)

The upload refuses a file without a record, one that differs from the file its record describes, one
built from the synthetic sample, from another source than ``--source``, or from runs that are stale
now (the comparison's rules, ``pipelines.common.staleness``), each in one line with the way out.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipelines import competitions, config
from pipelines.common.io import read_json, sha256_file, write_json
from pipelines.common.records import manifest_hash, now

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".record.json"
KIND = "pipelines-submission"
BLEND_SCORES = ("log_loss", "log_loss_mean", "log_loss_std", "accuracy", "auc", "n_folds", "n_train")


def record_path(csv_path: Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.parent / f"{csv_path.stem}{RECORD_SUFFIX}"


def run_entry(run_dir: Path) -> dict:
    """What the record keeps of one model run: its folder, finish time, inputs and data manifest hash."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    return {"path": _display(run_dir), "finished": record.get("finished"), "inputs": record.get("inputs") or {},
            "data_manifest_sha256": record.get("data_manifest_sha256")}


def write_record(csv_path: Path, comp: str, source: str, runs: dict[str, dict] | None = None,
                 blend: dict | None = None, filled: dict | None = None, stale_allowed: dict | None = None,
                 options: dict | None = None) -> Path:
    """Write ``<name>.record.json`` beside ``csv_path`` (atomically); returns its path."""
    csv_path = Path(csv_path)
    label = config.source_label(source)
    manifest = config.source_dir(comp, source) / "manifest.json"
    source_path = None
    if manifest.exists():
        try:
            source_path = read_json(manifest).get("source_path")
        except (OSError, ValueError):
            source_path = None
    runs = runs or {}
    blend = blend_entry(blend, comp, source)
    features = {}
    for entry in runs.values():
        features.update(entry.get("inputs") or {})
    record = {
        "kind": KIND, "comp": comp, "competition": competitions.get(comp).slug, "file": csv_path.name,
        "sha256": sha256_file(csv_path), "source": label, "source_path": source_path,
        "data_manifest_sha256": manifest_hash(comp, source), "blend": blend, "runs": runs,
        "features": features, "filled_rows": filled or {"count": 0, "ids": []},
        "allow_stale": bool(stale_allowed), "stale_models": stale_allowed or {}, "options": options or {},
        "written": now(),
    }
    return write_json(record_path(csv_path), record)


def blend_entry(blend: dict | None, comp: str, source: str) -> dict | None:
    """The record's blend entry with the blend's CV scores (from its metrics.json, now, when the CSV is
    written: a later re-run of the blend must not change what this file was built from) and its run name
    (its folder under the models folder); what the caller gave is kept."""
    if not blend or not blend.get("path"):
        return blend
    out = dict(blend)
    folder = Path(blend["path"])
    folder = folder if folder.is_absolute() else config.ROOT / folder
    try:
        out.setdefault("run", folder.resolve().relative_to(config.models_dir(comp, source).resolve()).as_posix())
    except ValueError:
        out.setdefault("run", folder.name)
    metrics_path = folder / "metrics.json"
    try:
        metrics = read_json(metrics_path) if metrics_path.exists() else {}
    except (OSError, ValueError) as exc:
        log.warning("the blend's %s is unreadable (%s): its CV score is not recorded", metrics_path, exc)
        metrics = {}
    for key in BLEND_SCORES:
        if isinstance(metrics, dict) and metrics.get(key) is not None:
            out.setdefault(key, metrics[key])
    return out


def record_submission(csv_path: Path, result: dict) -> Path | None:
    """Add one upload of ``csv_path`` (what ``make submit`` got back: ref, message, status, scores) to its
    record, atomically, keeping every other field: appended to "uploads", and, when Kaggle scored it, as
    "leaderboard" with the time the score was read back. Returns the record's path, or None when the file
    has no record of its own (none, unreadable, or describing another file: uploaded with --force-upload)."""
    csv_path = Path(csv_path)
    rec_path = record_path(csv_path)
    if not rec_path.exists():
        return None
    try:
        record = read_json(rec_path)
    except (OSError, ValueError) as exc:
        log.warning("the record %s is unreadable (%s): the leaderboard score is not recorded in it", rec_path, exc)
        return None
    if not isinstance(record, dict) or record.get("kind") != KIND or record.get("sha256") != sha256_file(csv_path):
        log.warning("%s does not describe %s (not written by `make blend` for this file): the leaderboard score "
                    "is not recorded in it", rec_path, csv_path.name)
        return None
    entry = {key: result.get(key) for key in ("ref", "message", "status", "public_score", "private_score",
                                               "submitted", "competition")}
    scored = result.get("public_score") is not None
    entry["read_back"] = now() if scored else None
    uploads = record.get("uploads") if isinstance(record.get("uploads"), list) else []
    record["uploads"] = uploads + [entry]
    if scored:
        record["leaderboard"] = entry
    return write_json(rec_path, record)


def _display(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(config.ROOT.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def stale_record_runs(comp: str, record: dict) -> dict[str, list[str]]:
    """{run: reasons} of the record's runs whose inputs or data changed since they were trained, and of
    those already stale when the blend was made (it was made with --allow-stale)."""
    from pipelines.common.staleness import changed_inputs

    current_manifest = manifest_hash(comp, record.get("source") or "sample")
    found = {name: list(reasons) for name, reasons in (record.get("stale_models") or {}).items()}
    for name, entry in (record.get("runs") or {}).items():
        reasons = changed_inputs(entry.get("inputs") or {})
        recorded = entry.get("data_manifest_sha256")
        if recorded and recorded != current_manifest:
            reasons.append("data manifest changed since training")
        if reasons:
            found.setdefault(name, []).extend(r for r in reasons if r not in found.get(name, []))
    return found


def upload_problem(comp: str, csv_path: Path, source: str, allow_stale: bool = False) -> str | None:
    """Why ``csv_path`` must not be uploaded as a submission for ``source`` (one line), or None."""
    csv_path = Path(csv_path)
    rec_path = record_path(csv_path)
    if not rec_path.exists():
        return (f"{csv_path} has no record ({rec_path.name}) saying which data and models it came from: only "
                f"files written by `make blend` have one")
    try:
        record = read_json(rec_path)
    except (OSError, ValueError) as exc:
        return f"the record {rec_path} of {csv_path.name} is unreadable ({exc})"
    if not isinstance(record, dict) or record.get("kind") != KIND:
        return f"{rec_path} is not a submission record written by `make blend`"
    if record.get("sha256") != sha256_file(csv_path):
        return (f"{csv_path} is not the file its record {rec_path.name} describes (edited or replaced since "
                f"`make blend` wrote it)")
    if record.get("source") == "sample":
        return (f"{csv_path} was built from the synthetic sample (its record {rec_path.name} says so): Kaggle "
                f"cannot score it; build one from real data (make blend SOURCE=kaggle or SOURCE=<path>)")
    label = config.source_label(source)
    if record.get("source") != label:
        shown = record.get("source_path") or record.get("source")
        return (f"{csv_path} was built from data source {record.get('source')} ({shown}), not {label}: pass "
                f"SOURCE={shown} (make submit ... SOURCE=...)")
    if not allow_stale:
        stale = stale_record_runs(comp, record)
        if stale:
            listed = "; ".join(f"{name} ({', '.join(reasons)})" for name, reasons in stale.items())
            retrain = ", ".join(f"`make train COMP={comp} SOURCE={label} MODEL={name}`" for name in stale
                                if name != "blend")
            return (f"{csv_path} was built from stale runs: {listed}; re-train ({retrain}), run `make blend "
                    f"COMP={comp} SOURCE={label}` and submit the new file, or pass --allow-stale")
    return None
