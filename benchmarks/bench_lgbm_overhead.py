"""``python -m benchmarks lgbm_overhead [--source=../shared/data/quora] [--fold=0] [--repeats=2]``

Our LightGBM fold fit (``LgbmModel.fit``, as the train stage runs it) against a bare
``lightgbm.train`` on the same design matrix, the same rows and the same parameters, in one
process, alternating which runs first; the ratio is the pipeline's overhead. Also the throughput
in rows x features x rounds per second of the bare fit. The features stage runs first when the
source has none (outputs under PIPELINES_ROOT when set).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import update_section
from benchmarks.shared import SHARED_DATA, quora_features
from pipelines import config


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks lgbm_overhead")
    parser.add_argument("--source", default=str(SHARED_DATA / "quora"))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import lightgbm as lgb

    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models.lgbm import LgbmModel, lgb_feature_names

    quora_features(args.source)
    data = QuoraFeatures(config.features_dir("quora", args.source))
    model = LgbmModel(data)
    x = model.x_train  # built once, outside both clocks
    train_idx, valid_idx = np.flatnonzero(data.folds != args.fold), np.flatnonzero(data.folds == args.fold)
    names = lgb_feature_names(model.params["features"])
    names += [f"bow_{j}" for j in range(x.shape[1] - len(names))]
    y = data.labels

    def ours():
        return model.fit(args.fold, train_idx, valid_idx, Path(tempfile.mkdtemp(prefix="bench-lgbm-")))

    def bare():
        train_set = lgb.Dataset(x[train_idx], label=y[train_idx], feature_name=names, free_raw_data=True)
        valid_set = lgb.Dataset(x[valid_idx], label=y[valid_idx], reference=train_set)
        return lgb.train(model.lgb_params(), train_set, num_boost_round=model.params["num_boost_round"],
                         valid_sets=[valid_set], valid_names=["valid"],
                         callbacks=[lgb.early_stopping(model.params["early_stopping_rounds"], verbose=False)])

    runs = {"ours": [], "bare": []}
    rounds = {}
    for r in range(args.repeats):
        for side in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
            booster, wall, cpu = _timed(ours if side == "ours" else bare)
            runs[side].append((wall, cpu))
            rounds[side] = booster.current_iteration()
    load = os.getloadavg()[0]
    ours_wall, bare_wall = (float(np.median([w for w, _ in runs[s]])) for s in ("ours", "bare"))
    ours_cpu, bare_cpu = (float(np.median([c for _, c in runs[s]])) for s in ("ours", "bare"))
    cells = len(train_idx) * x.shape[1]
    body = f"""
{len(y):,} real labelled pairs (`{args.source}`), fold {args.fold + 1}: {len(train_idx):,} train rows x
{x.shape[1]:,} columns ({len(model.params['features'])} pair features + {x.shape[1] - len(model.params['features']):,}
sparse TF-IDF pair-block columns), the default parameters ({model.params['num_threads']} thread(s), early stopping
{model.params['early_stopping_rounds']} rounds; both stopped after {rounds['ours']} / {rounds['bare']} rounds). Median of
{args.repeats} alternating runs each. **The machine was shared** (other jobs running; 1-minute load average {load:.1f}
after): the figures are indicative, the ratio more than the absolute times.

| fit of one fold | wall s | CPU s |
|---|---:|---:|
| `LgbmModel.fit` (the train stage's) | {ours_wall:.1f} | {ours_cpu:.1f} |
| bare `lightgbm.train` on the same matrix and parameters | {bare_wall:.1f} | {bare_cpu:.1f} |

Every run, wall / CPU s: ours {' '.join(f'{w:.1f}/{c:.1f}' for w, c in runs['ours'])}; bare {' '.join(f'{w:.1f}/{c:.1f}' for w, c in runs['bare'])}.

Overhead: **{100 * (ours_wall / bare_wall - 1):+.1f}%** wall, **{100 * (ours_cpu / bare_cpu - 1):+.1f}%** CPU (limit +10%; on a
shared machine the CPU figure is the one to trust, the wall one moves with the other jobs).

Throughput of the bare fit: {cells * rounds['bare'] / bare_wall / 1e6:,.0f} M rows x columns x rounds per wall second
({cells * rounds['bare'] / bare_cpu / 1e6:,.0f} M per CPU second; {cells / 1e6:.1f} M cells, {model.params['num_threads']} thread(s)).
LightGBM's published CPU figure (docs/Experiments.rst, speed table: Higgs, 10.5 M rows x 28 dense
features, 500 trees of 255 leaves in 238.5 s on 16 threads of 2x E5-2670 v3) is 616 M per second,
about 39 M per thread-second. Ours counts 2,000 mostly-zero sparse columns, which LightGBM bundles
(exclusive feature bundling) and skips, and grows 31-leaf trees: the count per cell is not the same
work, so the two figures say only that this fit is not slow for LightGBM, not how close to the limit it is.
"""
    update_section("lgbm-overhead", body,
                   f"python -m benchmarks lgbm_overhead --source={args.source} --repeats={args.repeats}")
    print(body)
