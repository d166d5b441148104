"""Fixtures for the comparison and run-record tests: real model folders made by the real CV engine
(``run_cv``) from tiny fake models, so the files have exactly the format the report reads."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import competitions, config
from pipelines.common.cv import make_folds, run_cv
from pipelines.common.io import read_json, write_json
from pipelines.common.records import input_fingerprints

CLASS_NAMES = {"quora": ["is_duplicate"], "cervix": ["Type_1", "Type_2", "Type_3"]}


class FixedModel:
    """A 'model' whose predictions are given: lets a test write real model runs through the CV engine."""

    def __init__(self, name, oof, test):
        self.name, self.params = name, {"fixed": name}
        self.oof, self.test = oof, test

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        return None

    def predict_valid(self, model, valid_idx):
        return self.oof[valid_idx]

    def predict_test(self, model):
        return self.test

    def save(self, model, fold_dir):
        pass


class NoisyOracleModel:
    """Predicts from the true labels blurred by Gaussian noise: ``strength`` sets how good it is.

    The noise comes from NumPy's global generator, which the CV engine seeds per fold, so a run is
    reproducible. With ``epochs`` it also reports a Keras-style history like a neural model.
    """

    def __init__(self, name: str, y: np.ndarray, n_classes: int, strength: float, n_test: int = 0,
                 epochs: int = 0):
        self.name = name
        self.params = {"strength": strength, "noise": 1.0, "epochs": epochs}
        self.y, self.n_classes, self.strength, self.n_test, self.epochs = y, n_classes, strength, n_test, epochs
        self.history = None

    def _probs(self, labels: np.ndarray | None, n: int) -> np.ndarray:
        k = max(self.n_classes, 2)
        logits = np.random.standard_normal((n, k))
        if labels is not None:
            logits[np.arange(n), labels] += self.strength
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return p[:, 1] if self.n_classes == 2 else p

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        if self.epochs:
            loss = [1.0 / (e + 1) + 0.01 * fold for e in range(self.epochs)]
            self.history = {"loss": loss, "val_loss": [v + 0.1 for v in loss]}
        return {"valid": self._probs(self.y[valid_idx], len(valid_idx)),
                "test": self._probs(None, self.n_test) if self.n_test else None}

    def predict_valid(self, model, valid_idx):
        return model["valid"]

    def predict_test(self, model):
        return model["test"]

    def save(self, model, fold_dir):
        pass


class CalibratedModel(FixedModel):
    """Fixed OOF probabilities, perfectly calibrated by construction (``calibrated_data``), or sharpened
    (``sharpen`` > 1: over-confident) to stage a badly calibrated run."""

    def __init__(self, name: str, probs: np.ndarray, sharpen: float = 1.0):
        self.name, self.params = name, {"sharpen": sharpen}
        p = np.asarray(probs, dtype=np.float64)
        if sharpen != 1.0:
            p = p ** sharpen
            p = p / p.sum(axis=1, keepdims=True)
        self.oof = p[:, 1] if p.shape[1] == 2 else p

    test = None  # no test set: FixedModel's methods serve


def calibrated_data(comp: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, class probabilities) with every label drawn from its row's probabilities: a model that
    predicts those probabilities is perfectly calibrated (up to sampling noise)."""
    rng = np.random.default_rng(seed)
    k = 2 if comp == "quora" else 3
    probs = rng.dirichlet(np.ones(k), size=n)
    y = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1).astype(np.int64)
    return y, probs


class TinyLightGBM:
    """A real LightGBM model on a tiny design matrix, saving each fold's booster as
    ``folds/fold_<k>/model.txt`` as the pipeline's LightGBM models do. Feature ``signal`` carries the label
    (plus noise), ``weak_signal`` a little of it, the rest is noise: ``signal`` must rank first by gain."""

    FEATURES = ("noise_a", "weak_signal", "noise_b", "signal", "noise_c")

    def __init__(self, name: str, y: np.ndarray, n_classes: int, seed: int = 0):
        import lightgbm  # noqa: F401  (fail here, not in a fold, when it is missing)

        rng = np.random.default_rng(seed)
        n = len(y)
        self.name, self.y, self.n_classes = name, y, n_classes
        self.params = {"num_leaves": 4, "num_boost_round": 15}
        columns = {"noise_a": rng.standard_normal(n), "weak_signal": y + 3.0 * rng.standard_normal(n),
                   "noise_b": rng.standard_normal(n), "signal": y + 0.3 * rng.standard_normal(n),
                   "noise_c": rng.standard_normal(n)}
        self.x = np.column_stack([columns[f] for f in self.FEATURES])

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        import lightgbm as lgb

        params = {"objective": "binary" if self.n_classes == 2 else "multiclass", "num_leaves": 4,
                  "learning_rate": 0.2, "min_data_in_leaf": 5, "verbose": -1, "seed": fold, "num_threads": 1}
        if self.n_classes > 2:
            params["num_class"] = self.n_classes
        data = lgb.Dataset(self.x[train_idx], label=self.y[train_idx], feature_name=list(self.FEATURES))
        return lgb.train(params, data, num_boost_round=15)

    def predict_valid(self, model, valid_idx):
        return model.predict(self.x[valid_idx])

    def predict_test(self, model):
        return None

    def save(self, model, fold_dir):
        model.save_model(str(Path(fold_dir) / "model.txt"))


class AverageBlend(FixedModel):
    """Weighted average of trained models' OOF predictions, in the blend's params format
    (``models`` and ``weights``)."""

    def __init__(self, member_dirs: dict[str, Path], weights: dict[str, float], class_names: list[str]):
        self.name = "blend"
        self.params = {"models": list(member_dirs), "weights": dict(weights), "method": "weights"}
        self.oof = sum(w * pd.read_parquet(member_dirs[m] / "oof.parquet")[class_names].to_numpy()
                       for m, w in weights.items()) / sum(weights.values())
        if len(class_names) == 1:
            self.oof = self.oof[:, 0]

    test = None  # no test set: FixedModel's methods serve


def fake_targets(comp: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if comp == "quora":
        return (rng.random(n) < 0.37).astype(np.int64)
    return rng.choice(3, size=n, p=[0.17, 0.53, 0.30]).astype(np.int64)


def train_fake(comp: str, source: str, model, y: np.ndarray, inputs_paths=(), n_test: int = 0,
               seed: int = config.SEED, key: str | None = None) -> dict:
    """Run one fake model through the real CV engine into config.model_dir(comp, source, key), ``key``
    defaulting to the model's name (a flat folder: fakes of unregistered models stay so); a fake of a
    registered model is given a run key, ``<model>/<run>``."""
    folds = make_folds(y, config.N_FOLDS, seed)
    return run_cv(model, comp=comp, source=source, out_dir=config.model_dir(comp, source, key or model.name), y=y,
                  folds=folds, train_ids=np.arange(len(y)), test_ids=np.arange(n_test) if n_test else None,
                  task=competitions.get(comp).task, seed=seed,
                  inputs=input_fingerprints(inputs_paths), progress=False)


def write_feature_file(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def build_fake_models(comp: str, root: Path, source: str = "sample", n: int = 150,
                      specs=(("strong", 2.5, 0), ("weak", 0.6, 0), ("nn", 1.5, 3)), blend: bool = True) -> dict:
    """Train fake models (name, strength, epochs) and a blend of them; returns the targets, the
    feature files each model was fingerprinted with, and the metrics of each run.

    Every model reads ``features/shared.txt``; model ``weak`` also reads ``features/weak_only.txt``
    so one model can be made stale alone.
    """
    cv_log = logging.getLogger("pipelines.common.cv")
    level = cv_log.level
    cv_log.setLevel(logging.WARNING)  # per-fold lines of dozens of fake runs are noise in a failure report
    try:
        return _build_fake_models(comp, root, source, n, specs, blend)
    finally:
        cv_log.setLevel(level)


def _build_fake_models(comp, root, source, n, specs, blend) -> dict:
    y = fake_targets(comp, n)
    n_classes = 2 if comp == "quora" else 3
    shared = write_feature_file(root / "features" / "shared.txt", "shared features v1\n")
    weak_only = write_feature_file(root / "features" / "weak_only.txt", "weak model features v1\n")
    metrics = {}
    for name, strength, epochs in specs:
        paths = [shared, weak_only] if name == "weak" else [shared]
        model = NoisyOracleModel(name, y, n_classes, strength, n_test=10, epochs=epochs)
        metrics[name] = train_fake(comp, source, model, y, paths, n_test=10)
    if blend:
        members = {name: config.model_dir(comp, source, name) for name, _, _ in specs}
        weights = {name: float(i + 1) for i, name in enumerate(members)}
        metrics["blend"] = train_fake(comp, source, AverageBlend(members, weights, CLASS_NAMES[comp]), y,
                                      [d / "oof.parquet" for d in members.values()])
    return {"y": y, "shared": shared, "weak_only": weak_only, "metrics": metrics}


def point_config(monkeypatch, root: Path) -> Path:
    """Project root and every generated-output folder inside ``root`` (as the conftest's project_dirs),
    with config.ROOT there too so input fingerprints are recorded relative to it."""
    for name in ("DATA_DIR", "MODELS_DIR", "SUBMISSIONS_DIR", "REPORTS_DIR", "LOCKS_DIR"):
        path = root / name.lower().replace("_dir", "")
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(config, name, path)
    monkeypatch.setattr(config, "ROOT", root)
    return root


class FakeProjects:
    """Builds each fake project once (per test module) and copies it into a test's own root:
    copying is ~50x faster than training again, and each test may then change its copy freely."""

    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory
        self.built: dict = {}

    def copy_into(self, root: Path, comp: str, blend: bool = True, source: str = "sample") -> dict:
        import pytest

        key = (comp, blend, source)
        if key not in self.built:
            template = self.factory.mktemp(f"{comp}-models")
            with pytest.MonkeyPatch.context() as mp:
                point_config(mp, template)
                self.built[key] = (template, build_fake_models(comp, template, source=source, blend=blend))
        template, built = self.built[key]
        shutil.copytree(template, root, dirs_exist_ok=True)
        moved = {k: root / Path(v).relative_to(template) if isinstance(v, Path) else v for k, v in built.items()}
        return moved


def set_finished(model_dir: Path, finished: str) -> None:
    """Rewrite a run's finish time (to stage a model re-trained after the blend without sleeping)."""
    record = read_json(model_dir / "run.json")
    record["finished"] = finished
    write_json(model_dir / "run.json", record)


def prior_log_loss(y: np.ndarray, n_classes: int) -> float:
    """Log loss of predicting the train class frequencies for every row, computed by hand."""
    prior = np.bincount(y, minlength=n_classes) / len(y)
    return float(-np.mean(np.log(prior[y])))
