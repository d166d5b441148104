"""``python -m benchmarks lgbm_refit [--source=../shared/data/quora] [--options="--lgbm-num-leaves 63"]``

What ``--lgbm-test-from refit`` costs in quality, on the real rows, where the test set has no labels: each of
the real rows' 5 folds in turn stands in for the test set. The other four folds' rows are the train set, split
again into 5 stratified folds; LightGBM (the train stage's LgbmModel with its defaults, or ``--options``) is
fitted on each inner fold with early stopping on its validation part, as the CV engine fits it. Then the
stand-in test rows are predicted both ways:

- ``folds`` (the default): the 5 inner fold models' average;
- ``refit``: LgbmModel.fit_all, one booster on every train row for the inner folds' mean kept rounds times the
  rows ratio, alone.

The log loss of each over all the real rows (every row a stand-in test row once) is the figure; the
difference is what the refit costs (or gains) on a test set drawn like the train set. Its time is measured at
Kaggle size by ``python -m benchmarks kaggle_pipeline --lgbm-test-from=refit``.
"""
from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.report import update_section
from benchmarks.shared import SHARED_DATA, quora_features
from pipelines import config


def compare(label: str, options: list[str], repeat: int = 0, n_inner: int = 5) -> dict:
    """Both log losses over the stand-in test rows; ``repeat`` draws other inner folds."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    from benchmarks.bench_quora_models import build_model, train_namespace
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(config.features_dir("quora", label))
    model = build_model("lgbm", data, train_namespace("lgbm", label, options))
    y, folds = data.labels, data.folds
    averaged, refitted = np.zeros(len(y)), np.zeros(len(y))
    kept, refit_rounds = [], []
    for k in range(int(folds.max()) + 1):
        test_rows, train_rows = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        inner = StratifiedKFold(n_inner, shuffle=True, random_state=config.SEED + 100 * repeat + k)
        boosters, fold_rows = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for j, (fit_part, valid_part) in enumerate(inner.split(train_rows, y[train_rows])):
                booster = model.fit(j, train_rows[fit_part], train_rows[valid_part], Path(tmp))
                model.save(booster, Path(tmp))  # as the engine does: the kept rounds only, loaded back
                boosters.append(model.load(Path(tmp)))
                fold_rows.append(len(fit_part))
            averaged[test_rows] = np.mean([model.predict_valid(b, test_rows) for b in boosters], axis=0)
            whole = model.fit_all(train_rows, boosters, fold_rows, Path(tmp))
        refitted[test_rows] = model.predict_valid(whole, test_rows)
        kept.append([b.current_iteration() for b in boosters])
        refit_rounds.append(model.refit_info["rounds"])
    return {"folds": log_loss(y, averaged), "refit": log_loss(y, refitted), "kept": kept,
            "refit_rounds": refit_rounds, "params": model.params}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks lgbm_refit")
    parser.add_argument("--source", default=str(SHARED_DATA / "quora"), help="the real rows (a folder)")
    parser.add_argument("--options", default="", help="train options of LightGBM over its defaults")
    parser.add_argument("--repeats", type=int, default=3, help="draws of the inner folds")
    parser.add_argument("--no-report", action="store_true", help="print, do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    label = quora_features(args.source)
    results = [compare(label, shlex.split(args.options), i) for i in range(args.repeats)]
    r, p = results[0], results[0]["params"]
    diffs = [x["refit"] - x["folds"] for x in results]
    lines = [f"Real rows `{args.source}` (source `{label}`), LightGBM with its defaults"
             f"{' and `' + args.options + '`' if args.options else ''} ({p['num_leaves']} leaves, learning rate "
             f"{p['learning_rate']}, early stopping {p['early_stopping_rounds']} rounds). Each of the 5 folds stands "
             "in for the test set once; the other rows are split into 5 stratified inner folds, fitted as the CV "
             "engine fits them; the stand-in test rows are then predicted by the inner fold models' average "
             "(`--lgbm-test-from folds`, the default) and by LgbmModel.fit_all's one booster on all the other rows "
             "(`--lgbm-test-from refit`).", "",
             "| draw of the inner folds | folds: the 5 inner fold models averaged | refit: one booster on every "
             "train row | refit against folds |", "|---:|---:|---:|---:|",
             *[f"| {i + 1} | {x['folds']:.5f} | {x['refit']:.5f} | {d:+.5f} |" for i, (x, d) in
               enumerate(zip(results, diffs))],
             f"| mean | {np.mean([x['folds'] for x in results]):.5f} | {np.mean([x['refit'] for x in results]):.5f} | "
             f"**{np.mean(diffs):+.5f}** |", "",
             "Log loss over the stand-in test rows (all the real rows, each once). Rounds in draw 1: " + "; ".join(f"stand-in fold {k + 1}: inner folds kept {', '.join(map(str, kept))}, the refit "
                                    f"ran {rr}" for k, (kept, rr) in enumerate(zip(r["kept"], r["refit_rounds"]))) + "."]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_report:
        update_section("lgbm-refit", body, ("python -m benchmarks lgbm_refit " + " ".join(argv)).strip())
