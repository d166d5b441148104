"""Quora models on a tiny fake features folder: each trains through the CV engine and learns; the
linear and tree models are byte-for-byte reproducible; the siamese networks resume inside a fold
and are deterministic."""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pandas as pd
import pytest

from pipelines import config
from pipelines import competitions
from pipelines.common import train
from pipelines.common.cv import run_cv
from pipelines.common.keras_fit import STATE_FILE
from pipelines.common.log import StageError
from quora_model_helpers import interrupted_after_first_checkpoint, write_fake_features
from run_helpers import run_of

PRIOR_LOG_LOSS = 0.66  # log loss of predicting the positive rate (~0.37 with the label noise)
NN_OPTS = ["--epochs", "1", "--units", "4", "--dense", "4", "--batch-size", "128"]


def train_args(*argv: str) -> argparse.Namespace:
    return train.parse_args("quora", ["--source", "sample", *argv])


@pytest.fixture
def features(project_dirs):
    return write_fake_features(config.features_dir("quora", "sample"))


@pytest.fixture
def nn_features(project_dirs):
    """Two folds only: each fold of a network costs seconds of graph tracing."""
    return write_fake_features(config.features_dir("quora", "sample"), n_train=240, n_test=40, n_folds=2)


def _oof(model: str) -> pd.DataFrame:
    return pd.read_parquet(run_of("quora", "sample", model) / "oof.parquet")


def test_missing_features_is_a_stage_error(project_dirs):
    with pytest.raises(StageError, match=r"no features in .*run `make features COMP=quora SOURCE=sample` first"):
        train.main(train_args("--model", "lgbm"))


def test_the_registry_lists_the_models_in_order():
    assert competitions.get("quora").models.names() == ["bow_svm", "bow_lr", "lgbm", "siamese_lstm", "siamese_gru"]


@pytest.mark.parametrize("model, saved", [("bow_svm", "model.pkl"), ("bow_lr", "model.pkl"), ("lgbm", "model.txt")])
def test_classic_models_learn(features, model, saved):
    assert train.main(train_args("--model", model)) == 0
    out = run_of("quora", "sample", model)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["log_loss"] < PRIOR_LOG_LOSS - 0.08 and metrics["auc"] > 0.75
    oof = _oof(model)
    assert len(oof) == 300 and oof["id"].is_unique and oof["is_duplicate"].between(0, 1).all()
    test = pd.read_parquet(out / "test.parquet")
    assert len(test) == 90 and test["is_duplicate"].between(0, 1).all()
    for k in range(3):
        assert (out / "folds" / f"fold_{k}" / saved).stat().st_size > 0
    run = json.loads((out / "run.json").read_text())
    assert any(key.endswith("features.lock.json") for key in run["inputs"])


@pytest.mark.parametrize("name", ["bow_svm", "lgbm"])
def test_saved_fold_models_predict_the_test_set_together_as_fitted(features, tmp_path, name):
    """The engine predicts the test set once the folds are fitted, from the saved fold models in one pass
    (``predict_test_folds``): exactly what each fitted model predicts on its own."""
    model, data = train.build_model("quora", name, train_args("--model", name))
    fitted = []
    for k in range(2):
        fold_dir = tmp_path / f"fold_{k}"
        fold_dir.mkdir()
        fit = model.fit(k, np.flatnonzero(data.folds != k), np.flatnonzero(data.folds == k), fold_dir)
        model.save(fit, fold_dir)
        fitted.append(fit)
    together = model.predict_test_folds([model.load(tmp_path / f"fold_{k}") for k in range(2)])
    assert len(together) == 2 and not np.array_equal(together[0], together[1])
    for fit, pred in zip(fitted, together):
        assert pred.shape == (len(data.test_ids),) and np.array_equal(pred, model.predict_test(fit))


@pytest.mark.parametrize("model", ["bow_lr", "lgbm"])
def test_oof_byte_identical_on_rerun(features, model):
    train.main(train_args("--model", model))
    first = (run_of("quora", "sample", model) / "oof.parquet").read_bytes()
    train.main(train_args("--model", model, "--no-resume"))  # refits every fold
    assert (run_of("quora", "sample", model) / "oof.parquet").read_bytes() == first


def test_changed_features_restart_the_folds(features, caplog):
    train.main(train_args("--model", "bow_lr"))
    write_fake_features(features, seed=1)  # the features stage ran again: a new lock file
    with caplog.at_level(logging.INFO):
        train.main(train_args("--model", "bow_lr"))
    assert "starting the folds afresh" in caplog.text


def test_model_all_trains_every_model_in_order(nn_features, caplog):
    with caplog.at_level(logging.INFO, logger="pipelines"):
        assert train.main(train_args("--model", "all", *NN_OPTS)) == 0
    messages = [r.getMessage() for r in caplog.records if r.name in ("pipelines.common.train", "pipelines.common.cv")]
    started = [m.split()[1] for m in messages if m.startswith("training ")]
    names = competitions.get("quora").models.names()
    assert started == names
    for name in names:
        assert any(m.startswith(f"{name}: CV log loss ") for m in messages)
        oof = _oof(name)
        assert len(oof) == 240 and oof["is_duplicate"].between(0, 1).all()
    nn_dir = run_of("quora", "sample", "siamese_gru")
    history = json.loads((nn_dir / "history.json").read_text())
    assert set(history) == {"0", "1"} and len(history["0"]["loss"]) == 1 and "val_loss" in history["0"]
    assert (nn_dir / "learning_curve.png").exists()
    fold_dir = nn_dir / "folds" / "fold_0"
    assert (fold_dir / "model.keras").exists()
    assert not list(fold_dir.glob("epoch_*.keras"))  # epoch checkpoints are dropped once the fold is saved


def _siamese(data, **kw):
    from pipelines.quora.models.siamese import SiameseModel

    opts = dict(epochs=2, units=4, dense=4, batch_size=64, patience=5, verbose=0)
    opts.update(kw)
    return SiameseModel(data, "gru", **opts)


@pytest.mark.parametrize("batching", ["length", "random"])
def test_siamese_batching_length_buckets_its_questions(nn_features, tmp_path, monkeypatch, batching):
    from pipelines.common import keras_fit
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(nn_features)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    seen, real = {}, keras_fit.epoch_batches

    def spy(x, y, *args, lengths=None, **kw):
        seen["lengths"] = lengths
        return real(x, y, *args, lengths=lengths, **kw)

    monkeypatch.setattr(keras_fit, "epoch_batches", spy)
    model = _siamese(data, epochs=1, batching=batching)
    assert model.params["batching"] == batching
    fitted = model.fit(0, train_idx, valid_idx, tmp_path)
    assert np.isfinite(model.predict_valid(fitted, valid_idx)).all()
    if batching == "random":
        assert seen["lengths"] is None
    else:  # each question's own length (its words), from the right-padded token ids
        q1 = np.asarray(data.seq("q1", "train"))[train_idx]
        assert set(seen["lengths"]) == {"q1", "q2"}
        np.testing.assert_array_equal(seen["lengths"]["q1"], (q1 != 0).sum(axis=1))
    with pytest.raises(ValueError, match="batching"):
        _siamese(data, batching="sorted")


def test_siamese_resumes_from_its_epoch_checkpoint(nn_features, tmp_path, monkeypatch):
    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models import siamese

    data = QuoraFeatures(nn_features)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    fold_dir = tmp_path / "fold_0"
    fold_dir.mkdir()

    with interrupted_after_first_checkpoint(), pytest.raises(KeyboardInterrupt):
        # checkpoint_every_s=0: a checkpoint after every epoch
        _siamese(data, with_features=False, checkpoint_every_s=0).fit(0, train_idx, valid_idx, fold_dir)
    state = json.loads((fold_dir / STATE_FILE).read_text())
    assert state["epoch"] == 1 and (fold_dir / state["checkpoint"]).exists()
    first_epoch_loss = state["history"]["loss"][0]

    model = _siamese(data, with_features=False)  # the text-only path (`--no-features`)
    fitted = model.fit(0, train_idx, valid_idx, fold_dir)
    assert fitted.resumed_from_epoch == 1
    assert len(model.history["loss"]) == 2 and model.history["loss"][0] == first_epoch_loss
    assert json.loads((fold_dir / STATE_FILE).read_text())["epoch"] == 2

    # Streaming prediction in small chunks (last one partial) equals one batch over every pair.
    monkeypatch.setattr(siamese, "PREDICT_CHUNK", 7)
    streamed = model.predict_test(fitted)
    q1, q2 = np.asarray(data.seq("q1", "test")), np.asarray(data.seq("q2", "test"))
    whole = fitted.model.predict_on_batch({"q1": q1, "q2": q2}).ravel()
    assert np.allclose(streamed, whole, atol=1e-6)

    model.save(fitted, fold_dir)
    assert (fold_dir / "model.keras").exists() and not (fold_dir / STATE_FILE).exists()


def test_siamese_deterministic_across_runs(nn_features, tmp_path):
    """Two identical runs of a fold (seeded, deterministic TF ops, TF graphs as on real data) give the
    same predictions; measured difference on the 2-core dev machine: exactly 0."""
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(nn_features)
    preds = []
    for run in range(2):
        model = _siamese(data, epochs=1, with_features=True, execution="graph")  # the path of real data
        run_cv(model, comp="quora", source="sample", out_dir=tmp_path / f"run{run}", y=data.labels,
               folds=data.folds, train_ids=data.ids_train, test_ids=data.ids_test, task="binary",
               class_names=["is_duplicate"], seed=42, only_folds=[0])
        with np.load(tmp_path / f"run{run}" / "folds" / "fold_0.npz") as z:
            preds.append((z["valid_pred"], z["test_pred"]))
    assert np.abs(preds[0][0] - preds[1][0]).max() <= 1e-6
    assert np.abs(preds[0][1] - preds[1][1]).max() <= 1e-6
    assert (tmp_path / "run0" / "folds" / "fold_0" / "feature_scaler.npz").exists()


def _symmetric_frame(frame):
    """The network's order-free pair features of ``frame``, as a named DataFrame."""
    import pandas as pd

    from pipelines.quora.models import siamese

    return pd.DataFrame(siamese.symmetric_matrix(frame), index=frame.index,
                        columns=[name for name, *_ in siamese.symmetric_plan(frame.columns)])


def test_siamese_is_order_free(nn_features, tmp_path):
    """Swapping q1 and q2 (texts and every q1_*/q2_* feature) leaves the network's input, and so its
    prediction, exactly unchanged: why it trains and predicts each pair in one order only."""
    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models import siamese

    data = QuoraFeatures(nn_features)
    frame = data.pair_feature_table("train").to_pandas()
    assert {"q1_len_chars", "graph_q1_freq"} <= set(frame.columns)  # asymmetric columns exist
    swapped = frame.rename(columns={c: siamese.swapped_name(c) for c in frame.columns})[frame.columns]
    assert not swapped.equals(frame)
    sym, sym_swapped = _symmetric_frame(frame), _symmetric_frame(swapped)
    assert list(sym.columns) == list(sym_swapped.columns) and not any("q1" in c for c in sym.columns)
    assert np.array_equal(sym.to_numpy(), sym_swapped.to_numpy())
    assert np.array_equal(sym["len_chars_min"], np.minimum(frame["q1_len_chars"], frame["q2_len_chars"]))

    model = _siamese(data, epochs=1, with_features=True)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    fitted = model.fit(0, train_idx, valid_idx, tmp_path)
    x_train, y_train, _, _ = model.training_arrays(train_idx, valid_idx, fitted)
    assert len(y_train) == len(train_idx)  # each pair once per epoch
    q1, q2 = np.asarray(data.seq("q1", "train")), np.asarray(data.seq("q2", "train"))
    feats = model._features("train")
    ab = fitted.model.predict_on_batch(model._inputs(q1, q2, feats, fitted)).ravel()
    ba = fitted.model.predict_on_batch(model._inputs(q2, q1, feats, fitted)).ravel()
    assert np.array_equal(ab, ba)


def test_siamese_uses_the_pair_features_unless_told_not_to():
    quora = competitions.get("quora")

    def with_features(*argv):
        args = train_args("--model", "siamese_gru", *argv)
        return train.model_options(quora, "siamese_gru", args, train.run_context(args, quora))[1].with_features

    assert with_features() is True and with_features("--with-features") is True
    assert with_features("--no-features") is False


def test_lgbm_without_early_stopping_runs_every_round(features):
    """``--lgbm-early-stopping 0`` (fixed work, as the scale benchmark uses) keeps all the rounds."""
    import lightgbm as lgb

    train.main(train_args("--model", "lgbm", "--lgbm-early-stopping", "0", "--lgbm-rounds", "30"))
    out = run_of("quora", "sample", "lgbm")
    booster = lgb.Booster(model_file=str(out / "folds" / "fold_0" / "model.txt"))
    assert booster.num_trees() == 30
    assert json.loads((out / "metrics.json").read_text())["log_loss"] < PRIOR_LOG_LOSS


def test_lgbm_refit_predicts_the_test_set_with_one_booster_of_every_train_row(features):
    """By default (``--lgbm-test-from refit``): the folds as always, then one booster on all 300 train rows for the
    folds' mean kept rounds x 300/200 (3 folds), which alone makes test.parquet; ``--lgbm-test-from folds``, the
    fold models' average, is another run."""
    import lightgbm as lgb

    train.main(train_args("--model", "lgbm"))
    refit_run = run_of("quora", "sample", "lgbm")
    train.main(train_args("--model", "lgbm", "--lgbm-test-from", "folds"))
    folds_run = next(p for p in refit_run.parent.iterdir() if p.name.startswith("test_from=folds"))
    metrics = json.loads((refit_run / "metrics.json").read_text())
    kept = [lgb.Booster(model_file=str(refit_run / "folds" / f"fold_{k}" / "model.txt")).num_trees() for k in range(3)]
    assert metrics["test_from"] == "refit" and metrics["refit"]["fold_rounds"] == kept
    assert metrics["refit"]["rounds"] == round(np.mean(kept) * 1.5)
    booster = lgb.Booster(model_file=str(refit_run / "folds" / "refit" / "model.txt"))
    assert booster.num_trees() == metrics["refit"]["rounds"]
    assert (refit_run / "oof.parquet").read_bytes() == (folds_run / "oof.parquet").read_bytes()
    test = pd.read_parquet(refit_run / "test.parquet")
    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models.lgbm import LgbmModel

    model = LgbmModel(QuoraFeatures(config.features_dir("quora", "sample")))
    assert np.allclose(test["is_duplicate"], model.predict_test(booster))
    fold_average = np.mean([model.predict_test(lgb.Booster(model_file=str(folds_run / "folds" / f"fold_{k}" /
                                                                           "model.txt"))) for k in range(3)], axis=0)
    assert np.allclose(pd.read_parquet(folds_run / "test.parquet")["is_duplicate"], fold_average)
    assert not np.allclose(test["is_duplicate"], fold_average)
    assert json.loads((folds_run / "metrics.json").read_text())["test_from"] == "folds"


def test_lgbm_predicts_the_test_set_block_by_block(features, monkeypatch):
    """The design matrix is built in row blocks (the whole Kaggle test set at once took 17 GB):
    small blocks, the last one partial, give the same train matrix and test predictions as one block."""
    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models import lgbm as lgbm_module

    data = QuoraFeatures(config.features_dir("quora", "sample"))
    whole = lgbm_module.LgbmModel(data, num_boost_round=20, early_stopping_rounds=0)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    booster = whole.fit(0, train_idx, valid_idx, None)
    expected = whole.predict_test(booster)

    monkeypatch.setattr(lgbm_module, "DESIGN_ROWS", 7)
    blocks = lgbm_module.LgbmModel(data, num_boost_round=20, early_stopping_rounds=0)
    assert len(data.ids_test) % 7 and len(list(blocks._design_blocks("test"))) == -(-len(data.ids_test) // 7)
    assert (blocks.x_train != whole.x_train).nnz == 0
    assert np.array_equal(blocks.predict_test(booster), expected)


def test_siamese_checkpoints_by_the_clock_and_when_training_ends(nn_features, tmp_path, monkeypatch):
    from pipelines.common.checkpoint import CheckpointClock
    from pipelines.quora.models import QuoraFeatures

    data = QuoraFeatures(nn_features)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    writes = []
    real_written = CheckpointClock.written
    monkeypatch.setattr(CheckpointClock, "written", lambda self: (writes.append(1), real_written(self)))
    fold_dir = tmp_path / "fold_0"
    fold_dir.mkdir()
    model = _siamese(data, epochs=3, checkpoint_every_s=3600)
    fitted = model.fit(0, train_idx, valid_idx, fold_dir)
    state = json.loads((fold_dir / STATE_FILE).read_text())
    assert len(writes) == 1 and state["epoch"] == 3  # the clock never came due: one write, at the end
    assert sorted(p.name for p in fold_dir.glob("*.keras")) == ["epoch_3.keras"]
    best = state["best_epoch"]
    assert state["best_weights"] == f"best_{best + 1}.weights.h5" and len(model.history["loss"]) == 3
    # the best weights on disk are those the fit ended with (EarlyStopping restored the best epoch)
    reloaded = model.new_keras_model(model.n_features)
    reloaded.load_weights(fold_dir / state["best_weights"])
    for a, b in zip(reloaded.get_weights(), fitted.model.get_weights()):
        np.testing.assert_array_equal(a, b)
