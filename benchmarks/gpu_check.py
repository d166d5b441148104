"""The GPU path on a machine with a GPU, as one short run (GPU time is scarce):

    make setup GPU=1
    PIPELINES_ROOT=/tmp/gpu-check .venv/bin/python -m benchmarks.gpu_check --out gpu_check.md

On the built-in synthetic sample (no data needed): which device TensorFlow and LightGBM get, then
siamese_gru fold 1 through the pipeline (``SiameseModel.fit``: the device, mixed precision, cuDNN
layers) against a plain ``model.fit`` of the same network on the same arrays under the same policy,
in float32 and in the automatic precision, the distinct-question test prediction against the
per-pair one, and small_cnn through the pipeline against a plain fit (float32 and the automatic precision). Each step reports its error in
one line instead of stopping the run. ``--device cpu`` runs the same steps on the CPU (how it was
checked on a machine without a GPU). Not part of ``make bench``: it prints a BENCHMARKS.md section
(and writes it to ``--out``) for the person who ran it to paste, with the GPU named.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu", "auto"])
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cervix-epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.report import machine
    from pipelines.__main__ import main as cli
    from pipelines.common import device as device_mod

    import os

    from pipelines import config

    if "PIPELINES_ROOT" not in os.environ:  # the check's samples must not replace the project's own
        scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        config.DATA_DIR, config.MODELS_DIR = scratch / "data", scratch / "models"
    lines, rows = [], []

    def step(name, fn):
        try:
            return fn()
        except Exception as exc:  # one line per failed step; the others still run
            lines.append(f"- **{name} failed**: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            traceback.print_exc()
            return None

    choice = step("TensorFlow device", lambda: device_mod.choose_tensorflow(args.device))
    if choice is not None:
        lines.append(f"- TensorFlow: {choice.record()}")
    lgbm = step("LightGBM GPU", lambda: device_mod.check_lightgbm_device("gpu") or "usable")
    if lgbm:
        lines.append("- LightGBM `--lgbm-device gpu`: usable (OpenCL)")

    for comp, extra in (("quora", ["--n-train", str(args.n_train), "--n-test", str(args.n_test)]), ("cervix", [])):
        step(f"{comp} sample", lambda: (cli(["data", "--comp", comp, "--source", "sample", *extra]),
                                        cli(["features", "--comp", comp, "--source", "sample"])))
    if choice is None:
        return _report(args, machine(), lines, rows)

    def siamese(precision: str):
        from pipelines import config
        from pipelines.quora.models import QuoraFeatures
        from pipelines.quora.models.siamese import SiameseModel

        data = QuoraFeatures(config.features_dir("quora", "sample"))
        train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
        pairs = len(train_idx) * args.epochs
        model = SiameseModel(data, "gru", epochs=args.epochs, patience=args.epochs + 1, verbose=0,
                             execution="graph", device=args.device, precision=precision)
        fitted, fit_s = _timed(lambda: model.fit(0, train_idx, valid_idx, Path(tempfile.mkdtemp())))
        distinct, distinct_s = _timed(lambda: model.predict_test(fitted))
        pairs_pred, pairs_s = _timed(lambda: model.predict_test_pairs(fitted))
        device_mod.apply_tensorflow(model.choice)  # the plain fit under the same device and policy
        import keras

        keras.utils.set_random_seed(42)
        arrays = model.training_arrays(train_idx, valid_idx, model.feature_scaler(train_idx))
        net = model.new_keras_model()
        _, plain_s = _timed(lambda: net.fit(arrays[0], arrays[1], validation_data=(arrays[2], arrays[3]),
                                            epochs=args.epochs, batch_size=256, shuffle=True, verbose=0))
        rows.append(f"| siamese_gru, {model.choice.precision} | {pairs / fit_s:,.0f} | {pairs / plain_s:,.0f} | "
                    f"{len(distinct) / distinct_s:,.0f} / {len(distinct) / pairs_s:,.0f} | "
                    f"{np.abs(distinct - pairs_pred).max():.1e} |")

    step("siamese_gru float32", lambda: siamese("float32"))
    if choice.precision != "float32":
        step(f"siamese_gru {choice.precision}", lambda: siamese("auto"))

    def cervix(precision: str):
        from pipelines.common.device import ENV_PRECISION
        from pipelines.cervix.features import load_tensors
        from pipelines.cervix.models.cnn import KerasImageModel, NetOptions

        t = load_tensors("sample", None)
        train_idx, valid_idx = np.flatnonzero(t.folds != 0), np.flatnonzero(t.folds == 0)
        opts = NetOptions(epochs=args.cervix_epochs, batch_size=32, patience=args.cervix_epochs + 1, tta=1,
                          weights="none")
        model = KerasImageModel("small_cnn", t.x_train, t.y, None, opts, t.image_size)
        model.verbose = 0
        os.environ[ENV_PRECISION] = precision  # the image networks read their policy from the environment
        _, fit_s = _timed(lambda: model.fit(0, train_idx, valid_idx, Path(tempfile.mkdtemp())))
        net, _ = model.build()  # under the policy the pipeline's fit set
        from pipelines.cervix.models.cnn import compile_model

        compile_model(net, opts.lr)
        x, y = np.asarray(t.x_train[train_idx]), t.y[train_idx]
        _, plain_s = _timed(lambda: net.fit(x, y, validation_data=(np.asarray(t.x_train[valid_idx]), t.y[valid_idx]),
                                            epochs=args.cervix_epochs, batch_size=32, verbose=0))
        images = len(train_idx) * args.cervix_epochs
        rows.append(f"| small_cnn ({t.image_size} px), {model.device['precision']} | {images / fit_s:,.0f} | "
                    f"{images / plain_s:,.0f} | | |")

    step("small_cnn float32", lambda: cervix("float32"))
    if choice.precision != "float32":
        step(f"small_cnn {choice.precision}", lambda: cervix("auto"))
    return _report(args, machine(), lines, rows)


def _report(args, machine_line: str, lines: list[str], rows: list[str]) -> int:
    body = "\n".join([
        f"Command: `python -m benchmarks.gpu_check --device {args.device}` (after `make setup GPU=1`)  ",
        f"Machine: {machine_line}  ", f"Date: {time.strftime('%Y-%m-%d')}", "",
        *lines, "",
        f"Built-in sample, {args.n_train:,} train / {args.n_test:,} test pairs, fold 1, {args.epochs} epochs "
        "(siamese); cervix sample images. Pipeline = the train stage's fit; plain = `model.fit` of the same "
        "network on the same arrays. First runs include graph tracing.", "",
        "| network | pipeline samples/s | plain fit samples/s | test pairs/s distinct / per pair | max diff |",
        "|---|---:|---:|---:|---:|", *rows, ""])
    print(body)
    if args.out:
        Path(args.out).write_text(body)
    return 0 if rows and not any("failed" in line for line in lines if "LightGBM" not in line) else 1


if __name__ == "__main__":
    raise SystemExit(main())
