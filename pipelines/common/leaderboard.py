"""CV against the leaderboard: every scored submission of a competition and source, its public (and, once
the competition has closed, private) leaderboard score beside the CV score of the blend it was made from.

The scores come from the submissions' records (``pipelines.common.provenance``):

    submissions/<comp>/<name>.record.json   "blend": the blend run and its CV scores when the CSV was written;
                                            "leaderboard": the score ``make submit`` read back, and when;
                                            "uploads": every upload of the file
    submissions/<comp>/<name>.kaggle.json   what ``make submit`` got back (read for submissions recorded
                                            before the record held the score)

``make compare`` (``pipelines.common.compare``) shows the rows as the "CV vs leaderboard" section of its
report, and once there are ``MIN_POINTS`` submissions with both scores a CV-vs-LB scatter plot.
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipelines import config
from pipelines.common.compare_report import _finite
from pipelines.common.io import read_json

log = logging.getLogger(__name__)

MIN_POINTS = 2  # a scatter of one point says nothing about how CV and leaderboard relate


def _read(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); left out of the CV vs leaderboard table", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _resolve(path: str | None) -> Path | None:
    if not path:
        return None
    path = Path(path)
    return path if path.is_absolute() else config.ROOT / path


def record_files(comp: str) -> list[Path]:
    """The submission records of ``comp``: those in its submissions folder, and those beside a CSV
    uploaded from elsewhere that a ``<name>.kaggle.json`` there names."""
    from pipelines.common.provenance import RECORD_SUFFIX, record_path

    folder = config.submissions_dir(comp)
    if not folder.is_dir():
        return []
    found = {p.resolve(): p for p in folder.glob(f"*{RECORD_SUFFIX}")}
    for result_path in folder.glob("*.kaggle.json"):
        result = _read(result_path) or {}
        if result.get("file"):
            rec = record_path(_resolve(result["file"]))
            if rec.exists():
                found.setdefault(rec.resolve(), rec)
    return sorted(found.values(), key=lambda p: p.name)


def _kaggle_result(comp: str, record_file: Path, record: dict) -> dict | None:
    """The ``<name>.kaggle.json`` of the record's CSV, when it names that CSV and has a public score."""
    from pipelines.common.provenance import RECORD_SUFFIX

    stem = record_file.name.removesuffix(RECORD_SUFFIX)
    path = config.submissions_dir(comp) / f"{stem}.kaggle.json"
    result = _read(path) if path.exists() else None
    if not result or _finite(result.get("public_score")) is None:
        return None
    if Path(str(result.get("file", ""))).name != (record.get("file") or f"{stem}.csv"):
        return None
    return {"public_score": result.get("public_score"), "private_score": result.get("private_score"),
            "ref": result.get("ref"), "message": result.get("message"), "submitted": result.get("submitted"),
            "read_back": None}


def blend_cv(record: dict) -> tuple[float | None, str]:
    """The CV log loss of the blend a submission was made from, and where it comes from: the record
    (written with the CSV), or the blend run's metrics.json when the run is still the one the record
    names (same finish time); else None and why."""
    blend = record.get("blend") or {}
    recorded = _finite(blend.get("log_loss"))
    if recorded is not None:
        return recorded, "record"
    folder = _resolve(blend.get("path"))
    if folder is None:
        return None, "the record names no blend run"
    metrics_path, run_path = folder / "metrics.json", folder / "run.json"
    if not metrics_path.exists():
        return None, "the blend run is gone"
    run = _read(run_path) if run_path.exists() else {}
    if blend.get("finished") and (run or {}).get("finished") != blend.get("finished"):
        return None, "the blend was re-run since"
    return _finite((_read(metrics_path) or {}).get("log_loss")), "blend run"


def submission_rows(comp: str, source: str) -> list[dict]:
    """One row per submission of ``comp`` built from ``source`` that has a public leaderboard score:
    the score, the blend's CV log loss beside it, and their difference; oldest read-back first."""
    from pipelines.common.provenance import KIND, RECORD_SUFFIX

    label = config.source_label(source)
    rows = []
    for path in record_files(comp):
        record = _read(path)
        if not record or record.get("kind") != KIND or record.get("source") != label:
            continue
        if record.get("comp") not in (None, comp):
            continue
        scored = record.get("leaderboard") or _kaggle_result(comp, path, record)
        public = _finite((scored or {}).get("public_score"))
        if public is None:
            continue
        cv, cv_from = blend_cv(record)
        blend = record.get("blend") or {}
        rows.append({
            "submission": path.name.removesuffix(RECORD_SUFFIX),
            "file": record.get("file"),
            "public_score": public,
            "private_score": _finite(scored.get("private_score")),
            "cv_log_loss": cv,
            "cv_from": cv_from,
            "lb_minus_cv": public - cv if cv is not None else None,
            "blend": blend.get("run") or blend.get("path"),
            "method": blend.get("method"),
            "ref": scored.get("ref"),
            "submitted": scored.get("submitted"),
            "read_back": scored.get("read_back"),
            "record": str(path),
        })
    rows.sort(key=lambda r: (str(r["read_back"] or r["submitted"] or ""), r["submission"]))
    return rows


def plottable(rows: list[dict]) -> list[dict]:
    """The rows with both a CV and a public score (the points of the CV-vs-LB plot)."""
    return [r for r in rows if r.get("cv_log_loss") is not None and r.get("public_score") is not None]


def plot(points: list[dict], path: Path, title: str = "") -> Path:
    from pipelines.common import plots

    return plots.plot_cv_vs_lb(points, path, title=title)


def _fmt(v, digits: int = 5) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the CV vs leaderboard table."""
    headers = ["submission", "blend", "CV log loss", "public LB", "LB − CV", "private LB", "read back"]
    cells = []
    for r in rows:
        cv = _fmt(r["cv_log_loss"]) if r["cv_log_loss"] is not None else f"— ({r['cv_from']})"
        blend = str(r["blend"] or "?") + (f" ({r['method']})" if r.get("method") else "")
        diff = "—" if r["lb_minus_cv"] is None else f"{r['lb_minus_cv']:+.5f}"
        when = r["read_back"] or (f"{r['submitted']} (submitted)" if r.get("submitted") else "?")
        cells.append([r["submission"], blend, cv, _fmt(r["public_score"]), diff, _fmt(r["private_score"]),
                      str(when)])
    return headers, cells
