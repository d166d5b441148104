"""One K-fold cross-validation engine for every model of both competitions.

A model plugs in as an object with four methods (see ``CVModel``); the engine owns the folds,
the timing, the per-fold checkpoints (an interrupted run resumes at the fold it was in), the
metrics and the output format, so blending and comparison are generic:

    models/<comp>/<source>/<model>/
        oof.parquet      id, fold, target, <pred columns>   one row per validated train row, every row once
        test.parquet     id, <pred columns>                  fold models' test predictions averaged
        metrics.json     overall and per-fold log loss / AUC / accuracy, fit and predict seconds
        params.json      the model's parameters and seed
        run.json         run record (git, versions, inputs, times)
        history.json     per-fold learning curves (neural models)
        folds/fold_<k>.npz, folds/fold_<k>/   fold checkpoints and fitted fold models

Test predictions: each fold's model predicts the test set after its fit, or, for a model that predicts several
fold models' at less cost together (``predict_test_folds``, see ``CVModel``), all the call's folds in one pass
once they are fitted. Either way a fold's test predictions are in its checkpoint before the run is finished,
and test.parquet is their average. A model whose ``test_from`` is ``"refit"`` (and that has ``fit_all``) instead
fits one more model on every train row once the folds are done (``folds/refit/``, ``folds/refit.npz``): its test
predictions alone make test.parquet, so the test set is predicted once rather than once per fold; the
out-of-fold predictions and the CV score are the folds' as always.

Fit-only rows: a train row whose fold id is -1 is never validated; it is in every fold's training
part (extra data that must not move the CV score, e.g. cervix's additional images), and
``fit_exclude`` (rows x folds, bool) can keep a row out of chosen folds' training parts (a
near-duplicate of a row validated in fold k never trains fold k's model). OOF predictions, metrics
and blends cover the validated rows only; without fit-only rows nothing changes.

Prediction columns, metrics and clipping come from the competition's ``Task`` (pipelines.common.task):
binary tasks have one column (probability of the positive class, e.g. ``is_duplicate``), multi-class tasks
one column per class (``Type_1, Type_2, Type_3``). The label column of oof.parquet is ``Task.label_column``
(``target``, unless a prediction column has that name).
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipelines.common.io import read_json, save_npz, sha256_json, write_json, write_parquet
from pipelines.common.records import now, run_record
from pipelines.common.task import EPS, FOLD, ID, Task  # noqa: F401  (EPS: re-exported for callers)

log = logging.getLogger(__name__)
REFIT = "refit.npz"  # in folds/: the test predictions of the model refitted on every train row


def make_folds(y: np.ndarray, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Stratified fold id (0..n_folds-1) of every train row, fixed by the seed."""
    y = np.asarray(y)
    folds = np.full(len(y), -1, dtype=np.int8)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid_idx) in enumerate(skf.split(np.zeros(len(y)), y)):
        folds[valid_idx] = k
    return folds


def set_global_seed(seed: int, deterministic_keras: bool = False) -> None:
    """Seed Python, NumPy and (when already imported) Keras/TensorFlow."""
    random.seed(seed)
    np.random.seed(seed)
    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)
        if deterministic_keras:
            import tensorflow as tf

            try:
                tf.config.experimental.enable_op_determinism()
            except Exception as exc:  # pragma: no cover - depends on TF build
                log.warning("could not enable deterministic TF ops: %s", exc)


def as_task(task: Task | str, class_names: Sequence[str] | None = None) -> Task:
    """``task`` as a Task: a Task as it is, or a kind ("binary"/"multiclass") with its prediction columns."""
    if isinstance(task, Task):
        return task
    if class_names is None:
        raise ValueError(f"task {task!r} given by its kind needs class_names (its prediction columns)")
    return Task(kind=task, id_column=ID, pred_columns=tuple(class_names))


def score(task: Task | str, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The task's metrics (log loss, accuracy, binary ROC AUC) of ``pred``."""
    if not isinstance(task, Task):  # a kind alone: only the number of classes matters for the metrics
        columns = ["p"] if task == "binary" else [f"p{k}" for k in range(np.shape(pred)[1])]
        task = Task(kind=task, id_column=ID, pred_columns=tuple(columns))
    return task.score(y_true, pred)


class CVModel(Protocol):
    """What a model provides to the engine. Indices are row positions in the train arrays."""

    name: str
    params: dict

    def fit(self, fold: int, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path) -> Any:
        """Fit on train_idx (valid_idx may drive early stopping); fold_dir is for checkpoints."""

    def predict_valid(self, model: Any, valid_idx: np.ndarray) -> np.ndarray:
        """Probabilities for the given train rows: shape (n,) binary or (n, K) multi-class."""

    def predict_test(self, model: Any) -> np.ndarray | None:
        """Probabilities for every test row, or None when there is no test set."""

    def save(self, model: Any, fold_dir: Path) -> None:
        """Persist the fitted fold model into fold_dir (optional; may do nothing)."""

    # Optional, for a model whose test predictions cost less together (the test rows' design built once and
    # given to every fold model, e.g. LightGBM on the 2.3M Kaggle test pairs): ``load(fold_dir)``, the model
    # ``save`` wrote, back; ``predict_test_folds(models)``, a test prediction per model, as predict_test would
    # give each. The engine then predicts the test set once a call's folds are fitted: see predict_test_together.
    #
    # Optional, for test predictions from one model fitted on every train row (when ``test_from == "refit"``):
    # ``fit_all(train_idx, fold_models, fold_rows, out_dir)``, fitted on all of ``train_idx`` with the fold models
    # (loaded by ``load``) and the rows each was fitted on to tell it how long to train (e.g. the rounds
    # LightGBM's early stopping kept); what it records of that fit in ``refit_info`` (a dict) goes into
    # metrics.json. See refit_test.


def pred_frame(ids: np.ndarray, pred: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    pred = np.asarray(pred)
    df = pd.DataFrame({ID: ids})
    if pred.ndim == 1:
        df[class_names[0]] = pred.astype(np.float64)
    else:
        for j, name in enumerate(class_names):
            df[name] = pred[:, j].astype(np.float64)
    return df


def pred_columns(df: pd.DataFrame, task: Task | None = None) -> list[str]:
    """The prediction columns of a run's frame: the task's, else every column but id, fold and target."""
    if task is not None:
        return [c for c in task.pred_columns if c in df.columns]
    return [c for c in df.columns if c not in (ID, FOLD, "target")]


def run_cv(model: CVModel, *, comp: str, source: str, out_dir: Path, y: np.ndarray, folds: np.ndarray,
           train_ids: np.ndarray, test_ids: np.ndarray | None, task: Task | str,
           class_names: Sequence[str] | None = None, seed: int, inputs: dict | None = None, resume: bool = True, only_folds: Sequence[int] | None = None,
           progress: bool = True, fit_exclude: np.ndarray | None = None,
           on_fold: Callable[[int, dict], None] | None = None) -> dict:
    """Run K-fold CV of ``model`` and write its predictions, metrics and record into out_dir.

    Per-fold results are checkpointed to ``out_dir/folds/fold_<k>.npz``; with ``resume`` a fold
    whose checkpoint matches the current parameters is not fitted again.
    ``inputs`` (name -> fingerprint) is recorded so a later comparison can flag stale models.
    Fold id -1 marks a fit-only row; ``fit_exclude[i, k]`` keeps row i out of fold k's training part.
    ``on_fold(k, fold_score)`` is called after each fold fitted here (a tuner's pruning hook: it may raise to
    stop the run, which keeps the finished folds' checkpoints).
    """
    task = as_task(task, class_names)
    out_dir = Path(out_dir)
    folds_dir = out_dir / "folds"
    started = now()
    y = np.asarray(y)
    folds = np.asarray(folds)
    n_folds = int(folds.max()) + 1
    exclude = check_fit_exclude(fit_exclude, len(folds), n_folds)
    key = {"params": model.params, "seed": seed, "folds": sha256_json(folds.tolist()), "inputs": inputs or {}}
    if exclude is not None:
        key["fit_exclude"] = sha256_json(np.argwhere(exclude).tolist())
    cv_key = sha256_json(key)
    state_path = folds_dir / "cv_state.json"
    if folds_dir.exists():
        stale = not resume or not state_path.exists() or read_json(state_path).get("key") != cv_key
        if stale:
            log.info("%s: parameters or inputs changed since the last run; starting the folds afresh", model.name)
            shutil.rmtree(folds_dir)
    folds_dir.mkdir(parents=True, exist_ok=True)
    write_json(state_path, {"key": cv_key, "model": model.name})

    todo = list(range(n_folds)) if only_folds is None else list(only_folds)
    refit = test_ids is not None and refits(model)
    together = test_ids is not None and not refit and hasattr(model, "predict_test_folds")
    for k in todo:
        ckpt = folds_dir / f"fold_{k}.npz"
        if ckpt.exists() and not fold_checkpoint_readable(ckpt):
            log.warning("%s fold %d/%d: checkpoint %s is damaged; fitting the fold again", model.name, k + 1,
                        n_folds, ckpt)
            ckpt.unlink()
        if ckpt.exists():
            log.info("%s fold %d/%d: done in an earlier run, resuming after it", model.name, k + 1, n_folds)
            continue
        train_idx = fold_train_idx(folds, exclude, k)
        valid_idx = np.flatnonzero(folds == k)
        fold_dir = folds_dir / f"fold_{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        set_global_seed(seed + k)
        log.info("%s fold %d/%d: fit on %d rows, validate on %d", model.name, k + 1, n_folds,
                 len(train_idx), len(valid_idx))
        t0 = time.perf_counter()
        fitted = model.fit(k, train_idx, valid_idx, fold_dir)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        valid_pred = np.asarray(model.predict_valid(fitted, valid_idx))
        test_pred = model.predict_test(fitted) if test_ids is not None and not together and not refit else None
        predict_s = time.perf_counter() - t0
        model.save(fitted, fold_dir)
        history = getattr(model, "history", None) or {}
        fold_score = task.score(y[valid_idx], valid_pred)
        log.info("%s fold %d/%d: log loss %.5f (fit %.1fs, predict %.1fs)", model.name, k + 1, n_folds,
                 fold_score["log_loss"], fit_s, predict_s)
        arrays = {"valid_idx": valid_idx, "valid_pred": valid_pred, "fit_s": np.float64(fit_s),
                  "predict_s": np.float64(predict_s), "history": np.array(json.dumps(history))}
        if test_pred is not None:
            arrays["test_pred"] = np.asarray(test_pred)
        save_npz(ckpt, **arrays)
        del fitted
        if on_fold is not None:
            on_fold(k, fold_score)

    if together:
        predict_test_together(model, folds_dir, n_folds)
    done = [k for k in range(n_folds) if (folds_dir / f"fold_{k}.npz").exists()]
    if len(done) < n_folds:
        log.info("%s: %d of %d folds done; run again to finish", model.name, len(done), n_folds)
        return {"complete": False, "folds_done": done}
    if refit:
        refit_test(model, folds_dir, np.arange(len(y)), [len(fold_train_idx(folds, exclude, k)) for k in range(n_folds)],
                   seed)
    return finish_cv(model, comp=comp, source=source, out_dir=out_dir, y=y, folds=folds, train_ids=train_ids,
                     test_ids=test_ids, task=task, seed=seed, inputs=inputs, started=started)


def predict_test_together(model, folds_dir: Path, n_folds: int) -> None:
    """Test predictions of every finished fold whose checkpoint lacks them, in one ``predict_test_folds`` pass.

    Those are the folds fitted in this call, and any fold of an earlier call that ended between its checkpoint
    and this pass (the pass was interrupted): each is loaded from what ``save`` wrote. Its test predictions go
    into its checkpoint (rewritten atomically), and the pass's seconds, shared equally, into its predict seconds.
    A fold stopped before its checkpoint (a tuner's pruning) is never predicted.
    """
    pending = {}  # fold -> its checkpoint's arrays (small: no test predictions in them)
    for k in range(n_folds):
        ckpt = folds_dir / f"fold_{k}.npz"
        if ckpt.exists():
            with np.load(ckpt, allow_pickle=False) as z:
                if "test_pred" not in z.files:
                    pending[k] = {name: z[name] for name in z.files}
    if not pending:
        return
    log.info("%s: test predictions of fold(s) %s in one pass", model.name, ", ".join(str(k + 1) for k in pending))
    t0 = time.perf_counter()
    preds = model.predict_test_folds([model.load(folds_dir / f"fold_{k}") for k in pending])
    share_s = (time.perf_counter() - t0) / len(pending)
    for (k, arrays), pred in zip(pending.items(), preds):
        arrays["predict_s"] = np.float64(float(arrays["predict_s"]) + share_s)
        save_npz(folds_dir / f"fold_{k}.npz", **arrays, test_pred=np.asarray(pred))
    log.info("%s: test predictions done in %.1fs", model.name, share_s * len(pending))


def refits(model) -> bool:
    """True when ``model`` takes its test predictions from a model fitted on every train row (``test_from``)."""
    if getattr(model, "test_from", "folds") != "refit":
        return False
    if not (hasattr(model, "fit_all") and hasattr(model, "load")):
        from pipelines.common.log import StageError

        raise StageError(f"{model.name} cannot refit on every train row (it has no fit_all): leave its test "
                         "predictions to the fold models")
    return True


def fold_train_idx(folds: np.ndarray, exclude: np.ndarray | None, k: int) -> np.ndarray:
    """The rows fold ``k``'s model is fitted on."""
    return np.flatnonzero((folds != k) if exclude is None else (folds != k) & ~exclude[:, k])


def refit_test(model, folds_dir: Path, train_idx: np.ndarray, fold_rows: list[int], seed: int) -> None:
    """Fit ``model`` on every train row once its folds are done, and predict the test set with it alone.

    The fold models (loaded from what ``save`` wrote) and the rows each was fitted on (``fold_rows``) tell
    ``fit_all`` how long to train. The refitted model is
    saved in ``folds/refit/`` and its test predictions, seconds and ``refit_info`` in ``folds/refit.npz``, which
    finish_cv reads; a rerun after an interruption before that file fits it again (the folds are kept).
    """
    ckpt = folds_dir / REFIT
    if ckpt.exists() and refit_checkpoint_readable(ckpt):
        log.info("%s: refit on every train row done in an earlier run, resuming after it", model.name)
        return
    if ckpt.exists():
        log.warning("%s: %s is damaged; refitting on every train row", model.name, ckpt)
    out = folds_dir / "refit"
    out.mkdir(parents=True, exist_ok=True)
    fold_models = [model.load(folds_dir / f"fold_{k}") for k in range(len(fold_rows))]
    set_global_seed(seed + len(fold_rows))
    log.info("%s: refit on every train row (%d) for the test predictions", model.name, len(train_idx))
    t0 = time.perf_counter()
    fitted = model.fit_all(train_idx, fold_models, fold_rows, out)
    fit_s = time.perf_counter() - t0
    del fold_models
    t0 = time.perf_counter()
    test_pred = np.asarray(model.predict_test(fitted))
    predict_s = time.perf_counter() - t0
    model.save(fitted, out)
    info = dict(getattr(model, "refit_info", None) or {})
    save_npz(ckpt, test_pred=test_pred, fit_s=np.float64(fit_s), predict_s=np.float64(predict_s),
             info=np.array(json.dumps(info)))
    log.info("%s: refit %.1fs, test predictions %.1fs%s", model.name, fit_s, predict_s,
             f" ({json.dumps(info)})" if info else "")


def refit_checkpoint_readable(path: Path) -> bool:
    """True when the refit's checkpoint opens and holds its test predictions, seconds and info."""
    arrays = _checkpoint_arrays(path)
    return arrays is not None and {"test_pred", "fit_s", "predict_s", "info"} <= set(arrays)


def check_fit_exclude(fit_exclude, n_rows: int, n_folds: int) -> np.ndarray | None:
    """``fit_exclude`` as a (rows, folds) bool array, or None when it excludes nothing."""
    if fit_exclude is None:
        return None
    exclude = np.asarray(fit_exclude, dtype=bool)
    if exclude.shape != (n_rows, n_folds):
        raise ValueError(f"fit_exclude has shape {exclude.shape}; expected ({n_rows}, {n_folds}) (rows, folds)")
    return exclude if exclude.any() else None


def _checkpoint_arrays(path: Path) -> dict | None:
    """{name: shape} of a checkpoint's arrays, or None when it does not open (a truncated .npz)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name].shape for name in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None


def fold_checkpoint_readable(path: Path) -> bool:
    """True when a fold checkpoint opens and holds its predictions (a truncated .npz does not)."""
    arrays = _checkpoint_arrays(path)
    return (arrays is not None and {"valid_idx", "valid_pred"} <= set(arrays)
            and arrays["valid_idx"][0] == arrays["valid_pred"][0])


def finish_cv(model, *, comp, source, out_dir, y, folds, train_ids, test_ids, task: Task, seed, inputs,
              started) -> dict:
    out_dir = Path(out_dir)
    n_folds = int(folds.max()) + 1
    validated = folds >= 0  # fold -1: fit-only rows, never predicted out of fold
    oof = None
    test_sum = None
    per_fold, fit_s, predict_s, histories = [], [], [], {}
    n_test_folds = 0
    for k in range(n_folds):
        with np.load(out_dir / "folds" / f"fold_{k}.npz", allow_pickle=False) as z:
            valid_idx, valid_pred = z["valid_idx"], z["valid_pred"]
            if oof is None:
                oof = np.full((len(y),) + valid_pred.shape[1:], np.nan)
            oof[valid_idx] = valid_pred
            if "test_pred" in z:
                test_sum = z["test_pred"].astype(np.float64) if test_sum is None else test_sum + z["test_pred"]
                n_test_folds += 1
            fit_s.append(float(z["fit_s"]))
            predict_s.append(float(z["predict_s"]))
            histories[str(k)] = json.loads(str(z["history"]))
        per_fold.append(task.score(y[valid_idx], valid_pred))
    refit = None
    if test_ids is not None and refits(model):
        refit_path = out_dir / "folds" / REFIT
        if not refit_checkpoint_readable(refit_path):
            from pipelines.common.log import StageError

            raise StageError(f"{model.name}: {refit_path} is missing or damaged; run the same command again to refit")
        with np.load(refit_path, allow_pickle=False) as z:
            test_pred = z["test_pred"].astype(np.float64)  # the refitted model's alone
            refit = {"fit_seconds": float(z["fit_s"]), "predict_seconds": float(z["predict_s"]),
                     **json.loads(str(z["info"]))}
    elif 0 < n_test_folds < n_folds:  # some fold checkpoints without test predictions: never average fewer
        from pipelines.common.log import StageError

        raise StageError(f"{model.name}: {n_folds - n_test_folds} fold checkpoint(s) in {out_dir / 'folds'} lack "
                           "test predictions; run the same command again to make them")
    else:
        test_pred = test_sum / n_folds if test_sum is not None else None  # the fold models' average
    if np.isnan(oof[validated]).any():
        raise RuntimeError(f"{model.name}: out-of-fold predictions do not cover every validated train row")
    n_fit_only = int((~validated).sum())
    if n_fit_only:
        oof, y, folds, train_ids = oof[validated], np.asarray(y)[validated], folds[validated], \
            np.asarray(train_ids)[validated]

    oof_df = pred_frame(train_ids, oof, task.pred_columns)
    oof_df.insert(1, FOLD, folds.astype(np.int16))
    oof_df.insert(2, task.label_column, y)
    write_parquet(out_dir / "oof.parquet", oof_df)
    if test_pred is not None:
        write_parquet(out_dir / "test.parquet", pred_frame(test_ids, test_pred, task.pred_columns))

    overall = task.score(y, oof)
    fold_ll = [f["log_loss"] for f in per_fold]
    metrics = {
        "model": model.name, "task": task.kind, "n_train": int(len(y)), "n_folds": n_folds,
        **({"n_fit_only": n_fit_only} if n_fit_only else {}),
        "n_test": int(len(test_ids)) if test_ids is not None else 0,
        **overall,
        "log_loss_mean": float(np.mean(fold_ll)), "log_loss_std": float(np.std(fold_ll)),
        "folds": per_fold,
        "fit_seconds": float(np.sum(fit_s)), "predict_seconds": float(np.sum(predict_s)),
        "fit_seconds_per_fold": fit_s, "predict_seconds_per_fold": predict_s,
        **({"test_from": "refit", "refit": refit} if refit is not None else
           {"test_from": "folds"} if test_pred is not None else {}),
    }
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "params.json", {"model": model.name, "params": model.params, "seed": seed})
    if any(histories.values()):
        write_json(out_dir / "history.json", histories)
        try:
            from pipelines.common.plots import plot_learning_curves

            plot_learning_curves(histories, out_dir / "learning_curve.png", title=f"{comp} {model.name}")
        except Exception as exc:  # a plot must never lose a finished run
            log.warning("%s: learning-curve plot failed: %s", model.name, exc)
    write_json(out_dir / "run.json", run_record(comp, source, model.name, model.params, seed, started, inputs,
                                                device=getattr(model, "device", None)))
    log.info("%s: CV log loss %.5f (folds %.5f ± %.5f) -> %s", model.name, overall["log_loss"],
             metrics["log_loss_mean"], metrics["log_loss_std"], out_dir)
    return {"complete": True, **metrics}


def _read_prediction_file(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        from pipelines.common.log import StageError

        raise StageError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:100]}): re-run `make train` for "
                         f"{path.parent.name} (--force refits it)") from None


def load_predictions(model_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(oof, test) frames of a finished model run; a damaged file is one StageError naming it."""
    model_dir = Path(model_dir)
    oof = _read_prediction_file(model_dir / "oof.parquet")
    test_path = model_dir / "test.parquet"
    return oof, (_read_prediction_file(test_path) if test_path.exists() else None)


def load_metrics(model_dir: Path) -> dict:
    """metrics.json of a finished run (empty when unreadable)."""
    try:
        return read_json(Path(model_dir) / "metrics.json")
    except (OSError, ValueError):
        return {}
