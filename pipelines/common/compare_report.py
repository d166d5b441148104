"""The comparison report as plain data: one row per finished run (its scores, parameters, record, whether it
is stale), the trivial baselines as reference rows, what is missing or broken, and the library versions.
Rendering (Markdown, terminal, figures) is ``pipelines.common.compare``'s; the task (binary or multi-class,
prediction and label columns) is the competition's ``Task``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines import competitions, config
from pipelines.common.compare_runs import ModelRun, display_path, missing_models, train_command
from pipelines.common.records import LIBRARIES, manifest_hash, now
from pipelines.common.staleness import blend_members, stale_reasons
from pipelines.common.task import Task

PARAMS_WIDTH = 60
# Shown first in the parameter summary when a run has them (the rest follow by name): what tells models apart.
KEY_PARAMS = ("kind", "rnn", "backbone", "method", "C", "learning_rate", "lr", "num_leaves", "max_depth",
              "min_data_in_leaf", "feature_fraction", "epochs", "batch_size", "units", "dense", "dropout",
              "image_size", "size", "n_clusters", "vocab_size", "bidirectional", "fine_tune", "with_features")
# Shown under the table, in this order, when the runs recorded them.


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        if len(v) <= 3 and all(isinstance(x, (int, float, str)) and len(str(x)) <= 12 for x in v):
            return "[" + ",".join(_short_value(x) for x in v) + "]"
        return f"[{len(v)} items]"
    if isinstance(v, dict):
        return "{}"
    s = str(v)
    return s if len(s) <= 24 else s[:21] + "..."


def params_summary(params_json: dict, width: int = PARAMS_WIDTH) -> str:
    """Short 'key=value, ...' of a run's parameters; a blend shows its models' weights."""
    members = blend_members(params_json)
    if members:
        inner = params_json.get("params") if isinstance(params_json.get("params"), dict) else params_json
        method = inner.get("method")
        items = [f"{m}={w:.3g}" if w is not None else m for m, w in members.items()]
        if method:
            items[0] = f"{method}: {items[0]}"
    else:
        params = params_json.get("params", params_json)
        params = params if isinstance(params, dict) else {"params": params}
        flat = {k: v for k, v in _flatten(params).items() if k not in ("model", "seed") and v is not None}
        order = sorted(flat, key=lambda k: (KEY_PARAMS.index(k) if k in KEY_PARAMS else len(KEY_PARAMS), k))
        items = [f"{k}={_short_value(flat[k])}" for k in order]
    text = ", ".join(items)
    return text if len(text) <= width else text[: width - 3].rstrip(", ") + "..."


def git_label(record: dict) -> str:
    git = record.get("git") or {}
    commit = git.get("commit")
    if not commit:
        return "no git" if record else "?"
    return commit[:7] + ("+dirty" if git.get("dirty") else "")


def model_row(run: ModelRun, comp: str, source: str) -> dict:
    m = run.metrics
    folds = [_finite(f.get("log_loss")) for f in m.get("folds") or [] if isinstance(f, dict)]
    return {
        "model": run.name,
        "kind": "blend" if run.is_blend else "model",
        "log_loss": _finite(m.get("log_loss")),
        "log_loss_mean": _finite(m.get("log_loss_mean")),
        "log_loss_std": _finite(m.get("log_loss_std")),
        "fold_log_loss": folds,
        "accuracy": _finite(m.get("accuracy")),
        "auc": _finite(m.get("auc")),
        "fit_seconds": _finite(m.get("fit_seconds")),
        "predict_seconds": _finite(m.get("predict_seconds")),
        "n_train": m.get("n_train"),
        "params": params_summary(run.params),
        "git_commit": (run.record.get("git") or {}).get("commit"),
        "git_dirty": (run.record.get("git") or {}).get("dirty"),
        "git": git_label(run.record),
        "seed": run.params.get("seed", run.record.get("seed")),
        "finished": run.record.get("finished"),
        "stale": bool(run.stale_reasons),
        "stale_reasons": list(run.stale_reasons),
        "command": train_command(comp, source, run.name),
        "dir": str(run.path),
    }


def reference_rows(task: Task, y: np.ndarray) -> list[dict]:
    """Trivial baselines from the targets alone: uniform probabilities, and the train class prior
    (the prior of all rows, not fitted out-of-fold: a lower bound for any 'predict the prior' model)."""
    y = np.asarray(y).astype(np.int64)
    n_classes = task.n_classes
    binary = task.kind == "binary"
    counts = np.bincount(y, minlength=n_classes)[:n_classes].astype(np.float64)
    prior = counts / counts.sum()
    if binary:
        uniform_pred, prior_pred = np.full(len(y), 0.5), np.full(len(y), prior[1])
    else:
        uniform_pred = np.full((len(y), n_classes), 1.0 / n_classes)
        prior_pred = np.tile(prior, (len(y), 1))
    rows = []
    for label, what, pred in (("uniform", f"every class 1/{n_classes}", uniform_pred),
                              ("class prior", "train class frequencies "
                               + "/".join(f"{p:.3f}" for p in prior), prior_pred)):
        s = task.score(y, pred)
        rows.append({"model": f"{label} (reference)", "kind": "reference", "label": label,
                     "log_loss": s["log_loss"], "accuracy": s["accuracy"] if label == "class prior" else None,
                     "auc": 0.5 if binary else None, "params": what})
    return rows


def build_comparison(comp: str, source: str, runs: list[ModelRun], problems: list[dict],
                     expected: tuple[str, ...] | None, oofs: dict[str, pd.DataFrame], task: Task | None = None) -> dict:
    """The whole report as plain data: sorted rows (models, blend and references), missing models,
    problems, and the library versions the runs used. ``task``: the competition's (default)."""
    task = task if task is not None else competitions.get(comp).task
    by_name = {r.name: r for r in runs}
    current_manifest = manifest_hash(comp, source)
    # Members first, so a blend sees whether its models are stale.
    for run in sorted(runs, key=lambda r: r.is_blend):
        run.stale_reasons = stale_reasons(run, by_name, current_manifest)
    rows = [model_row(r, comp, source) for r in runs]

    # Baselines from the targets of the most common train set; a model trained on other rows is not comparable.
    references, class_names, n_train = [], [], None
    sized = [(len(df), name) for name, df in oofs.items()]
    if sized:
        sizes = pd.Series([s for s, _ in sized])
        n_train = int(sizes.mode().iloc[0])
        ref_oof = oofs[next(name for s, name in sized if s == n_train)]
        class_names = [c for c in task.pred_columns if c in ref_oof.columns]
        references = reference_rows(task, ref_oof[task.label_column].to_numpy())
        for s, name in sized:
            if s != n_train:
                problems = problems + [{"model": name, "problem": f"trained on {s} rows, the others on {n_train}: "
                                        "its score is not comparable", "command": train_command(comp, source, name)}]

    ordered = sorted(rows + references, key=lambda r: (r["log_loss"] is None, r["log_loss"] or 0.0))
    rank = 0
    for row in ordered:
        if row["kind"] != "reference":
            rank += 1
            row["rank"] = rank
        else:
            row["rank"] = None
    return {
        "comp": comp,
        "source": config.source_label(source),
        "task": task.kind,
        "class_names": class_names,
        "n_train": n_train,
        "n_folds": next((r.metrics.get("n_folds") for r in runs if r.metrics.get("n_folds")), None),
        "models_dir": display_path(config.models_dir(comp, source)),
        "generated": now(),
        "rows": ordered,
        "missing": missing_models(comp, source, runs, expected, problems),
        "expected": list(expected) if expected is not None else None,
        "problems": problems,
        "versions": version_summary(runs),
        "groups": run_groups(runs),
        "figures": [],
    }


def run_groups(runs: list[ModelRun]) -> list[dict]:
    """Runs grouped by their model (the folder they sit in), for models with two runs or more: each run's OOF
    log loss and the parameters (and seed) that differ between the group's runs."""
    groups: dict[str, list[ModelRun]] = {}
    for run in runs:
        if run.is_blend:
            continue
        groups.setdefault(run.model, []).append(run)
    out = []
    for model, members in groups.items():
        if len(members) < 2:
            continue
        flat = {}
        for run in members:
            params = run.params.get("params", {})
            params = params if isinstance(params, dict) else {"params": params}
            flat[run.name] = {**{k: v for k, v in _flatten(params).items() if k != "model"},
                              "seed": run.params.get("seed")}
        keys = sorted({k for f in flat.values() for k in f})
        differ = [k for k in keys if len({repr(f.get(k)) for f in flat.values()}) > 1]
        rows = sorted(({"run": r.name, "log_loss": _finite(r.metrics.get("log_loss")),
                        "differs": {k: flat[r.name].get(k) for k in differ}} for r in members),
                      key=lambda row: (row["log_loss"] is None, row["log_loss"] or 0.0))
        out.append({"model": model, "runs": rows, "differing": differ})
    return out


def version_summary(runs: list[ModelRun]) -> dict:
    """{library: {version: [models]}} over the runs' records (python included)."""
    out: dict[str, dict[str, list[str]]] = {}
    for run in runs:
        versions = dict(run.record.get("versions") or {})
        if run.record.get("python"):
            versions["python"] = run.record["python"]
        for lib, version in versions.items():
            out.setdefault(lib, {}).setdefault(str(version), []).append(run.name)
    order = ["python", *LIBRARIES]
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
