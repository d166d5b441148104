"""Quora models: CV quality on real rows, siamese training throughput, and cost at Kaggle scale.

    python -m benchmarks quora_models                     # (1) quality + (2) throughput, real rows
    python -m benchmarks quora_models --scale=kaggle      # (3) time and memory per model at Kaggle size

(options in the --name=value form: the benchmarks runner treats bare words as benchmark names)

(1) ``--scale real`` (default): imports ``/work/shared/data/quora`` (11,587 real labelled pairs) as
source ``local-quora`` with the data stage, builds its features, trains every model from scratch
with its default options (5-fold CV, each model in its own process for its peak RSS), blends them
(the default weights, and the ``--method stack`` stacker for comparison),
and writes the table of CV log loss / AUC / accuracy / time / memory to BENCHMARKS.md
(section ``quora-models``), with the checks: the blend beats every model, LightGBM beats the BoW
SVM, and the blend's target (CV log loss <= 0.365).

(2) Siamese throughput (same run, section ``quora-siamese-throughput``): training pairs per second
of fold 1 fitted through the pipeline (``SiameseModel.fit``: array preparation,
checkpoints every 60 s and at the end, resumable early stopping) next to a plain ``model.fit`` of the same Keras
model on the same prepared arrays; same epochs (patience > epochs, so both run all of them).

(3) ``--scale kaggle``: every model on the Kaggle-size features built by
``python -m benchmarks quora_features`` (``data/quora/bench-kaggle/features``; synthetic labels, so
timings only): fit and predict seconds of one fold (``--folds=all`` for all five) and the peak RSS of
the process, section ``quora-models-kaggle-scale``. The siamese networks run ``--nn-epochs`` epochs
(default 1) there: their time per epoch is the figure of interest; LightGBM runs ``--lgbm-rounds``
rounds without early stopping (the synthetic labels would stop it at once). The section ends with
the whole pipeline's time at that size: the features benchmark's total, 5 x each model's fold, and a
timed blend + submission CSV of the test set's size (``time_blend_and_submission``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.report import peak_rss_mb, update_section
from benchmarks.shared import RESULT_TAG, SHARED_DATA, child_result, print_result
from pipelines import config

log = logging.getLogger(__name__)
REAL_SOURCE = "local-quora"
TARGET_BLEND = 0.365


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks quora_models")
    p.add_argument("--scale", choices=["real", "kaggle"], default="real")
    p.add_argument("--data", default=str(SHARED_DATA / "quora"), help="real data folder (scale real)")
    p.add_argument("--features-dir", default=None,
                   help="scale kaggle: features folder (default data/quora/bench-kaggle/features)")
    p.add_argument("--models", default=None, help="comma-separated subset (default: every model)")
    p.add_argument("--train-args", default="", help="extra `make train` options for every model, quoted")
    p.add_argument("--folds", choices=["one", "all"], default="one", help="scale kaggle: folds to fit")
    p.add_argument("--nn-epochs", type=int, default=1, help="scale kaggle: epochs of the siamese networks")
    p.add_argument("--reuse", action="store_true",
                   help="scale kaggle: report the models already fitted in models/quora/bench-kaggle/ "
                        "instead of fitting them again")
    p.add_argument("--lgbm-rounds", type=int, default=2000,
                   help="scale kaggle: LightGBM boosting rounds, run in full (no early stopping: the synthetic "
                        "labels stop it after a few rounds, which would time nothing)")
    p.add_argument("--throughput-epochs", type=int, default=3)
    p.add_argument("--throughput-repeats", type=int, default=3,
                   help="timed runs per side, alternating (the best of each counts)")
    p.add_argument("--parts", default="quality,throughput",
                   help="scale real: which parts to run, comma-separated (quality, throughput)")
    p.add_argument("--no-report", action="store_true", help="print, do not write BENCHMARKS.md")
    # internal: one model in a child process
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--source", default=REAL_SOURCE, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--only-fold", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----- one model, in its own process ------------------------------------------------------------------

def train_namespace(model: str, source: str, extra: list[str]) -> argparse.Namespace:
    from pipelines.common import train

    return train.parse_args("quora", ["--source", source, "--model", model, *extra])


def build_model(name: str, features, ns: argparse.Namespace):
    """The model ``name`` as the train stage builds it, on the features reader ``features`` (any folder)."""
    from pipelines.common import train
    from pipelines.common.competition import TrainData

    data = TrainData(y=features.labels, folds=features.folds, train_ids=features.ids_train,
                     test_ids=features.ids_test, inputs=[features.lock_path], features=features)
    return train.build_model("quora", name, ns, data)[0]


def fold_times(out_dir: Path) -> dict:
    """{folds, fit_s, predict_s} of the folds the CV engine finished in ``out_dir``."""
    folds = sorted(int(p.stem.split("_")[1]) for p in (out_dir / "folds").glob("fold_*.npz"))
    fit_s, predict_s = [], []
    for k in folds:
        with np.load(out_dir / "folds" / f"fold_{k}.npz") as z:
            fit_s.append(float(z["fit_s"]))
            predict_s.append(float(z["predict_s"]))
    return {"folds": folds, "fit_s": fit_s, "predict_s": predict_s}


def child_main(args) -> int:
    """Train one model from scratch (no resume) and print its timings and this process's peak RSS."""
    from pipelines.common.cv import run_cv
    from pipelines.common.records import input_fingerprints
    from pipelines.quora.competition import TASK
    from pipelines.quora.models import QuoraFeatures

    ns = train_namespace(args.child, args.source, shlex.split(args.train_args))
    data = QuoraFeatures(Path(args.features_dir))
    t0 = time.perf_counter()
    model = build_model(args.child, data, ns)
    out_dir = Path(args.out_dir)
    result = run_cv(model, comp="quora", source=args.source, out_dir=out_dir, y=data.labels, folds=data.folds,
                    train_ids=data.ids_train, test_ids=data.ids_test, task=TASK,
                    seed=ns.seed, inputs=input_fingerprints([data.lock_path]), resume=False,
                    only_folds=[0] if args.only_fold else None)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"model": args.child, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_mb": peak_rss_mb(), **fold_times(out_dir),
           "n_train": int(len(data.labels)),
           "n_test": int(len(data.ids_test)), "complete": bool(result.get("complete"))}
    for key in ("log_loss", "auc", "accuracy"):
        if key in result:
            out[key] = result[key]
    from pipelines.common.io import write_json

    write_json(out_dir / "bench_result.json", out)  # for `--reuse`: the report without refitting
    print_result(out)
    return 0


def run_child(model: str, features_dir: Path, out_dir: Path, source: str, extra: list[str],
              only_fold: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_quora_models", f"--child={model}",
           f"--features-dir={features_dir}", f"--out-dir={out_dir}", f"--source={source}",
           f"--train-args={shlex.join(extra)}"]
    if only_fold:
        cmd.append("--only-fold")
    log.info("benchmark: %s", " ".join(cmd))
    return child_result(cmd, model)


# ----- (1) quality on the real rows ---------------------------------------------------------------------

def _f(v, fmt="{:.4f}"):
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def quality(args, models: list[str], extra: list[str]) -> tuple[str, dict]:
    from pipelines.__main__ import main as cli
    from pipelines.common.io import read_json

    data_path = Path(args.data)
    if not data_path.exists():
        raise SystemExit(f"no real data at {data_path}")
    source = config.source_label(str(data_path))
    for stage in (["data"], ["features"]):
        if cli([*stage, "--comp", "quora", "--source", str(data_path)]) != 0:
            raise SystemExit(f"the {stage[0]} stage failed on {data_path}")
    features_dir = config.features_dir("quora", source)
    rows = {}
    for m in models:
        rows[m] = run_child(m, features_dir, config.model_dir("quora", source, f"{m}/bench"), source, extra,
                            only_fold=False)
    blend_dir = config.model_dir("quora", source, "blend")
    # The stacker first, for its row; then the default blend, which stays in models/.../blend.
    if cli(["blend", "--comp", "quora", "--source", source, "--no-submission", "--method", "stack"]) != 0:
        raise SystemExit("the blend stage (--method stack) failed")
    stack = read_json(blend_dir / "metrics.json")
    t0 = time.perf_counter()
    if cli(["blend", "--comp", "quora", "--source", source, "--no-submission"]) != 0:
        raise SystemExit("the blend stage failed")
    blend_wall = time.perf_counter() - t0
    blend = read_json(blend_dir / "metrics.json")

    lines = ["| model | CV log loss | AUC | accuracy | fit s (5 folds) | predict s | peak RSS MB | blend weight |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    weights = blend.get("weights", {})
    for m, r in rows.items():
        lines.append(f"| {m} | {_f(r['log_loss'])} | {_f(r.get('auc'))} | {_f(r['accuracy'])} | "
                     f"{sum(r['fit_s']):.1f} | {sum(r['predict_s']):.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{_f(weights.get(m), '{:.3f}')} |")
    lines.append(f"| **blend ({blend['method']}, cross-fitted)** | **{_f(blend['log_loss'])}** | {_f(blend.get('auc'))} | "
                 f"{_f(blend['accuracy'])} | {blend_wall:.1f} (stage) | | | |")
    lines.append(f"| blend (`--method stack`, cross-fitted) | {_f(stack['log_loss'])} | {_f(stack.get('auc'))} | "
                 f"{_f(stack['accuracy'])} | | | | |")
    best = min(rows, key=lambda m: rows[m]["log_loss"])
    checks = [
        f"- blend beats every model: **{'yes' if all(blend['log_loss'] < r['log_loss'] for r in rows.values()) else 'NO'}** "
        f"(blend {blend['log_loss']:.4f} vs best single {best} {rows[best]['log_loss']:.4f})",
    ]
    if "lgbm" in rows and "bow_svm" in rows:
        ok = rows["lgbm"]["log_loss"] < rows["bow_svm"]["log_loss"]
        checks.append(f"- LightGBM (handcrafted + graph) beats the BoW SVM: **{'yes' if ok else 'NO'}** "
                      f"({rows['lgbm']['log_loss']:.4f} vs {rows['bow_svm']['log_loss']:.4f})")
    met = blend["log_loss"] <= TARGET_BLEND
    checks.append(f"- blend target CV log loss ≤ {TARGET_BLEND}: **{'met' if met else 'NOT met'}** "
                  f"({blend['log_loss']:.4f}; the prior scores {prior_log_loss(features_dir):.4f})")
    n = rows[models[0]]["n_train"]
    head = (f"{n:,} real labelled pairs (`{data_path}`, source `{source}`), 5-fold CV on the features stage's "
            f"folds, every model trained from scratch with its default options"
            f"{' plus `' + shlex.join(extra) + '`' if extra else ''}, each in its own process (peak RSS: that "
            "process's). The blend's score is cross-fitted (each fold scored by weights fitted on the other "
            "folds).")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(checks) + "\n", {"rows": rows, "blend": blend}


def prior_log_loss(features_dir: Path) -> float:
    y = np.load(features_dir / "labels.npy").astype(float)
    p = y.mean()
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ----- (2) siamese throughput -----------------------------------------------------------------------

def throughput(features_dir: Path, epochs: int, model_name: str = "siamese_lstm", repeats: int = 3) -> str:
    """Pairs/s of fold 1 through SiameseModel.fit versus a plain model.fit on the same arrays.

    The two alternate (plain first on odd repeats, pipeline first on even ones) and the best of the
    repeats counts, so warm-up and the load of a shared machine hit both alike; wall and process
    CPU seconds are both reported.
    """
    import tempfile

    from pipelines.quora.models import QuoraFeatures
    from pipelines.common import device as device_mod
    from pipelines.quora.models.siamese import keras_modules

    keras, tf = keras_modules()
    data = QuoraFeatures(features_dir)
    ns = train_namespace(model_name, REAL_SOURCE, ["--epochs", str(epochs), "--patience", str(epochs + 1)])
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    pairs = len(train_idx) * epochs  # every train pair once an epoch (the network is order-free)

    def pipeline():
        model = build_model(model_name, data, ns)
        model.verbose = 0
        with tempfile.TemporaryDirectory(prefix="bench-siamese-") as fold_dir:
            model.fit(0, train_idx, valid_idx, Path(fold_dir))
        assert len(model.history["loss"]) == epochs

    timings = {"pipeline": [], "plain": []}
    cpu = {"pipeline": [], "plain": []}

    def timed(name):
        if name == "plain":  # time only model.fit: the arrays and the network are built outside the timer
            model = build_model(model_name, data, ns)
            keras.utils.set_random_seed(ns.seed)
            arrays = model.training_arrays(train_idx, valid_idx, model.feature_scaler(train_idx))
            device_mod.apply_tensorflow(model.choice)  # the pipeline's device and precision policy (GPU: mixed)
            net = model.new_keras_model()
            w0, c0 = time.perf_counter(), time.process_time()
            net.fit(arrays[0], arrays[1], validation_data=(arrays[2], arrays[3]), epochs=epochs,
                    batch_size=ns.batch_size, shuffle=True, verbose=0)
        else:
            w0, c0 = time.perf_counter(), time.process_time()
            pipeline()
        timings[name].append(time.perf_counter() - w0)
        cpu[name].append(time.process_time() - c0)

    load_before = os.getloadavg()[0]
    for rep in range(repeats):
        for name in ("plain", "pipeline") if rep % 2 == 0 else ("pipeline", "plain"):
            timed(name)
        log.info("throughput repeat %d: plain %.1f s, pipeline %.1f s", rep + 1, timings["plain"][-1],
                 timings["pipeline"][-1])
    load_after = os.getloadavg()[0]
    best = {k: min(v) for k, v in timings.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    overhead = best["pipeline"] / best["plain"] - 1
    overhead_cpu = best_cpu["pipeline"] / best_cpu["plain"] - 1
    lines = [f"| fit of fold 1 | wall s (best of {repeats}) | training pairs/s | CPU s (best of {repeats}) |",
             "|---|---:|---:|---:|",
             f"| plain `model.fit` on the prepared arrays | {best['plain']:.1f} | {pairs / best['plain']:,.0f} | "
             f"{best_cpu['plain']:.1f} |",
             f"| through the pipeline (`SiameseModel.fit`) | {best['pipeline']:.1f} | "
             f"{pairs / best['pipeline']:,.0f} | {best_cpu['pipeline']:.1f} |"]
    runs = "; ".join(f"{k}: " + " / ".join(f"{t:.1f}" for t in v) + " s" for k, v in timings.items())
    head = (f"`{model_name}` with the default options, {len(train_idx):,} train pairs of fold 1 "
            f"an epoch, {epochs} epochs, validation on {len(valid_idx):,} pairs "
            f"every epoch in both; the two alternate, best of {repeats}. All wall times: {runs}. 1-minute load "
            f"average {load_before:.1f} before, {load_after:.1f} after (2 cores shared with other work).")
    verdict = (f"Pipeline overhead: **{overhead * 100:+.1f}%** wall, **{overhead_cpu * 100:+.1f}%** CPU (limit +10%; "
               "the pipeline's figure includes building the arrays and its checkpoints (.keras + best weights + "
               f"state; at most every {config.CHECKPOINT_EVERY_S:.0f} s and when training ends).")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + verdict + "\n"


# ----- (3) Kaggle scale -------------------------------------------------------------------------------

def kaggle_scale(args, models: list[str], extra: list[str]) -> str:
    features_dir = Path(args.features_dir) if args.features_dir else config.DATA_DIR / "quora" / "bench-kaggle" / "features"
    if not (features_dir / "features.lock.json").exists():
        raise SystemExit(f"no features in {features_dir}: run `python -m benchmarks quora_features` first")
    out_root = config.MODELS_DIR / "quora" / features_dir.parent.name
    lines = ["| model | folds fitted | fit s / fold | predict s / fold (valid + test) | process wall s | process CPU s "
             "| peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    load_before = os.getloadavg()[0]
    folds = np.load(features_dir / "folds.npy")
    n_folds = int(folds.max()) + 1
    n_train = n_test = None
    results = {}
    for m in models:
        opts = list(extra) + (["--epochs", str(args.nn_epochs)] if m.startswith("siamese") else [])
        if m == "lgbm":
            opts += ["--lgbm-early-stopping", "0", "--lgbm-rounds", str(args.lgbm_rounds)]
        r = earlier_result(out_root / m, features_dir) if args.reuse else None
        if r is None:
            r = run_child(m, features_dir, out_root / m, f"local-{features_dir.parent.name}", opts,
                          only_fold=args.folds == "one")
        n_train, n_test = r["n_train"], r["n_test"]
        results[m] = r
        rss = "–" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"
        rate = ""
        if m.startswith("siamese"):
            n_fit = int(np.sum(folds != 0))  # fold 1's train part
            rate = f" ({n_fit * args.nn_epochs / np.mean(r['fit_s']):,.0f} training pairs/s)"
        cpu = "–" if r.get("cpu_s") is None else f"{r['cpu_s']:.0f}"
        lines.append(f"| {m} | {len(r['folds'])} | {np.mean(r['fit_s']):.0f}{rate} | {np.mean(r['predict_s']):.0f} | "
                     f"{r.get('wall_s', float('nan')):.0f} | {cpu} | {rss} |")
    per_model_s = {}
    for m, r in results.items():
        per_model_s[m] = n_folds * (np.mean(r["fit_s"]) + np.mean(r["predict_s"]))
    blend_s, blend_rss, csv_mb = time_blend_and_submission(features_dir, len(results))
    lines.append(f"| blend ({len(results)} models) + prior-corrected, validated {n_test:,}-row CSV | – | "
                 f"{blend_s:.0f} (all of it) | – | | | {blend_rss:.0f} |")
    features_run = features_benchmark(features_dir)
    features_s = features_run.get("total_wall_s")
    head = (f"Features of {n_train:,} train + {n_test:,} test pairs (`{features_dir}`, synthetic labels: timings "
            f"only). Each model in its own process, fresh (no resume); siamese networks {args.nn_epochs} "
            f"epoch(s); LightGBM {args.lgbm_rounds} rounds without early stopping (the synthetic labels would stop it "
            f"at once; on real rows early stopping picks the count, and 35x the rows need more than the 11,587 real "
            f"pairs do). Process wall and CPU: the whole child process (loading the features, every fold fitted, "
            f"its predictions, writing them). The blend row fits the blend on synthetic predictions of the same "
            f"shapes ({len(results)} models) and writes the {csv_mb:.0f} MB leaderboard CSV. 1-minute load average "
            f"{load_before:.1f} before the models, {os.getloadavg()[0]:.1f} after.")
    est = [f"features {features_s / 60:.0f} min" if features_s else "features (not recorded: run "
           "`python -m benchmarks quora_features`)"]
    est += [f"{m} {n_folds} x fold = {v / 60:.0f} min" for m, v in per_model_s.items()]
    est.append(f"blend + CSV {blend_s / 60:.1f} min")
    total = (features_s or 0.0) + sum(per_model_s.values()) + blend_s
    verdict = ("within" if total <= 3600 else "over") + " the 60-minute target"
    peak = max([r["peak_rss_mb"] for r in results.values() if r.get("peak_rss_mb") is not None] + [blend_rss]
               + [features_run.get("peak_rss_mb", 0.0)])
    summary = (f"Whole pipeline at this size, from these per-fold figures ({n_folds} folds; siamese at "
               f"{args.nn_epochs} epoch(s) a fold): " + " + ".join(est) + f" = **{total / 60:.0f} min**, {verdict}; "
               f"the largest process peaked at **{peak / 1024:.1f} GB** (target 8 GB; features included).")
    for m, r in results.items():
        if m.startswith("siamese"):
            summary += (f" Each further {m} epoch (one pass over the fold's pairs) adds about "
                        f"{np.mean(r['fit_s']) / args.nn_epochs:.0f} s a fold; early stopping on the 11,587 real "
                        "pairs ran 14-24 epochs.")
    if any(r.get("peak_rss_mb") is None for r in results.values()):
        summary += (" –: peak RSS not recorded (`--reuse` of fits made before the benchmark kept its results "
                    "in bench_result.json).")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + summary + "\n"


def earlier_result(out_dir: Path, features_dir: Path) -> dict | None:
    """The result of an earlier child run in ``out_dir`` (``--reuse``): its bench_result.json, or else the
    fold files the CV engine wrote (fit and predict seconds; the peak RSS then is unknown)."""
    path = out_dir / "bench_result.json"
    if path.exists():
        return json.loads(path.read_text())
    times = fold_times(out_dir)
    if not times["folds"]:
        return None
    return {**times, "peak_rss_mb": None, "n_train": int(len(np.load(features_dir / "labels.npy"))),
            "n_test": int(len(np.load(features_dir / "ids_test.npy")))}


def features_benchmark(features_dir: Path) -> dict:
    """The features benchmark's record of its last build of ``features_dir`` (total_wall_s, peak_rss_mb), or {}."""
    path = features_dir.parent / "bench_features.json"
    return json.loads(path.read_text()) if path.exists() else {}


def time_blend_and_submission(features_dir: Path, n_models: int) -> tuple[float, float, float]:
    """Seconds and peak RSS of the blend and the submission at this size, in a child process.

    The blend code (cross-fitted weights, final fit, test application) and the submission code (prior
    correction, validation against the sample submission's ids, CSV write) are the pipeline's own;
    only the model predictions are synthetic, drawn to be informative about the labels.
    """
    code = f"""
import json, sys, tempfile, time, types
from pathlib import Path
import numpy as np, pandas as pd
from benchmarks.report import peak_rss_mb
from pipelines import competitions
from pipelines.common.blend import blend_runs
from pipelines.common.submission import validate_submission
from pipelines.quora import submission as qs
fd = Path({str(features_dir)!r})
y = np.load(fd / "labels.npy").astype(int); folds = np.load(fd / "folds.npy").astype(int)
ids_test = np.load(fd / "ids_test.npy"); rng = np.random.default_rng(0)
def preds(n, signal):
    p = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, n))))
    return np.stack([1 - p, p], axis=1)
data = {{"names": [f"m{{i}}" for i in range({n_models})], "ids": np.arange(len(y)), "test_ids": ids_test,
        "folds": folds, "y": y, "task": competitions.get("quora").task,
        "oof": np.stack([preds(len(y), 2.0 * y - 1) for _ in range({n_models})]),
        "test": np.stack([preds(len(ids_test), 0.0) for _ in range({n_models})])}}
t0 = time.perf_counter()
result = blend_runs(data, "weights")
test = pd.DataFrame({{"id": ids_test, "is_duplicate": data["task"].from_class_probs(result["test"])}})
args = types.SimpleNamespace(source="bench", test_positive_rate=qs.DEFAULT_TEST_POSITIVE_RATE,
                             train_positive_rate=float(y.mean()), no_prior_correction=False)
df = qs.to_submission(test, args)
ref = pd.read_csv(fd.parent / "raw" / "sample_submission.csv", usecols=["test_id"], dtype={{"test_id": str}})
validate_submission("quora", df, ref["test_id"].to_numpy(dtype=object))
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "submission.csv"
    df.to_csv(out, index=False)
    mb = out.stat().st_size / 1e6
wall = time.perf_counter() - t0
print({RESULT_TAG!r} + json.dumps({{"wall_s": wall, "peak_rss_mb": peak_rss_mb(), "csv_mb": mb}}), flush=True)
"""
    r = child_result([sys.executable, "-c", code], "blend timing")
    return r["wall_s"], r["peak_rss_mb"], r["csv_mb"]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    from pipelines import competitions

    models = ([m.strip() for m in args.models.split(",")] if args.models
              else competitions.get("quora").models.names())
    extra = shlex.split(args.train_args)
    # the command that reproduces the figures: --reuse only re-reports them
    command = "python -m benchmarks quora_models " + " ".join(a for a in argv if a != "--reuse")
    if args.scale == "kaggle":
        body = kaggle_scale(args, models, extra)
        print(body)
        if not args.no_report:
            update_section("quora-models-kaggle-scale", body, command.strip())
        return 0
    parts = {p.strip() for p in args.parts.split(",")}
    if "quality" in parts:
        body, _ = quality(args, models, extra)
        print(body)
        if not args.no_report:
            update_section("quora-models", body, command.strip())
    if "throughput" in parts:
        source = config.source_label(str(Path(args.data)))
        tp = throughput(config.features_dir("quora", source), args.throughput_epochs,
                        repeats=args.throughput_repeats)
        print(tp)
        if not args.no_report:
            update_section("quora-siamese-throughput", tp, command.strip())
    return 0


if __name__ == "__main__":
    from pipelines.common.log import setup_logging

    setup_logging()
    sys.exit(main(sys.argv[1:]))
