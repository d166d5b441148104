"""Compare stage: one report of every trained model and blend of a competition and source.

Reads every run under ``models/<comp>/<source>/`` (the CV engine's metrics.json, params.json,
run.json, oof.parquet, history.json) and writes into ``reports/<comp>/<source>/``:

    comparison.md    table sorted by out-of-fold log loss, with the trivial baselines as reference rows,
                     what needs attention (stale, missing, incomplete runs, each with the command that
                     fixes it) and the library versions the runs used
    comparison.json  the same, machine-readable
    scores.png       OOF log loss per model, fold spread as error bars, baselines as vertical lines
    roc.png          (binary) ROC curves of every model from the OOF predictions
    confusion.png    (multi-class) confusion matrices of the best models and the blend
    learning_curve_<model>.png   neural models' per-fold learning curves

A model is STALE when a file it was trained from (run.json ``inputs``) changed or vanished since, when
the data manifest changed, or when it was made in another Python environment (run.json ``environment``:
a package version or Python differs from this process's); a blend also when one of its models was
re-trained after it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import config
from pipelines.common.io import read_json, sha256_file, write_json, write_text
from pipelines.common.log import StageError
from pipelines.common.records import environment as records_environment
from pipelines.common.records import manifest_hash, now

log = logging.getLogger(__name__)

BLEND = "blend"
MAX_CONFUSION_PANELS = 6
PARAMS_WIDTH = 60
# Shown first in the parameter summary when a run has them (the rest follow by name): what tells models apart.
KEY_PARAMS = ("kind", "rnn", "backbone", "method", "C", "learning_rate", "lr", "num_leaves", "max_depth",
              "min_data_in_leaf", "feature_fraction", "epochs", "batch_size", "units", "dense", "dropout",
              "image_size", "size", "n_clusters", "vocab_size", "bidirectional", "fine_tune", "with_features")
# Shown under the table, in this order, when the runs recorded them.
MAIN_LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "lightgbm", "gensim", "scikit-learn", "pandas", "numpy",
                  "scipy", "pyarrow", "pillow", "rapidfuzz")


@dataclass
class ModelRun:
    """One finished model run as read from its folder."""

    name: str
    path: Path
    metrics: dict
    params: dict = field(default_factory=dict)  # params.json
    record: dict = field(default_factory=dict)  # run.json
    stale_reasons: list[str] = field(default_factory=list)

    @property
    def is_blend(self) -> bool:
        return self.name == BLEND or self.name.startswith(BLEND + "_")


# --- commands ----------------------------------------------------------------------------------------------

def train_command(comp: str, source: str, model: str) -> str:
    """The make command that (re)creates one model run."""
    if model == BLEND or model.startswith(BLEND + "_"):
        return f"make blend COMP={comp} SOURCE={source}"
    return f"make train COMP={comp} SOURCE={source} MODEL={model}"


# --- reading runs --------------------------------------------------------------------------------------------

def _read_optional_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); treating it as absent", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def load_runs(models_dir: Path, comp: str, source: str) -> tuple[list[ModelRun], list[dict]]:
    """Finished runs (folders with a readable metrics.json) and problems: folders that hold an
    interrupted or unreadable run, each with the command that finishes or redoes it."""
    runs, problems = [], []
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return runs, problems
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        metrics_path = folder / "metrics.json"
        command = train_command(comp, source, folder.name)
        if not metrics_path.exists():
            done = sorted(folder.glob("folds/fold_*.npz"))
            if done:
                problems.append({"model": folder.name, "problem": f"incomplete: {len(done)} fold(s) done, "
                                 "no metrics.json yet", "command": command + " (resumes at the next fold)"})
            else:
                log.info("skipping %s: no metrics.json", folder)
            continue
        try:
            metrics = read_json(metrics_path)
            if not isinstance(metrics, dict) or "log_loss" not in metrics:
                raise ValueError("no 'log_loss' field")
        except (OSError, ValueError) as exc:
            problems.append({"model": folder.name, "problem": f"unreadable {metrics_path.name}: {exc}",
                             "command": command})
            log.warning("%s: %s is unreadable (%s); re-run `%s`", folder.name, metrics_path, exc, command)
            continue
        runs.append(ModelRun(folder.name, folder, metrics, _read_optional_json(folder / "params.json"),
                             _read_optional_json(folder / "run.json")))
    return runs, problems


def expected_models(comp: str) -> tuple[str, ...] | None:
    """Model names ``pipelines.<comp>.train.MODELS``, or None (no expectations) when that cannot be read."""
    try:
        module = importlib.import_module(f"pipelines.{comp}.train")
        return tuple(str(m) for m in module.MODELS)
    except Exception as exc:  # any failure in someone else's module must not stop the report
        log.warning("could not read the expected model list pipelines.%s.train.MODELS (%s: %s); "
                    "not checking for missing models", comp, type(exc).__name__, exc)
        return None


def missing_models(comp: str, source: str, runs: list[ModelRun], expected: tuple[str, ...] | None,
                   problems: list[dict] = ()) -> list[dict]:
    """Expected models (and the blend) with no finished run, each with the command that trains it."""
    have = {r.name for r in runs} | {p["model"] for p in problems}  # problems already carry their command
    wanted = list(expected or ()) + [BLEND]
    return [{"model": m, "command": train_command(comp, source, m)} for m in dict.fromkeys(wanted) if m not in have]


# --- staleness -----------------------------------------------------------------------------------------------

def _resolve_input(key: str) -> Path:
    p = Path(key)
    return p if p.is_absolute() else config.ROOT / p


def _some(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" (+{len(names) - most} more)" if len(names) > most else "")


def changed_inputs(inputs: dict) -> list[str]:
    """Why run.json ``inputs`` ({path: sha256 at training}) no longer match the files: at most one
    reason per kind (changed, gone, new), so a blend of many models' files stays readable."""
    changed, gone, new = [], [], []
    for key, recorded in sorted((inputs or {}).items()):
        path = _resolve_input(key)
        if not path.exists():
            if recorded is not None:
                gone.append(key)
        elif path.is_dir():
            log.warning("cannot check input %s: it is a folder, not a file", key)
        elif recorded is None:
            new.append(key)
        elif sha256_file(path) != recorded:
            changed.append(key)
    reasons = []
    for keys, what in ((changed, "changed since training"), (gone, "no longer exist"),
                       (new, "did not exist at training time")):
        if keys:
            plural = len(keys) > 1
            what = what.replace("no longer exist", "no longer exists") if not plural else what
            reasons.append(f"input{'s' if plural else ''} {_some(keys)} {what}")
    return reasons


def blend_members(params_json: dict) -> dict[str, float | None]:
    """{model: weight or None} of a blend's params.json (weights as a dict, or models and weights lists)."""
    found: dict[str, float | None] = {}
    for scope in (params_json.get("params") or {}, params_json):
        if not isinstance(scope, dict):
            continue
        weights, models = scope.get("weights"), scope.get("models")
        if isinstance(weights, dict):
            found = {str(k): _as_float(v) for k, v in weights.items()}
        elif isinstance(models, dict):
            found = {str(k): _as_float(v) for k, v in models.items()}
        elif isinstance(models, (list, tuple)):
            ws = weights if isinstance(weights, (list, tuple)) and len(weights) == len(models) else [None] * len(models)
            found = {str(m): _as_float(w) for m, w in zip(models, ws)}
        if found:
            break
    return found


def _as_float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _parse_time(value) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


@functools.lru_cache(maxsize=1)
def current_environment() -> dict:
    """The environment this process runs in (records.environment), read once."""
    return records_environment()


def environment_reasons(recorded: dict | None, current: dict) -> list[str]:
    """Why a run was made in another Python environment than this one (its packages or Python
    differ), or nothing; a run recorded before environments were is not judged."""
    if not isinstance(recorded, dict) or not recorded.get("packages"):
        return []
    if recorded.get("packages_sha256") == current.get("packages_sha256") and \
            recorded.get("python") == current.get("python"):
        return []
    then, now_ = recorded.get("packages") or {}, current.get("packages") or {}
    diffs = [f"{n} {then.get(n, 'absent')} (now {now_.get(n, 'absent')})"
             for n in sorted(set(then) | set(now_)) if then.get(n) != now_.get(n)]
    if recorded.get("python") != current.get("python"):
        diffs.insert(0, f"python {recorded.get('python')} (now {current.get('python')})")
    if not diffs:
        return []
    lock = current.get("lock") or {}
    fix = "; install the lock (`make setup`) and re-train" if lock.get("file") and not lock.get("matches") else ""
    return [f"made in another environment: {_some(diffs)}{fix}"]


def stale_reasons(run: ModelRun, runs_by_name: dict[str, ModelRun], current_manifest: str | None,
                  environment: bool = True) -> list[str]:
    """Why a run no longer matches its inputs: changed input files, a changed data manifest, and for a
    blend, models re-trained after it, stale or gone; with ``environment``, also a run made in another
    Python environment."""
    reasons = changed_inputs(run.record.get("inputs") or {})
    if environment:
        reasons += environment_reasons(run.record.get("environment"), current_environment())
    recorded_manifest = run.record.get("data_manifest_sha256")
    if recorded_manifest and recorded_manifest != current_manifest:
        reasons.append("data manifest changed since training" if current_manifest else
                       "data manifest no longer exists")
    if run.is_blend:
        finished = _parse_time(run.record.get("finished"))
        gone, newer, stale = [], [], []
        for member in blend_members(run.params):
            other = runs_by_name.get(member)
            member_finished = _parse_time(other.record.get("finished")) if other else None
            if other is None:
                gone.append(member)
            elif finished and member_finished and member_finished > finished:
                newer.append(f"{member} ({_short_time(other.record.get('finished'))})")
            elif other.stale_reasons:
                stale.append(member)
        # One reason per kind: a blend of many models would otherwise list the same thing many times.
        if newer:
            reasons.append(f"re-trained after the blend ({_short_time(run.record.get('finished'))}): "
                           + ", ".join(newer))
        if gone:
            reasons.append("no longer trained: " + ", ".join(gone))
        if stale:
            reasons.append("built on stale model(s): " + ", ".join(stale))
    return list(dict.fromkeys(reasons))


def stale_models(comp: str, source: str, names=None, environment: bool = True) -> dict[str, list[str]]:
    """{model: why it is stale} of the finished runs under models/<comp>/<source>/ (only ``names`` when
    given), by the same rules as the report: for the blend and submit stages, which refuse stale runs.
    ``environment=False`` leaves out "made in another environment": a package upgrade does not make
    predictions wrong, so the blend warns about it instead of refusing."""
    runs, _ = load_runs(config.models_dir(comp, source), comp, source)
    by_name = {r.name: r for r in runs}
    current_manifest = manifest_hash(comp, source)
    found = {}
    for run in sorted(runs, key=lambda r: r.is_blend):  # members first, as in build_comparison
        run.stale_reasons = stale_reasons(run, by_name, current_manifest, environment)
        if run.stale_reasons and (names is None or run.name in names):
            found[run.name] = run.stale_reasons
    return found


# --- table rows ----------------------------------------------------------------------------------------------

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


def _short_time(value) -> str:
    t = _parse_time(value)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if t else "?"


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


def reference_rows(task: str, y: np.ndarray, class_names: list[str]) -> list[dict]:
    """Trivial baselines from the targets alone: uniform probabilities, and the train class prior
    (the prior of all rows, not fitted out-of-fold: a lower bound for any 'predict the prior' model)."""
    from pipelines.common.cv import score

    y = np.asarray(y).astype(np.int64)
    n_classes = 2 if task == "binary" else len(class_names)
    counts = np.bincount(y, minlength=n_classes)[:n_classes].astype(np.float64)
    prior = counts / counts.sum()
    if task == "binary":
        uniform_pred, prior_pred = np.full(len(y), 0.5), np.full(len(y), prior[1])
    else:
        uniform_pred = np.full((len(y), n_classes), 1.0 / n_classes)
        prior_pred = np.tile(prior, (len(y), 1))
    rows = []
    for label, what, pred in (("uniform", f"every class 1/{n_classes}", uniform_pred),
                              ("class prior", "train class frequencies "
                               + "/".join(f"{p:.3f}" for p in prior), prior_pred)):
        s = score(task, y, pred)
        rows.append({"model": f"{label} (reference)", "kind": "reference", "label": label,
                     "log_loss": s["log_loss"], "accuracy": s["accuracy"] if label == "class prior" else None,
                     "auc": 0.5 if task == "binary" else None, "params": what})
    return rows


def _read_oof(run: ModelRun) -> pd.DataFrame | None:
    path = run.path / "oof.parquet"
    if not path.exists():
        log.warning("%s: no oof.parquet; left out of the curves and of the baselines", run.name)
        return None
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        log.warning("%s: %s is unreadable (%s); re-train it; left out of the curves", run.name, path, exc)
        return None


def pred_class_names(oof: pd.DataFrame) -> list[str]:
    return [c for c in oof.columns if c not in ("id", "fold", "target")]


def build_comparison(comp: str, source: str, runs: list[ModelRun], problems: list[dict],
                     expected: tuple[str, ...] | None, oofs: dict[str, pd.DataFrame]) -> dict:
    """The whole report as plain data: sorted rows (models, blend and references), missing models,
    problems, and the library versions the runs used."""
    by_name = {r.name: r for r in runs}
    current_manifest = manifest_hash(comp, source)
    # Members first, so a blend sees whether its models are stale.
    for run in sorted(runs, key=lambda r: r.is_blend):
        run.stale_reasons = stale_reasons(run, by_name, current_manifest)

    task = next((r.metrics.get("task") for r in runs if r.metrics.get("task")), None)
    rows = [model_row(r, comp, source) for r in runs]
    task = task or ("binary" if any(r["auc"] is not None for r in rows) else "multiclass")

    # Baselines from the targets of the most common train set; a model trained on other rows is not comparable.
    references, class_names, n_train = [], [], None
    sized = [(len(df), name) for name, df in oofs.items()]
    if sized:
        sizes = pd.Series([s for s, _ in sized])
        n_train = int(sizes.mode().iloc[0])
        ref_oof = oofs[next(name for s, name in sized if s == n_train)]
        class_names = pred_class_names(ref_oof)
        references = reference_rows(task, ref_oof["target"].to_numpy(), class_names)
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
        "task": task,
        "class_names": class_names,
        "n_train": n_train,
        "n_folds": next((r.metrics.get("n_folds") for r in runs if r.metrics.get("n_folds")), None),
        "models_dir": _display_path(config.models_dir(comp, source)),
        "generated": now(),
        "rows": ordered,
        "missing": missing_models(comp, source, runs, expected, problems),
        "expected": list(expected) if expected is not None else None,
        "problems": problems,
        "versions": version_summary(runs),
        "figures": [],
    }


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(config.ROOT.resolve()))
    except ValueError:
        return str(path)


def version_summary(runs: list[ModelRun]) -> dict:
    """{library: {version: [models]}} over the runs' records (python included)."""
    out: dict[str, dict[str, list[str]]] = {}
    for run in runs:
        versions = dict(run.record.get("versions") or {})
        if run.record.get("python"):
            versions["python"] = run.record["python"]
        for lib, version in versions.items():
            out.setdefault(lib, {}).setdefault(str(version), []).append(run.name)
    order = ["python", *MAIN_LIBRARIES]
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


# --- figures -------------------------------------------------------------------------------------------------

def make_figures(report: dict, runs: list[ModelRun], oofs: dict[str, pd.DataFrame], out_dir: Path) -> list[str]:
    """Write the report's PNGs into out_dir; returns their file names. A failing figure is logged, not fatal."""
    from pipelines.common import plots

    out_dir = Path(out_dir)
    title = f"{report['comp']} ({report['source']})"
    written = []

    def attempt(name, fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
            written.append(name)
        except Exception as exc:  # a figure must never cost the table
            log.warning("figure %s failed: %s: %s", name, type(exc).__name__, exc)

    model_rows = [r for r in report["rows"] if r["kind"] != "reference" and r["log_loss"] is not None]
    bars = [{"model": r["model"], "log_loss": r["log_loss"], "std": r["log_loss_std"], "kind": r["kind"],
             "stale": r["stale"]} for r in model_rows]
    references = [{"label": r["label"], "log_loss": r["log_loss"]} for r in report["rows"] if r["kind"] == "reference"]
    attempt("scores.png", plots.plot_model_scores, bars, references, out_dir / "scores.png",
            title=f"{title}: out-of-fold log loss")

    ranked = [r["model"] for r in model_rows if r["model"] in oofs]
    if report["task"] == "binary" and ranked:
        attempt("roc.png", plots.plot_roc_curves, [roc_points(name, oofs[name]) for name in ranked],
                out_dir / "roc.png", title=f"{title}: ROC curves (out-of-fold)")
    elif ranked:
        chosen = ranked[:MAX_CONFUSION_PANELS]
        blends = [n for n in ranked if n == BLEND]
        if blends and blends[0] not in chosen:
            chosen[-1] = blends[0]
        class_names = report["class_names"]
        panels = [confusion_panel(name, oofs[name], class_names) for name in chosen]
        attempt("confusion.png", plots.plot_confusion_matrices, panels, class_names, out_dir / "confusion.png",
                title=f"{title}: confusion matrices (out-of-fold, rows = true class)")

    for run in runs:
        history_path = run.path / "history.json"
        if history_path.exists():
            histories = _read_optional_json(history_path)
            if any(histories.values()):
                name = f"learning_curve_{run.name}.png"
                attempt(name, plots.plot_learning_curves, histories, out_dir / name,
                        title=f"{title}: {run.name} learning curves")
    return written


def roc_points(model: str, oof: pd.DataFrame, n_points: int = 201) -> dict:
    """ROC curve of a binary model's OOF predictions, resampled onto a fixed FPR grid (small to plot)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = oof["target"].to_numpy()
    p = oof[pred_class_names(oof)[0]].to_numpy()
    fpr, tpr, _ = roc_curve(y, p)
    grid = np.linspace(0, 1, n_points)
    return {"model": model, "fpr": grid, "tpr": np.interp(grid, fpr, tpr), "auc": float(roc_auc_score(y, p))}


def confusion_panel(model: str, oof: pd.DataFrame, class_names: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix

    y = oof["target"].to_numpy().astype(np.int64)
    pred = oof[class_names].to_numpy().argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(len(class_names))))
    return {"model": model, "matrix": cm, "subtitle": f"accuracy {np.trace(cm) / max(cm.sum(), 1):.3f}"}


# --- rendering -----------------------------------------------------------------------------------------------

def _fmt(v, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _fmt_seconds(v) -> str:
    if v is None:
        return "—"
    if v < 10:
        return f"{v:.2f}s"
    if v < 60:
        return f"{v:.1f}s"
    if v < 3600:
        return f"{int(v // 60)}m{int(v % 60):02d}s"
    return f"{int(v // 3600)}h{int(v % 3600 // 60):02d}m"


def table_cells(report: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells, shared by the Markdown and the terminal table."""
    binary = report["task"] == "binary"
    headers = ["#", "model", "OOF log loss", "fold mean ± std", "fold log losses", "accuracy"]
    headers += ["AUC"] if binary else []
    headers += ["fit", "predict", "key parameters", "git", "seed", "finished", "status"]
    cells = []
    for r in report["rows"]:
        ref = r["kind"] == "reference"
        if ref:
            status = "reference"
        elif r["stale"]:
            status = "STALE: " + "; ".join(r["stale_reasons"])
        else:
            status = "ok"
        mean_std = ("—" if ref or r["log_loss_mean"] is None
                    else f"{r['log_loss_mean']:.4f} ± {r['log_loss_std'] or 0:.4f}")
        folds = "" if ref else " ".join(_fmt(v) for v in r["fold_log_loss"])
        row = ["ref" if ref else str(r["rank"]), r["model"], _fmt(r["log_loss"], 5), mean_std, folds,
               _fmt(r["accuracy"])]
        row += [_fmt(r["auc"])] if binary else []
        row += ["" if ref else _fmt_seconds(r["fit_seconds"]), "" if ref else _fmt_seconds(r["predict_seconds"]),
                r["params"], "" if ref else r["git"], "" if ref or r["seed"] is None else str(r["seed"]),
                "" if ref else _short_time(r["finished"]), status]
        cells.append(row)
    return headers, cells


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def versions_lines(versions: dict) -> list[str]:
    lines = []
    for lib, by_version in versions.items():
        if len(by_version) == 1:
            lines.append(f"{lib} {next(iter(by_version))}")
        else:
            parts = [f"{v} ({', '.join(models)})" for v, models in sorted(by_version.items())]
            lines.append(f"{lib} DIFFERS between runs: " + "; ".join(parts))
    return lines


def attention_items(report: dict) -> list[str]:
    """One line per thing to fix, each with its command."""
    items = []
    for r in report["rows"]:
        if r.get("stale"):
            items.append(f"{r['model']} is STALE ({'; '.join(r['stale_reasons'])}): re-run `{r['command']}`")
    for p in report["problems"]:
        items.append(f"{p['model']}: {p['problem']}: `{p['command']}`")
    for m in report["missing"]:
        items.append(f"{m['model']} is not trained: `{m['command']}`")
    if report["expected"] is None:
        items.append(f"the expected model list (pipelines.{report['comp']}.train.MODELS) could not be read; "
                     "missing models are not checked")
    return items


def render_markdown(report: dict) -> str:
    headers, cells = table_cells(report)
    n_models = sum(r["kind"] != "reference" for r in report["rows"])
    lines = [f"# Model comparison: {report['comp']} ({report['source']})", "",
             f"Generated {_short_time(report['generated'])} UTC from `{report['models_dir']}`: {n_models} run(s), "
             f"{report['n_train'] if report['n_train'] is not None else '?'} train rows, "
             f"{report['n_folds'] or '?'} folds. Sorted by out-of-fold (OOF) log loss, lower is better; "
             "rows marked *reference* are trivial baselines computed from the targets alone. "
             "Times are totals over the folds.", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---:" if h in ("#", "OOF log loss", "accuracy", "AUC", "fit", "predict", "seed")
                                else "---" for h in headers) + "|")
    for row, r in zip(cells, report["rows"]):
        row = [_md_escape(c) for c in row]
        if r["kind"] == "reference":
            row[1] = f"*{row[1]}*"
        elif r["stale"]:
            row[-1] = f"**{row[-1]}**"
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    items = attention_items(report)
    lines += ["## Needs attention", ""]
    lines += [f"- {i}" for i in items] or ["Nothing: every expected model is trained and up to date."]
    lines.append("")
    if report["figures"]:
        lines += ["## Figures", ""]
        for name in report["figures"]:
            lines += [f"![{Path(name).stem}]({name})", ""]
    lines += ["## Reproducibility", "",
              "Each run's `run.json` (in its model folder) records the git commit, the full configuration, the seed, "
              "the library versions, the data manifest hash and fingerprints of its inputs. To reproduce a row: "
              "`git checkout <commit>` then the row's command (`make train COMP=... SOURCE=... MODEL=<model>`, "
              "or `make blend ...` for the blend).", "",
              "Library versions the runs used:", ""]
    lines += [f"- {line}" for line in versions_lines(report["versions"])] or ["- (no run record found)"]
    lines.append("")
    return "\n".join(lines)


def render_text(report: dict) -> str:
    """A plain aligned table for the terminal, then what needs attention."""
    headers, cells = table_cells(report)
    # The terminal gets a narrower table: no per-fold scores, parameters cut, stale reasons listed below it.
    keep = [j for j, h in enumerate(headers) if h != "fold log losses"]
    headers = [headers[j] for j in keep]
    short = []
    for row in cells:
        row = [row[j] for j in keep]
        row = [c if len(c) <= 36 else c[:33] + "..." for c in row[:-1]] + [row[-1]]
        short.append(row[:-1] + ["STALE" if row[-1].startswith("STALE") else row[-1]])
    numeric = {"#", "OOF log loss", "accuracy", "AUC", "fit", "predict", "seed"}
    widths = [max(len(h), *(len(r[j]) for r in short)) for j, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if h in numeric else v.ljust(w)
                         for v, w, h in zip(values, widths, headers)).rstrip()

    out = [f"{report['comp']} ({report['source']}): {len(cells)} rows, sorted by OOF log loss", line(headers),
           line(["-" * w for w in widths])]
    out += [line(r) for r in short]
    items = attention_items(report)
    if items:
        out += ["", "Needs attention:"] + [f"  - {i}" for i in items]
    out += ["", "Versions: " + ", ".join(versions_lines(report["versions"]))]
    return "\n".join(out)


# --- stage ---------------------------------------------------------------------------------------------------

def compare(comp: str, source: str, expected: tuple[str, ...] | None, with_figures: bool = True) -> dict:
    """Read every run of (comp, source), write the report files, return the report."""
    models_dir = config.models_dir(comp, source)
    runs, problems = load_runs(models_dir, comp, source)
    if not runs:
        detail = "".join(f"; {p['model']}: {p['problem']}" for p in problems)
        raise StageError(f"no trained models in {models_dir}: run `make train COMP={comp} SOURCE={source}` first"
                         + detail)
    oofs = {r.name: df for r in runs if (df := _read_oof(r)) is not None}
    report = build_comparison(comp, source, runs, problems, expected, oofs)
    out_dir = config.reports_dir(comp, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    if with_figures:
        report["figures"] = make_figures(report, runs, oofs, out_dir)
        for old in out_dir.glob("learning_curve_*.png"):  # of a model that is gone: it would mislead
            if old.name not in report["figures"]:
                old.unlink()
    write_text(out_dir / "comparison.md", render_markdown(report))
    write_json(out_dir / "comparison.json", report)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-figures", action="store_true", help="write the tables only, no PNGs")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a model is stale, missing or incomplete (for CI)")


def main(args: argparse.Namespace) -> int:
    comp, source = config.check_comp(args.comp), args.source
    report = compare(comp, source, expected_models(comp), with_figures=not args.no_figures)
    print(render_text(report))
    out_dir = config.reports_dir(comp, source)
    print(f"\nreport: {out_dir / 'comparison.md'} (+ comparison.json"
          + (", " + ", ".join(report["figures"]) if report["figures"] else "") + ")")
    needs_attention = any(r.get("stale") for r in report["rows"]) or report["missing"] or report["problems"]
    return 1 if args.strict and needs_attention else 0
