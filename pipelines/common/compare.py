"""Compare stage: one report of every trained model and blend of a competition and source.

Reads every run under ``models/<comp>/<source>/`` (the CV engine's metrics.json, params.json,
run.json, oof.parquet, history.json) and writes into ``reports/<comp>/<source>/``:

    comparison.md    table sorted by out-of-fold log loss, with the trivial baselines as reference rows,
                     what needs attention (stale, missing, incomplete runs, each with the command that
                     fixes it) and the library versions the runs used
    comparison.json  the same, machine-readable
    scores.png       OOF log loss per model, fold spread as error bars, baselines as vertical lines
    roc.png          (binary) ROC curves of every model from the OOF predictions
    confusion.png    (multi-class) confusion matrices of the best models and the blend
    learning_curve_<model>.png   neural models' per-fold learning curves

The parts, each in its module:

    pipelines.common.compare_runs     reading the runs (finished, interrupted, unreadable), the expected models
                                      (the competition's model registry) and the command that makes each run
    pipelines.common.staleness        when a run is STALE (changed or vanished inputs, a changed data manifest,
                                      another Python environment; a blend also when a member was re-trained
                                      after it, is gone or stale)
    pipelines.common.compare_report   the report as plain data: rows, baselines, problems, library versions
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

    for run in runs:
        history_path = run.path / "history.json"
        if history_path.exists():
            histories = read_optional_json(history_path)
            if any(histories.values()):
                name = f"learning_curve_{run.name}.png"
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
    out_dir = config.reports_dir(comp, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    if with_figures:
        report["figures"] = make_figures(report, runs, oofs, out_dir, task)
        for old in out_dir.glob("learning_curve_*.png"):  # of a model that is gone: it would mislead
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
