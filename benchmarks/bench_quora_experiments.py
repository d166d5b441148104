"""Quora experiments on the real rows: seed bagging, LightGBM tuning, and the blend over every run (issue 13).

    python -m benchmarks quora_experiments [--root=DIR] [--trials=50] [--tune-timeout=2400] [--reuse]

In a project root of its own (``--root``, default ``/tmp/bench-quora-experiments``; set as PIPELINES_ROOT for
the stage processes) it imports the 11,587 real labelled pairs (``benchmarks.shared.SHARED_DATA/quora``),
builds their features, trains the default runs (bow_svm, bow_lr, lgbm), both Siamese networks over three
seeds (``--seeds 42,43,44``: three runs and their bag), tunes LightGBM (``make tune``: ``--trials`` trials or
``--tune-timeout`` seconds, whichever ends first; the best retrained as ``tuned-lgbm``), then blends (a) the
default runs of every model (the blend of issue 13's baseline: one seed each) and (b) every run, each by
the automatic method (both fitted, the better used). Each stage is the pipeline's own command; finished
runs are kept, so a re-run resumes (``--reuse`` only re-reports what the root holds). Writes BENCHMARKS.md
section ``quora-experiments``: every run's 5-fold CV log loss and fit seconds, the bags against their seeds,
the tuned LightGBM against the default one with the tuning's wall time and trial counts, and the blends
against the target (CV log loss <= 0.365).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.shared import SHARED_DATA, bag_line, blend_line, read_json_or_empty as read, stage_in as stage, write_report

TARGET = 0.365
SEEDS = "42,43,44"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks quora_experiments")
    p.add_argument("--root", default="/tmp/bench-quora-experiments")
    p.add_argument("--data", default=str(SHARED_DATA / "quora"))
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--tune-timeout", type=int, default=2400)
    p.add_argument("--reuse", action="store_true", help="only re-report the runs the root holds")
    return p.parse_args([a for a in argv if a.startswith("--")])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    src = ["--comp", "quora", "--source", args.data]
    walls = read(root / "bench-walls.json")
    if not args.reuse:
        root.mkdir(parents=True, exist_ok=True)
        stage(root, "data", *src)
        stage(root, "features", *src)
        for model in ("bow_svm", "bow_lr", "lgbm"):
            stage(root, "train", *src, "--model", model)
        for model in ("siamese_gru", "siamese_lstm"):
            walls[f"{model} x3 seeds + bag"] = stage(root, "train", *src, "--model", model, "--seeds", SEEDS)
        walls["tune lgbm"] = stage(root, "tune", *src, "--model", "lgbm", "--trials", str(args.trials),
                                   "--timeout", str(args.tune_timeout))
        (root / "bench-walls.json").write_text(json.dumps(walls))
    models = next((root / "models" / "quora").glob("local-*"), None)
    if models is None:
        raise SystemExit(f"no Quora runs under {root}/models/quora: run without --reuse first")
    from pipelines.common import runs as run_layout

    stage(root, "compare", *src)  # also moves runs of the earlier one-run-per-model layout under their models
    all_runs = {k: p for k, p in run_layout.run_folders(models).items() if k != "blend"}
    present = [k for k in all_runs if run_layout.split_key(k)[1].startswith("default-")]
    blends = {}
    for label, runs in (("the default runs, one seed each", ",".join(present)), ("all runs", None)):
        stage(root, "blend", *src, "--no-submission", "--force", *(["--runs", runs] if runs else []))
        blends[label] = read(models / "blend" / "metrics.json")

    rows = []
    for key, run_dir in all_runs.items():
        m = read(run_dir / "metrics.json")
        if m:
            rows.append(f"| {key} | {m['log_loss']:.4f} | {m.get('auc', float('nan')):.4f} | "
                        f"{m.get('fit_seconds', 0.0):.0f} |")
    tune = read(models / "lgbm" / "tuned-lgbm" / "tune.json")
    default_lgbm = next((read(p / "metrics.json").get("log_loss") for k, p in all_runs.items()
                         if k.startswith("lgbm/default-")), None)
    tuned = read(models / "lgbm" / "tuned-lgbm" / "metrics.json").get("log_loss")
    lines = ["Every run's 5-fold CV on the 11,587 real pairs (fit seconds: all five folds; shared 2-core machine, "
             "so times are indicative):", "", "| run | CV log loss | AUC | fit s |", "|---|---:|---:|---:|", *rows, ""]
    for model in ("siamese_gru", "siamese_lstm"):
        bag = next((read(p / "metrics.json") for k, p in all_runs.items() if k.startswith(f"{model}/bag-")), {})
        if bag:
            lines.append(bag_line(model, bag, walls.get(f"{model} x3 seeds + bag", float("nan"))))
    if tune and tuned is not None:
        counts = f"{tune.get('n_complete')} complete, {tune.get('n_pruned')} pruned, {tune.get('n_failed')} failed"
        lines.append(f"- lgbm tuned (Optuna TPE, median pruner, study `{tune.get('study')}`): "
                     f"{tuned:.4f} against the defaults' {default_lgbm:.4f}; trials: {counts}; "
                     f"best trial {tune.get('best_trial')} {json.dumps(tune.get('best_params'))}; tuning wall "
                     f"{walls.get('tune lgbm', float('nan')) / 60:.0f} min")
    for label, m in blends.items():
        if m:
            lines.append(blend_line(label, m, f"target <= {TARGET}: {'met' if m['log_loss'] <= TARGET else 'not met'}"))
    command = "python -m benchmarks quora_experiments " + " ".join(a for a in argv if a != "--reuse")
    return write_report("quora-experiments", lines, command)
