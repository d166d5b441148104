"""Seed bagging: a run that averages the out-of-fold and test predictions of runs of one model that differ
only in their seed (``make train ARGS='--seeds 42,43,44'``), scored like any run and blended like any run.

The members must share their rows, folds and labels (the blend's alignment checks them); the bag's
probabilities are the members' means (multi-class rows still sum to 1). It is a Stage: unchanged members
mean nothing is rewritten.
"""
from __future__ import annotations

import logging

import numpy as np

from pipelines import competitions, config
from pipelines.common.cv import load_metrics, pred_frame
from pipelines.common.io import write_json, write_parquet
from pipelines.common.locks import output_lock
from pipelines.common.log import StageError
from pipelines.common.records import input_fingerprints, now, run_record
from pipelines.common.stage import Stage
from pipelines.common.task import FOLD

log = logging.getLogger(__name__)
OUTS = ["oof.parquet", "test.parquet", "metrics.json", "params.json", "run.json"]


def bag_runs(comp: str | object, source: str, bag: str, members: list[str], model: str) -> dict:
    """Write the bagged run ``bag`` of the finished runs ``members``; its metrics (``run``: its name)."""
    from pipelines.common.blend import load_runs

    comp = competitions.get(comp) if isinstance(comp, str) else comp
    task = comp.task
    dirs = {m: config.model_dir(comp.name, source, m) for m in members}
    missing = [m for m, d in dirs.items() if not (d / "oof.parquet").exists() or not (d / "test.parquet").exists()]
    if missing:
        raise StageError(f"bag {bag}: runs {', '.join(missing)} are not finished; train them first")
    out_dir = config.model_dir(comp.name, source, bag)
    deps = [d / name for d in dirs.values() for name in ("oof.parquet", "test.parquet")]
    with output_lock(out_dir, f"bag {bag}"):
        stage = Stage("bag", out_dir, deps=deps, params={"members": members, "model": model}, outs=OUTS)
        if stage.up_to_date():
            log.info("%s: up to date (its %d member runs unchanged); nothing to do", bag, len(members))
            return {"complete": True, "skipped": True, **load_metrics(out_dir), "run": bag}
        started = now()
        data = load_runs(dirs, task)
        oof, test = data["oof"].mean(axis=0), data["test"].mean(axis=0)
        y, folds = data["y"], data["folds"]
        pred = task.from_class_probs
        n_folds = int(folds.max()) + 1
        per_fold = [task.score(y[folds == k], pred(oof[folds == k])) for k in range(n_folds)]
        fold_ll = [f["log_loss"] for f in per_fold]
        member_metrics = [load_metrics(d) for d in dirs.values()]
        metrics = {"model": bag, "task": task.kind, "n_train": int(len(y)), "n_folds": n_folds,
                   "n_test": int(len(data["test_ids"])), **task.score(y, pred(oof)),
                   "log_loss_mean": float(np.mean(fold_ll)), "log_loss_std": float(np.std(fold_ll)), "folds": per_fold,
                   "fit_seconds": float(sum(m.get("fit_seconds", 0.0) for m in member_metrics)),
                   "predict_seconds": float(sum(m.get("predict_seconds", 0.0) for m in member_metrics)),
                   "members": {m: mm.get("log_loss") for m, mm in zip(members, member_metrics)}}
        out_dir.mkdir(parents=True, exist_ok=True)
        oof_df = pred_frame(data["ids"], pred(oof), task.pred_columns)
        oof_df.insert(1, FOLD, folds.astype(np.int16))
        oof_df.insert(2, task.label_column, y)
        write_parquet(out_dir / "oof.parquet", oof_df)
        write_parquet(out_dir / "test.parquet", pred_frame(data["test_ids"], pred(test), task.pred_columns))
        write_json(out_dir / "metrics.json", metrics)
        params = {"bag_of": model, "members": members, "method": "mean of the members' probabilities"}
        write_json(out_dir / "params.json", {"model": model, "params": params, "seed": None})
        write_json(out_dir / "run.json", run_record(comp.name, source, bag, params, None, started,
                                                    input_fingerprints(deps)))
        stage.done()
    best = min(v for v in metrics["members"].values() if v is not None)
    log.info("%s: CV log loss %.5f, the mean of %d seeds (members %.5f to %.5f) -> %s", bag, metrics["log_loss"],
             len(members), best, max(metrics["members"].values()), out_dir)
    return {"complete": True, **metrics, "run": bag}
