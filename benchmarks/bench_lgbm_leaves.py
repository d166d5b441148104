"""``python -m benchmarks lgbm_leaves [--source=../shared/data/quora] [--leaves=31,63,127] [--seeds=42,43]
[--kaggle-features=DIR --rounds=600]``

Leaves per tree against rounds: larger trees need fewer boosting rounds, and at Kaggle size LightGBM's time is
its rounds (fit) times the 2.3M test rows it predicts with every tree. Issue 15's rule for a changed default:
the 5-fold CV on the real rows stays within 0.002 of the earlier default's.

(1) On the real rows (the data and features stages run first when the source has none; outputs under
PIPELINES_ROOT when set), for each ``--leaves`` setting: the train stage's own ``train --model lgbm`` for each
of ``--seeds`` (CV log loss, the rounds early stopping kept in each fold: the trees of its saved model), and
the rounds kept on nested subsets of each fold, followed out to a Kaggle fold's 323,432 rows (the method of
``python -m benchmarks lgbm_rounds``, whose functions this reuses).

(2) With ``--kaggle-features`` (the Kaggle-size features of ``python -m benchmarks quora_features``, synthetic
labels): for each setting, in its own process, fold 1's fit of ``--rounds`` rounds without early stopping and
that model's predictions of the whole test set, built as the train stage builds them; seconds per round of
each; the test design's blocks are timed alone first and taken off the predictions (the engine builds them
once for all the fold models). With (1)'s rounds, the LightGBM stage's seconds at Kaggle size follow: 5 x
rounds x (fit + predict seconds per round), the design matrices aside.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_lgbm_rounds import KAGGLE_FOLD_TRAIN, extrapolate, kept_rounds
from benchmarks.report import update_section
from benchmarks.shared import SHARED_DATA, child_result, print_result, quora_features
from pipelines import config

FRACTIONS = [0.125, 0.25, 0.5, 1.0]


def _trees(model_txt: Path) -> int:
    return sum(1 for line in model_txt.read_text().splitlines() if line.startswith("Tree="))


def quality(label: str, leaves: list[int], seeds: list[int]) -> tuple[list[str], dict[int, float]]:
    """Report rows of (1) and {leaves: extrapolated rounds at a Kaggle fold}."""
    from pipelines.__main__ import main as cli

    rows = ["| leaves | CV log loss, seed " + ", ".join(map(str, seeds)) + " | mean | against "
            f"{leaves[0]} leaves | rounds kept per fold (seed {seeds[0]}) | rounds at a Kaggle fold (each fold's "
            "own line) |", "|---:|---|---:|---:|---|---|"]
    base, at_kaggle = None, {}
    for n_leaves in leaves:
        losses, kept = [], []
        for seed in seeds:
            run = f"bench-leaves-{n_leaves}-seed{seed}"
            assert cli(["train", "--comp", "quora", "--source", label, "--model", "lgbm", "--run", run, "--replace",
                        "--seed", str(seed), "--lgbm-num-leaves", str(n_leaves)]) == 0
            run_dir = config.model_dir("quora", label, f"lgbm/{run}")
            losses.append(json.loads((run_dir / "metrics.json").read_text())["log_loss"])
            if not kept:
                kept = [_trees(p) for p in sorted((run_dir / "folds").glob("fold_*/model.txt"))]
        sizes, rounds, _, _ = kept_rounds(label, FRACTIONS, ["--lgbm-num-leaves", str(n_leaves)])
        _, at_kaggle[n_leaves], per_fold = extrapolate(sizes, rounds, KAGGLE_FOLD_TRAIN)
        mean = float(np.mean(losses))
        base = mean if base is None else base
        rows.append(f"| {n_leaves} | {', '.join(f'{x:.5f}' for x in losses)} | {mean:.5f} | {mean - base:+.5f} | "
                    f"{', '.join(map(str, kept))} (mean {np.mean(kept):.0f}) | **{at_kaggle[n_leaves]:,.0f}** "
                    f"({', '.join(f'{r:,.0f}' for r in per_fold)}) |")
    return rows, at_kaggle


def child(features_dir: str, rounds: int, n_leaves: int) -> None:
    """Fold 1's fit at Kaggle size and its test predictions, printed as a result line."""
    import resource

    from benchmarks.bench_quora_models import build_model, train_namespace
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(Path(features_dir))
    ns = train_namespace("lgbm", "local-bench-kaggle", ["--lgbm-num-leaves", str(n_leaves), "--lgbm-rounds",
                                                        str(rounds), "--lgbm-early-stopping", "0"])
    model = build_model("lgbm", data, ns)
    _ = model.x_train
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        booster = model.fit(0, train_idx, valid_idx, Path(tmp))
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    for _ in model._design_blocks("test"):  # the test design alone: built once for every fold model in the engine
        pass
    design_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.predict_test_folds([booster])
    predict_s = time.perf_counter() - t0 - design_s  # the trees' share of the test predictions
    print_result({"fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "predict_s": predict_s, "design_s": design_s,
                  "n_test": int(len(data.ids_test)),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def speed(features_dir: str, rounds: int, leaves: list[int], at_kaggle: dict[int, float]) -> list[str]:
    rows = [f"| leaves | fold 1: fit {rounds} rounds, wall s | per round | test predictions (the trees' share), wall s "
            "| per round | test design, wall s | peak RSS MB | LightGBM stage at the rounds of (1): 5 x rounds x (fit + "
            "predict) per round |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n_leaves in leaves:
        r = child_result([sys.executable, "-m", "benchmarks.bench_lgbm_leaves", f"--child={features_dir}",
                          f"--rounds={rounds}", f"--leaves={n_leaves}"], f"{n_leaves} leaves")
        per_round = (r["fit_s"] + r["predict_s"]) / rounds
        stage = (f"{5 * at_kaggle[n_leaves] * per_round / 60:.1f} min at {at_kaggle[n_leaves]:,.0f} rounds"
                 if n_leaves in at_kaggle else "")
        rows.append(f"| {n_leaves} | {r['fit_s']:.1f} | {r['fit_s'] / rounds:.3f} | {r['predict_s']:.1f} | "
                    f"{r['predict_s'] / rounds:.3f} | {r['design_s']:.1f} | {r['peak_rss_mb']:.0f} | {stage} |")
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks lgbm_leaves")
    parser.add_argument("--source", default=str(SHARED_DATA / "quora"), help="the real rows (a folder)")
    parser.add_argument("--leaves", default="31,63,127", help="leaves per tree to compare (the first: the baseline)")
    parser.add_argument("--seeds", default="42,43", help="seeds of the CV runs on the real rows")
    parser.add_argument("--kaggle-features", default=None, help="the Kaggle-size features folder, for (2)")
    parser.add_argument("--rounds", type=int, default=600, help="rounds of (2)'s fits")
    parser.add_argument("--skip-quality", action="store_true", help="(2) alone, with --kaggle-rounds")
    parser.add_argument("--kaggle-rounds", default="", help="(2) alone: leaves=rounds,... at a Kaggle fold")
    parser.add_argument("--no-report", action="store_true", help="print, do not write BENCHMARKS.md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    leaves = [int(x) for x in args.leaves.split(",")]
    if args.child:
        return child(args.child, args.rounds, leaves[0])
    parts, at_kaggle = [], {}
    if not args.skip_quality:
        label = quora_features(args.source)
        rows, at_kaggle = quality(label, leaves, [int(s) for s in args.seeds.split(",")])
        parts += [f"(1) The real rows (`{args.source}`): 5-fold CV of the train stage's `train --model lgbm "
                  "--lgbm-num-leaves N` (every other option its default, early stopping as by default), and the "
                  "rounds early stopping keeps on nested subsets of each fold's train part (shares "
                  f"{', '.join(f'{f:g}' for f in FRACTIONS)}) followed out to a Kaggle fold's {KAGGLE_FOLD_TRAIN:,} "
                  "train rows (as in section lgbm-rounds: an extrapolation, not a measurement):", "", *rows, ""]
    for item in filter(None, args.kaggle_rounds.split(",")):
        n, r = item.split("=")
        at_kaggle[int(n)] = float(r)
    if args.kaggle_features:
        parts += [f"(2) Speed at Kaggle size (`{args.kaggle_features}`, synthetic labels), each setting in its own "
                  "process: fold 1 (323,432 rows) fitted without early stopping, then its predictions of the "
                  "2,345,796 test pairs (the train stage's design blocks):", "",
                  *speed(args.kaggle_features, args.rounds, leaves, at_kaggle), ""]
    body = "\n".join(parts)
    print(body)
    if not args.no_report:
        update_section("lgbm-leaves", body, ("python -m benchmarks lgbm_leaves " + " ".join(argv)).strip())


if __name__ == "__main__":  # (2)'s child processes
    main(sys.argv[1:])
