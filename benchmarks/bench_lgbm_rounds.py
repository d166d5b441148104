"""``python -m benchmarks lgbm_rounds [--source=../shared/data/quora] [--fractions=0.125,0.25,0.5,1]``

How many rounds LightGBM's early stopping keeps as the train rows grow, on the real rows, and what that
says of Kaggle size, where the labels the benchmarks have are synthetic and early stopping cannot be run.

The Kaggle-size timings (sections quora-kaggle-pipeline, quora-models-kaggle-scale-*) run a fixed number
of rounds; the time LightGBM takes there is proportional to it. This benchmark gives that number a
measured basis: for each fold of the real rows (the data and features stages run first when the source has
none; outputs under PIPELINES_ROOT when set), the train stage's own LgbmModel with its default options is
fitted on nested random subsets of the fold's train part (``--fractions``) and stopped early on the fold's
whole validation part; a line through log(rounds) against log(train rows) is then followed out to the
Kaggle fold's 323,432 train rows. It is an extrapolation over 35x the largest subset, reported as such,
with the spread of the per-fold lines.

``--rates`` fits the same subsets at other learning rates too (fewer rounds, hence less time at any size): if
their log-loss cost against the default rate shrank as the rows grow, a higher rate at Kaggle size would be
a cheap way to fewer rounds; the table says whether it does on these rows.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.report import update_section
from benchmarks.bench_quora_features import KAGGLE_TRAIN
from benchmarks.shared import SHARED_DATA, quora_features
from pipelines import config

KAGGLE_FOLD_TRAIN = KAGGLE_TRAIN - KAGGLE_TRAIN // 5  # a Kaggle fold's train part (5 folds)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks lgbm_rounds")
    p.add_argument("--source", default=str(SHARED_DATA / "quora"), help="the real Quora rows")
    p.add_argument("--fractions", default="0.125,0.25,0.5,1", help="shares of each fold's train part")
    p.add_argument("--assumed", type=int, default=1333, help="the rounds the Kaggle-size timings run, to compare")
    p.add_argument("--rates", default="0.06,0.1", help="other learning rates to fit the same subsets at ('' none)")
    p.add_argument("--no-report", action="store_true", help="print, do not write BENCHMARKS.md")
    return p.parse_args(argv)


def kept_rounds(label: str, fractions: list[float], options: list[str] = ()) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray, dict]:
    """(train rows per fraction, rounds kept and best validation log loss: folds x fractions, the model's
    parameters) of the model with train ``options`` over its defaults."""
    from benchmarks.bench_quora_models import build_model, train_namespace
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(config.features_dir("quora", label))
    model = build_model("lgbm", data, train_namespace("lgbm", label, list(options)))
    folds = data.folds
    n_folds = int(folds.max()) + 1
    rounds = np.zeros((n_folds, len(fractions)), dtype=int)
    losses = np.zeros((n_folds, len(fractions)))
    sizes = np.zeros((n_folds, len(fractions)), dtype=int)
    for k in range(n_folds):
        train_idx, valid_idx = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        order = np.random.default_rng(config.SEED + k).permutation(train_idx)  # nested: each subset holds the smaller
        for j, f in enumerate(fractions):
            sub = np.sort(order[: int(round(f * len(train_idx)))])
            with tempfile.TemporaryDirectory() as tmp:
                booster = model.fit(k, sub, valid_idx, Path(tmp))
            rounds[k, j], sizes[k, j] = booster.best_iteration, len(sub)
            losses[k, j] = booster.best_score["valid"]["binary_logloss"]
    return sizes.mean(axis=0), rounds, losses, model.params


def extrapolate(sizes: np.ndarray, rounds: np.ndarray, n: int) -> tuple[float, float, np.ndarray]:
    """(slope, rounds at n) of the line through the mean log rounds, and each fold's own rounds at n."""
    x = np.log(sizes)
    slope, icpt = np.polyfit(x, np.log(rounds).mean(axis=0), 1)
    per_fold = np.array([np.exp(np.polyval(np.polyfit(x, np.log(r), 1), np.log(n))) for r in rounds])
    return float(slope), float(np.exp(icpt + slope * np.log(n))), per_fold


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    label = quora_features(args.source)
    sizes, rounds, losses, params = kept_rounds(label, fractions)
    slope, at_kaggle, per_fold = extrapolate(sizes, rounds, KAGGLE_FOLD_TRAIN)
    lines = [f"Real rows `{args.source}` (source `{label}`), the train stage's LgbmModel with its default options "
             f"(learning rate {params['learning_rate']}, max_bin {params['max_bin']}, {params['num_leaves']} leaves, "
             f"min_data_in_leaf {params['min_data_in_leaf']}, early stopping {params['early_stopping_rounds']} "
             f"rounds), fitted on nested random subsets of each fold's train part and stopped early on the "
             f"fold's whole validation part.", "",
             "| share of the fold's train part | train rows | rounds kept, folds 1-5 | mean |",
             "|---:|---:|---|---:|"]
    for j, f in enumerate(fractions):
        lines.append(f"| {f:g} | {sizes[j]:,.0f} | {', '.join(map(str, rounds[:, j]))} | {rounds[:, j].mean():.0f} |")
    lines += ["", f"log(rounds) against log(train rows): slope **{slope:.2f}** (rounds grow as rows^{slope:.2f}). "
              f"Followed out to a Kaggle fold's {KAGGLE_FOLD_TRAIN:,} train rows ({KAGGLE_FOLD_TRAIN / sizes[-1]:.0f}x "
              f"the largest subset): **{at_kaggle:,.0f} rounds** (each fold's own line: "
              f"{', '.join(f'{r:,.0f}' for r in per_fold)}), against the {args.assumed:,} the Kaggle-size timings run. "
              "An extrapolation, not a measurement: at Kaggle size `min_data_in_leaf` auto is "
              f"{max(20, round(KAGGLE_TRAIN / 1000))} rather than {params['min_data_in_leaf']}, the features are richer "
              "(more question-graph signal), and the curve may bend."]
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if rates:
        lines += ["", f"The same subsets at other learning rates: mean best validation log loss (the early-stopping "
                  f"optimum on the fold's validation part, so optimistic alike for every rate) and mean rounds kept; "
                  f"the cost of a rate is its log loss minus the default rate's ({params['learning_rate']}) at the "
                  "same size.", "",
                  "| learning rate | " + " | ".join(f"{s:,.0f} rows: log loss (cost), rounds" for s in sizes) + " |",
                  "|---:|" + "---|" * len(sizes),
                  f"| {params['learning_rate']} (default) | " + " | ".join(
                      f"{losses[:, j].mean():.5f}, {rounds[:, j].mean():.0f}" for j in range(len(sizes))) + " |"]
        for rate in rates:
            _, r_rounds, r_losses, _ = kept_rounds(label, fractions, ["--lgbm-learning-rate", str(rate)])
            cost = r_losses.mean(axis=0) - losses.mean(axis=0)
            lines.append(f"| {rate:g} | " + " | ".join(
                f"{r_losses[:, j].mean():.5f} ({cost[j]:+.4f}), {r_rounds[:, j].mean():.0f}"
                for j in range(len(sizes))) + " |")
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_report:
        update_section("lgbm-rounds", body, ("python -m benchmarks lgbm_rounds " + " ".join(argv)).strip())
    return 0
