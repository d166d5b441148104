"""Cervix models on tiny data: bow_svm, the Keras networks (one epoch), checkpoint resume, TTA,
offline weights handling, MODEL=all selection, the submission specifics, and a real-data smoke run."""
from __future__ import annotations

import argparse
import logging
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from pipelines import competitions, config
from pipelines.cervix import features, submission
from pipelines.common import train
from pipelines.cervix.models import augment
from pipelines.common.io import read_json
from pipelines.common.keras_fit import STATE_FILE
from pipelines.common.log import StageError
from cervix_helpers import CLASSES, make_raw, raw_dir, tiny_images, train_args
from conftest import SHARED_WEIGHTS
from run_helpers import run_of

UNIFORM_LOG_LOSS = float(np.log(3))


@pytest.fixture
def sample_features(project_dirs):
    """Raw images and 32-px tensors of 8 images per class, 2 folds, under the tmp project dirs."""
    make_raw(raw_dir(), n_per_class=8, n_test=4)
    features.build_features("sample", image_size=32, n_folds=2, workers=2)
    return features.load_tensors("sample")


def _fold_split(y: np.ndarray):
    idx = np.arange(len(y))
    return idx[idx % 2 == 0], idx[idx % 2 == 1]


# ------------------------------------------------------------------------------------------ bow_svm


def test_bow_svm_trains_through_the_engine(sample_features):
    results = train.train_models(train_args("sample", "--model", "bow_svm", "--n-words", "16"))
    (key, res), = results.items()  # one run, named by its key <model>/<run>
    assert key == f"bow_svm/{run_of('cervix', 'sample', 'bow_svm').name}"
    assert res["complete"] and res["n_folds"] == 2
    assert res["log_loss"] < UNIFORM_LOG_LOSS  # the red centre's size tells the classes apart
    out = run_of("cervix", "sample", "bow_svm")
    oof = pd.read_parquet(out / "oof.parquet")
    test = pd.read_parquet(out / "test.parquet")
    assert list(oof.columns) == ["id", "fold", "target", *CLASSES] and len(oof) == 24
    assert list(test["id"]) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    np.testing.assert_allclose(test[CLASSES].sum(axis=1), 1.0, atol=1e-9)
    run = read_json(out / "run.json")
    assert any(k.endswith("features.lock.json") for k in run["inputs"])
    assert (out / "folds" / "fold_0" / "model.joblib").exists()


def test_bow_vocabulary_is_fitted_on_the_train_part_only(monkeypatch):
    from pipelines.cervix.models import bow_svm

    x, y = tiny_images(n_per_class=4, size=32)
    model = bow_svm.BowSvmModel(x, y, None, bow_svm.BowSvmOptions(n_words=8))
    seen = {}
    from sklearn.cluster import MiniBatchKMeans

    original = MiniBatchKMeans.fit

    def spy(self, data, *a, **k):
        seen["rows"] = len(data)
        return original(self, data, *a, **k)

    monkeypatch.setattr(MiniBatchKMeans, "fit", spy)
    train_idx, valid_idx = _fold_split(y)
    fitted = model.fit(0, train_idx, valid_idx, None)
    (_, descriptors), _ = model._features()
    per_image = descriptors.shape[1] * descriptors.shape[2]
    assert seen["rows"] == len(train_idx) * per_image
    pred = model.predict_valid(fitted, valid_idx)
    assert pred.shape == (len(valid_idx), 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-9)


# ---------------------------------------------------------------------------------------- networks

keras = pytest.importorskip("keras")
from pipelines.cervix.models import cnn  # noqa: E402  (imports Keras)


def _net(arch, x, y, tmp_path, checkpoint_every_s=0, **opts):
    options = cnn.NetOptions(**{"epochs": 1, "batch_size": 8, "tta": 2, "weights": "none", "patience": 3, **opts})
    return cnn.KerasImageModel(arch, x, y, x[:3], options, x.shape[1], verbose=0,
                               checkpoint_every_s=checkpoint_every_s)


def test_small_cnn_trains_through_the_stage(sample_features):
    args = train_args("sample", "--model", "small_cnn", "--epochs", "1", "--batch-size", "8", "--width", "8",
                      "--tta", "2")
    (res,) = train.train_models(args).values()
    assert res["complete"] and np.isfinite(res["log_loss"])
    out = run_of("cervix", "sample", "small_cnn")
    for name in ("oof.parquet", "test.parquet", "metrics.json", "history.json", "learning_curve.png"):
        assert (out / name).exists(), name
    history = read_json(out / "history.json")
    assert set(history) == {"0", "1"} and len(history["0"]["loss"]) == 1 and "val_loss" in history["0"]
    fold = out / "folds" / "fold_0"
    assert (fold / "model.keras").exists()
    assert not list(fold.glob("epoch_*.keras")) and not (fold / STATE_FILE).exists()  # dropped once the fold is done
    params = read_json(out / "params.json")["params"]
    assert params["epochs"] == 1 and params["tta"] == 2 and params["image_size"] == 32
    reloaded = cnn.load_fold_model(fold / "model.keras")
    assert reloaded.predict(np.zeros((1, 32, 32, 3), np.uint8), verbose=0).shape == (1, 3)


def test_fold_checkpoint_resumes_mid_fold(tmp_path):
    x, y = tiny_images(n_per_class=4, size=32)
    train_idx, valid_idx = _fold_split(y)
    first = _net("small_cnn", x, y, tmp_path, epochs=1, width=8)
    first.fit(0, train_idx, valid_idx, tmp_path)  # "interrupted" after epoch 1: save() never ran
    state = read_json(tmp_path / STATE_FILE)
    assert state["epoch"] == 1 and (tmp_path / state["checkpoint"]).exists()
    second = _net("small_cnn", x, y, tmp_path, epochs=2, width=8)
    model = second.fit(0, train_idx, valid_idx, tmp_path)
    assert len(second.history["loss"]) == 2
    assert second.history["loss"][0] == pytest.approx(first.history["loss"][0])  # epoch 1 was not redone
    assert read_json(tmp_path / STATE_FILE)["epoch"] == 2
    assert second.predict_valid(model, valid_idx).shape == (len(valid_idx), 3)


def test_fold_checkpoint_by_the_clock_and_when_training_ends(tmp_path, monkeypatch):
    from pipelines.common.checkpoint import CheckpointClock

    x, y = tiny_images(n_per_class=4, size=32)
    train_idx, valid_idx = _fold_split(y)
    writes = []
    real_written = CheckpointClock.written
    monkeypatch.setattr(CheckpointClock, "written", lambda self: (writes.append(1), real_written(self)))
    model_obj = _net("small_cnn", x, y, tmp_path, checkpoint_every_s=3600, epochs=3, width=8, patience=10)
    model = model_obj.fit(0, train_idx, valid_idx, tmp_path)
    state = read_json(tmp_path / STATE_FILE)
    assert len(writes) == 1 and state["epoch"] == 3  # the clock never came due: one write, at the end
    assert state["checkpoint"] == "epoch_3.keras"
    assert state["best_weights"] == f"best_{state['best_epoch'] + 1}.weights.h5"
    # the fold ends on the best epoch's weights, kept in memory until that write
    best = cnn.load_fold_model(tmp_path / state["checkpoint"])
    best.load_weights(tmp_path / state["best_weights"])
    for a, b in zip(best.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert state["best"] == pytest.approx(min(model_obj.history["val_loss"]))
    writes.clear()
    every_epoch = _net("small_cnn", x, y, tmp_path / "e", checkpoint_every_s=0, epochs=2, width=8, patience=10)
    (tmp_path / "e").mkdir()
    every_epoch.fit(0, train_idx, valid_idx, tmp_path / "e")
    assert len(writes) == 2


@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_keras_applications_from_scratch(arch, tmp_path):
    x, y = tiny_images(n_per_class=3, size=32)
    train_idx, valid_idx = _fold_split(y)
    model_obj = _net(arch, x, y, tmp_path)
    assert not model_obj.pretrained and "head_epochs" not in model_obj.params
    fitted = model_obj.fit(0, train_idx, valid_idx, tmp_path)
    pred = model_obj.predict_valid(fitted, valid_idx)
    assert pred.shape == (len(valid_idx), 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-5)
    assert model_obj.predict_test(fitted).shape == (3, 3)
    assert fitted.get_layer("preprocess").application == arch
    # from scratch the whole network trains, BatchNormalization included (not just the top layers)
    import keras

    backbone = next(layer for layer in fitted.layers if layer.name.startswith(arch))
    assert all(layer.trainable for layer in backbone.layers)
    assert sum(int(np.prod(w.shape)) for w in fitted.non_trainable_weights) == sum(
        int(np.prod(w.shape)) for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.non_trainable_weights)  # only BN's moving statistics stay out of the gradient


def test_mobilenet_v2_with_the_real_imagenet_file(tmp_path):
    path = SHARED_WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    import h5py

    x, y = tiny_images(n_per_class=3, size=32)
    train_idx, valid_idx = _fold_split(y)
    model_obj = _net("mobilenet_v2", x, y, tmp_path, weights=str(path), epochs=2, head_epochs=1,
                     fine_tune_layers=10)
    assert model_obj.pretrained and model_obj.params["weights"] == str(path.resolve())
    fitted = model_obj.fit(0, train_idx, valid_idx, tmp_path)
    assert len(model_obj.history["loss"]) == 2  # head phase, then fine-tuning
    backbone = next(layer for layer in fitted.layers if layer.name.startswith("mobilenetv2"))
    kernel = backbone.get_layer("Conv1").kernel.numpy()
    with h5py.File(path, "r") as f:
        expected = f["Conv1"]["Conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(kernel, expected)  # loaded, and still frozen (below the top 10 layers)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable and all(not name.endswith("_BN") and "bn" not in name.lower() for name in trainable)
    assert model_obj.predict_valid(fitted, valid_idx).shape == (len(valid_idx), 3)


def test_imagenet_offline_fails_fast_and_names_the_ways_out(tmp_path, monkeypatch):
    monkeypatch.setattr(cnn, "keras_cache_dirs", lambda: [tmp_path / "models"])
    monkeypatch.setattr(cnn, "NETWORK_PROBE", lambda: False)
    x, y = tiny_images(n_per_class=2, size=32)
    t0 = time.perf_counter()
    with pytest.raises(StageError) as err:
        _net("vgg16", x, y, tmp_path, weights="imagenet")
    assert time.perf_counter() - t0 < 10
    message = str(err.value)
    assert "--weights none" in message and "--weights /path/to/" in message
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message and "\n" not in message
    with pytest.raises(StageError, match="does not exist"):
        _net("resnet50", x, y, tmp_path, weights=str(tmp_path / "missing.h5"))


def test_imagenet_uses_the_cache_without_probing(tmp_path, monkeypatch):
    cache = tmp_path / "models"
    cache.mkdir()
    (cache / cnn.imagenet_file_name("mobilenet_v2", 128, 0.35)).write_bytes(b"x")
    monkeypatch.setattr(cnn, "keras_cache_dirs", lambda: [cache])
    monkeypatch.setattr(cnn, "NETWORK_PROBE", lambda: pytest.fail("probed the network despite a cached file"))
    assert cnn.resolve_weights("mobilenet_v2", "imagenet", 128, 0.35) == "imagenet"
    assert cnn.imagenet_file_name("mobilenet_v2", 100, 0.5).endswith("_0.5_224_no_top.h5")


def test_network_probe_is_bounded_in_time():
    t0 = time.perf_counter()
    assert cnn.probe_download_host("192.0.2.1", 9, timeout=0.5) is False  # TEST-NET-1: never answers
    assert time.perf_counter() - t0 < 2.0


def test_learning_rate_schedule_per_phase():
    opts = cnn.NetOptions(epochs=10, head_epochs=3, lr=1e-3, fine_tune_layers=30)  # the one-phase recipe
    head, fine = cnn.training_phases("mobilenet_v2", opts, pretrained=True)
    assert (head.start_epoch, head.end_epoch, fine.start_epoch, fine.end_epoch) == (0, 3, 3, 10)
    assert cnn.phase_lr(head, 0, "cosine") == cnn.phase_lr(head, 2, "cosine") == pytest.approx(1e-3)
    full = cnn.training_phases("small_cnn", opts, pretrained=False)[0]
    assert cnn.phase_lr(full, 0, "cosine") == pytest.approx(1e-3)
    assert cnn.phase_lr(full, 9, "cosine") == pytest.approx(1e-5)
    assert cnn.phase_lr(fine, 3, "cosine") == pytest.approx(1e-4)  # fine-tuning restarts at lr / 10
    lrs = [cnn.phase_lr(fine, e, "cosine") for e in range(3, 10)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(1e-6)
    assert cnn.phase_lr(fine, 7, "constant") == pytest.approx(1e-4)
    assert [p.name for p in cnn.training_phases("small_cnn", opts, pretrained=False)] == ["full"]


def test_augmentation_is_training_only():
    layer = augment.augmentation_layers("strong", seed=1)[0]
    x, _ = tiny_images(n_per_class=2, size=32)
    xf = x.astype("float32")
    np.testing.assert_array_equal(np.asarray(layer(xf, training=False)), xf)
    out = np.asarray(layer(xf, training=True))
    assert out.shape == xf.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255 and not np.allclose(out, xf)
    assert augment.augmentation_layers("none") == []


# --------------------------------------------------------------------------------------------- TTA


def _fake_predict(batch: np.ndarray) -> np.ndarray:
    """Deterministic, orientation-sensitive 'model': softmax of the mean of three image regions."""
    b = batch.astype(np.float64) / 255
    logits = np.stack([b[:, :4, :, 0].mean(axis=(1, 2)), b[:, :, :4, 1].mean(axis=(1, 2)),
                       b[:, -4:, -4:, 2].mean(axis=(1, 2))], axis=1) * 5
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_tta_is_the_mean_of_the_augmented_predictions():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (5, 12, 12, 3), dtype=np.uint8)
    for n in (1, 2, 4, 8):
        expected = np.mean([_fake_predict(t(x)) for t in augment.TTA_TRANSFORMS[:n]], axis=0)
        np.testing.assert_allclose(augment.predict_tta(_fake_predict, x, n), expected, rtol=1e-12)
        np.testing.assert_allclose(augment.predict_tta(_fake_predict, x, n, chunk=2), expected, rtol=1e-12)
    assert not np.allclose(augment.predict_tta(_fake_predict, x, 1), augment.predict_tta(_fake_predict, x, 8))
    views = augment.tta_views(x[:1], 8)
    assert len({v.tobytes() for v in views}) == 8  # eight distinct symmetries
    with pytest.raises(ValueError):
        augment.tta_views(x, 9)


def test_network_predictions_use_tta(tmp_path):
    x, y = tiny_images(n_per_class=2, size=16)

    class FakeKeras:
        calls = []

        def predict(self, batch, batch_size=None, verbose=0):
            self.calls.append(len(batch))
            return _fake_predict(batch)

    model_obj = _net("small_cnn", x, y, tmp_path, tta=4)
    fake = FakeKeras()
    valid_idx = np.array([0, 3, 5])
    pred = model_obj.predict_valid(fake, valid_idx)
    expected = np.mean([_fake_predict(t(x[valid_idx])) for t in augment.TTA_TRANSFORMS[:4]], axis=0)
    np.testing.assert_allclose(pred, expected)
    assert fake.calls == [12]  # 3 images x 4 views in one call
    assert model_obj.predict_test(fake).shape == (3, 3)


# ----------------------------------------------------------------------------------- MODEL=all set


def test_model_all_selection(tmp_path, monkeypatch, project_dirs):
    monkeypatch.setattr(config, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(cnn, "keras_cache_dirs", lambda: [tmp_path / "cache"])
    cervix = competitions.get("cervix")
    args = train_args("sample", "--model", "all")
    assert cervix.model_names_for_all(train.run_context(args, cervix)) == ["bow_svm", "small_cnn"]
    (tmp_path / "weights").mkdir()
    weights = tmp_path / "weights" / cnn.imagenet_file_name("mobilenet_v2", 224, 0.35)
    weights.write_bytes(b"x")
    assert cervix.model_names_for_all(train.run_context(args, cervix)) == ["bow_svm", "small_cnn", "mobilenet_v2"]
    assert cnn.local_weights("mobilenet_v2", 128) == str(weights)  # the 224-px file serves any size
    assert cnn.local_weights("vgg16", 64) is None  # the builder then asks for imagenet (a download)
    names = cervix.models.names()
    assert names[:3] == ["bow_svm", "small_cnn", "cnn_features"] and {"mobilenet_v2", "vgg16", "resnet50"} <= set(names)


def test_sample_default_epochs(monkeypatch):
    cervix = competitions.get("cervix")

    def options(source, *argv):
        args = train_args(source, "--model", "small_cnn", *argv)
        return train.model_options(cervix, "small_cnn", args, train.run_context(args, cervix))[1]

    assert options("sample").epochs == 6 and options("sample").batch_size == 16  # the sample's profile
    assert options("kaggle").epochs == 25 and options("kaggle").batch_size == 32  # small_cnn's own default
    assert options("sample", "--epochs", "2").epochs == 2
    with pytest.raises(StageError, match="--tta"):
        cnn.check_tta(options("sample", "--tta", "9").tta)


# ------------------------------------------------------------------------------------- submission


def test_cervix_to_submission():
    test_pred = pd.DataFrame({"id": ["10.jpg", "2.jpg", "1.jpg"], "Type_1": [0.2, 0.0, 2.0],
                              "Type_2": [0.2, 0.5, 1.0], "Type_3": [0.2, 0.5, 1.0]})
    parser = argparse.ArgumentParser()
    submission.add_arguments(parser)
    df = submission.to_submission(test_pred, parser.parse_args([]))
    assert list(df.columns) == ["image_name", *CLASSES]
    assert sorted(df["image_name"]) == ["1.jpg", "10.jpg", "2.jpg"]
    np.testing.assert_allclose(df[CLASSES].sum(axis=1), 1.0, atol=1e-12)
    assert (df[CLASSES].to_numpy() > 0).all()
    row = df.set_index("image_name").loc["1.jpg"]
    assert row["Type_1"] == pytest.approx(0.5) and row["Type_2"] == pytest.approx(0.25)
    floored = submission.to_submission(test_pred, parser.parse_args(["--cervix-min-prob", "0.05"]))
    assert floored.set_index("image_name").loc["2.jpg", "Type_1"] == pytest.approx(0.05 / 1.05)
    assert submission.sample_submission_path(config.ROOT) == config.ROOT / "sample_submission_stg1.csv"
    with pytest.raises(StageError, match="Type_3"):
        submission.to_submission(test_pred.drop(columns="Type_3"), parser.parse_args([]))
    with pytest.raises(StageError, match="NaN"):
        submission.to_submission(test_pred.assign(Type_1=[np.nan, 0.1, 0.1]), parser.parse_args([]))


# -------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_images_smoke(shared_data, project_dirs, caplog):
    source = shared_data / "cervix"
    if not (source / "train").is_dir():
        pytest.skip(f"{source} has no train/")
    raw = raw_dir("sample")
    for cls in CLASSES:
        files = sorted((source / "train" / cls).glob("*.jpg"))[:10]
        (raw / "train" / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, raw / "train" / cls / f.name)
    (raw / "test").mkdir()
    test_files = sorted((source / "test").glob("*.jpg"))[:5]
    for f in test_files:
        shutil.copy(f, raw / "test" / f.name)
    features.build_features("sample", image_size=64, n_folds=2, workers=2)
    tensors = features.load_tensors("sample")
    assert tensors.x_train.shape == (30, 64, 64, 3) and tensors.x_train.mean() > 40
    with caplog.at_level(logging.INFO):
        (res,) = train.train_models(train_args("sample", "--model", "bow_svm", "--n-words", "32")).values()
    assert res["complete"] and np.isfinite(res["log_loss"]) and res["n_train"] == 30
    test = pd.read_parquet(run_of("cervix", "sample", "bow_svm") / "test.parquet")
    assert set(test["id"]) == {f.name for f in test_files}
    np.testing.assert_allclose(test[CLASSES].sum(axis=1), 1.0, atol=1e-9)
