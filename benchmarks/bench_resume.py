"""A resumed Keras fit against an uninterrupted one, and what feeding the fit by epoch costs.

    python -m benchmarks resume [--pairs=20000] [--epochs=4] [--repeats=3]

(1) small_cnn (augmentation + Dropout) and siamese_gru (Dropout, graph mode) on tiny synthetic data, both
    through the resumable fit loop (pipelines/common/keras_fit.py): 3 epochs straight vs 1 epoch, interrupted,
    then resumed; the largest difference of any weight.
(2) Fit time of siamese_gru (graph mode, default sizes) on ``--pairs`` synthetic pairs: the arrays with
    Keras' own shuffle (how the pipeline fed its networks before) against
    ``pipelines.common.checkpoint.epoch_batches`` (each epoch's order seeded by (seed, epoch)), the two
    alternating; median of ``--repeats``.

Writes the section ``resume`` of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import update_section


def _weights_difference(a, b) -> float:
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.get_weights(), b.get_weights()))


def resume_cnn(root: Path) -> float:
    from cervix_helpers import tiny_images
    from pipelines.cervix.models import cnn

    x, y = tiny_images(n_per_class=8, size=32)
    rows = np.arange(len(y))
    train_idx, valid_idx = rows[rows % 4 != 0], rows[rows % 4 == 0]

    def net(epochs):
        opts = cnn.NetOptions(epochs=epochs, batch_size=8, tta=1, weights="none", augment="light", dropout=0.3,
                              width=8, patience=10, seed=3)
        return cnn.KerasImageModel("small_cnn", x, y, None, opts, 32, verbose=0, checkpoint_every_s=0)

    straight = net(3).fit(0, train_idx, valid_idx, root / "cnn-straight")
    net(1).fit(0, train_idx, valid_idx, root / "cnn-resumed")
    return _weights_difference(straight, net(3).fit(0, train_idx, valid_idx, root / "cnn-resumed"))


def resume_siamese(root: Path) -> float:
    from quora_model_helpers import write_fake_features
    from pipelines.quora.models import QuoraFeatures, siamese

    data = QuoraFeatures(write_fake_features(root / "features", n_train=240, n_test=40, n_folds=2))
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)

    def model(epochs):
        return siamese.SiameseModel(data, "gru", epochs=epochs, units=4, dense=4, batch_size=32, patience=5,
                                    dropout=0.3, execution="graph", verbose=0, checkpoint_every_s=0)

    for name in ("nn-straight", "nn-resumed"):
        (root / name).mkdir()
    straight = model(3).fit(0, train_idx, valid_idx, root / "nn-straight")
    model(1).fit(0, train_idx, valid_idx, root / "nn-resumed")  # ends after epoch 1: resumed below
    resumed = model(3).fit(0, train_idx, valid_idx, root / "nn-resumed")
    return _weights_difference(straight.model, resumed.model)


def feeding_speed(root: Path, pairs: int, epochs: int, repeats: int) -> dict[str, list[float]]:
    import keras

    from quora_model_helpers import write_fake_features
    from pipelines.common.checkpoint import epoch_batches
    from pipelines.quora.models import QuoraFeatures, siamese

    data = QuoraFeatures(write_fake_features(root / "speed", n_train=pairs, n_test=40, n_folds=2))
    model = siamese.SiameseModel(data, "gru", epochs=epochs, execution="graph", verbose=0)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    x, y, x_valid, y_valid = model.training_arrays(train_idx, valid_idx, model.feature_scaler(train_idx))
    batch = model.params["batch_size"]
    times: dict[str, list[float]] = {"arrays": [], "epoch_batches": []}
    for rep in range(repeats):
        for way in (("arrays", "epoch_batches") if rep % 2 == 0 else ("epoch_batches", "arrays")):
            keras.utils.set_random_seed(1)
            net = model.new_keras_model()
            t0 = time.perf_counter()
            if way == "arrays":
                net.fit(x, y, validation_data=(x_valid, y_valid), epochs=epochs, batch_size=batch, shuffle=True,
                        verbose=0)
            else:
                batches, steps = epoch_batches(x, y, batch, 1, 0, epochs)
                net.fit(batches, steps_per_epoch=steps, validation_data=(x_valid, y_valid),
                        validation_batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
            times[way].append(time.perf_counter() - t0)
    return times


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks resume")
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' tiny-data helpers
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cnn_diff, nn_diff = resume_cnn(root), resume_siamese(root)
        times = feeding_speed(root, args.pairs, args.epochs, args.repeats)
    med = {k: float(np.median(v)) for k, v in times.items()}
    n_train = args.pairs // 2
    body = f"""
(1) Resumed against uninterrupted, 3 epochs, interrupted after epoch 1 (`tests/test_reliability.py` checks the same):
largest weight difference **{cnn_diff:g}** for small_cnn (augmentation + Dropout 0.3), **{nn_diff:g}** for
siamese_gru (Dropout 0.3, graph mode). Before the epoch-seeded order and the saved generator states, small_cnn
differed by 0.03 after the same resume.

(2) Fit time of siamese_gru (graph mode, default sizes), {n_train:,} training pairs, {args.epochs} epochs, the two
alternating, median of {args.repeats}:

| feeding | median wall s | all runs (s) |
|---|---:|---|
| arrays, Keras' shuffle (before) | {med['arrays']:.1f} | {' / '.join(f'{t:.1f}' for t in times['arrays'])} |
| `checkpoint.epoch_batches` (now) | {med['epoch_batches']:.1f} | {' / '.join(f'{t:.1f}' for t in times['epoch_batches'])} |

Change: {100 * (med['epoch_batches'] / med['arrays'] - 1):+.0f}% (1-minute load average {load:.1f} before the
run, {os.getloadavg()[0]:.1f} after: the 2 cores were shared, so single runs vary).
"""
    update_section("resume", body, " ".join(["python -m benchmarks resume", *argv]))
    print(body)
