"""The whole Quora pipeline at Kaggle size, end to end, through the commands a user runs.

    python -m benchmarks kaggle_pipeline [--lgbm-rounds=1333] [--nn-epochs=2] [--no-report]

(options in the --name=value form: the benchmarks runner treats bare words as benchmark names)

The raw data are the Kaggle-size files of ``python -m benchmarks quora_features`` (404,290 train +
2,345,796 test pairs in Kaggle's columns, Kaggle's share of distinct questions; generated here when
missing). In a project root of its own (``data/quora/bench-kaggle/pipeline-root``, emptied first: every
stage runs fresh), the benchmark runs, each as its own process:

    python -m pipelines data     --comp quora --source <raw>
    python -m pipelines features --comp quora --source <raw>
    python -m pipelines train    --comp quora --source <raw> --model lgbm --lgbm-early-stopping 0 --lgbm-rounds N
    python -m pipelines train    --comp quora --source <raw> --model bow_svm
    python -m pipelines train    --comp quora --source <raw> --model siamese_gru --epochs E
    python -m pipelines blend    --comp quora --source <raw>

that is ``make data/features/train/blend`` with ``SOURCE=<raw>`` and those ``ARGS``, all five folds of every
model, the blend and the validated 2,345,796-row leaderboard CSV. Each process's wall seconds, CPU seconds
and peak RSS come from ``os.wait4`` (the kernel's figures for that process), so nothing is estimated from
one fold. The labels are the generator's, so the models' scores mean nothing: LightGBM runs a fixed number
of rounds and the network a fixed number of epochs, the work early stopping would choose on real data.

VM speed moves from day to day on shared machines (BENCHMARKS.md has a 2x swing of the same LightGBM
fit), so the report starts with a fixed reference workload (``reference_seconds``) timed on the same
machine just before: a figure taken on a slower day can be scaled by it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.shared import REPO_ROOT
from pipelines import config

log = logging.getLogger(__name__)
TARGET_S = 3600
TARGET_RSS_MB = 8 * 1024
REFERENCE_CODE = """
import json, time
import numpy as np, lightgbm as lgb
rng = np.random.default_rng(0)
x = rng.normal(size=(200_000, 40)).astype(np.float32)
y = (x[:, :5].sum(axis=1) + rng.normal(size=len(x)) > 0).astype(int)
t0 = time.perf_counter()
booster = lgb.train({"objective": "binary", "num_leaves": 31, "max_bin": 63, "num_threads": 2, "seed": 0,
                     "deterministic": True, "force_col_wise": True, "verbosity": -1},
                    lgb.Dataset(x, label=y), num_boost_round=200)
fit = time.perf_counter() - t0
t0 = time.perf_counter()
booster.predict(x, num_threads=2)
predict = time.perf_counter() - t0
a = rng.normal(size=(2_000_000,))
t0 = time.perf_counter()
for _ in range(20):
    np.sort(a)
one_thread = time.perf_counter() - t0
print(json.dumps({"lgbm_fit_s": fit, "lgbm_predict_s": predict, "sort_s": one_thread}))
"""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks kaggle_pipeline")
    p.add_argument("--lgbm-rounds", type=int, default=1333,
                   help="LightGBM rounds (fixed: the synthetic labels would stop early stopping at once)")
    p.add_argument("--lgbm-test-from", default="folds", choices=("folds", "refit"),
                   help="LightGBM's test predictions: the fold models' average, or one refit on every train row")
    p.add_argument("--nn-epochs", type=int, default=2, help="epochs of the siamese network (fixed, as above)")
    p.add_argument("--model-nn", default="siamese_gru", help="the Siamese network of the pipeline")
    p.add_argument("--workdir", default=None,
                   help="the project root the stages run in (default data/quora/bench-kaggle/pipeline-root); "
                        "emptied first")
    p.add_argument("--n-train", type=int, default=None, help="fewer train pairs than Kaggle's (a quick check)")
    p.add_argument("--n-test", type=int, default=None, help="fewer test pairs than Kaggle's (a quick check)")
    p.add_argument("--no-report", action="store_true", help="print, do not write BENCHMARKS.md")
    p.add_argument("--section", default="quora-kaggle-pipeline", help="the BENCHMARKS.md section it writes")
    return p.parse_args(argv)


def reference_seconds() -> dict:
    """A fixed workload's seconds on this machine now (2-thread LightGBM fit and predict, a 1-thread sort)."""
    proc = subprocess.run([sys.executable, "-c", REFERENCE_CODE], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_process(argv: list[str], env: dict, log_path: Path) -> dict:
    """Run ``argv``; its wall and CPU seconds and peak RSS (the kernel's, from wait4), its output in log_path."""
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}); its log: {log_path}\n" + "\n".join(tail))
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0}


def stages(raw: Path, args) -> list[tuple[str, list[str]]]:
    base = ["--comp", "quora", "--source", str(raw)]
    return [
        ("data", ["data", *base]),
        ("features", ["features", *base]),
        ("train lgbm", ["train", *base, "--model", "lgbm", "--lgbm-early-stopping", "0",
                        "--lgbm-rounds", str(args.lgbm_rounds),
                        *(["--lgbm-test-from", args.lgbm_test_from] if args.lgbm_test_from != "folds" else [])]),
        ("train bow_svm", ["train", *base, "--model", "bow_svm"]),
        (f"train {args.model_nn}", ["train", *base, "--model", args.model_nn, "--epochs", str(args.nn_epochs)]),
        ("blend + CSV", ["blend", *base]),
    ]


def fold_seconds(root: Path, model: str) -> str:
    """'fit f / predict p s a fold' of the model's one run in ``root`` (its metrics.json)."""
    found = list((root / "models" / "quora").glob(f"*/{model}/*/metrics.json"))
    if not found:
        return ""
    m = json.loads(found[0].read_text())
    n = max(1, int(m.get("n_folds", 5)))
    text = f"fit {m['fit_seconds'] / n:.0f} s + predict {m['predict_seconds'] / n:.0f} s a fold"
    if m.get("test_from") == "refit":
        r = m["refit"]
        text += (f"; then the refit on every train row, {r['rounds']} rounds: fit {r['fit_seconds']:.0f} s + test "
                 f"predictions {r['predict_seconds']:.0f} s")
    return text


def lgbm_leaves(root: Path) -> str:
    found = list((root / "models" / "quora").glob("*/lgbm/*/params.json"))
    return str(json.loads(found[0].read_text())["params"]["num_leaves"]) if found else "?"


def submission_rows(root: Path) -> tuple[str, int]:
    csvs = sorted((root / "submissions" / "quora").glob("*.csv"), key=lambda p: p.stat().st_mtime_ns)
    if not csvs:
        raise SystemExit(f"the blend wrote no CSV under {root / 'submissions' / 'quora'}")
    with open(csvs[-1]) as f:
        rows = sum(1 for _ in f) - 1
    return csvs[-1].name, rows


def report(results: dict, ref: dict, root: Path, raw: Path, args, csv: tuple[str, int]) -> str:
    lines = ["| stage (`python -m pipelines …`) | wall s | CPU s | peak RSS MB | per fold |",
             "|---|---:|---:|---:|---|"]
    for name, r in results.items():
        model = name.split()[-1] if name.startswith("train ") else None
        lines.append(f"| {name} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{fold_seconds(root, model) if model else ''} |")
    total = sum(r["wall_s"] for r in results.values())
    cpu = sum(r["cpu_s"] for r in results.values())
    peak = max(r["peak_rss_mb"] for r in results.values())
    lines.append(f"| **whole pipeline** | **{total:.0f}** ({total / 60:.1f} min) | {cpu:.0f} | **{peak:.0f}** | |")
    verdict_t = "met" if total <= TARGET_S else "**not met**"
    verdict_m = "met" if peak <= TARGET_RSS_MB else "**not met**"
    head = (f"Raw data `{raw}` (the Kaggle-size files of `python -m benchmarks quora_features`: Kaggle's columns and "
            f"row counts, synthetic labels, so the scores mean nothing and only the figures below count). Every stage "
            f"ran fresh as its own process in the project root `{root}`, all 5 folds of each model; "
            f"LightGBM ({lgbm_leaves(root)} leaves) {args.lgbm_rounds} rounds without early stopping ("
            + ("its test predictions the fold models' average" if args.lgbm_test_from == "folds" else
               "`--lgbm-test-from refit`: its test predictions from one booster fitted on every train row for the "
               "folds' rounds x the rows ratio") + f"), {args.model_nn} {args.nn_epochs} epochs a "
            f"fold (the synthetic labels would stop early stopping at once). Wall, CPU and peak RSS: the kernel's "
            f"figures for each process (`os.wait4`). The blend wrote `{csv[0]}`, {csv[1]:,} rows, validated against "
            f"the sample submission's ids.")
    ref_line = (f"Reference workload on this machine just before (`reference_seconds`: 2-thread LightGBM, 200 rounds "
                f"on 200,000 x 40, then its predictions; a 1-thread sort 20 x 2M): fit {ref['lgbm_fit_s']:.1f} s, "
                f"predict {ref['lgbm_predict_s']:.1f} s, sort {ref['sort_s']:.1f} s.")
    summary = (f"Whole pipeline **{total / 60:.1f} min** against the 60-minute target: {verdict_t}; the largest "
               f"process peaked at **{peak / 1024:.1f} GB** against 8 GB: {verdict_m}.")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + ref_line + "\n\n" + summary + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from benchmarks.bench_quora_features import KAGGLE_TEST, KAGGLE_TRAIN, prepare

    bench_root = prepare(args.n_train or KAGGLE_TRAIN, args.n_test or KAGGLE_TEST, config.SEED, "kaggle")
    raw = bench_root / "raw"
    root = Path(args.workdir) if args.workdir else bench_root / "pipeline-root"
    if root.resolve() in (config.ROOT.resolve(), Path.home().resolve()) or (root / ".git").exists():
        raise SystemExit(f"--workdir {root} is a project or home folder: give a scratch folder (it is emptied)")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "PIPELINES_ROOT": str(root), "PYTHONPATH": str(REPO_ROOT)}
    ref = reference_seconds()
    log.info("reference workload: %s", ref)
    results = {}
    for name, stage_argv in stages(raw, args):
        log.info("benchmark stage %s: python -m pipelines %s", name, " ".join(stage_argv))
        log_path = root / f"{name.replace(' ', '_').replace('+', '')}.log"
        results[name] = timed_process([sys.executable, "-m", "pipelines", *stage_argv], env, log_path)
        log.info("%s: %.0f s wall, %.0f s CPU, peak %.0f MB", name, results[name]["wall_s"], results[name]["cpu_s"],
                 results[name]["peak_rss_mb"])
    body = report(results, ref, root, raw, args, submission_rows(root))
    print(body)
    if not args.no_report and not (args.n_train or args.n_test):
        from benchmarks.report import update_section

        update_section(args.section, body, ("python -m benchmarks kaggle_pipeline " + " ".join(argv)).strip())
    return 0


if __name__ == "__main__":
    from pipelines.common.log import setup_logging

    setup_logging()
    sys.exit(main(sys.argv[1:]))
