"""Every run is reproducible: the same model, data and seed through the CV engine give byte-identical
out-of-fold and test predictions, also when the run was interrupted and resumed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, SGDClassifier

from pipelines import config
from pipelines.common.cv import make_folds, run_cv
from pipelines.common.io import sha256_file

from compare_helpers import point_config

TESTS = Path(__file__).resolve().parent


class SklearnModel:
    """A scikit-learn classifier as a CVModel on in-memory arrays."""

    def __init__(self, name: str, make_estimator, params: dict, X, y, X_test, binary: bool):
        self.name, self.params = name, params
        self.make_estimator, self.X, self.y, self.X_test, self.binary = make_estimator, X, y, X_test, binary

    def _proba(self, est, X):
        p = est.predict_proba(X)
        return p[:, 1] if self.binary else p

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        return self.make_estimator().fit(self.X[train_idx], self.y[train_idx])

    def predict_valid(self, model, valid_idx):
        return self._proba(model, self.X[valid_idx])

    def predict_test(self, model):
        return self._proba(model, self.X_test)

    def save(self, model, fold_dir):
        pass


def synthetic(n_classes: int, n: int = 240, n_test: int = 40):
    X, y = make_classification(n_samples=n + n_test, n_features=12, n_informative=6, n_classes=n_classes,
                               n_clusters_per_class=1, flip_y=0.1, random_state=3)
    return X[:n], y[:n], X[n:]


def run(model, out_dir: Path, y, n_test: int, seed: int = config.SEED, **kwargs) -> Path:
    binary = len(np.unique(y)) == 2
    run_cv(model, comp="quora" if binary else "cervix", source="sample", out_dir=out_dir, y=y,
           folds=make_folds(y, config.N_FOLDS, config.SEED), train_ids=np.arange(len(y)), test_ids=np.arange(n_test),
           task="binary" if binary else "multiclass",
           class_names=["is_duplicate"] if binary else ["Type_1", "Type_2", "Type_3"], seed=seed, progress=False,
           **kwargs)
    return out_dir


def prediction_bytes(run_dir: Path) -> dict[str, bytes]:
    """Raw bytes of every column of oof.parquet and test.parquet."""
    out = {}
    for part in ("oof", "test"):
        df = pd.read_parquet(run_dir / f"{part}.parquet")
        for col in df.columns:
            out[f"{part}.{col}"] = np.ascontiguousarray(df[col].to_numpy()).tobytes()
    return out


def assert_identical_predictions(a: Path, b: Path) -> None:
    pa, pb = prediction_bytes(a), prediction_bytes(b)
    assert pa.keys() == pb.keys()
    for col in pa:
        assert pa[col] == pb[col], f"{col} differs between two runs of the same model"


@pytest.fixture
def project(tmp_path, monkeypatch):
    return point_config(monkeypatch, tmp_path)


def logreg(n_classes: int):
    X, y, X_test = synthetic(n_classes)
    # newton-cholesky: lbfgs is ~15x slower here when OpenBLAS threads fight for the 2 shared cores
    return SklearnModel("logreg", lambda: LogisticRegression(C=0.5, solver="newton-cholesky", max_iter=200),
                        {"C": 0.5, "solver": "newton-cholesky"}, X, y, X_test, binary=n_classes == 2), y, len(X_test)


def sgd():
    """Its randomness comes from NumPy's global generator (random_state=None), which only the engine's
    per-fold seeding makes reproducible."""
    X, y, X_test = synthetic(2)
    return SklearnModel("sgd", lambda: SGDClassifier(loss="log_loss", alpha=1e-3, max_iter=20, tol=None),
                        {"alpha": 1e-3}, X, y, X_test, binary=True), y, len(X_test)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_regression_runs_are_byte_identical(project, n_classes):
    model, y, n_test = logreg(n_classes)
    first = run(model, project / "run1", y, n_test)
    second = run(model, project / "run2", y, n_test)
    assert_identical_predictions(first, second)
    assert sha256_file(first / "oof.parquet") == sha256_file(second / "oof.parquet")
    assert sha256_file(first / "test.parquet") == sha256_file(second / "test.parquet")


def test_a_randomised_model_is_reproducible_by_its_seed_alone(project):
    model, y, n_test = sgd()
    first = run(model, project / "run1", y, n_test)
    second = run(model, project / "run2", y, n_test)
    assert_identical_predictions(first, second)
    # ... and the check has teeth: the same folds with another run seed (other SGD shuffles) differ
    other = run(model, project / "other_seed", y, n_test, seed=config.SEED + 1)
    assert prediction_bytes(other)["oof.is_duplicate"] != prediction_bytes(first)["oof.is_duplicate"]


def test_an_interrupted_and_resumed_run_equals_a_straight_run(project):
    model, y, n_test = sgd()
    straight = run(model, project / "straight", y, n_test)
    resumed = project / "resumed"
    run(model, resumed, y, n_test, only_folds=[0, 2])  # "interrupted" after two folds
    assert not (resumed / "oof.parquet").exists()
    run(model, resumed, y, n_test)  # the re-run fits only the missing folds
    assert_identical_predictions(straight, resumed)


@pytest.mark.skipif(importlib.util.find_spec("pipelines.quora.models.bow") is None
                    or not (TESTS / "quora_model_helpers.py").exists(),
                    reason="the Quora bag-of-words model or its test fixtures are not there")
def test_quora_bow_lr_runs_are_byte_identical(project):
    from quora_model_helpers import write_fake_features

    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models.bow import BowModel

    features_dir = write_fake_features(config.features_dir("quora", "sample"), n_train=200, n_test=40)
    dirs = []
    for name in ("run1", "run2"):
        data = QuoraFeatures(features_dir)  # a fresh reader each run, as two separate `make train` calls
        model = BowModel(data, kind="lr", seed=config.SEED)
        run_cv(model, comp="quora", source="sample", out_dir=project / name, y=data.labels, folds=data.folds,
               train_ids=data.ids_train, test_ids=data.ids_test, task="binary", class_names=["is_duplicate"],
               seed=config.SEED, progress=False)
        dirs.append(project / name)
    assert_identical_predictions(*dirs)
    oof = pd.read_parquet(dirs[0] / "oof.parquet")
    assert oof["is_duplicate"].nunique() > 10  # a real model, not a constant
