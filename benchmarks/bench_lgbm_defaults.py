"""``python -m benchmarks lgbm_defaults [--source=../shared/data/quora] [--kaggle-features=DIR --rounds=400]``

LightGBM's defaults, quality against speed (issue 15: every changed default keeps the 5-fold CV on the
real rows within 0.002 of the earlier one).

(1) Quality: the train stage's own ``train --model lgbm`` on the real rows (the data and features stages
run first when the source has none; outputs under PIPELINES_ROOT when set) for each setting of
``SETTINGS``: the earlier defaults, each changed default alone, and today's defaults. CV log loss and
the rounds early stopping kept in each fold (the trees in its saved model). The histogram layout
(row-wise before, column-wise now) is not a train option; those settings put it over the model's
LightGBM parameters.

(2) Speed, with ``--kaggle-features`` (the Kaggle-size features of ``python -m benchmarks quora_features``,
synthetic labels): fold 1's fit of ``--rounds`` rounds without early stopping (the synthetic labels would
stop it at once), each setting in its own child process, wall and CPU seconds of the fit and the
process's peak RSS.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.report import update_section
from benchmarks.shared import SHARED_DATA, child_result, print_result, quora_features
from pipelines import config

# (label, train options, LightGBM parameters put over the model's); the first is the baseline every
# other is compared with. The histogram layout is not an option (a speed setting; on the real rows both
# layouts give the same predictions), so the earlier row-wise one is set through the parameters.
ROW_WISE = {"force_row_wise": True, "force_col_wise": False}
SETTINGS = [
    ("earlier defaults (learning rate 0.02, max_bin 255, row-wise histograms)",
     ["--lgbm-learning-rate", "0.02", "--lgbm-max-bin", "255"], ROW_WISE),
    ("max_bin 63 alone", ["--lgbm-learning-rate", "0.02", "--lgbm-max-bin", "63"], ROW_WISE),
    ("learning rate 0.03 alone", ["--lgbm-learning-rate", "0.03", "--lgbm-max-bin", "255"], ROW_WISE),
    ("learning rate 0.03, max_bin 63, row-wise histograms", [], ROW_WISE),
    ("**today's defaults** (learning rate 0.03, max_bin 63, column-wise histograms)", [], {}),
]


@contextlib.contextmanager
def lgb_params_over(extra: dict):
    """LgbmModel's LightGBM parameters with ``extra`` put over them, for the duration."""
    from pipelines.quora.models.lgbm import LgbmModel

    own = LgbmModel.lgb_params
    LgbmModel.lgb_params = lambda self: {**own(self), **extra}
    try:
        yield
    finally:
        LgbmModel.lgb_params = own


def _trees(model_txt: Path) -> int:
    return sum(1 for line in model_txt.read_text().splitlines() if line.startswith("Tree="))


def quality(source: str, label: str) -> list[str]:
    from pipelines.__main__ import main as cli

    if not (config.features_dir("quora", label) / "features.lock.json").exists():
        quora_features(source)
    rows = ["| setting | CV log loss | against the earlier defaults | rounds kept per fold | fit s (5 folds) |",
            "|---|---:|---:|---|---:|"]
    base = None
    for i, (name, opts, extra) in enumerate(SETTINGS):
        run = f"bench-defaults-{i}"
        with lgb_params_over(extra):
            assert cli(["train", "--comp", "quora", "--source", label, "--model", "lgbm", "--run", run,
                        "--replace", *opts]) == 0
        run_dir = config.model_dir("quora", label, f"lgbm/{run}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        trees = [_trees(p) for p in sorted((run_dir / "folds").glob("fold_*/model.txt"))]
        base = metrics["log_loss"] if base is None else base
        delta = metrics["log_loss"] - base
        rows.append(f"| {name} | {metrics['log_loss']:.5f} | {delta:+.5f} | {', '.join(map(str, trees))} "
                    f"(mean {np.mean(trees):.0f}) | {metrics['fit_seconds']:.0f} |")
    return rows


def child(features_dir: str, rounds: int, opts: list[str], extra: dict) -> None:
    """One fold-1 fit at Kaggle size, printed as a result line."""
    import resource

    from benchmarks.bench_quora_models import build_model, train_namespace
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(Path(features_dir))
    ns = train_namespace("lgbm", "local-bench-kaggle", [*opts, "--lgbm-rounds", str(rounds),
                                                        "--lgbm-early-stopping", "0"])
    model = build_model("lgbm", data, ns)
    t0, c0 = time.perf_counter(), time.process_time()
    _ = model.x_train
    design_s = time.perf_counter() - t0
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    t1, c1 = time.perf_counter(), time.process_time()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, lgb_params_over(extra):
        model.fit(0, train_idx, valid_idx, Path(tmp))
    out = {"design_s": design_s, "fit_s": time.perf_counter() - t1, "fit_cpu_s": time.process_time() - c1,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "n_rows": int(len(train_idx)), "n_columns": int(model.x_train.shape[1])}
    print_result(out)


def speed(features_dir: str, rounds: int) -> list[str]:
    rows = [f"| setting | fit of fold 1, {rounds} rounds: wall s | CPU s | per round, wall s | peak RSS MB |",
            "|---|---:|---:|---:|---:|"]
    results = []
    for name, opts, extra in SETTINGS:
        r = child_result([sys.executable, "-m", "benchmarks.bench_lgbm_defaults", f"--child={features_dir}",
                          f"--rounds={rounds}", f"--child-opts={json.dumps(opts)}",
                          f"--child-params={json.dumps(extra)}"], name)
        results.append(r)
        rows.append(f"| {name} | {r['fit_s']:.1f} | {r['fit_cpu_s']:.1f} | {r['fit_s'] / rounds:.3f} | "
                    f"{r['peak_rss_mb']:.0f} |")
    r0 = results[0]
    rows.append("")
    rows.append(f"{r0['n_rows']:,} train rows x {r0['n_columns']:,} columns (fold 1); the design matrix took "
                f"{r0['design_s']:.0f} s before each fit (not in the figures).")
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks lgbm_defaults")
    parser.add_argument("--source", default=str(SHARED_DATA / "quora"), help="the real rows (a folder)")
    parser.add_argument("--label", default="local-quora", help="the data stage's name of --source")
    parser.add_argument("--kaggle-features", default=None)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-opts", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--child-params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.rounds, json.loads(args.child_opts), json.loads(args.child_params))

    load = os.getloadavg()[0]
    parts = []
    if not args.skip_quality:
        parts += [f"(1) 5-fold CV on the real rows (`{args.source}`), the train stage's `train --model lgbm` "
                  "with each setting (early stopping as by default):", "", *quality(args.source, args.label), ""]
    if args.kaggle_features:
        parts += [f"(2) Speed at Kaggle size (`{args.kaggle_features}`, synthetic labels), each setting in its own "
                  "process:", "", *speed(args.kaggle_features, args.rounds), ""]
    parts.append(f"1-minute load average {load:.1f} before, {os.getloadavg()[0]:.1f} after.")
    body = "\n".join(parts)
    print(body)
    if not args.no_report:
        command = "python -m benchmarks lgbm_defaults " + " ".join(argv)
        update_section("lgbm-defaults", body, command.strip())


if __name__ == "__main__":  # the speed part's child processes
    main(sys.argv[1:])
