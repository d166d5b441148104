"""The CV engine (pipelines.common.cv): folds, OOF coverage, resume, restart on changed params."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.common.cv import make_folds, run_cv, score


def _data(n=240, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = rng.normal(size=(n, 4)) + y[:, None] * 0.8
    x_test = rng.normal(size=(50, 4))
    return x, y, x_test


class CentroidModel:
    """A small deterministic model: softmax over negative distances to the class centroids."""

    def __init__(self, x, y, x_test, n_classes=2, scale=1.0, fail_on_fold=None, history=False):
        self.name = "centroid"
        self.params = {"scale": scale}
        self.x, self.y, self.x_test, self.n_classes = x, y, x_test, n_classes
        self.fail_on_fold = fail_on_fold
        self.fitted_folds = []
        self.seen = {}
        self.with_history = history
        self.history = None

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        if fold == self.fail_on_fold:
            raise RuntimeError(f"simulated crash in fold {fold}")
        self.fitted_folds.append(fold)
        self.seen[fold] = set(train_idx.tolist())
        if self.with_history:
            self.history = {"loss": [1.0 - 0.1 * fold, 0.5], "val_loss": [1.1, 0.7]}
        return np.stack([self.x[train_idx][self.y[train_idx] == c].mean(axis=0) for c in range(self.n_classes)])

    def _proba(self, centroids, x):
        d = -self.params["scale"] * ((x[:, None, :] - centroids[None]) ** 2).sum(axis=2)
        e = np.exp(d - d.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        return p[:, 1] if self.n_classes == 2 else p

    def predict_valid(self, model, valid_idx):
        return self._proba(model, self.x[valid_idx])

    def predict_test(self, model):
        return self._proba(model, self.x_test)

    def save(self, model, fold_dir):
        np.save(fold_dir / "centroids.npy", model)


def _run(model, out_dir, y, folds, task="binary", classes=("is_duplicate",), **kw):
    return run_cv(model, comp="quora", source="sample", out_dir=out_dir, y=y, folds=folds,
                  train_ids=np.arange(1000, 1000 + len(y)), test_ids=np.arange(len(model.x_test)), task=task,
                  class_names=list(classes), seed=7, inputs={"features.lock.json": "abc"}, **kw)


def test_folds_reproducible_and_stratified():
    y = (np.random.default_rng(1).random(1000) < 0.3).astype(int)
    folds = make_folds(y, 5, seed=42)
    assert folds.dtype == np.int8
    assert np.array_equal(folds, make_folds(y, 5, seed=42))
    assert not np.array_equal(folds, make_folds(y, 5, seed=43))
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    rates = [y[folds == k].mean() for k in range(5)]
    assert max(abs(r - y.mean()) for r in rates) < 0.01


def test_oof_covers_every_train_row_once_and_never_from_its_own_fold(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 4, seed=3)
    model = CentroidModel(x, y, x_test)
    result = _run(model, tmp_path / "m", y, folds)
    assert result["complete"]
    oof = pd.read_parquet(tmp_path / "m" / "oof.parquet")
    assert list(oof.columns) == ["id", "fold", "target", "is_duplicate"]
    assert np.array_equal(oof["id"].to_numpy(), np.arange(1000, 1000 + len(y)))
    assert oof["id"].is_unique and not oof["is_duplicate"].isna().any()
    assert np.array_equal(oof["fold"].to_numpy(), folds)
    assert np.array_equal(oof["target"].to_numpy(), y)
    for k, seen in model.seen.items():  # no fold's model was fitted on its own validation rows
        assert not seen & set(np.flatnonzero(folds == k).tolist())
    # The OOF prediction of each row is its own fold's model's prediction.
    for k in range(4):
        rows = folds == k
        centroids = np.load(tmp_path / "m" / "folds" / f"fold_{k}" / "centroids.npy")
        assert np.allclose(oof["is_duplicate"].to_numpy()[rows], model._proba(centroids, x[rows]))
    test = pd.read_parquet(tmp_path / "m" / "test.parquet")
    assert len(test) == len(x_test) and list(test.columns) == ["id", "is_duplicate"]
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert len(metrics["folds"]) == 4
    assert metrics["log_loss"] == pytest.approx(score("binary", y, oof["is_duplicate"].to_numpy())["log_loss"])
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["seed"] == 7 and run["inputs"] == {"features.lock.json": "abc"}


def test_resume_after_interrupted_fold_fits_only_the_rest(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 5, seed=3)
    crashing = CentroidModel(x, y, x_test, fail_on_fold=2)
    with pytest.raises(RuntimeError, match="fold 2"):
        _run(crashing, tmp_path / "m", y, folds)
    assert crashing.fitted_folds == [0, 1]
    assert not (tmp_path / "m" / "oof.parquet").exists()

    rerun = CentroidModel(x, y, x_test)
    assert _run(rerun, tmp_path / "m", y, folds)["complete"]
    assert rerun.fitted_folds == [2, 3, 4]

    clean = CentroidModel(x, y, x_test)
    _run(clean, tmp_path / "clean", y, folds)
    assert (tmp_path / "m" / "oof.parquet").read_bytes() == (tmp_path / "clean" / "oof.parquet").read_bytes()


def test_changed_params_restart_every_fold(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 3, seed=3)
    _run(CentroidModel(x, y, x_test), tmp_path / "m", y, folds)
    same = CentroidModel(x, y, x_test)
    _run(same, tmp_path / "m", y, folds)
    assert same.fitted_folds == []  # everything checkpointed
    changed = CentroidModel(x, y, x_test, scale=2.0)
    _run(changed, tmp_path / "m", y, folds)
    assert changed.fitted_folds == [0, 1, 2]
    no_resume = CentroidModel(x, y, x_test, scale=2.0)
    _run(no_resume, tmp_path / "m", y, folds, resume=False)
    assert no_resume.fitted_folds == [0, 1, 2]


def test_partial_run_reports_incomplete(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 3, seed=3)
    result = _run(CentroidModel(x, y, x_test), tmp_path / "m", y, folds, only_folds=[0])
    assert result == {"complete": False, "folds_done": [0]}
    assert not (tmp_path / "m" / "oof.parquet").exists()


def test_multiclass_columns_and_learning_curves(tmp_path):
    x, y, x_test = _data(n=180, n_classes=3)
    folds = make_folds(y, 3, seed=3)
    classes = ["Type_1", "Type_2", "Type_3"]
    model = CentroidModel(x, y, x_test, n_classes=3, history=True)
    result = _run(model, tmp_path / "m", y, folds, task="multiclass", classes=classes)
    oof = pd.read_parquet(tmp_path / "m" / "oof.parquet")
    assert list(oof.columns) == ["id", "fold", "target", *classes]
    assert np.allclose(oof[classes].sum(axis=1), 1.0)
    assert "auc" not in result and 0 < result["log_loss"] < np.log(3)
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert set(history) == {"0", "1", "2"} and history["1"]["loss"] == [0.9, 0.5]
    assert (tmp_path / "m" / "learning_curve.png").stat().st_size > 1000


def test_checkpoint_clock():
    from pipelines import config
    from pipelines.common.checkpoint import CheckpointClock

    now = [100.0]
    clock = CheckpointClock(60, clock=lambda: now[0])
    assert not clock.due()
    now[0] = 159.9
    assert not clock.due()
    now[0] = 160.0
    assert clock.due()
    clock.written()
    assert not clock.due()
    assert CheckpointClock(0, clock=lambda: now[0]).due()  # 0: every epoch
    assert CheckpointClock().interval_s == config.CHECKPOINT_EVERY_S


class TogetherModel(CentroidModel):
    """CentroidModel that predicts the test set of several fold models in one pass (``predict_test_folds``)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passes = []  # the number of models given to each predict_test_folds call

    def predict_test(self, model):
        raise AssertionError("the engine must use predict_test_folds")

    def load(self, fold_dir):
        return np.load(fold_dir / "centroids.npy")

    def predict_test_folds(self, models):
        self.passes.append(len(models))
        return [self._proba(m, self.x_test) for m in models]


def test_test_predictions_of_every_fold_in_one_pass_equal_the_per_fold_ones(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 4, seed=3)
    _run(CentroidModel(x, y, x_test), tmp_path / "per_fold", y, folds)
    together = TogetherModel(x, y, x_test)
    assert _run(together, tmp_path / "together", y, folds)["complete"]
    assert together.passes == [4]
    for name in ("oof.parquet", "test.parquet"):
        assert (tmp_path / "together" / name).read_bytes() == (tmp_path / "per_fold" / name).read_bytes()
    with np.load(tmp_path / "together" / "folds" / "fold_0.npz") as z:
        assert z["test_pred"].shape == (len(x_test),) and float(z["predict_s"]) >= 0


def test_folds_of_an_interrupted_call_get_their_test_predictions_on_the_rerun(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 5, seed=3)
    crashing = TogetherModel(x, y, x_test, fail_on_fold=2)
    with pytest.raises(RuntimeError, match="fold 2"):
        _run(crashing, tmp_path / "m", y, folds)
    assert crashing.passes == []  # the call never reached its pass: folds 1-2 are checkpointed without them
    with np.load(tmp_path / "m" / "folds" / "fold_0.npz") as z:
        assert "test_pred" not in z.files

    rerun = TogetherModel(x, y, x_test)
    assert _run(rerun, tmp_path / "m", y, folds)["complete"]
    assert rerun.fitted_folds == [2, 3, 4] and rerun.passes == [5]  # the earlier folds loaded from their files
    _run(CentroidModel(x, y, x_test), tmp_path / "clean", y, folds)
    assert (tmp_path / "m" / "test.parquet").read_bytes() == (tmp_path / "clean" / "test.parquet").read_bytes()


def test_a_partial_call_predicts_its_own_folds_and_a_pruned_fold_none(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 3, seed=3)
    partial = TogetherModel(x, y, x_test)
    assert not _run(partial, tmp_path / "m", y, folds, only_folds=[0])["complete"]
    assert partial.passes == [1]
    with np.load(tmp_path / "m" / "folds" / "fold_0.npz") as z:
        assert "test_pred" in z.files

    def prune(k, score):
        raise KeyboardInterrupt("pruned")

    pruned = TogetherModel(x, y, x_test)
    with pytest.raises(KeyboardInterrupt):
        _run(pruned, tmp_path / "p", y, folds, on_fold=prune)
    assert pruned.passes == []


def test_a_run_never_averages_fewer_folds_test_predictions(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 3, seed=3)
    _run(CentroidModel(x, y, x_test), tmp_path / "m", y, folds)
    ckpt = tmp_path / "m" / "folds" / "fold_1.npz"
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files if k != "test_pred"}
    np.savez(ckpt, **arrays)
    from pipelines.common.cv import finish_cv
    from pipelines.common.log import StageError
    from pipelines.common.task import Task

    with pytest.raises(StageError, match="1 fold checkpoint"):
        finish_cv(CentroidModel(x, y, x_test), comp="quora", source="sample", out_dir=tmp_path / "m", y=y,
                  folds=folds, train_ids=np.arange(len(y)), test_ids=np.arange(len(x_test)),
                  task=Task(kind="binary", id_column="id", pred_columns=("is_duplicate",)), seed=7, inputs={},
                  started="now")


class RefitModel(TogetherModel):
    """TogetherModel whose test predictions come from one more model fitted on every train row (``fit_all``)."""

    test_from = "refit"

    def __init__(self, *a, folds=None, fail_in_refit=False, **kw):
        super().__init__(*a, **kw)
        self.folds, self.fail_in_refit = folds, fail_in_refit
        self.refits = []  # (rows, fold models given) of each fit_all call

    def fit_all(self, train_idx, fold_models, fold_rows, out_dir):
        if self.fail_in_refit:
            raise RuntimeError("simulated crash in the refit")
        assert fold_rows == [int((self.folds != k).sum()) for k in range(len(fold_models))]  # each fold model's rows
        self.refits.append((len(train_idx), len(fold_models)))
        self.refit_info = {"fold_models": len(fold_models)}
        return np.stack([self.x[train_idx][self.y[train_idx] == c].mean(axis=0) for c in range(self.n_classes)])

    def predict_test(self, model):
        return self._proba(model, self.x_test)


def test_refit_predicts_the_test_set_with_one_model_of_every_train_row(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 4, seed=3)
    model = RefitModel(x, y, x_test, folds=folds)
    result = _run(model, tmp_path / "m", y, folds)
    assert result["complete"] and model.refits == [(len(y), 4)] and model.passes == []  # no fold predicts the test set
    whole = np.stack([x[y == c].mean(axis=0) for c in range(2)])
    test = pd.read_parquet(tmp_path / "m" / "test.parquet")
    assert np.allclose(test["is_duplicate"], model._proba(whole, x_test))
    _run(CentroidModel(x, y, x_test), tmp_path / "folds", y, folds)  # the out-of-fold side is the folds' as always
    assert (tmp_path / "m" / "oof.parquet").read_bytes() == (tmp_path / "folds" / "oof.parquet").read_bytes()
    assert not np.allclose(test["is_duplicate"], pd.read_parquet(tmp_path / "folds" / "test.parquet")["is_duplicate"])
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["test_from"] == "refit" and metrics["refit"]["fold_models"] == 4
    assert metrics["refit"]["fit_seconds"] >= 0 and (tmp_path / "m" / "folds" / "refit" / "centroids.npy").exists()
    assert json.loads((tmp_path / "folds" / "metrics.json").read_text())["test_from"] == "folds"
    with np.load(tmp_path / "m" / "folds" / "fold_0.npz") as z:
        assert "test_pred" not in z.files


def test_an_interrupted_refit_keeps_the_folds_and_refits_on_the_rerun(tmp_path):
    x, y, x_test = _data()
    folds = make_folds(y, 3, seed=3)
    with pytest.raises(RuntimeError, match="refit"):
        _run(RefitModel(x, y, x_test, fail_in_refit=True), tmp_path / "m", y, folds)
    assert not (tmp_path / "m" / "test.parquet").exists()
    rerun = RefitModel(x, y, x_test, folds=folds)
    assert _run(rerun, tmp_path / "m", y, folds)["complete"]
    assert rerun.fitted_folds == [] and rerun.refits == [(len(y), 3)]
    again = RefitModel(x, y, x_test, folds=folds)  # everything done: nothing fitted, not even the refit
    assert _run(again, tmp_path / "m", y, folds)["complete"] and again.refits == [] and again.fitted_folds == []


def test_refit_asked_of_a_model_without_fit_all_is_a_stage_error(tmp_path):
    from pipelines.common.log import StageError

    x, y, x_test = _data()
    model = CentroidModel(x, y, x_test)
    model.test_from = "refit"
    with pytest.raises(StageError, match="no fit_all"):
        _run(model, tmp_path / "m", y, make_folds(y, 3, seed=3))
