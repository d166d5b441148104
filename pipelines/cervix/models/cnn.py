"""Keras image networks for the cervix types: a small CNN from scratch and keras.applications
backbones (VGG16, ResNet50, MobileNetV2) with a new 3-class head.

Model graph: uint8 image -> training-only augmentation layers (``augment.py``) -> the network's
own input preprocessing -> backbone -> global average pooling -> dropout -> softmax(3).

Training, per fold (``KerasImageModel.fit``):

* pretrained weights (``--weights imagenet`` or a local .h5 file): phase "head" trains only the
  new head for ``head_epochs`` with the backbone frozen, then phase "fine_tune" unfreezes the top
  ``fine_tune_layers`` backbone layers (BatchNormalization layers stay frozen, in inference mode)
  and trains at lr / 10 for the remaining epochs;
* from scratch (``--weights none``, and the small CNN): one phase, the whole network;
* the learning rate follows a cosine from lr to lr / 100 over the "full" and "fine_tune" phases
  (``--lr-schedule``; the few head-only epochs keep lr);
* early stopping on the fold's valid part (``patience`` epochs without a better val_loss ends the
  phase), and the best epoch's weights restored at the end;
* checkpoints in fold_dir: ``checkpoint.keras`` (model + optimizer state), ``best.weights.h5`` and
  ``train_state.json`` (phase, epochs done, best val_loss, history), written at most every
  ``--checkpoint-every`` seconds (default 60; pipelines/common/checkpoint.py) and when a phase ends.
  A fit interrupted mid-fold resumes from the last checkpointed epoch, with its early-stopping state.

Keras and TensorFlow are imported on first use of this module (``train.py`` imports it lazily).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines import config
from pipelines.cervix.models.augment import _augment_class, augmentation_layers, predict_tta
from pipelines.common.checkpoint import (CheckpointClock, epoch_batches, restore_rng_state, rng_state,
                                         save_weights_as)
from pipelines.common.io import atomic_path, read_json, write_json
from pipelines.common.log import StageError

log = logging.getLogger(__name__)

N_CLASSES = 3
WEIGHTS_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 3.0
# architecture -> (keras.applications class, keras.applications module with preprocess_input)
APPLICATIONS = {
    "vgg16": ("VGG16", "vgg16"),
    "resnet50": ("ResNet50", "resnet50"),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
}
ARCHITECTURES = ("small_cnn",) + tuple(APPLICATIONS)
# Keras' default 0.99 leaves the moving statistics near their initial values for the first few
# hundred steps, and a small data set has only ~40 steps per epoch: validation then sees a
# network that is not the one being trained. NetOptions.bn_momentum (small CNN) defaults to 0.9;
# the train stage lowers it on the built-in sample, which has 6 steps per epoch.
BN_MOMENTUM = 0.9
MIN_INPUT_SIZE = {"vgg16": 32, "resnet50": 32, "mobilenet_v2": 32, "small_cnn": 16}


@dataclass
class NetOptions:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    tta: int = 4
    weights: str = "none"  # "imagenet", "none" or a path to a Keras .h5 weights file
    fine_tune_layers: int = 30
    head_epochs: int = 3
    patience: int = 8
    lr_schedule: str = "cosine"  # "cosine": from lr down to lr / 100 over each phase; "constant"
    class_weight: bool = False
    augment: str = "light"
    dropout: float = 0.3
    alpha: float = 0.35  # MobileNetV2 width multiplier
    width: int = 16  # small CNN: filters of the first block (doubled per block)
    bn_momentum: float = BN_MOMENTUM  # small CNN's BatchNormalization layers
    seed: int = 42

    def params(self, arch: str) -> dict:
        out = asdict(self)
        if self.weights not in ("imagenet", "none"):
            out["weights"] = str(Path(self.weights).resolve())
        if arch != "mobilenet_v2":
            out.pop("alpha")
        if arch != "small_cnn":
            out.pop("width")
            out.pop("bn_momentum")
        if arch == "small_cnn" or self.weights == "none":
            out.pop("head_epochs")
            out.pop("fine_tune_layers")
        return {"model": arch, **out}


# ---------------------------------------------------------------------------------------------
# weights resolution (never hang offline)


def keras_cache_dirs() -> list[Path]:
    """Folders where keras.utils.get_file keeps downloaded weights (KERAS_HOME, then the defaults)."""
    homes = [os.environ.get("KERAS_HOME"), str(config.KERAS_HOME), os.path.join(os.path.expanduser("~"), ".keras"),
             os.path.join("/tmp", ".keras")]
    seen, out = set(), []
    for home in homes:
        if home and home not in seen:
            seen.add(home)
            out.append(Path(home) / "models")
    return out


def imagenet_file_name(arch: str, image_size: int, alpha: float = 0.35) -> str:
    """The no-top weights file keras.applications downloads for this architecture and input size."""
    if arch == "vgg16":
        return "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if arch == "resnet50":
        return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if arch == "mobilenet_v2":
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    raise ValueError(f"{arch} has no ImageNet weights")


def probe_download_host(host: str = WEIGHTS_HOST[0], port: int = WEIGHTS_HOST[1],
                        timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the weights host opens within ``timeout`` seconds.

    Runs in a daemon thread so that a stuck DNS lookup cannot hold the caller past the timeout.
    """
    result = {"ok": False}

    def attempt():
        with contextlib.suppress(OSError):
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result["ok"]


# Tests replace this to simulate being offline (or online) without touching the network.
NETWORK_PROBE: Callable[[], bool] = probe_download_host


def shared_weights_file(arch: str, alpha: float) -> Path | None:
    """The 224-px no-top file for this architecture in config.SHARED_WEIGHTS, if there is one."""
    if arch != "mobilenet_v2":
        return None
    path = config.SHARED_WEIGHTS / imagenet_file_name(arch, 224, alpha)
    return path if path.is_file() else None


def resolve_weights(arch: str, weights: str, image_size: int, alpha: float = 0.35) -> str | None:
    """What to pass as keras.applications' ``weights=``: "imagenet", a file path, or None.

    ``imagenet`` is only handed to Keras when the file is already cached or the download host
    answers within seconds; otherwise a StageError names the ways out, instead of a hang.
    """
    if arch == "small_cnn" or weights == "none":
        return None
    if weights == "imagenet":
        name = imagenet_file_name(arch, image_size, alpha)
        cached = [d / name for d in keras_cache_dirs() if (d / name).is_file()]
        if cached:
            log.info("%s: ImageNet weights from the Keras cache %s", arch, cached[0])
            return "imagenet"
        if NETWORK_PROBE():
            log.info("%s: downloading ImageNet weights %s into %s", arch, name, keras_cache_dirs()[0])
            return "imagenet"
        shared = shared_weights_file(arch, alpha)
        hint = f" (one is at {shared})" if shared else ""
        raise StageError(
            f"{arch}: --weights imagenet needs {name}, which is not in the Keras cache "
            f"({keras_cache_dirs()[0]}), and {WEIGHTS_HOST[0]} cannot be reached: pass a local Keras weights "
            f"file with --weights /path/to/{imagenet_file_name(arch, 224, alpha)}{hint}, or train from "
            f"scratch with --weights none")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise StageError(f"{arch}: weights file {path} does not exist: pass an existing Keras .h5 weights file, "
                         f"--weights imagenet, or --weights none")
    return str(path.resolve())


# ---------------------------------------------------------------------------------------------
# model building

_custom_layers: dict = {}


def _preprocess_layer_class():
    """A serialisable layer that applies a keras.applications module's preprocess_input."""
    if "ApplicationPreprocess" in _custom_layers:
        return _custom_layers["ApplicationPreprocess"]
    import keras

    @keras.saving.register_keras_serializable(package="cervix")
    class ApplicationPreprocess(keras.layers.Layer):
        def __init__(self, application: str, **kwargs):
            super().__init__(**kwargs)
            self.application = application

        def call(self, inputs):
            module = getattr(keras.applications, APPLICATIONS[self.application][1])
            return module.preprocess_input(inputs)

        def get_config(self):
            return {**super().get_config(), "application": self.application}

    _custom_layers["ApplicationPreprocess"] = ApplicationPreprocess
    return ApplicationPreprocess


def small_cnn_body(x, width: int, bn_momentum: float = BN_MOMENTUM):
    """Four conv-BN-ReLU-pool blocks (the first with a stride-2 5x5 conv, as 128 px is more than
    the colour and texture cues need) and global average pooling."""
    from keras import layers

    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    x = layers.ReLU()(x)
    for i, filters in enumerate((width, width * 2, width * 4, width * 8)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{i + 1}_bn")(x)
        x = layers.ReLU(name=f"block{i + 1}_relu")(x)
        if i < 3:
            x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    return layers.GlobalAveragePooling2D()(x)


def build_network(arch: str, image_size: int, opts: NetOptions, weights: str | None):
    """(model, backbone or None). ``weights`` as returned by resolve_weights."""
    import keras
    from keras import layers

    if image_size < MIN_INPUT_SIZE[arch]:
        raise StageError(f"{arch} needs --image-size >= {MIN_INPUT_SIZE[arch]}, got {image_size}")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for layer in augmentation_layers(opts.augment, seed=opts.seed):
        x = layer(x)
    backbone = None
    if arch == "small_cnn":
        x = small_cnn_body(x, opts.width, opts.bn_momentum)
    else:
        cls_name, _ = APPLICATIONS[arch]
        kwargs = {"alpha": opts.alpha} if arch == "mobilenet_v2" else {}
        backbone = getattr(keras.applications, cls_name)(include_top=False, weights=weights,
                                                         input_shape=(image_size, image_size, 3), pooling="avg",
                                                         **kwargs)
        x = _preprocess_layer_class()(arch, name="preprocess")(x)
        x = backbone(x)
    x = layers.Dropout(opts.dropout, name="head_dropout")(x)
    outputs = layers.Dense(N_CLASSES, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=arch), backbone


def set_phase(backbone, phase: str, fine_tune_layers: int) -> None:
    """Freeze the backbone (head phase), unfreeze its top layers, BatchNorm excepted (fine-tune), or
    train every layer (full: from scratch, where no layer has weights worth keeping)."""
    import keras

    if backbone is None:
        return
    if phase == "head":
        backbone.trainable = False
        return
    backbone.trainable = True
    if phase == "full":
        for layer in backbone.layers:
            layer.trainable = True
        return
    n = len(backbone.layers)
    first_trainable = n - fine_tune_layers if fine_tune_layers > 0 else n
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= first_trainable and not isinstance(layer, keras.layers.BatchNormalization)


def load_fold_model(path: Path):
    """A saved fold model (``model.keras`` or ``checkpoint.keras``), custom layers registered."""
    import keras

    _preprocess_layer_class()
    _augment_class()
    return keras.models.load_model(path)


def compile_model(model, lr: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


@dataclass
class Phase:
    name: str  # "full", "head" or "fine_tune"
    end_epoch: int  # exclusive
    lr: float
    start_epoch: int = 0


def phase_lr(phase: Phase, epoch: int, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based, global): constant, or a cosine from lr to lr / 100 over
    the phase (the short head-only phase stays constant). A function of the epoch alone, so a
    resumed fold continues on the same curve."""
    if schedule == "constant" or phase.name == "head":
        return phase.lr
    span = max(1, phase.end_epoch - phase.start_epoch - 1)
    progress = min(max((epoch - phase.start_epoch) / span, 0.0), 1.0)
    low = phase.lr / 100
    return float(low + 0.5 * (phase.lr - low) * (1 + math.cos(math.pi * progress)))


def training_phases(arch: str, opts: NetOptions, pretrained: bool) -> list[Phase]:
    if arch == "small_cnn" or not pretrained:
        return [Phase("full", opts.epochs, opts.lr)]
    head = min(opts.head_epochs, opts.epochs)
    phases = [Phase("head", head, opts.lr)]
    if opts.epochs > head:
        phases.append(Phase("fine_tune", opts.epochs, opts.lr / 10, start_epoch=head))
    return phases


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    return {k: float(len(y) / (N_CLASSES * c)) if c else 0.0 for k, c in enumerate(counts)}


# ---------------------------------------------------------------------------------------------
# checkpoint by the clock, with early stopping (both survive an interruption)


@dataclass
class TrainState:
    phase: int = 0
    epochs_done: int = 0
    phase_finished: bool = False  # the phase was ended early (patience); otherwise epochs_done tells
    best_val_loss: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    history: dict = field(default_factory=dict)
    rng: list = field(default_factory=list)  # the layers' random generators at the checkpoint (checkpoint.py)

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        data = read_json(path)
        data["best_val_loss"] = math.inf if data.get("best_val_loss") is None else data["best_val_loss"]
        return cls(**data)

    def save(self, path: Path) -> None:
        data = asdict(self)
        data["best_val_loss"] = None if math.isinf(self.best_val_loss) else self.best_val_loss
        write_json(path, data)


def fold_files(fold_dir: Path) -> dict[str, Path]:
    fold_dir = Path(fold_dir)
    return {"checkpoint": fold_dir / "checkpoint.keras", "best": fold_dir / "best.weights.h5",
            "state": fold_dir / "train_state.json"}


def make_checkpoint_callback(state: TrainState, files: dict[str, Path], patience: int, clock: CheckpointClock):
    import keras

    class FoldCheckpoint(keras.callbacks.Callback):
        """Track early stopping every epoch (the best weights in memory) and write the checkpoint,
        best weights and state when ``clock`` says so and when the phase ends; stop the phase after
        ``patience`` epochs without a better val_loss."""

        def __init__(self):
            super().__init__()
            self.best_weights = None  # the best epoch's weights not yet on disk

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            for key, value in logs.items():
                state.history.setdefault(key, []).append(float(value))
            val_loss = float(logs.get("val_loss", logs.get("loss", math.inf)))
            state.epochs_done = epoch + 1
            if val_loss < state.best_val_loss:
                state.best_val_loss, state.best_epoch, state.wait = val_loss, epoch, 0
                self.best_weights = self.model.get_weights()
            else:
                state.wait += 1
                if state.wait >= patience:
                    self.model.stop_training = True
                    state.phase_finished = True
                    log.info("early stop: no better val_loss for %d epochs (best %.4f at epoch %d)", patience,
                             state.best_val_loss, state.best_epoch + 1)
            if clock.epoch_finished(epoch):
                self.write()

        def on_train_end(self, logs=None):
            if clock.pending is not None:
                self.write()

        def write(self):
            """Best weights, then the checkpoint, then the state (each file replaced atomically: an
            interruption leaves whole files, the state of the previous write at worst)."""
            if self.best_weights is not None:
                save_weights_as(self.model, self.best_weights, files["best"])
                self.best_weights = None
            with atomic_path(files["checkpoint"], suffix=".keras") as tmp:
                self.model.save(tmp)
            state.rng = rng_state(self.model)
            state.save(files["state"])
            clock.written()

    return FoldCheckpoint()


# ---------------------------------------------------------------------------------------------
# the CV model


class KerasImageModel:
    """CV model (see pipelines.common.cv.CVModel) for one architecture over the cervix tensors."""

    def __init__(self, arch: str, x_train: np.ndarray, y: np.ndarray, x_test: np.ndarray | None, opts: NetOptions,
                 image_size: int, verbose: int = 2, checkpoint_every_s: float | None = None):
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}")
        self.name = arch
        self.x_train, self.y, self.x_test = x_train, np.asarray(y, dtype=np.int64), x_test
        self.opts, self.image_size, self.verbose = opts, image_size, verbose
        # how often a fit writes its checkpoint: not a parameter of the model (results do not depend on it)
        self.checkpoint_every_s = checkpoint_every_s
        self.weights = resolve_weights(arch, opts.weights, image_size, opts.alpha)
        self.params = {**opts.params(arch), "image_size": image_size}
        self.history: dict = {}

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    def build(self):
        return build_network(self.name, self.image_size, self.opts, self.weights)

    def fit(self, fold: int, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path):
        import keras

        from pipelines.common import device as device_mod

        # The device (PIPELINES_DEVICE, default auto) goes into run.json; float32 on every device: mixed
        # precision is not yet checked on a GPU with the augmentation layers (the head is float32 already).
        choice = device_mod.choose_tensorflow(device_mod.default_device(), "float32")
        device_mod.apply_tensorflow(choice)
        self.device = choice.record()
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.opts.seed + fold)
        files = fold_files(fold_dir)
        x_tr, y_tr = np.asarray(self.x_train[train_idx]), self.y[train_idx]
        x_va, y_va = np.asarray(self.x_train[valid_idx]), self.y[valid_idx]
        class_weight = balanced_class_weight(y_tr) if self.opts.class_weight else None
        phases = training_phases(self.name, self.opts, self.pretrained)

        model, backbone = self.build()
        state = TrainState()
        clock = CheckpointClock(self.checkpoint_every_s)
        resumed_model = files["state"].exists() and files["checkpoint"].exists()
        if resumed_model:
            state = TrainState.load(files["state"])
            log.info("%s fold %d: resuming from the checkpoint after epoch %d (phase %s)", self.name, fold + 1,
                     state.epochs_done, phases[min(state.phase, len(phases) - 1)].name)
            model = load_fold_model(files["checkpoint"])
            restore_rng_state(model, state.rng)
            backbone = model.get_layer(backbone.name) if backbone is not None else None

        for p in range(state.phase, len(phases)):
            phase = phases[p]
            if p > state.phase:  # entering a new phase
                state.phase, state.phase_finished, state.wait = p, False, 0
                if files["best"].exists():  # start from the best epoch so far
                    model.load_weights(files["best"])
                resumed_model = False
            if state.phase_finished or state.epochs_done >= phase.end_epoch:
                continue
            if not resumed_model:  # a loaded checkpoint keeps its trainable flags and optimizer state
                set_phase(backbone, phase.name, self.opts.fine_tune_layers)
                compile_model(model, phase.lr)
            resumed_model = False
            log.info("%s fold %d: phase %s, epochs %d-%d, lr %.2g", self.name, fold + 1, phase.name,
                     state.epochs_done + 1, phase.end_epoch, phase.lr)
            schedule = keras.callbacks.LearningRateScheduler(
                lambda epoch, _lr, phase=phase: phase_lr(phase, epoch, self.opts.lr_schedule))
            # each epoch's order from (seed, epoch) alone: a resumed fit sees the order an uninterrupted one saw
            batches, steps = epoch_batches(x_tr, y_tr, self.opts.batch_size, self.opts.seed + fold,
                                           state.epochs_done, phase.end_epoch)
            model.fit(batches, steps_per_epoch=steps, validation_data=(x_va, y_va),
                      validation_batch_size=self.opts.batch_size,
                      epochs=phase.end_epoch, initial_epoch=state.epochs_done, class_weight=class_weight,
                      callbacks=[schedule, make_checkpoint_callback(state, files, self.opts.patience, clock)],
                      verbose=self.verbose, shuffle=False)
        if files["best"].exists():
            model.load_weights(files["best"])
            log.info("%s fold %d: best val_loss %.4f at epoch %d", self.name, fold + 1, state.best_val_loss,
                     state.best_epoch + 1)
        self.history = state.history
        return model

    def _predict(self, model, x: np.ndarray) -> np.ndarray:
        batch = max(self.opts.batch_size * 2, 64)
        pred = predict_tta(lambda view: model.predict(view, batch_size=batch, verbose=0), np.asarray(x),
                           self.opts.tta)
        return pred / pred.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within ~1e-7

    def predict_valid(self, model, valid_idx: np.ndarray) -> np.ndarray:
        return self._predict(model, self.x_train[valid_idx])

    def predict_test(self, model) -> np.ndarray | None:
        if self.x_test is None or len(self.x_test) == 0:
            return None
        return self._predict(model, self.x_test)

    def save(self, model, fold_dir: Path) -> None:
        """Keep the final (best-epoch) model; drop the checkpoint files."""
        files = fold_files(fold_dir)
        with atomic_path(Path(fold_dir) / "model.keras", suffix=".keras") as tmp:
            model.save(tmp)
        for key in ("checkpoint", "best"):
            with contextlib.suppress(FileNotFoundError):
                files[key].unlink()
