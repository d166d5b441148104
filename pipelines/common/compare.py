"""Compare stage: one report of every trained model and blend of a competition and source.

Reads every run under ``models/<comp>/<source>/`` (the CV engine's metrics.json, params.json,
run.json, oof.parquet, history.json) and writes into ``reports/<comp>/<source>/``:

    comparison.md    table sorted by out-of-fold log loss, with the trivial baselines as reference rows,
                     what needs attention (stale, missing, incomplete runs, each with the command that
                     fixes it), each scored submission's leaderboard score beside its blend's CV score
                     ("CV vs leaderboard") and the library versions the runs used
    comparison.json  the same, machine-readable, with the data of the figures (calibration bins, the
                     correlation matrix, the top features by gain of every LightGBM run)
    scores.png       OOF log loss per model, fold spread as error bars, baselines as vertical lines
    roc.png          (binary) ROC curves of every model from the OOF predictions
    confusion.png    (multi-class) confusion matrices of the best models and the blend
    calibration.png  reliability curves of the best runs and the blend (quantile bins; binary: the positive
                     class, multi-class: every class one-vs-rest, pooled), their predictions' histogram below
    oof_correlation.png   Pearson correlation between the runs' OOF predictions, rows aligned on the ids
    importance_<run>.png  top features by gain of a run whose fold models are LightGBM boosters
                     (folds/fold_<k>/model.txt), mean over the folds with their std as error bars
    cv_vs_lb.png     public leaderboard score against the blend's CV log loss, once two submissions have one
                     (``pipelines.common.leaderboard``)
    learning_curve_<model>.png   neural models' per-fold learning curves

The parts, each in its module:

    pipelines.common.compare_runs     reading the runs (finished, interrupted, unreadable), the expected models
                                      (the competition's model registry) and the command that makes each run
    pipelines.common.staleness        when a run is STALE (changed or vanished inputs, a changed data manifest,
                                      another Python environment; a blend also when a member was re-trained
                                      after it, is gone or stale)
    pipelines.common.compare_report   the report as plain data: rows, baselines, problems, library versions
    pipelines.common.leaderboard      the submissions' leaderboard scores beside their blends' CV scores
    pipelines.common.compare          (this module) the stage, the Markdown and terminal tables and the figures

The task (binary or multi-class, prediction and label columns) is the competition's ``Task``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import competitions, config
from pipelines.common.compare_report import (PARAMS_WIDTH, build_comparison, params_summary,  # noqa: F401
                                             reference_rows, version_summary)
from pipelines.common.compare_runs import (BLEND, ModelRun, expected_models, load_runs,  # noqa: F401
                                           missing_models, read_oof, read_optional_json, train_command)
from pipelines.common.io import write_json, write_text
from pipelines.common.log import StageError
from pipelines.common.staleness import (blend_members, changed_inputs, current_environment,  # noqa: F401
                                        environment_reasons, short_time, stale_models, stale_reasons)
from pipelines.common.task import Task

log = logging.getLogger(__name__)

MAX_CONFUSION_PANELS = 6
MAX_CALIBRATION_LINES = 6   # the best runs and the blend; more lines would hide each other
MAX_CORRELATION_RUNS = 20   # the best runs and the blend, one row and column each
CALIBRATION_BINS = 10       # quantile bins: each holds about the same number of predictions
HISTOGRAM_BINS = 20         # the histogram below the calibration curves: equal-width probability bins
TOP_FEATURES = 30
# Figures this module writes under names of its own: an old one not written this time is removed, since
# it would describe runs or submissions that are gone.
OWN_FIGURES = ("calibration.png", "oof_correlation.png", "cv_vs_lb.png")
OWN_FIGURE_PATTERNS = ("learning_curve_*.png", "importance_*.png")


# --- figures -------------------------------------------------------------------------------------------------

def make_figures(report: dict, runs: list[ModelRun], oofs: dict[str, pd.DataFrame], out_dir: Path,
                 task: Task) -> list[str]:
    """Write the report's PNGs into out_dir; returns their file names. A failing figure is logged, not fatal."""
    from pipelines.common import plots

    out_dir = Path(out_dir)
    title = f"{report['comp']} ({report['source']})"
    written = []

    def attempt(name, fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
            written.append(name)
        except Exception as exc:  # a figure must never cost the table
            log.warning("figure %s failed: %s: %s", name, type(exc).__name__, exc)

    model_rows = [r for r in report["rows"] if r["kind"] != "reference" and r["log_loss"] is not None]
    bars = [{"model": r["model"], "log_loss": r["log_loss"], "std": r["log_loss_std"], "kind": r["kind"],
             "stale": r["stale"]} for r in model_rows]
    references = [{"label": r["label"], "log_loss": r["log_loss"]} for r in report["rows"] if r["kind"] == "reference"]
    attempt("scores.png", plots.plot_model_scores, bars, references, out_dir / "scores.png",
            title=f"{title}: out-of-fold log loss")

    ranked = [r["model"] for r in model_rows if r["model"] in oofs]
    if task.kind == "binary" and ranked:
        attempt("roc.png", plots.plot_roc_curves, [roc_points(name, oofs[name], task) for name in ranked],
                out_dir / "roc.png", title=f"{title}: ROC curves (out-of-fold)")
    elif ranked:
        chosen = ranked[:MAX_CONFUSION_PANELS]
        blends = [n for n in ranked if n == BLEND]
        if blends and blends[0] not in chosen:
            chosen[-1] = blends[0]
        panels = [confusion_panel(name, oofs[name], task) for name in chosen]
        attempt("confusion.png", plots.plot_confusion_matrices, panels, list(task.pred_columns), out_dir / "confusion.png",
                title=f"{title}: confusion matrices (out-of-fold, rows = true class)")

    calibration = report.get("calibration")
    if calibration and calibration.get("curves"):
        attempt("calibration.png", plots.plot_calibration_curves, calibration["curves"], out_dir / "calibration.png",
                title=f"{title}: calibration (out-of-fold, {calibration['what']})")
    correlation = report.get("oof_correlation")
    if correlation and len(correlation.get("runs") or ()) >= 2:
        attempt("oof_correlation.png", plots.plot_correlation_heatmap, correlation["runs"], correlation["matrix"],
                out_dir / "oof_correlation.png",
                title=f"{title}: correlation of the OOF predictions\n({correlation['what']}, "
                      f"{correlation['n_rows']} rows)")
    for name, table in (report.get("feature_importance") or {}).items():
        file_name = importance_file_name(name)
        attempt(file_name, plots.plot_feature_importance, table["features"], out_dir / file_name,
                title=f"{title}: {name}, top {len(table['features'])} features by gain "
                      f"(mean over {table['n_folds']} fold model(s))")
    from pipelines.common import leaderboard

    points = leaderboard.plottable(report.get("leaderboard") or [])
    if len(points) >= leaderboard.MIN_POINTS:
        attempt("cv_vs_lb.png", leaderboard.plot, points, out_dir / "cv_vs_lb.png",
                title=f"{title}: CV against the public leaderboard")

    for run in runs:
        history_path = run.path / "history.json"
        if history_path.exists():
            histories = read_optional_json(history_path)
            if any(histories.values()):
                name = figure_file_name("learning_curve", run.name)
                attempt(name, plots.plot_learning_curves, histories, out_dir / name,
                        title=f"{title}: {run.name} learning curves")
    return written


def roc_points(model: str, oof: pd.DataFrame, task: Task, n_points: int = 201) -> dict:
    """ROC curve of a binary model's OOF predictions, resampled onto a fixed FPR grid (small to plot)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = oof[task.label_column].to_numpy()
    p = oof[task.pred_columns[0]].to_numpy()
    fpr, tpr, _ = roc_curve(y, p)
    grid = np.linspace(0, 1, n_points)
    return {"model": model, "fpr": grid, "tpr": np.interp(grid, fpr, tpr), "auc": float(roc_auc_score(y, p))}


def confusion_panel(model: str, oof: pd.DataFrame, task: Task) -> dict:
    """A multi-class model's OOF confusion matrix (rows: the true class) and its accuracy."""
    from sklearn.metrics import confusion_matrix

    class_names = list(task.pred_columns)
    y = oof[task.label_column].to_numpy().astype(np.int64)
    pred = oof[class_names].to_numpy().argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(len(class_names))))
    return {"model": model, "matrix": cm, "subtitle": f"accuracy {np.trace(cm) / max(cm.sum(), 1):.3f}"}


def _with_blend(ranked: list[str], blends: set[str], cap: int) -> list[str]:
    """The first ``cap`` of ``ranked`` (best first), the best blend among them even when it ranks lower."""
    chosen = ranked[:cap]
    best_blend = next((n for n in ranked if n in blends), None)
    if best_blend is not None and best_blend not in chosen:
        chosen[-1] = best_blend
    return chosen


def calibration_target(oof: pd.DataFrame, task: Task) -> tuple[np.ndarray, np.ndarray, str]:
    """(0/1 outcomes, predicted probabilities, what they are): a binary task's positive column; a
    multi-class task's every class one-vs-rest, pooled (each row gives one pair per class)."""
    y = oof[task.label_column].to_numpy().astype(np.int64)
    if task.kind == "binary":
        return (y == 1).astype(np.float64), oof[task.pred_columns[0]].to_numpy(np.float64), \
            f"positive class {task.pred_columns[0]}"
    probs = oof[list(task.pred_columns)].to_numpy(np.float64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return onehot.ravel(), probs.ravel(), "every class one-vs-rest, pooled"


def calibration_points(model: str, oof: pd.DataFrame, task: Task, n_bins: int = CALIBRATION_BINS,
                       kind: str = "model") -> dict:
    """A run's reliability curve (sklearn's calibration_curve, quantile bins), its expected calibration
    error (the bins' |observed - predicted| weighted by their size) and the share of its predictions in
    each of HISTOGRAM_BINS equal-width probability bins."""
    from sklearn.calibration import calibration_curve

    y, p, _ = calibration_target(oof, task)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    # The bins' sizes, found as calibration_curve finds its bins.
    edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    sizes = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    sizes = sizes[sizes > 0]
    gaps = np.abs(prob_true - prob_pred)
    ece = float(np.average(gaps, weights=sizes)) if len(sizes) == len(gaps) else float(gaps.mean())
    counts, hist_edges = np.histogram(p, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {"model": model, "kind": kind, "prob_pred": prob_pred.tolist(), "prob_true": prob_true.tolist(),
            "gap": ece, "max_gap": float(gaps.max()) if len(gaps) else 0.0, "n": int(len(p)),
            "hist_edges": hist_edges.tolist(), "hist_fraction": (counts / max(len(p), 1)).tolist()}


def calibration_report(ranked: list[str], blends: set[str], oofs: dict[str, pd.DataFrame], task: Task) -> dict:
    chosen = _with_blend(ranked, blends, MAX_CALIBRATION_LINES)
    what = calibration_target(oofs[chosen[0]].head(1), task)[2] if chosen else ""
    return {"what": what, "bins": CALIBRATION_BINS, "strategy": "quantile",
            "curves": [calibration_points(n, oofs[n], task, kind="blend" if n in blends else "model")
                       for n in chosen]}


def _ids_key(ids: np.ndarray) -> tuple:
    import hashlib

    hashed = pd.util.hash_array(np.sort(np.asarray(ids).astype(str)))
    return len(ids), hashlib.sha256(hashed.tobytes()).hexdigest()


def oof_correlation(ranked: list[str], blends: set[str], oofs: dict[str, pd.DataFrame], task: Task,
                    cap: int = MAX_CORRELATION_RUNS) -> dict | None:
    """Pearson correlation between the runs' OOF predictions, rows aligned on the id column: the positive
    class's probability (binary) or the flattened class-probability matrix (multi-class). Only runs
    validated on the same ids as most runs are compared (the others are listed in ``left_out``)."""
    from pipelines.common.task import ID

    usable = [n for n in ranked if ID in oofs[n].columns]
    if len(usable) < 2:
        return None
    keys = {n: _ids_key(oofs[n][ID].to_numpy()) for n in usable}
    common = pd.Series(list(keys.values())).value_counts().index[0]
    same = [n for n in usable if keys[n] == common]
    left_out = {n: "validated on other rows than the others" for n in usable if keys[n] != common}
    chosen = _with_blend(same, blends, cap)
    left_out.update({n: f"beyond the best {cap}" for n in same if n not in chosen})
    columns = list(task.pred_columns)
    vectors = [oofs[n].sort_values(ID, kind="stable")[columns].to_numpy(np.float64).ravel() for n in chosen]
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(np.vstack(vectors))
    what = (f"probability of {columns[0]}" if task.kind == "binary"
            else f"flattened class probabilities ({len(columns)} per row)")
    return {"runs": chosen, "matrix": [[None if not np.isfinite(v) else float(v) for v in row] for row in matrix],
            "n_rows": int(common[0]), "what": what, "left_out": left_out}


def _is_lightgbm_model(path: Path) -> bool:
    """A LightGBM text model (Booster.save_model) starts with 'tree' and names its format version."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return head.split(b"\n", 1)[0].strip() == b"tree" and b"version=v" in head


def lightgbm_importance(run_dir: Path, top: int = TOP_FEATURES) -> dict | None:
    """The top features by gain of a run whose fold folders hold LightGBM models (folds/fold_<k>/model.txt):
    each feature's total gain in every fold model, its mean and std over the folds, and its share of the
    mean total gain. None when the run has no LightGBM fold model."""
    files = [f for f in Path(run_dir).glob("folds/fold_*/model.txt") if _is_lightgbm_model(f)]
    if not files:
        return None
    import lightgbm

    def fold_number(path: Path):
        suffix = path.parent.name.removeprefix("fold_")
        return (0, int(suffix)) if suffix.isdigit() else (1, suffix)

    files.sort(key=fold_number)
    per_fold = []
    for f in files:
        booster = lightgbm.Booster(model_file=str(f))
        per_fold.append(pd.Series(booster.feature_importance(importance_type="gain"),
                                  index=booster.feature_name(), dtype=np.float64))
    table = pd.concat(per_fold, axis=1).fillna(0.0)  # features x folds (a feature absent from a fold: no gain)
    mean, std = table.mean(axis=1), table.std(axis=1, ddof=0)
    total = float(mean.sum())
    order = mean.sort_values(ascending=False, kind="stable").index[:top]
    return {"importance": "gain", "n_folds": len(files), "n_features": int(len(table)),
            "folds": [f.parent.name for f in files],
            "features": [{"feature": str(name), "gain": float(mean[name]), "gain_std": float(std[name]),
                          "share": float(mean[name] / total) if total > 0 else 0.0} for name in order]}


def figure_file_name(kind: str, run_name: str) -> str:
    """``<kind>_<run key with '/' and odd characters as '_'>.png``: one flat file per run in the report folder."""
    import re

    return f"{kind}_{re.sub(r'[^A-Za-z0-9._=+-]+', '_', run_name)}.png"


def importance_file_name(run_name: str) -> str:
    return figure_file_name("importance", run_name)


def analyses(report: dict, runs: list[ModelRun], oofs: dict[str, pd.DataFrame], task: Task) -> dict:
    """What the figures draw, as data for comparison.json: calibration curves, the OOF correlation matrix,
    LightGBM feature importances and the leaderboard scores beside their blends' CV scores. A part that
    fails is logged and left out, never the report."""
    from pipelines.common import leaderboard

    ranked = [r["model"] for r in report["rows"]
              if r["kind"] != "reference" and r["log_loss"] is not None and r["model"] in oofs]
    blends = {r.name for r in runs if r.is_blend}
    out = {"calibration": None, "oof_correlation": None, "feature_importance": {}, "leaderboard": []}

    def attempt(key, fn, *args):
        try:
            out[key] = fn(*args)
        except Exception as exc:  # an analysis must never cost the table
            log.warning("%s failed: %s: %s", key, type(exc).__name__, exc)

    if ranked:
        attempt("calibration", calibration_report, ranked, blends, oofs, task)
        attempt("oof_correlation", oof_correlation, ranked, blends, oofs, task)
    order = {name: i for i, name in enumerate(ranked)}
    for run in sorted(runs, key=lambda r: (order.get(r.name, len(order)), r.name)):
        try:
            table = lightgbm_importance(run.path)
        except Exception as exc:
            log.warning("feature importance of %s failed: %s: %s", run.name, type(exc).__name__, exc)
            continue
        if table is not None:
            out["feature_importance"][run.name] = table
    attempt("leaderboard", leaderboard.submission_rows, report["comp"], report["source"])
    out["leaderboard"] = out["leaderboard"] or []
    return out


# --- rendering -----------------------------------------------------------------------------------------------

def _fmt(v, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _fmt_seconds(v) -> str:
    if v is None:
        return "—"
    if v < 10:
        return f"{v:.2f}s"
    if v < 60:
        return f"{v:.1f}s"
    if v < 3600:
        return f"{int(v // 60)}m{int(v % 60):02d}s"
    return f"{int(v // 3600)}h{int(v % 3600 // 60):02d}m"


def table_cells(report: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells, shared by the Markdown and the terminal table."""
    binary = report["task"] == "binary"
    headers = ["#", "model", "OOF log loss", "fold mean ± std", "fold log losses", "accuracy"]
    headers += ["AUC"] if binary else []
    headers += ["fit", "predict", "key parameters", "git", "seed", "finished", "status"]
    cells = []
    for r in report["rows"]:
        ref = r["kind"] == "reference"
        if ref:
            status = "reference"
        elif r["stale"]:
            status = "STALE: " + "; ".join(r["stale_reasons"])
        else:
            status = "ok"
        mean_std = ("—" if ref or r["log_loss_mean"] is None
                    else f"{r['log_loss_mean']:.4f} ± {r['log_loss_std'] or 0:.4f}")
        folds = "" if ref else " ".join(_fmt(v) for v in r["fold_log_loss"])
        row = ["ref" if ref else str(r["rank"]), r["model"], _fmt(r["log_loss"], 5), mean_std, folds,
               _fmt(r["accuracy"])]
        row += [_fmt(r["auc"])] if binary else []
        row += ["" if ref else _fmt_seconds(r["fit_seconds"]), "" if ref else _fmt_seconds(r["predict_seconds"]),
                r["params"], "" if ref else r["git"], "" if ref or r["seed"] is None else str(r["seed"]),
                "" if ref else short_time(r["finished"]), status]
        cells.append(row)
    return headers, cells


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def versions_lines(versions: dict) -> list[str]:
    lines = []
    for lib, by_version in versions.items():
        if len(by_version) == 1:
            lines.append(f"{lib} {next(iter(by_version))}")
        else:
            parts = [f"{v} ({', '.join(models)})" for v, models in sorted(by_version.items())]
            lines.append(f"{lib} DIFFERS between runs: " + "; ".join(parts))
    return lines


def attention_items(report: dict) -> list[str]:
    """One line per thing to fix, each with its command."""
    items = []
    for r in report["rows"]:
        if r.get("stale"):
            items.append(f"{r['model']} is STALE ({'; '.join(r['stale_reasons'])}): re-run `{r['command']}`")
    for p in report["problems"]:
        items.append(f"{p['model']}: {p['problem']}: `{p['command']}`")
    for m in report["missing"]:
        items.append(f"{m['model']} is not trained: `{m['command']}`")
    if report["expected"] is None:
        items.append(f"the expected model list (the {report['comp']} model registry) could not be read; "
                     "missing models are not checked")
    return items


def render_markdown(report: dict) -> str:
    headers, cells = table_cells(report)
    n_models = sum(r["kind"] != "reference" for r in report["rows"])
    lines = [f"# Model comparison: {report['comp']} ({report['source']})", "",
             f"Generated {short_time(report['generated'])} UTC from `{report['models_dir']}`: {n_models} run(s), "
             f"{report['n_train'] if report['n_train'] is not None else '?'} train rows, "
             f"{report['n_folds'] or '?'} folds. Sorted by out-of-fold (OOF) log loss, lower is better; "
             "rows marked *reference* are trivial baselines computed from the targets alone. "
             "Times are totals over the folds.", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---:" if h in ("#", "OOF log loss", "accuracy", "AUC", "fit", "predict", "seed")
                                else "---" for h in headers) + "|")
    for row, r in zip(cells, report["rows"]):
        row = [_md_escape(c) for c in row]
        if r["kind"] == "reference":
            row[1] = f"*{row[1]}*"
        elif r["stale"]:
            row[-1] = f"**{row[-1]}**"
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    items = attention_items(report)
    lines += ["## Needs attention", ""]
    lines += [f"- {i}" for i in items] or ["Nothing: every expected model is trained and up to date."]
    lines.append("")
    lines += group_lines(report)
    lines += leaderboard_lines(report)
    if report["figures"]:
        lines += ["## Figures", ""]
        for name in report["figures"]:
            lines += [f"![{Path(name).stem}]({name})", ""]
    lines += ["## Reproducibility", "",
              "Each run's `run.json` (in its model folder) records the git commit, the full configuration, the seed, "
              "the library versions, the data manifest hash and fingerprints of its inputs. To reproduce a row: "
              "`git checkout <commit>` then the row's command (`make train COMP=... SOURCE=... MODEL=<model>`, "
              "or `make blend ...` for the blend).", "",
              "Library versions the runs used:", ""]
    lines += [f"- {line}" for line in versions_lines(report["versions"])] or ["- (no run record found)"]
    lines.append("")
    return "\n".join(lines)


def group_lines(report: dict) -> list[str]:
    """The "Runs by model" section: each model with several runs (options, seeds, bags, tuned), what differs."""
    groups = report.get("groups") or []
    if not groups:
        return []
    lines = ["## Runs by model", ""]
    for g in groups:
        differing = g["differing"] or []
        lines += [f"**{_md_escape(g['model'])}**: {len(g['runs'])} runs"
                  + (f"; they differ in {', '.join(f'`{k}`' for k in differing[:8])}" if differing else ""), "",
                  "| run | OOF log loss | " + " | ".join(_md_escape(k) for k in differing[:8]) + " |",
                  "|---|---:|" + "---|" * len(differing[:8])]
        for row in g["runs"]:
            values = [_md_escape(_short(row["differs"].get(k))) for k in differing[:8]]
            lines.append(f"| {_md_escape(row['run'])} | {_fmt(row['log_loss'])} | " + " | ".join(values) + " |")
        lines.append("")
    return lines


def _short(v) -> str:
    from pipelines.common.compare_report import _short_value

    return "" if v is None else _short_value(v)


def leaderboard_lines(report: dict) -> list[str]:
    """The "CV vs leaderboard" section: each scored submission's public score beside its blend's CV score."""
    from pipelines.common import leaderboard

    rows = report.get("leaderboard") or []
    if not rows:
        if report["source"] == "sample":
            return []  # Kaggle cannot score the synthetic sample: nothing to wait for
        return ["## CV vs leaderboard", "",
                f"No submission of {report['comp']} ({report['source']}) has a public score yet: "
                f"`make submit COMP={report['comp']} SOURCE={report['source']} FILE=submissions/{report['comp']}/"
                "<name>.csv` uploads one and records the score it reads back.", ""]
    headers, cells = leaderboard.table_cells(rows)
    lines = ["## CV vs leaderboard", "",
             "Every submission of this competition and source with a public leaderboard score (from its "
             "`<name>.record.json`), beside the out-of-fold log loss of the blend it was made from.", "",
             "| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if h in ("CV log loss", "public LB", "LB − CV", "private LB") else "---"
                            for h in headers) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in cells]
    lines.append("")
    return lines


def render_text(report: dict) -> str:
    """A plain aligned table for the terminal, then what needs attention."""
    headers, cells = table_cells(report)
    # The terminal gets a narrower table: no per-fold scores, parameters cut, stale reasons listed below it.
    keep = [j for j, h in enumerate(headers) if h != "fold log losses"]
    headers = [headers[j] for j in keep]
    short = []
    for row in cells:
        row = [row[j] for j in keep]
        row = [c if len(c) <= 36 else c[:33] + "..." for c in row[:-1]] + [row[-1]]
        short.append(row[:-1] + ["STALE" if row[-1].startswith("STALE") else row[-1]])
    numeric = {"#", "OOF log loss", "accuracy", "AUC", "fit", "predict", "seed"}
    widths = [max(len(h), *(len(r[j]) for r in short)) for j, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if h in numeric else v.ljust(w)
                         for v, w, h in zip(values, widths, headers)).rstrip()

    out = [f"{report['comp']} ({report['source']}): {len(cells)} rows, sorted by OOF log loss", line(headers),
           line(["-" * w for w in widths])]
    out += [line(r) for r in short]
    items = attention_items(report)
    if items:
        out += ["", "Needs attention:"] + [f"  - {i}" for i in items]
    scored = report.get("leaderboard") or []
    if scored:
        from pipelines.common import leaderboard

        out += ["", "CV vs leaderboard:"]
        for row in leaderboard.table_cells(scored)[1]:
            out.append(f"  - {row[0]}: CV {row[2]}, public LB {row[3]} (LB − CV {row[4]}), blend {row[1]}")
    out += ["", "Versions: " + ", ".join(versions_lines(report["versions"]))]
    return "\n".join(out)


# --- stage ---------------------------------------------------------------------------------------------------

def compare(comp: str, source: str, expected: tuple[str, ...] | None, with_figures: bool = True) -> dict:
    """Read every run of (comp, source), write the report files, return the report."""
    task = competitions.get(comp).task
    models_dir = config.models_dir(comp, source)
    runs, problems = load_runs(models_dir, comp, source)
    if not runs:
        detail = "".join(f"; {p['model']}: {p['problem']}" for p in problems)
        raise StageError(f"no trained models in {models_dir}: run `make train COMP={comp} SOURCE={source}` first"
                         + detail)
    oofs = {r.name: df for r in runs if (df := read_oof(r)) is not None}
    report = build_comparison(comp, source, runs, problems, expected, oofs, task)
    report.update(analyses(report, runs, oofs, task))
    out_dir = config.reports_dir(comp, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    if with_figures:
        report["figures"] = make_figures(report, runs, oofs, out_dir, task)
        olds = [out_dir / name for name in OWN_FIGURES if (out_dir / name).exists()]
        olds += [p for pattern in OWN_FIGURE_PATTERNS for p in out_dir.glob(pattern)]
        for old in olds:  # of a run or submission that is gone (or a figure that failed): it would mislead
            if old.name not in report["figures"]:
                old.unlink()
    write_text(out_dir / "comparison.md", render_markdown(report))
    write_json(out_dir / "comparison.json", report)
    return report


def add_arguments(parser: argparse.ArgumentParser, comp: str | None = None) -> None:
    parser.add_argument("--no-figures", action="store_true", help="write the tables only, no PNGs")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a model is stale, missing or incomplete (for CI)")


def main(args: argparse.Namespace) -> int:
    comp, source = competitions.get(args.comp).name, args.source
    report = compare(comp, source, expected_models(comp), with_figures=not args.no_figures)
    print(render_text(report))
    out_dir = config.reports_dir(comp, source)
    print(f"\nreport: {out_dir / 'comparison.md'} (+ comparison.json"
          + (", " + ", ".join(report["figures"]) if report["figures"] else "") + ")")
    needs_attention = any(r.get("stale") for r in report["rows"]) or report["missing"] or report["problems"]
    return 1 if args.strict and needs_attention else 0
