"""Issue 16: per-size tensor cache, the backbone registry (each built small with weights none, the
offline message for each), the fine-tuning recipe (gradual unfreezing, discriminative learning
rates, BatchNorm handling, label smoothing, linear-probe head) and cnn_features on tiny images."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from pipelines import competitions, config
from pipelines.cervix import features
from pipelines.cervix.competition import model_image_size
from pipelines.common import train
from pipelines.common.io import read_json
from pipelines.common.log import StageError
from cervix_helpers import make_raw, raw_dir, tiny_images, train_args
from run_helpers import run_of

keras = pytest.importorskip("keras")
from pipelines.cervix.models import backbones, cnn, cnn_features  # noqa: E402  (imports Keras)


# ------------------------------------------------------------------------------- per-size tensors


def test_each_size_is_decoded_once_from_the_originals(project_dirs, monkeypatch):
    make_raw(raw_dir(), n_per_class=4, n_test=3)
    calls = []
    real = features.write_image_tensor

    def spy(paths, out_path, size, *args, **kwargs):
        calls.append((out_path.name, size))
        return real(paths, out_path, size, *args, **kwargs)

    monkeypatch.setattr(features, "write_image_tensor", spy)
    features.build_features("sample", image_size=[48, 32], n_folds=2, workers=2)
    assert sorted(calls) == [("test_32.npy", 32), ("test_48.npy", 48), ("train_32.npy", 32), ("train_48.npy", 48)]
    calls.clear()
    features.build_features("sample", image_size=[32, 48], n_folds=2, workers=2)
    assert calls == []  # both sizes up to date
    features.build_features("sample", image_size=[32, 40, 48], n_folds=2, workers=2)
    assert sorted(calls) == [("test_40.npy", 40), ("train_40.npy", 40)]  # only the new size
    assert features.built_sizes("sample") == [32, 40, 48]
    small, large = features.load_tensors("sample"), features.load_tensors("sample", 48)
    assert small.image_size == 32 and large.image_size == 48
    assert large.x_train.shape == (len(small.y), 48, 48, 3) and large.x_test.shape == (3, 48, 48, 3)
    assert large.train_names == small.train_names and (large.folds == small.folds).all()
    assert len(large.lock_paths) == 2 and large.lock_paths[1].name == "features_48.lock.json"
    # the 48-px rows are the same images as the 32-px ones, decoded at 48 px (not an upscale of them)
    direct, _ = features.decode_image(raw_dir() / small.train_names[0], 48)
    np.testing.assert_array_equal(large.x_train[0], direct)
    with pytest.raises(StageError, match="--image-size 32 40 48 64") as err:
        features.load_tensors("sample", 64)
    assert "\n" not in str(err.value)


def test_a_size_goes_stale_with_its_primary(project_dirs):
    make_raw(raw_dir(), n_per_class=4, n_test=3)
    features.build_features("sample", image_size=[32, 48], n_folds=2, workers=2)
    features.build_features("sample", image_size=[32], n_folds=3, workers=2)  # primary rebuilt, 48 px not
    with pytest.raises(StageError, match="out of date"):
        features.load_tensors("sample", 48)


def test_models_pick_their_native_size(project_dirs, caplog):
    sizes = [128, 224]
    assert model_image_size("mobilenet_v2", "mobilenet_v2", None, "kaggle", sizes) == 224
    assert model_image_size("small_cnn", "small_cnn", None, "kaggle", sizes) == 128
    assert model_image_size("mobilenet_v2", "mobilenet_v2", None, "sample", sizes) == 128
    with caplog.at_level(logging.WARNING):
        assert model_image_size("cnn_features", "inception_v3", None, "kaggle", sizes) == 128
    assert "no 299-px tensors" in caplog.text and "--image-size 128 224 299" in caplog.text
    assert model_image_size("mobilenet_v2", "mobilenet_v2", 160, "sample", sizes) == 160
    args = train_args("sample", "--image-size", "160")  # --image-size is the competition's own train option
    assert train.run_context(args).train_options.image_size == 160


# ------------------------------------------------------------------------------------ backbones


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_every_backbone_builds_small_with_weights_none(name):
    entry = backbones.BACKBONES[name]
    size = max(32, entry.min_size)
    net = backbones.build_backbone(name, size, None)
    out = net.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)
    assert out.ndim == 2 and out.shape[0] == 1 and out.shape[1] >= 256
    ids = backbones.block_ids(name, [layer.name for layer in net.layers])
    assert ids == sorted(ids) and ids[-1] >= 5  # ordered blocks, enough of them to unfreeze gradually
    assert cnn.backbone_arch(net) == name  # found again from the Keras model's name (a reloaded checkpoint)


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_offline_message_for_every_backbone(name, tmp_path, monkeypatch):
    monkeypatch.setattr(cnn, "keras_cache_dirs", lambda: [tmp_path / "models"])
    monkeypatch.setattr(cnn, "NETWORK_PROBE", lambda: False)
    monkeypatch.setattr(config, "WEIGHTS_DIR", None)
    with pytest.raises(StageError) as err:
        cnn.resolve_weights(name, "imagenet", 224)
    message = str(err.value)
    assert backbones.BACKBONES[name].file_name(224) in message
    assert "--weights none" in message and "--weights /path/to/" in message and "\n" not in message


def test_weights_file_names_are_keras_own():
    names = {n: b.file_name(224) for n, b in backbones.BACKBONES.items()}
    assert names["mobilenet"] == "mobilenet_2_5_224_tf_no_top.h5"
    assert names["mobilenet_v2"] == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert names["mobilenet_v2_050"] == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    assert names["inception_v3"] == "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert names["efficientnet_b0"] == "efficientnetb0_notop.h5"
    assert backbones.BACKBONES["mobilenet"].file_name(160) == "mobilenet_2_5_160_tf_no_top.h5"
    assert set(competitions.get("cervix").models.names()) >= set(backbones.BACKBONES) | {"cnn_features"}


# ----------------------------------------------------------------------------- fine-tuning recipe


def test_phases_of_gradual_unfreezing():
    opts = cnn.NetOptions(epochs=9, head_epochs=3, unfreeze="blocks", unfreeze_steps=3, unfreeze_epochs=2,
                          fine_tune_blocks=6, head_patience=1, lr=1e-3)
    phases = cnn.training_phases("mobilenet_v2", opts, pretrained=True)
    assert [(p.name, p.start_epoch, p.end_epoch, p.blocks) for p in phases] == [
        ("head", 0, 3, 0), ("unfreeze_1", 3, 5, 2), ("unfreeze_2", 5, 7, 4), ("unfreeze_3", 7, 9, 6)]
    assert phases[0].patience == 1 and phases[1].patience is None
    # one cosine over the whole fine-tuning, not one per unfreezing phase
    lrs = [cnn.phase_lr(p, e, "cosine") for p in phases[1:] for e in range(p.start_epoch, p.end_epoch)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-6)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    old = cnn.training_phases("mobilenet_v2", cnn.NetOptions(epochs=9, head_epochs=3), True)
    assert [p.name for p in old] == ["head", "fine_tune"] and old[0].patience is None  # the default recipe


def _backbone_file(arch: str, size: int, tmp_path):
    """A 'pretrained' weights file: the architecture's random initial weights, saved (the loading path
    is the one the real ImageNet files take)."""
    net = backbones.build_backbone(arch, size, None)
    path = tmp_path / f"{arch}.weights.h5"
    net.save_weights(path)
    return path, [w.copy() for w in net.get_weights()]


def test_gradual_unfreezing_trains_the_top_blocks_phase_by_phase(tmp_path, monkeypatch):
    x, y = tiny_images(n_per_class=4, size=32)
    weights_file, initial = _backbone_file("mobilenet", 32, tmp_path)
    seen = []
    real_compile = cnn.compile_model

    def spy(model, lr, label_smoothing=0.0, multipliers=None):
        bb = next(layer for layer in model.layers if layer.name.startswith("mobilenet"))
        ids = dict(zip([layer.name for layer in bb.layers], cnn.backbone_block_ids(bb)))
        trainable = {layer.name for layer in bb.layers if layer.trainable and layer.weights} if bb.trainable else set()
        seen.append(({ids[n] for n in trainable}, trainable, dict(multipliers or {}), max(ids.values())))
        return real_compile(model, lr, label_smoothing, multipliers)

    monkeypatch.setattr(cnn, "compile_model", spy)
    opts = cnn.NetOptions(epochs=3, head_epochs=1, head_patience=5, patience=5, unfreeze="blocks", unfreeze_steps=2,
                          unfreeze_epochs=1, fine_tune_blocks=2, lr_decay=0.5, batch_size=8, tta=1,
                          weights=str(weights_file))
    model_obj = cnn.KerasImageModel("mobilenet", x, y, None, opts, 32, verbose=0)
    assert model_obj.pretrained
    idx = np.arange(len(y))
    fitted = model_obj.fit(0, idx[idx % 2 == 0], idx[idx % 2 == 1], tmp_path)
    assert len(seen) == 3 and len(model_obj.history["loss"]) == 3
    (head_blocks, _, head_mult, top), (b1, names1, m1, _), (b2, names2, m2, _) = seen
    assert head_blocks == set() and head_mult == {}
    assert b1 == {top} and b2 == {top - 1, top}  # one block, then two, from the top
    assert not any("bn" in n for n in names1 | names2)  # BatchNorm frozen (--bn frozen)
    assert set(m1.values()) == {1.0} and set(m2.values()) == {1.0, 0.5}  # x0.5 for the block below the top
    bb = next(layer for layer in fitted.layers if layer.name.startswith("mobilenet"))
    ids = cnn.backbone_block_ids(bb)
    for layer, block in zip(bb.layers, ids):  # the blocks never unfrozen kept the file's weights
        if block < top - 1 and layer.weights:
            for w in layer.get_weights():
                assert any(w.shape == i.shape and np.array_equal(w, i) for i in initial), layer.name


def test_batchnorm_trained_at_a_lower_momentum_when_asked():
    opts = cnn.NetOptions(augment="none")
    model, bb = cnn.build_network("mobilenet_v2", 32, opts, None)
    cnn.set_phase(bb, "unfreeze_1", 0, blocks=2, bn="train", bn_momentum=0.9)
    ids = cnn.backbone_block_ids(bb)
    top = max(ids)
    bns = [(layer, b) for layer, b in zip(bb.layers, ids) if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.trainable == (b >= top - 1) for layer, b in bns)
    assert all(layer.momentum == 0.9 for layer, b in bns if b >= top - 1)
    cnn.set_phase(bb, "unfreeze_1", 0, blocks=2, bn="frozen")
    assert not any(layer.trainable for layer, _ in bns)


def test_discriminative_learning_rates_are_applied():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, name="low")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(hidden))
    cnn.compile_model(model, 1e-3, multipliers={"low": 0.25})
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16))
    after = model.get_weights()
    # Adam's first step moves every weight by about lr (|m / sqrt(v)| = 1): lr x 0.25 in "low"
    low_step = np.abs(after[0] - before[0])
    head_step = np.abs(after[2] - before[2])
    assert np.median(low_step) == pytest.approx(0.25e-3, rel=1e-3)
    assert np.median(head_step) == pytest.approx(1e-3, rel=1e-3)
    # per block of a backbone: the top block at 1, each block below x decay
    _, bb = cnn.build_network("mobilenet_v2", 32, cnn.NetOptions(augment="none"), None)
    mult = cnn.lr_multipliers(bb, 3, 0.5)
    ids = dict(zip([layer.name for layer in bb.layers], cnn.backbone_block_ids(bb)))
    top = max(ids.values())
    assert {ids[n] for n in mult} == {top, top - 1, top - 2}
    assert all(v == pytest.approx(0.5 ** (top - ids[n])) for n, v in mult.items())


def test_layerwise_optimizer_survives_a_checkpoint(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(
        keras.layers.Dense(5, name="low")(inputs)))
    cnn.compile_model(model, 1e-3, label_smoothing=0.1, multipliers={"low": 0.25})
    model.train_on_batch(np.ones((2, 4), "float32"), np.array([0, 1]))
    model.save(tmp_path / "m.keras")
    loaded = cnn.load_fold_model(tmp_path / "m.keras")
    assert loaded.optimizer.multipliers == {"low": 0.25} and loaded.loss.smoothing == pytest.approx(0.1)


def test_label_smoothing_and_the_log_loss_early_stopping_watches(tmp_path):
    loss = cnn._smoothed_loss_class()(0.3)
    pred = np.array([[0.7, 0.2, 0.1]], "float32")
    target = np.array([0.8, 0.1, 0.1])  # 0.7 * one-hot + 0.3 / 3
    assert float(loss(np.array([0]), pred)) == pytest.approx(-np.sum(target * np.log(pred[0])), rel=1e-5)
    x, y = tiny_images(n_per_class=3, size=32)
    model_obj = cnn.KerasImageModel("small_cnn", x, y, None, cnn.NetOptions(
        epochs=1, batch_size=8, tta=1, width=8, label_smoothing=0.2), 32, verbose=0)
    idx = np.arange(len(y))
    model_obj.fit(0, idx[::2], idx[1::2], tmp_path)
    state = read_json(tmp_path / "train_state.json")
    assert state["best"] == pytest.approx(model_obj.history["val_log_loss"][0])
    assert model_obj.history["val_log_loss"][0] != pytest.approx(model_obj.history["val_loss"][0])


def test_linear_probe_starts_the_head_from_a_logistic_regression(tmp_path):
    x, y = tiny_images(n_per_class=6, size=32)
    weights_file, _ = _backbone_file("vgg16", 32, tmp_path)
    opts = cnn.NetOptions(epochs=1, head_epochs=1, batch_size=8, tta=1, weights=str(weights_file), augment="none",
                          head_init="probe", lr=1e-9)  # lr ~0: the head stays where the probe put it
    model_obj = cnn.KerasImageModel("vgg16", x, y, None, opts, 32, verbose=0)
    idx = np.arange(len(y))
    fitted = model_obj.fit(0, idx, idx, tmp_path)
    pred = model_obj.predict_valid(fitted, idx)
    assert (pred.argmax(axis=1) == y).mean() > 0.8  # random-init VGG features still separate the colours


# ---------------------------------------------------------------------------------- cnn_features


def test_cnn_features_shapes_heads_and_cache(tmp_path, monkeypatch):
    x, y = tiny_images(n_per_class=6, size=32)
    calls = []
    real = cnn_features.pooled_features
    monkeypatch.setattr(cnn_features, "pooled_features", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    opts = cnn_features.FeatureOptions(backbone="vgg16", weights="none", tta=2, inner_folds=2)
    model = cnn_features.CnnFeaturesModel(x, y, x[:4], opts, 32, cache_dir=tmp_path, cache_inputs={"lock": "a"})
    f_train, f_test = model.features()
    assert f_train.shape == (18, 512) and f_test.shape == (4, 512) and f_train.dtype == np.float32
    assert calls == ["vgg16", "vgg16"]  # train and test, once each
    # the mean over the two views (identity, horizontal flip) of the backbone's pooled features
    one = real("vgg16", x[:2], 32, None, None, 1, seed=opts.seed)
    flipped = real("vgg16", x[:2, :, ::-1], 32, None, None, 1, seed=opts.seed)
    np.testing.assert_allclose(f_train[:2], (one + flipped) / 2, rtol=1e-4, atol=1e-5)
    idx = np.arange(len(y))
    fitted = model.fit(0, idx[idx % 3 != 0], idx[idx % 3 == 0], tmp_path)
    assert model.chosen["C"] in opts.cs
    pred = model.predict_valid(fitted, idx[idx % 3 == 0])
    assert pred.shape == (6, 3) and np.allclose(pred.sum(axis=1), 1.0)
    assert model.predict_test(fitted).shape == (4, 3)
    model.save(fitted, tmp_path)
    assert (tmp_path / "model.joblib").exists()
    # a second run with the same inputs reads the cache: no forward pass
    calls.clear()
    again = cnn_features.CnnFeaturesModel(x, y, x[:4], opts, 32, cache_dir=tmp_path, cache_inputs={"lock": "a"})
    np.testing.assert_array_equal(again.features()[0], f_train)
    assert calls == [] and again.from_cache
    # other inputs or other views: computed again
    cnn_features.CnnFeaturesModel(x, y, x[:4], opts, 32, cache_dir=tmp_path, cache_inputs={"lock": "b"}).features()
    assert calls == ["vgg16", "vgg16"]
    lgbm = cnn_features.CnnFeaturesModel(x, y, None, cnn_features.FeatureOptions(
        backbone="vgg16", weights="none", tta=2, head="lgbm", inner_folds=2, lambdas=(1.0, 10.0)), 32,
        cache_dir=tmp_path, cache_inputs={"lock": "a"})
    assert lgbm.name == "cnn_features_vgg16_lgbm" and model.name == "cnn_features_vgg16"
    fitted = lgbm.fit(0, idx, idx, tmp_path)
    assert lgbm.chosen["lambda_l2"] in (1.0, 10.0) and lgbm.predict_valid(fitted, idx).shape == (18, 3)
    assert lgbm.predict_test(fitted) is None


def test_cnn_features_through_the_train_stage(project_dirs, caplog):
    make_raw(raw_dir(), n_per_class=6, n_test=3)
    features.build_features("sample", image_size=32, n_folds=2, workers=2)
    args = train_args("sample", "--model", "cnn_features", "--backbone", "vgg16", "--weights", "none", "--tta", "2")
    (key, res), = train.train_models(args).items()  # one run of cnn_features, named by what it is
    assert res["complete"] and np.isfinite(res["log_loss"])
    out = run_of("cervix", "sample", "cnn_features")
    assert key == f"cnn_features/{out.name}" and "backbone=vgg16" in out.name
    params = read_json(out / "params.json")["params"]
    assert params["backbone"] == "vgg16" and params["tta"] == 2 and params["image_size"] == 32
    cache = list((config.features_dir("cervix", "sample") / "cnn_features").glob("vgg16_32px_tta2_*_train.npy"))
    assert len(cache) == 1
    with caplog.at_level(logging.INFO):
        train.train_models(train_args("sample", "--model", "cnn_features", "--backbone", "vgg16", "--weights",
                                      "none", "--tta", "2", "--no-resume"))
    assert "features from the cache" in caplog.text


# ------------------------------------------------------------------------- augmentation, small CNN


def test_random_resized_crop_changes_the_aspect_ratio():
    from pipelines.cervix.models import augment

    size = 32
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([rows * 8, cols * 8, np.zeros_like(rows)], axis=-1).astype("float32")[None].repeat(64, 0)

    def span_ratios(aspect):
        layer = augment._augment_class()(zoom=0.5, brightness=0.0, contrast=0.0, gain=0.0, aspect=aspect, seed=3)
        out = np.asarray(layer(image, training=True))
        spans = out[..., :2].max(axis=(1, 2)) - out[..., :2].min(axis=(1, 2))  # (64, 2): the crop's h and w
        return spans.max(axis=1) / spans.min(axis=1)

    np.testing.assert_allclose(span_ratios(0.0), 1.0, atol=1e-4)  # zoom alone: square crops
    ratios = span_ratios(0.2877)
    assert ratios.max() > 1.15 and ratios.max() < 4 / 3 * 1.1  # aspect ratios up to 4:3
    levels = {level: augment.augmentation_layers(level, seed=1) for level in ("crop", "crop_colour")}
    assert all(layers[0].aspect > 0 for layers in levels.values())
    assert levels["crop_colour"][0].brightness > levels["crop"][0].brightness


def test_small_cnn_deeper_variant():
    model, _ = cnn.build_network("small_cnn", 64, cnn.NetOptions(width=8, depth=5, augment="none"), None)
    names = [layer.name for layer in model.layers]
    assert "block5_conv" in names and "block6_conv" not in names
    assert sum(name.endswith("_pool") for name in names) == 4
    assert model.get_layer("block5_conv").filters == 64  # width x 8 at most
    assert model.predict(np.zeros((1, 64, 64, 3), np.uint8), verbose=0).shape == (1, 3)
