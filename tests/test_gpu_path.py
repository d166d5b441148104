"""Issue 15, the GPU path, tested on the CPU: device detection and choice from faked device lists, the
precision policy (off on the CPU), LightGBM's --lgbm-device, the cuDNN conditions of the Siamese
encoders (and that the layers making them hold change no CPU result), and the test predictions from
the distinct-question encoder against the per-pair ones; the cervix networks under mixed precision and
their policy from $PIPELINES_PRECISION."""
from __future__ import annotations

import types

import numpy as np
import pytest

from pipelines import config
from pipelines.common import device
from pipelines.common.log import StageError

AMPERE = device.GpuInfo("/physical_device:GPU:0", "NVIDIA A100", (8, 0))
PASCAL = device.GpuInfo("/physical_device:GPU:0", "Tesla P100", (6, 0))


def test_tensorflow_gpus_reads_the_device_list_and_details():
    devices = [types.SimpleNamespace(name="/physical_device:GPU:0"), types.SimpleNamespace(name="/physical_device:GPU:1")]
    details = {"/physical_device:GPU:0": {"device_name": "NVIDIA H200", "compute_capability": (9, 0)}, }

    def get_details(dev):
        if dev.name not in details:
            raise RuntimeError("no details")
        return details[dev.name]

    seen = []
    gpus = device.tensorflow_gpus(lambda kind: seen.append(kind) or devices, get_details)
    assert seen == ["GPU"]
    assert gpus == [device.GpuInfo("/physical_device:GPU:0", "NVIDIA H200", (9, 0)),
                    device.GpuInfo("/physical_device:GPU:1", "", None)]
    assert device.tensorflow_gpus(lambda kind: [], get_details) == []


def test_choice_of_device_and_precision():
    assert device.choose("auto", []) == device.DeviceChoice("cpu", "float32")
    assert device.choose("cpu", [AMPERE]) == device.DeviceChoice("cpu", "float32")  # asked for the CPU: GPU unused
    assert device.choose("auto", [AMPERE]) == device.DeviceChoice("gpu", "mixed_float16", (AMPERE,))
    assert device.choose("gpu", [PASCAL]).precision == "float32"  # no tensor cores: float16 gains nothing
    assert device.choose("gpu", [AMPERE, PASCAL]).precision == "float32"  # every GPU must have them
    assert device.choose("gpu", [AMPERE], precision="float32").precision == "float32"
    assert device.choose("gpu", [PASCAL], precision="mixed_float16").precision == "mixed_float16"
    with pytest.raises(StageError, match="--device gpu: TensorFlow sees no GPU.*make setup GPU=1.*--device cpu"):
        device.choose("gpu", [])
    with pytest.raises(StageError, match="mixed_float16 needs a GPU"):
        device.choose("auto", [], precision="mixed_float16")
    with pytest.raises(StageError, match="--device 'tpu'"):
        device.choose("tpu", [])


def test_device_records():
    assert device.choose("auto", []).record() == {"kind": "cpu", "framework": "tensorflow", "precision": "float32"}
    assert device.choose("auto", [AMPERE]).record() == {"kind": "gpu", "framework": "tensorflow",
                                                        "precision": "mixed_float16", "gpus": ["NVIDIA A100"]}


def test_default_device_from_the_environment(monkeypatch):
    monkeypatch.delenv(device.ENV_DEVICE, raising=False)
    assert device.default_device() == "auto"
    monkeypatch.setenv(device.ENV_DEVICE, "CPU")
    assert device.default_device() == "cpu"
    monkeypatch.setenv(device.ENV_DEVICE, "cuda")
    with pytest.raises(StageError, match="PIPELINES_DEVICE='cuda'"):
        device.default_device()


def test_two_tensorflow_wheels_are_named_with_the_repair():
    assert device.tensorflow_wheels_clash(["numpy", "tensorflow-cpu", "keras"]) is None
    assert device.tensorflow_wheels_clash(["tensorflow"]) is None
    assert "make setup GPU=1" in device.tensorflow_wheels_clash(["tensorflow_cpu", "tensorflow"])


def test_on_the_cpu_the_policy_is_float32_and_no_gpu_is_seen():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        choice = device.choose_tensorflow("auto")  # this machine (tests hide any GPU)
        assert choice == device.DeviceChoice("cpu", "float32")
        device.apply_tensorflow(choice)
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- LightGBM ------------------------------------------------------------------------------------------------

def test_lightgbm_device_option_is_validated():
    assert device.lightgbm_params("cpu") == {}
    assert device.lightgbm_params("gpu") == {"device_type": "gpu"}
    with pytest.raises(StageError, match="--lgbm-device 'cuda'"):
        device.lightgbm_params("cuda")
    calls = []
    device.check_lightgbm_device("cpu", train=lambda *a, **k: calls.append(a))
    assert calls == []  # nothing to check on the CPU
    device.check_lightgbm_device("gpu", train=lambda params, *a, **k: calls.append(params["device_type"]))
    assert calls == ["gpu"]


def test_an_unusable_lightgbm_gpu_is_one_line():
    import lightgbm as lgb

    def no_opencl(*args, **kwargs):
        raise lgb.basic.LightGBMError("No OpenCL device found")

    with pytest.raises(StageError) as err:
        device.check_lightgbm_device("gpu", train=no_opencl)
    message = str(err.value)
    assert "\n" not in message and "No OpenCL device found" in message and "--lgbm-device cpu" in message
    # the real library on this machine: it trains on a GPU, or it says why not in one line
    try:
        device.check_lightgbm_device("gpu")
    except StageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("--lgbm-device gpu: LightGBM cannot train on a GPU here")


def test_lgbm_model_takes_the_device(monkeypatch, project_dirs):
    from quora_model_helpers import write_fake_features

    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models import lgbm as lgbm_module
    from pipelines.common import train

    data = QuoraFeatures(write_fake_features(config.features_dir("quora", "sample")))
    cpu = lgbm_module.LgbmModel(data)
    assert "device" not in cpu.params and "device_type" not in cpu.lgb_params()  # CPU parameters as before
    assert cpu.device == {"kind": "cpu", "framework": "lightgbm"}
    checked = []
    monkeypatch.setattr(device, "check_lightgbm_device", lambda d, train=None: checked.append(d))
    gpu = lgbm_module.LgbmModel(data, device="gpu")
    assert checked == ["gpu"] and gpu.params["device"] == "gpu" and gpu.lgb_params()["device_type"] == "gpu"
    assert gpu.device == {"kind": "gpu", "framework": "lightgbm"}

    model, _ = train.build_model("quora", "lgbm", train.parse_args("quora", ["--lgbm-device", "gpu"]))
    assert model.params["device"] == "gpu"
    with pytest.raises(SystemExit):
        train.parse_args("quora", ["--lgbm-device", "tpu"])


# --- Siamese networks ----------------------------------------------------------------------------------------

def tiny_network(rnn="gru", bidirectional=False, pooling="max", n_features=3, seed=1, **kwargs):
    import keras

    from pipelines.quora.models import siamese

    emb = np.random.RandomState(0).rand(40, 6).astype("float32")
    emb[0] = 0
    keras.utils.set_random_seed(seed)
    return siamese.build_keras_model(max_len=7, embedding_matrix=emb, rnn=rnn, units=5, bidirectional=bidirectional,
                                     fine_tune=False, n_features=n_features, dense=4, dropout=0.1,
                                     learning_rate=1e-2, pooling=pooling, **kwargs)


def tiny_inputs(n=16, seed=0):
    rng = np.random.default_rng(seed)
    q = np.zeros((n, 7), dtype=np.int32)
    for i, length in enumerate(rng.integers(0, 8, n)):  # post-padded, some questions empty
        q[i, :length] = rng.integers(1, 40, length)
    q[1] = q[5] = 0
    return {"q1": q, "q2": np.roll(q, 3, axis=0), "feats": rng.random((n, 3)).astype("float32")}


@pytest.mark.parametrize("rnn,bidirectional", [("lstm", False), ("gru", False), ("gru", True)])
def test_the_encoders_meet_the_cudnn_conditions(rnn, bidirectional):
    model = tiny_network(rnn, bidirectional)
    layer = model.get_layer("encoder" if bidirectional else f"{rnn}_encoder")
    cells = [layer.forward_layer, layer.backward_layer] if bidirectional else [layer]
    for rnn_layer in cells:
        cfg = rnn_layer.get_config()
        assert cfg["activation"] == "tanh" and cfg["recurrent_activation"] == "sigmoid"
        assert cfg["recurrent_dropout"] == 0 and cfg["unroll"] is False and cfg["use_bias"] is True
        assert rnn_layer.use_cudnn in ("auto", True)
        if rnn == "gru":
            assert cfg["reset_after"] is True


def test_no_sequence_reaches_the_encoder_fully_masked():
    import keras

    model = tiny_network()
    x = tiny_inputs()
    embedded = model.get_layer("embedding")(keras.ops.convert_to_tensor(x["q1"]))
    mask = model.get_layer("embedding").compute_mask(x["q1"])
    safe = np.asarray(model.get_layer("nonempty_mask").compute_mask(embedded, mask))
    assert not np.asarray(mask)[1].any()  # question 1 is empty...
    assert safe.any(axis=1).all()  # ...and still reaches the RNN with one (zero) step: cuDNN needs that
    np.testing.assert_array_equal(safe[np.asarray(mask).any(axis=1)], np.asarray(mask)[np.asarray(mask).any(axis=1)])
    # right-padded: every mask is a run of True then False (cuDNN's other condition)
    assert all((np.diff(row.astype(int)) <= 0).all() for row in safe)


@pytest.mark.parametrize("pooling,bidirectional", [("max", False), ("last", False), ("max", True)])
def test_the_cudnn_safe_layers_change_no_cpu_result(pooling, bidirectional):
    """The same network with and without NonEmptyMask/ZeroEmpty, from the same seed: the same initial
    weights, the same predictions and the same weights after training steps (exactly)."""
    x, y = tiny_inputs(), (np.arange(16) % 2).astype("float32")
    new = tiny_network(pooling=pooling, bidirectional=bidirectional)
    old = tiny_network(pooling=pooling, bidirectional=bidirectional, cudnn_safe_mask=False)
    for a, b in zip(new.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(new.predict_on_batch(x), old.predict_on_batch(x))
    for model in (new, old):
        import keras

        keras.utils.set_random_seed(7)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(new.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(new.predict_on_batch(x), old.predict_on_batch(x))


def test_mixed_precision_keeps_the_output_float32():
    """What the GPU policy builds, built here on the CPU: float16 inside, a float32 probability out."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_network()
        assert model.get_layer("dense").compute_dtype == "float16"
        assert model.get_layer("is_duplicate").compute_dtype == "float32"
        pred = np.asarray(model.predict_on_batch(tiny_inputs()))
        assert pred.dtype == np.float32 and np.isfinite(pred).all() and ((pred > 0) & (pred < 1)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_siamese_model_records_its_device_and_keeps_cpu_parameters(project_dirs):
    from quora_model_helpers import write_fake_features

    from pipelines.quora.models import QuoraFeatures
    from pipelines.quora.models.siamese import SiameseModel

    data = QuoraFeatures(write_fake_features(config.features_dir("quora", "sample")))
    cpu = SiameseModel(data, "gru", device="auto", gpus=[])
    assert "device" not in cpu.params and "precision" not in cpu.params
    assert cpu.device == {"kind": "cpu", "framework": "tensorflow", "precision": "float32"}
    gpu = SiameseModel(data, "gru", device="auto", gpus=[AMPERE])
    assert gpu.params["device"] == "gpu" and gpu.params["precision"] == "mixed_float16"
    assert gpu.device["gpus"] == ["NVIDIA A100"]
    with pytest.raises(StageError, match="--device gpu"):
        SiameseModel(data, "gru", device="gpu", gpus=[])


@pytest.fixture
def sample_features(project_dirs):
    """The real data and features stages on a small built-in sample (questions reused across pairs,
    a few empty ones), as `make features` writes them."""
    from pipelines.__main__ import main

    assert main(["data", "--comp", "quora", "--source", "sample", "--n-train", "400", "--n-test", "300"]) == 0
    assert main(["features", "--comp", "quora", "--source", "sample"]) == 0
    from pipelines.quora.models import QuoraFeatures

    return QuoraFeatures(config.features_dir("quora", "sample"))


def test_length_chunks_sort_by_length_and_cut_each_call_to_its_longest_question():
    from pipelines.quora.models.siamese import length_chunks

    lengths = np.array([30, 0, 3, 12, 9, 30, 1, 8, 17, 2])
    calls = length_chunks(lengths, chunk=3, max_len=30, step=8)
    assert [w for _, w in calls] == [8, 16, 30, 30]  # (0, 1, 2) (3, 8, 9) (12, 17, 30) (30): 8, 16, 24 -> 30 cap
    order = np.concatenate([part for part, _ in calls])
    assert sorted(order.tolist()) == list(range(len(lengths)))  # every question once
    assert (np.diff(lengths[order]) >= 0).all()
    assert all(lengths[part].max() <= width for part, width in calls)


@pytest.mark.parametrize("pooling", ["max", "last"])
def test_distinct_question_predictions_equal_the_per_pair_ones(sample_features, tmp_path, monkeypatch, pooling):
    """Tolerance: 1e-6 absolute on the probabilities (the encoder sees other batch sizes and widths than
    the pair model, which may change float32 summation order; measured here: identical or ~1e-8)."""
    from pipelines.quora.models import siamese

    widths = []
    real_chunks = siamese.length_chunks

    def recording(*args, **kwargs):
        calls = real_chunks(*args, **kwargs)
        widths.extend(w for _, w in calls)
        return calls

    monkeypatch.setattr(siamese, "length_chunks", recording)

    data = sample_features
    qid1, qid2 = data.question_ids("test")
    slots = np.concatenate([qid1, qid2])
    assert len(np.unique(slots)) < len(slots)  # questions recur: the distinct path has something to share
    q1, q2 = np.asarray(data.seq("q1", "test")), np.asarray(data.seq("q2", "test"))
    seqs = np.concatenate([q1, q2])
    for qid in np.unique(slots)[:50]:  # one question id, one token sequence
        rows = seqs[slots == qid]
        assert (rows == rows[0]).all()

    model = siamese.SiameseModel(data, "gru", epochs=1, units=8, dense=8, verbose=0, gpus=[], pooling=pooling)
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)
    fitted = model.fit(0, train_idx, valid_idx, tmp_path)
    distinct = model.predict_test(fitted)
    pairs = model.predict_test_pairs(fitted)
    assert distinct.shape == pairs.shape == (len(q1),) and np.isfinite(distinct).all()
    np.testing.assert_allclose(distinct, pairs, rtol=0, atol=1e-6)
    assert widths and min(widths) < q1.shape[1]  # the encoder ran on calls narrower than the padded sequences
    assert pairs.std() > 0  # a model that predicts something

    assert siamese.shared_slots((qid1, qid2)) >= siamese.MIN_SLOTS_PER_QUESTION  # predict_test took the distinct path
    siamese_old_model = siamese.encoder_and_head(tiny_network(cudnn_safe_mask=False), model.params, 3)
    assert siamese_old_model is None  # a model saved before the layers existed: per pair


def test_a_test_set_without_shared_questions_is_predicted_pair_by_pair(monkeypatch):
    from pipelines.quora.models import siamese

    assert siamese.shared_slots((np.array([1, 2, 3]), np.array([4, 5, 6]))) == 1.0
    assert siamese.shared_slots((np.array([1, 1, 2]), np.array([2, 3, 1]))) == 2.0
    model = siamese.SiameseModel.__new__(siamese.SiameseModel)
    model.params, model._feats = {"with_features": False, "bidirectional": False, "rnn": "gru", "pooling": "max"}, {}
    model.data = types.SimpleNamespace(seq=lambda q, part: np.zeros((3, 7), np.int32),
                                       question_ids=lambda part: (np.array([1, 2, 3]), np.array([4, 5, 6])))
    monkeypatch.setattr(siamese, "encoder_and_head", lambda *a: ("encoder", "head"))
    monkeypatch.setattr(model, "predict_test_pairs", lambda fitted: "pairs", raising=False)
    monkeypatch.setattr(model, "_predict_distinct", lambda *a: "distinct", raising=False)
    fitted = types.SimpleNamespace(model=None)
    assert model.predict_test(fitted) == "pairs"
    model.data.question_ids = lambda part: (np.array([1, 1, 2]), np.array([2, 3, 1]))
    assert model.predict_test(fitted) == "distinct"


# --- the cervix networks ------------------------------------------------------------------------------------

def test_default_precision_from_the_environment(monkeypatch):
    monkeypatch.delenv(device.ENV_PRECISION, raising=False)
    assert device.default_precision() == "auto"
    monkeypatch.setenv(device.ENV_PRECISION, "Float32")
    assert device.default_precision() == "float32"
    monkeypatch.setenv(device.ENV_PRECISION, "fp16")
    with pytest.raises(StageError, match="PIPELINES_PRECISION='fp16'"):
        device.default_precision()


@pytest.mark.parametrize("arch", ["small_cnn", "mobilenet_v2"])
def test_image_networks_under_mixed_precision_keep_the_head_float32(arch):
    """The cervix networks as a GPU's policy builds them, built here on the CPU: float16 convolutions
    (augmentation included, in a training call), a float32 softmax whose rows sum to 1."""
    import keras

    from pipelines.cervix.models import cnn

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = cnn.build_network(arch, 32, cnn.NetOptions(width=8, depth=3, augment="crop_colour"), None)
        convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
        assert convs and all(layer.compute_dtype == "float16" for layer in convs)
        assert model.get_layer("head").compute_dtype == "float32"
        x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        for training in (True, False):
            pred = np.asarray(model(x, training=training))
            assert pred.dtype == np.float32 and np.isfinite(pred).all()
            np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_image_network_fit_takes_the_precision_from_the_environment(monkeypatch, tmp_path):
    from cervix_helpers import tiny_images

    from pipelines.cervix.models import cnn

    x, y = tiny_images(n_per_class=3, size=32)
    idx = np.arange(len(y))
    model = cnn.KerasImageModel("small_cnn", x, y, None, cnn.NetOptions(epochs=1, batch_size=8, tta=1, width=8,
                                                                        depth=3), 32, verbose=0)
    monkeypatch.setenv(device.ENV_PRECISION, "auto")
    model.fit(0, idx[::2], idx[1::2], tmp_path / "auto")
    assert model.device == {"kind": "cpu", "framework": "tensorflow", "precision": "float32"}
    monkeypatch.setenv(device.ENV_PRECISION, "mixed_float16")  # on a CPU: refused in one line, nothing trained
    with pytest.raises(StageError, match="mixed_float16 needs a GPU"):
        model.fit(0, idx[::2], idx[1::2], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists() or not any((tmp_path / "mixed").iterdir())
