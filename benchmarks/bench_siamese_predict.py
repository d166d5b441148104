"""``python -m benchmarks siamese_predict [--n-train=20000] [--n-test=100000] [--repeats=2]``

The Siamese test prediction of one fold two ways on the same fitted network (siamese_gru, default
sizes, one epoch): each distinct test question encoded once (``SiameseModel.predict_test``, what the
train stage runs) against every pair with both its questions (``predict_test_pairs``), alternating.
Data: the built-in synthetic sample at the given size (outputs under PIPELINES_ROOT when set).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import update_section
from pipelines import config


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks siamese_predict")
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--source", default="sample",
                        help="sample (built at --n-train/--n-test) or a data folder, e.g. ../shared/data/quora")
    args = parser.parse_args(argv)

    from pipelines.__main__ import main as cli
    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models.siamese import SiameseModel

    if "PIPELINES_ROOT" not in os.environ:  # a sample of another size must not replace the project's own
        scratch = Path(tempfile.mkdtemp(prefix="bench-siamese-predict-"))
        config.DATA_DIR, config.MODELS_DIR = scratch / "data", scratch / "models"
    source = args.source
    sizes = ["--n-train", str(args.n_train), "--n-test", str(args.n_test)] if source == "sample" else []
    assert cli(["data", "--comp", "quora", "--source", source, *sizes]) == 0
    assert cli(["features", "--comp", "quora", "--source", source]) == 0
    data = QuoraFeatures(config.features_dir("quora", source))
    model = SiameseModel(data, "gru", epochs=1, verbose=0, execution="graph")
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    fitted = model.fit(0, train_idx, valid_idx, tempfile.mkdtemp(prefix="bench-siamese-"))
    model.predict_test(fitted), model.predict_test_pairs(fitted)  # traced once each, outside the clocks

    qid1, qid2 = data.question_ids("test")
    n_distinct = len(np.unique(np.concatenate([qid1, qid2])))
    times = {"distinct": [], "pairs": []}
    preds = {}
    for r in range(args.repeats):
        for side in (("distinct", "pairs") if r % 2 == 0 else ("pairs", "distinct")):
            fn = model.predict_test if side == "distinct" else model.predict_test_pairs
            t0, c0 = time.perf_counter(), time.process_time()
            preds[side] = fn(fitted)
            times[side].append((time.perf_counter() - t0, time.process_time() - c0))
    med = {s: (float(np.median([w for w, _ in v])), float(np.median([c for _, c in v]))) for s, v in times.items()}
    diff = float(np.abs(preds["distinct"] - preds["pairs"]).max())
    n = len(qid1)
    what = ("Built-in synthetic sample" if source == "sample" else f"Real rows (`{source}`)")
    body = f"""
{what}, {len(data.labels):,} train / {n:,} test pairs; the test pairs hold {n_distinct:,}
distinct questions in {2 * n:,} question slots ({2 * n / n_distinct:.2f} slots per question; the
Kaggle-size set of the features benchmark: about 1.4, 3.87 M distinct questions over its train and test).
siamese_gru with the default sizes after one epoch of fold 1; median of {args.repeats} alternating runs.
**The machine was shared** (1-minute load average {os.getloadavg()[0]:.1f} after): indicative figures.

| test prediction of one fold | wall s | CPU s | pairs/s (wall) |
|---|---:|---:|---:|
| each distinct question once (`predict_test`, the train stage's) | {med['distinct'][0]:.1f} | {med['distinct'][1]:.1f} | {n / med['distinct'][0]:,.0f} |
| every pair, both questions (`predict_test_pairs`, before) | {med['pairs'][0]:.1f} | {med['pairs'][1]:.1f} | {n / med['pairs'][0]:,.0f} |

Speed-up: **{med['pairs'][0] / med['distinct'][0]:.2f}x** wall, {med['pairs'][1] / med['distinct'][1]:.2f}x CPU; largest
difference between the two predictions: {diff:.1e} (the test allows 1e-6).
All runs (wall/CPU s): distinct {' '.join(f'{w:.1f}/{c:.1f}' for w, c in times['distinct'])};
pairs {' '.join(f'{w:.1f}/{c:.1f}' for w, c in times['pairs'])}.
"""
    section = "siamese-predict" + ("" if source == "sample" else "-real")
    update_section(section, body, "PIPELINES_ROOT=<scratch> python -m benchmarks siamese_predict "
                   + (f"--n-train={args.n_train} --n-test={args.n_test}" if source == "sample" else f"--source={source}")
                   + f" --repeats={args.repeats}")
    print(body)
