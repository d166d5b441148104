"""Blend stage (every competition): ``make blend COMP=<comp> [ARGS='--method stack --models a,b']``.

Reads every finished model run under ``models/<comp>/<source>/<model>/<run>/`` (a folder with oof.parquet
and test.parquet; ``pipelines.common.runs``), checks they were trained on the same rows, folds and
targets, and fits a blend on their out-of-fold predictions:

- ``--method weights``: non-negative weights summing to 1, one per model, applied to the
  probability rows (binary or multi-class), minimising log loss (SciPy SLSQP);
- ``--method stack``: a logistic-regression stacker on the models' logits (binary) or
  log-probabilities (multi-class);
- ``--method auto`` (default): both, each cross-fitted; the better OOF log loss is used and both are reported.

``--runs 'lgbm/*,siamese_gru/bag-*'`` blends the runs whose keys (``<model>/<run>``) match the patterns; a
pattern without ``/`` matches models' names (``lgbm``: every run of lgbm) or runs' names (``tuned-*``).
``--models``: exact keys or model names.

Runs that ``make compare`` would flag as stale (trained on features, folds or data that changed since)
are refused, each named with the command that re-trains it, unless ``--allow-stale`` (recorded in the
blend's run.json and the submission's record).

The reported blend score is honest: the blend's OOF prediction of fold k comes from a blend fitted
on the other folds' OOF only (cross-fitting). The weights used for the test set are then fitted on
all OOF. The blend is written as a model run, ``models/<comp>/<source>/blend/``, in the CV engine's
format, and a leaderboard CSV goes to ``submissions/<comp>/`` (see ``pipelines.common.submission``)
with its provenance record beside it (``pipelines.common.provenance``); test ids without a prediction
get the train class prior and are listed there (``--strict`` refuses instead).

The prediction columns, the label column, binary or multi-class and the metrics are the competition's
``Task``; the submission's conversion and its options (e.g. a test-prior correction) its
``SubmissionFormat`` (``Competition.submission``): ``--comp <name> --help`` lists that competition's.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import competitions, config
from pipelines.common import runs as run_layout
from pipelines.common.compare_runs import BLEND, train_command
from pipelines.common.cv import load_predictions, pred_frame
from pipelines.common.io import read_json, sha256_file, sha256_json, write_json, write_parquet
from pipelines.common.log import StageError
from pipelines.common.records import input_fingerprints, now, run_record
from pipelines.common.stage import Stage
from pipelines.common.staleness import current_environment, environment_reasons, stale_models
from pipelines.common.submission import write_submission
from pipelines.common.task import EPS, FOLD, ID, Task

log = logging.getLogger(__name__)
OUTS = ["oof.parquet", "test.parquet", "metrics.json", "params.json", "run.json"]


# ----- command line ------------------------------------------------------------------------------

def competition_options(comp: str) -> dict:
    """{dest: default} of the options the competition's submission format adds (``add_arguments``)."""
    probe = argparse.ArgumentParser(add_help=False)
    competitions.get(comp).submission.add_arguments(probe)
    return vars(probe.parse_args([]))


def add_arguments(parser: argparse.ArgumentParser, comp: str | None = None) -> None:
    """The stage's options; with ``comp``, also that competition's submission options (none without)."""
    parser.add_argument("--method", choices=["auto", "weights", "stack"], default="auto",
                        help="weights: non-negative weights summing to 1; stack: logistic regression on the models' "
                             "logits; auto (default): fit both, report both cross-fitted scores, use the better")
    parser.add_argument("--runs", default=None, metavar="PATTERNS",
                        help="comma-separated shell patterns of the runs to blend, on <model>/<run> "
                             "('lgbm/*,siamese_gru/bag-*') or, without '/', on a model's or a run's name "
                             "(default: every finished run)")
    parser.add_argument("--models", default=None,
                        help="comma-separated runs (<model>/<run>) or models (every run of each) to blend; "
                             "--runs takes patterns")
    parser.add_argument("--stack-C", type=float, default=1.0, help="inverse regularisation of the stacker")
    parser.add_argument("--name", default=None,
                        help="submission file name (default: <source>-blend-<method>-<timestamp>)")
    parser.add_argument("--no-submission", action="store_true", help="fit and write the blend only")
    parser.add_argument("--force", action="store_true",
                        help="re-fit the blend and write a new submission even when both are up to date")
    parser.add_argument("--allow-stale", action="store_true",
                        help="blend runs trained on features or data that changed since (refused by default; "
                             "recorded in the blend's run.json and the submission's record)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to write a submission when test ids lack a prediction (default: fill them "
                             "with the train class prior and list them in a warning and the submission's record)")
    if comp is not None:
        competitions.get(comp).submission.add_arguments(parser)


# ----- loading -----------------------------------------------------------------------------------

def finished_runs(models_root: Path, subset: list[str] | None = None) -> dict[str, Path]:
    """{run key: folder} of runs with both oof.parquet and test.parquet, in key order; ``subset``: exact keys
    or model names (every run of the model)."""
    runs = {}
    for key, d in run_layout.run_folders(models_root).items():
        if key == BLEND:
            continue
        if (d / "oof.parquet").exists() and (d / "test.parquet").exists():
            runs[key] = d
        else:
            log.info("skipping %s: not a finished run (no oof.parquet/test.parquet)", key)
    if subset:
        chosen = {}
        for name in subset:
            hits = [k for k in runs if k == name or run_layout.split_key(k)[0] == name]
            if not hits:
                raise StageError(f"--models {name}: no finished run in {models_root} is {name} or a run of it "
                                 f"(finished: {', '.join(runs) or 'none'})")
            chosen.update({k: runs[k] for k in hits})
        runs = chosen
    return runs


def _align(frame: pd.DataFrame, ref_ids: np.ndarray, what: str, name: str, first: str) -> pd.DataFrame:
    ids = frame[ID].to_numpy()
    if len(ids) == len(ref_ids) and np.array_equal(ids, ref_ids):
        return frame.reset_index(drop=True)
    if len(ids) != len(ref_ids) or set(ids.tolist()) != set(ref_ids.tolist()) or frame[ID].duplicated().any():
        raise StageError(f"{name} and {first} have different {what} rows ({len(ids)} vs {len(ref_ids)}): they were "
                         "trained on different data; retrain one of them (`make train`) or pass --models")
    return frame.set_index(ID).loc[ref_ids].reset_index()


def _predicted_columns(frame: pd.DataFrame, task: Task) -> list[str]:
    """The columns of a run's frame besides the id, fold and label: what the run predicts."""
    return [c for c in frame.columns if c not in (ID, FOLD, task.label_column)]


def class_probs(frame: pd.DataFrame, task: Task) -> np.ndarray:
    """(n, K) class probabilities of a run's prediction frame (binary: the two classes' columns)."""
    values = frame[list(task.pred_columns)].to_numpy(dtype=np.float64)
    return task.as_class_probs(values[:, 0] if task.kind == "binary" else values)


def load_runs(runs: dict[str, Path], task: Task) -> dict:
    """Aligned predictions of the runs: ids, folds, y, the task, OOF (M, n, K) and test (M, n_test, K)."""
    names = list(runs)
    first = names[0]
    oof0, test0 = load_predictions(runs[first])
    classes = list(task.pred_columns)
    ids, test_ids = oof0[ID].to_numpy(), test0[ID].to_numpy()
    folds, y = oof0[FOLD].to_numpy(), oof0[task.label_column].to_numpy()
    oofs, tests = [], []
    for name in names:
        oof, test = (oof0, test0) if name == first else load_predictions(runs[name])
        for frame in (oof, test):
            if _predicted_columns(frame, task) != classes:
                raise StageError(f"{name} predicts columns {_predicted_columns(frame, task)} but the task's are "
                                 f"{classes}")
        oof = _align(oof, ids, "train", name, first)
        test = _align(test, test_ids, "test", name, first)
        if not np.array_equal(oof[FOLD].to_numpy(), folds):
            raise StageError(f"{name} used other folds than {first}: blend weights fitted on their OOF would leak; "
                             "retrain on the same features")
        if not np.array_equal(oof[task.label_column].to_numpy(), y):
            raise StageError(f"{name} has other targets than {first}: retrain on the same features")
        oofs.append(class_probs(oof, task))
        tests.append(class_probs(test, task))
    return {"names": names, "ids": ids, "test_ids": test_ids, "folds": folds.astype(int),
            "y": y.astype(int), "task": task, "oof": np.stack(oofs), "test": np.stack(tests)}


# ----- fitting -----------------------------------------------------------------------------------

def fit_weights(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 minimising the log loss of sum_m w_m P_m; P is (M, n, C)."""
    from scipy.optimize import minimize

    M = P.shape[0]
    if M == 1:
        return np.ones(1)
    q = np.clip(P[:, np.arange(P.shape[1]), y], EPS, 1.0)  # (M, n) probability of the true class

    def loss(w):
        return -np.mean(np.log(np.clip(w @ q, EPS, None)))

    def grad(w):
        return -np.mean(q / np.clip(w @ q, EPS, None), axis=1)

    res = minimize(loss, np.full(M, 1.0 / M), jac=grad, method="SLSQP", bounds=[(0.0, 1.0)] * M,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(M)}],
                   options={"ftol": 1e-12, "maxiter": 1000})
    if not res.success:
        log.warning("blend weight fit did not converge (%s); using its last weights", res.message)
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def apply_weights(w: np.ndarray, P: np.ndarray) -> np.ndarray:
    return np.tensordot(w, P, axes=1)


def stack_features(P: np.ndarray, binary: bool) -> np.ndarray:
    """(M, n, C) -> (n, F): logits of the positive class (binary) or log-probabilities (multi-class)."""
    P = np.clip(P, EPS, 1 - EPS)
    if binary:
        p = P[:, :, 1]
        return (np.log(p) - np.log1p(-p)).T
    return np.log(P).transpose(1, 0, 2).reshape(P.shape[1], -1)


def fit_stacker(P: np.ndarray, y: np.ndarray, C: float, binary: bool):
    from sklearn.linear_model import LogisticRegression

    n_classes = P.shape[2]
    if len(np.unique(y)) < n_classes:
        raise StageError(f"the stacker needs every one of the {n_classes} classes in each fold's training part")
    return LogisticRegression(C=C, max_iter=2000).fit(stack_features(P, binary), y)


class Blender:
    """One blend method: fit on (P, y), apply to P, describe what was fitted."""

    def __init__(self, method: str, stack_C: float = 1.0, binary: bool = True):
        if method not in ("weights", "stack"):
            raise ValueError(f"unknown blend method {method!r}")
        self.method, self.stack_C, self.binary = method, stack_C, binary

    def fit(self, P, y):
        return fit_weights(P, y) if self.method == "weights" else fit_stacker(P, y, self.stack_C, self.binary)

    def apply(self, fitted, P) -> np.ndarray:
        if self.method == "weights":
            return apply_weights(fitted, P)
        return fitted.predict_proba(stack_features(P, self.binary))

    def describe(self, fitted, names: list[str]) -> dict:
        if self.method == "weights":
            return {"weights": {n: float(w) for n, w in zip(names, fitted)}}
        return {"coef": np.asarray(fitted.coef_).tolist(), "intercept": np.asarray(fitted.intercept_).tolist(),
                "features": names}


def cross_fit(blender: Blender, P: np.ndarray, y: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list]:
    """Honest blend OOF: rows of fold k predicted by a blend fitted on the other folds only."""
    out = np.zeros(P.shape[1:])
    fitted_per_fold = []
    for k in range(int(folds.max()) + 1):
        valid = folds == k
        fitted = blender.fit(P[:, ~valid], y[~valid])
        out[valid] = blender.apply(fitted, P[:, valid])
        fitted_per_fold.append(fitted)
    return out, fitted_per_fold


# ----- the stage ---------------------------------------------------------------------------------

def blend_runs(data: dict, method: str, stack_C: float = 1.0) -> dict:
    """Cross-fitted OOF, all-OOF fit applied to test, and the per-model and blend scores (the task's metrics)."""
    task = data["task"]
    blender = Blender(method, stack_C, binary=task.kind == "binary")
    y, folds, P = data["y"], data["folds"], data["oof"]
    t0 = time.perf_counter()
    oof, per_fold_fits = cross_fit(blender, P, y, folds)
    final = blender.fit(P, y)
    test = blender.apply(final, data["test"])
    fit_s = time.perf_counter() - t0
    n_folds = int(folds.max()) + 1
    pred = task.from_class_probs
    per_fold = [task.score(y[folds == k], pred(oof[folds == k])) for k in range(n_folds)]
    fold_ll = [f["log_loss"] for f in per_fold]
    models = {n: task.score(y, pred(P[m])) for m, n in enumerate(data["names"])}
    described = blender.describe(final, data["names"])
    metrics = {
        "model": BLEND, "task": task.kind, "n_train": int(len(y)), "n_folds": n_folds, "n_test": int(len(test)),
        **task.score(y, pred(oof)),
        "log_loss_mean": float(np.mean(fold_ll)), "log_loss_std": float(np.std(fold_ll)), "folds": per_fold,
        "fit_seconds": float(fit_s), "predict_seconds": 0.0, "method": method,
        "scoring": "cross-fitted: fold k scored by a blend fitted on the other folds' OOF",
        "in_sample_log_loss": task.score(y, pred(blender.apply(final, P)))["log_loss"],
        "models": models, **described,
    }
    params = {"method": method, "models": data["names"], **described,
              "fold_fits": [blender.describe(f, data["names"]) for f in per_fold_fits]}
    if method == "stack":
        params["stack_C"] = stack_C
    return {"task": task.kind, "oof": oof, "test": test, "metrics": metrics, "params": params}


def write_blend_run(out_dir: Path, data: dict, result: dict, comp: str, source: str, seed: int, started: str,
                    inputs: dict, stale_allowed: dict | None = None) -> None:
    """The blend as a model run in the CV engine's format."""
    task = data["task"]
    oof_df = pred_frame(data["ids"], task.from_class_probs(result["oof"]), task.pred_columns)
    oof_df.insert(1, FOLD, data["folds"].astype(np.int16))
    oof_df.insert(2, task.label_column, data["y"])
    write_parquet(out_dir / "oof.parquet", oof_df)
    write_parquet(out_dir / "test.parquet", pred_frame(data["test_ids"], task.from_class_probs(result["test"]),
                                                       task.pred_columns))
    write_json(out_dir / "metrics.json", result["metrics"])
    write_json(out_dir / "params.json", {"model": BLEND, "params": result["params"], "seed": seed})
    record = run_record(comp, source, BLEND, result["params"], seed, started, inputs)
    record.update(allow_stale=bool(stale_allowed), stale_models=stale_allowed or {})
    write_json(out_dir / "run.json", record)


def report_table(metrics: dict) -> str:
    """Every model's OOF scores beside the blend's, with its weight when the blend has weights."""
    weights = metrics.get("weights", {})
    rows = [(name, s, weights.get(name)) for name, s in metrics["models"].items()]
    rows.append((f"{BLEND} ({metrics['method']})", metrics, None))
    width = max(len(r[0]) for r in rows) + 2

    def fmt(v):
        return "       -" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:8.5f}"

    lines = [f"{'model':<{width}}{'log loss':>9}{'AUC':>9}{'accuracy':>9}{'weight':>9}"]
    for name, s, w in rows:
        lines.append(f"{name:<{width}} {fmt(s['log_loss'])} {fmt(s.get('auc'))} {fmt(s['accuracy'])} {fmt(w)}")
    return "\n".join(lines)


def select_runs(runs: dict[str, Path], patterns: str | None, models_root: Path) -> dict[str, Path]:
    """The runs matching one of the comma-separated shell ``patterns`` (``runs.match``; every run when None)."""
    if not patterns:
        return runs
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    empty = [p for p in wanted if not any(run_layout.match(k, p) for k in runs)]
    if empty:
        raise StageError(f"--runs {', '.join(empty)}: no finished run in {models_root} matches (finished: "
                         f"{', '.join(runs) or 'none'})")
    return {key: path for key, path in runs.items() if any(run_layout.match(key, p) for p in wanted)}


def choose_blend(data: dict, method: str, stack_C: float = 1.0) -> dict:
    """``blend_runs`` by ``method``; ``auto``: both methods, the better cross-fitted OOF log loss wins (both
    scores in the metrics' ``methods``)."""
    if method != "auto":
        return blend_runs(data, method, stack_C)
    results = {m: blend_runs(data, m, stack_C) for m in ("weights", "stack")}
    best = min(results, key=lambda m: results[m]["metrics"]["log_loss"])
    scores = {m: r["metrics"]["log_loss"] for m, r in results.items()}
    log.info("blend methods, cross-fitted OOF log loss: %s; using %s",
             ", ".join(f"{m} {v:.5f}" for m, v in scores.items()), best)
    chosen = results[best]
    chosen["metrics"]["methods"] = scores
    chosen["params"]["methods"] = scores
    chosen["params"]["chosen_by"] = "auto: the better cross-fitted OOF log loss"
    return chosen


def submission_name(source: str, method: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.source_label(source)}-blend-{method}-{stamp}"


def class_prior(oof: pd.DataFrame, task: Task) -> np.ndarray:
    """The train class prior in the prediction columns' layout: P(positive) for a binary task, else one
    probability per class column (labels are class indices)."""
    y = oof[task.label_column].to_numpy().astype(int)
    if task.kind == "binary":
        return np.array([float(np.mean(y))])
    n = len(task.pred_columns)
    return np.bincount(y, minlength=n)[:n] / len(y)


def fill_missing_rows(test: pd.DataFrame, reference: np.ndarray, prior: np.ndarray, classes: list[str]
                      ) -> tuple[pd.DataFrame, list[str]]:
    """``test`` with a row of ``prior`` for every reference id it lacks; returns (frame, filled ids)."""
    have = set(test[ID].astype(str))
    missing = sorted(str(i) for i in reference if str(i) not in have)
    if not missing:
        return test, []
    ids = missing
    if pd.api.types.is_integer_dtype(test[ID]):
        ids = pd.to_numeric(pd.Series(missing), errors="raise").astype(test[ID].dtype).tolist()
    extra = pd.DataFrame({ID: ids, **{c: float(p) for c, p in zip(classes, prior)}})
    return pd.concat([test, extra], ignore_index=True), missing


def write_blend_submission(args: argparse.Namespace, out_dir: Path, runs: dict[str, Path] | None = None,
                           stale_allowed: dict | None = None) -> Path | None:
    """The leaderboard CSV of the blend's test predictions, unless this exact one was already written, with
    its provenance record beside it (``pipelines.common.provenance``)."""
    from pipelines.common import provenance
    from pipelines.common.submission import reference_ids

    comp, source = args.comp, args.source
    options = {k: getattr(args, k, v) for k, v in competition_options(comp).items()}
    key = sha256_json({"test": sha256_file(out_dir / "test.parquet"), "options": options,
                       "strict": bool(getattr(args, "strict", False))})
    record_path = out_dir / "submissions.json"
    record = read_json(record_path) if record_path.exists() else []
    if args.name is None and not getattr(args, "force", False):
        for entry in record:
            if (entry.get("key") == key and Path(entry["path"]).exists()
                    and provenance.record_path(Path(entry["path"])).exists()):
                log.info("submission of this blend already written: %s (pass --name to write another)",
                         entry["path"])
                return Path(entry["path"])
    known = competitions.get(comp)
    task = known.task
    test = pd.read_parquet(out_dir / "test.parquet")
    classes = list(task.pred_columns)
    prior = class_prior(pd.read_parquet(out_dir / "oof.parquet", columns=[task.label_column]), task)
    test, filled = fill_missing_rows(test, reference_ids(comp, source), prior, classes)
    if filled:
        shown = ", ".join(filled[:5]) + (f" (and {len(filled) - 5} more)" if len(filled) > 5 else "")
        if getattr(args, "strict", False):
            raise StageError(f"{len(filled)} test id(s) have no prediction ({shown}; e.g. an unreadable test image, "
                             f"or one the sample submission lists that is not in test/): --strict refuses; without "
                             f"it they are filled with the train class prior")
        log.warning("%d test id(s) have no prediction, filled with the train class prior (%s): %s; listed in the "
                    "submission's record (--strict refuses instead)", len(filled),
                    ", ".join(f"{c} {p:.4f}" for c, p in zip(classes, prior)), shown)
    df = known.submission.to_submission(test, args)
    chosen = read_json(out_dir / "metrics.json").get("method", args.method)
    path = write_submission(comp, df, args.name or submission_name(source, chosen), source)
    blend_record = read_json(out_dir / "run.json") if (out_dir / "run.json").exists() else {}
    provenance.write_record(
        path, comp, source,
        runs={name: provenance.run_entry(d) for name, d in (runs or {}).items()},
        blend={"path": provenance.run_entry(out_dir)["path"], "method": chosen,
               "finished": blend_record.get("finished")},
        filled={"count": len(filled), "ids": filled[:1000], "value": dict(zip(classes, prior.tolist()))},
        stale_allowed=stale_allowed, options=options)
    record.append({"path": str(path), "key": key, "options": options, "written": now()})
    write_json(record_path, record)
    return path


def main(args: argparse.Namespace) -> int:
    comp, source = args.comp, args.source
    task = competitions.get(comp).task
    models_root = config.models_dir(comp, source)
    run_layout.migrate_flat_runs(comp, source)
    subset = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    runs = select_runs(finished_runs(models_root, subset), getattr(args, "runs", None), models_root)
    if not runs:
        raise StageError(f"no finished models in {models_root}: run `make train COMP={comp} SOURCE={source}` first")
    out_dir = config.model_dir(comp, source, BLEND)
    params = {"method": args.method, "models": list(runs), "seed": args.seed,
              "stack_C": args.stack_C if args.method in ("stack", "auto") else None}
    stale = stale_models(comp, source, set(runs), environment=False)
    # Another environment is a warning only: read from each run's record, without a second staleness pass.
    other_env = {}
    for name, run_dir in runs.items():
        try:
            recorded = read_json(run_dir / "run.json").get("environment") if name not in stale else None
        except (OSError, ValueError):
            recorded = None
        reasons = environment_reasons(recorded, current_environment())
        if reasons:
            other_env[name] = reasons
    if other_env:
        log.warning("%d model run(s) were made in another environment (blended all the same; `make compare` "
                    "flags them): %s", len(other_env), "; ".join(f"{n} ({', '.join(r)})" for n, r in other_env.items()))
    if stale and not args.allow_stale:
        listed = "; ".join(f"{name} ({', '.join(reasons)})" for name, reasons in stale.items())
        retrain = ", ".join(f"`{train_command(comp, source, name)}`" for name in stale)
        raise StageError(f"{len(stale)} model run(s) are stale: {listed}; re-train them ({retrain}) or pass "
                         f"--allow-stale to blend them anyway")
    if stale:
        log.warning("blending %d stale run(s) because of --allow-stale: %s (recorded in the blend's run.json)",
                    len(stale), ", ".join(stale))
        params["stale_allowed"] = stale
    deps = [runs[m] / f for m in runs for f in ("oof.parquet", "test.parquet")]
    stage = Stage(BLEND, out_dir, deps=deps, params=params, outs=OUTS)
    if not args.force and stage.up_to_date():
        log.info(stage.skip_message())
        metrics = read_json(out_dir / "metrics.json")
    else:
        started = now()
        log.info("blending %d model(s) of %s/%s by %s: %s", len(runs), comp, config.source_label(source),
                 args.method, ", ".join(runs))
        data = load_runs(runs, task)
        result = choose_blend(data, args.method, args.stack_C)
        write_blend_run(out_dir, data, result, comp, source, args.seed, started, input_fingerprints(deps), stale)
        stage.done()
        metrics = result["metrics"]
    print(f"\n{comp}/{config.source_label(source)}: out-of-fold scores ({metrics['n_train']} train rows; "
          f"the blend's cross-fitted)\n{report_table(metrics)}\n", flush=True)
    best_name, best = min(metrics["models"].items(), key=lambda kv: kv[1]["log_loss"])
    log.info("blend OOF log loss %.5f vs best single model %s %.5f -> %s", metrics["log_loss"], best_name,
             best["log_loss"], out_dir)
    if not args.no_submission:
        write_blend_submission(args, out_dir, runs, stale)
    return 0
