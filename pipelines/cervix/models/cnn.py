"""Keras image networks for the cervix types: a small CNN from scratch and keras.applications
backbones (one registry entry each in ``backbones.py``: MobileNet, MobileNetV2 at two widths,
InceptionV3, EfficientNetB0, VGG16, ResNet50) with a new 3-class head.

Model graph: uint8 image -> training-only augmentation layers (``augment.py``) -> the network's
own input preprocessing -> backbone -> global average pooling -> dropout -> softmax(3).

Training, per fold (``KerasImageModel.fit``):

* pretrained weights (``--weights imagenet`` or a local .h5 file): optionally the head starts as a
  logistic regression on the frozen features of the fold's train images (``head_init="probe"``);
  phase "head" trains only the head for at most ``head_epochs`` with the backbone frozen (its own
  early stopping, ``head_patience``); then gradual unfreezing at lr / 10: phases "unfreeze_1" ..
  "unfreeze_<unfreeze_steps>" make more and more of the top ``fine_tune_blocks`` backbone blocks
  trainable (``backbones.block_ids``), with discriminative learning rates (x ``lr_decay`` per block
  below the top one, ``LayerwiseAdam``) and BatchNorm frozen (inference mode) or trained at
  ``bn_momentum`` (``bn``), with ``unfreeze="blocks"``; the default ``unfreeze="layers"`` is one
  phase with the top ``fine_tune_layers`` layers unfrozen, BatchNorm frozen;
* ``label_smoothing`` > 0 trains on smoothed labels; early stopping then watches the plain log loss;
* from scratch (``--weights none``, and the small CNN): one phase, the whole network;
* the learning rate follows a cosine from lr to lr / 100 over the "full" and "fine_tune" phases
  (``--lr-schedule``; the few head-only epochs keep lr);
* early stopping on the fold's valid part (``patience`` epochs without a better val_loss ends the
  phase), and the best epoch's weights restored at the end;
* the phases run in pipelines/common/keras_fit.py's resumable loop: checkpoints in fold_dir (the model
  with its optimizer state, the best weights, ``train_state.json`` with phase, epochs done, early-stopping
  state and history), written at most every ``--checkpoint-every`` seconds (default 60) and when a phase
  ends. A fit interrupted mid-fold resumes from the last checkpointed epoch, with its early-stopping state.

Keras and TensorFlow are imported on first use of this module (``train.py`` imports it lazily).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines import config
from pipelines.cervix.models import backbones
from pipelines.cervix.models.augment import AUGMENT_LEVELS, _augment_class, augmentation_layers, predict_tta
from pipelines.cervix.models.backbones import BACKBONES
from pipelines.common.io import atomic_path
from pipelines.common.keras_fit import FitPhase, ResumableFit, discard
from pipelines.common.log import StageError
from pipelines.common.options import option

log = logging.getLogger(__name__)

N_CLASSES = 3
WEIGHTS_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 3.0
ARCHITECTURES = ("small_cnn",) + tuple(BACKBONES)  # one line per backbone in backbones.BACKBONES
# Keras' default 0.99 leaves the moving statistics near their initial values for the first few
# hundred steps, and a small data set has only ~40 steps per epoch: validation then sees a
# network that is not the one being trained. NetOptions.bn_momentum (small CNN) defaults to 0.9;
# the train stage lowers it on the built-in sample, which has 6 steps per epoch.
BN_MOMENTUM = 0.9
PROBE_CS = (0.0001, 0.0003, 0.001, 0.003, 0.01)  # head_init="probe": C grid of the inner CV
MIN_INPUT_SIZE = {"small_cnn": 16, **{name: b.min_size for name, b in BACKBONES.items()}}


@dataclass
class NetOptions:
    """Options of the image networks (small_cnn and every backbone of backbones.py), each default once."""

    epochs: int = option(15, "maximum epochs per fold (early stopping picks)")
    batch_size: int = option(32, "images per batch", space=("categorical", [16, 32, 64]))
    lr: float = option(1e-3, "Adam learning rate", space=("float", 1e-4, 3e-3, "log"))
    tta: int = option(4, "test-time augmentation views, 1-8 (D4 symmetries)")
    weights: str | None = option(None, "imagenet | none | <Keras .h5 weights file> (default: ImageNet weights if "
                                 "found locally (Keras cache or $PIPELINES_WEIGHTS_DIR), else imagenet = download; "
                                 "small_cnn: none)")
    unfreeze: str = option("layers", "pretrained backbones, after the head phase: layers = one phase with the top "
                           "--fine-tune-layers layers unfrozen, BatchNorm frozen; blocks = gradual unfreezing "
                           "(--fine-tune-blocks, --unfreeze-steps, --unfreeze-epochs, --lr-decay, --bn)",
                           choices=("layers", "blocks"))
    fine_tune_layers: int = option(30, "pretrained backbones, --unfreeze layers: top layers unfrozen")
    head_epochs: int = option(3, "pretrained backbones: most epochs of the first phase, backbone frozen")
    patience: int = option(8, "early stopping patience in epochs")
    head_patience: int | None = option(None, "pretrained backbones: the head phase's own early stopping patience "
                                       "(default: --patience)")
    head_init: str = option("train", "pretrained backbones: probe = start the head as a logistic regression on the "
                            "frozen features of the fold's train images (linear probing), then train",
                            choices=("train", "probe"))
    fine_tune_blocks: int = option(6, "pretrained backbones: top blocks of the backbone trainable at the end of "
                                   "gradual unfreezing (0: all)")
    unfreeze_steps: int = option(3, "pretrained backbones: phases of gradual unfreezing, each unfreezing more top "
                                 "blocks")
    unfreeze_epochs: int = option(2, "pretrained backbones: epochs of each unfreezing phase but the last")
    lr_decay: float = option(0.7, "pretrained backbones: discriminative learning rates, x this per block below the "
                             "top one (1: one rate)")
    bn: str = option("frozen", "pretrained backbones: BatchNorm of the unfrozen blocks: frozen statistics, or "
                     "trained with momentum 0.9", choices=("frozen", "train"))
    label_smoothing: float = option(0.0, "smooth the training labels towards uniform by this much (early stopping "
                                    "then watches the plain log loss)", space=("float", 0.0, 0.2))
    lr_schedule: str = option("cosine", "cosine: decay from --lr to --lr/100 over each training phase",
                              choices=("cosine", "constant"))
    class_weight: bool = option(False, "weight the loss by inverse class frequency")
    augment: str = option("light", "training-time augmentation", choices=AUGMENT_LEVELS)
    dropout: float = option(0.3, "dropout before the classifier", space=("float", 0.0, 0.6))
    alpha: float | None = option(None, "MobileNets' width multiplier (default: the model's, e.g. 0.35 for "
                                 "mobilenet_v2)")
    width: int = option(16, "small_cnn filters of the first block, doubled per block")
    depth: int = option(5, "small_cnn conv blocks after the stem, each but the last followed by a 2x2 max-pool "
                        "(4 was the default before BENCHMARKS.md section cervix-experiments)")
    bn_momentum: float = option(BN_MOMENTUM, "small CNN's BatchNormalization momentum", cli=False)
    seed: int = option(42, "the run's seed (set by the train stage)", cli=False)

    def params(self, arch: str) -> dict:
        out = asdict(self)
        if self.weights is None:
            out["weights"] = "none"
        elif self.weights not in ("imagenet", "none"):
            out["weights"] = str(Path(self.weights).resolve())
        if arch not in BACKBONES or BACKBONES[arch].alpha is None:
            out.pop("alpha")
        elif self.alpha is None:
            out["alpha"] = BACKBONES[arch].alpha
        if arch != "small_cnn":
            out.pop("width")
            out.pop("depth")
            out.pop("bn_momentum")
        if arch == "small_cnn" or self.weights in (None, "none"):
            for key in ("head_epochs", "fine_tune_layers", "head_patience", "head_init", "fine_tune_blocks",
                        "unfreeze_steps", "unfreeze_epochs", "lr_decay", "bn", "unfreeze"):
                out.pop(key)
        elif self.unfreeze == "layers":  # one fine-tuning phase: no blocks
            for key in ("fine_tune_blocks", "unfreeze_steps", "unfreeze_epochs", "lr_decay", "bn"):
                out.pop(key)
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


def imagenet_file_name(arch: str, image_size: int, alpha: float | None = None) -> str:
    """The no-top weights file keras.applications downloads for this architecture and input size
    (``alpha`` None: the registry entry's width)."""
    if arch not in BACKBONES:
        raise ValueError(f"{arch} has no ImageNet weights")
    return BACKBONES[arch].file_name(image_size, alpha)


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


def shared_weights_file(arch: str, alpha: float | None = None) -> Path | None:
    """The 224-px no-top file for this architecture in config.WEIGHTS_DIR (PIPELINES_WEIGHTS_DIR), if that
    folder is set and has one."""
    if arch not in BACKBONES or config.WEIGHTS_DIR is None:
        return None
    path = config.WEIGHTS_DIR / imagenet_file_name(arch, 224, alpha)
    return path if path.is_file() else None


def resolve_weights(arch: str, weights: str, image_size: int, alpha: float | None = None) -> str | None:
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
            return backbones.preprocess(self.application, inputs)

        def get_config(self):
            return {**super().get_config(), "application": self.application}

    _custom_layers["ApplicationPreprocess"] = ApplicationPreprocess
    return ApplicationPreprocess


def small_cnn_body(x, width: int, bn_momentum: float, depth: int):
    """A stride-2 5x5 conv stem (128 px is more than the colour and texture cues need), ``depth``
    conv-BN-ReLU blocks with filters width, 2x, 4x, 8x, 8x, ... and a max-pool after each but the
    last, and global average pooling."""
    from keras import layers

    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    x = layers.ReLU()(x)
    for i, filters in enumerate(width * 2 ** min(i, 3) for i in range(depth)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{i + 1}_bn")(x)
        x = layers.ReLU(name=f"block{i + 1}_relu")(x)
        if i < depth - 1:
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
        x = small_cnn_body(x, opts.width, opts.bn_momentum, opts.depth)
    else:
        backbone = backbones.build_backbone(arch, image_size, weights, opts.alpha)
        backbone._cervix_arch = arch
        x = _preprocess_layer_class()(arch, name="preprocess")(x)
        x = backbone(x)
    x = layers.Dropout(opts.dropout, name="head_dropout")(x)
    outputs = layers.Dense(N_CLASSES, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=arch), backbone


def backbone_block_ids(backbone) -> list[int]:
    """Block index of every backbone layer (backbones.block_ids; the registry entry from the model's name)."""
    return backbones.block_ids(backbone_arch(backbone), [layer.name for layer in backbone.layers])


def backbone_arch(backbone) -> str:
    """The registry name of a built keras.applications model (``backbone_arch`` attribute, set by build)."""
    arch = getattr(backbone, "_cervix_arch", None)
    if arch is None:  # a reloaded model: Keras names it after the application ("mobilenetv2_0.35_224")
        name = backbone.name.lower().replace("_", "")
        found = sorted((a for a, b in BACKBONES.items() if name.startswith(b.application.lower())),
                       key=lambda a: -len(BACKBONES[a].application))
        found = [a for a in found if BACKBONES[a].application == BACKBONES[found[0]].application] if found else []
        arch = next((a for a in found if BACKBONES[a].alpha is None
                     or f"{BACKBONES[a].alpha:.2f}".replace("_", "") in name), found[0] if found else None)
    if arch is None:
        raise ValueError(f"backbone {backbone.name!r} is in no registry entry")
    return arch


def set_phase(backbone, phase: str, fine_tune_layers: int, blocks: int = 0, bn: str = "frozen",
              bn_momentum: float = BN_MOMENTUM) -> None:
    """Freeze the backbone (head phase), unfreeze its top ``blocks`` blocks (gradual unfreezing: the
    "unfreeze_k" phases; ``blocks`` <= 0: every block), or its top ``fine_tune_layers`` layers (the
    old "fine_tune" phase), BatchNorm frozen in both unless ``bn="train"`` (then the unfrozen
    blocks' BatchNorm layers train, their statistics updated at ``bn_momentum``), or train every
    layer (full: from scratch, where no layer has weights worth keeping)."""
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
    if phase.startswith("unfreeze"):
        ids = backbone_block_ids(backbone)
        first = max(ids) - blocks + 1 if blocks > 0 else 0
        for layer, block in zip(backbone.layers, ids):
            train = block >= first
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = train and bn == "train"
                if layer.trainable:
                    layer.momentum = bn_momentum
            else:
                layer.trainable = train
        return
    n = len(backbone.layers)
    first_trainable = n - fine_tune_layers if fine_tune_layers > 0 else n
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= first_trainable and not isinstance(layer, keras.layers.BatchNormalization)


def load_fold_model(path: Path):
    """A saved fold model (``model.keras`` or a checkpoint ``epoch_<e>.keras``), custom layers registered."""
    import keras

    _preprocess_layer_class()
    _augment_class()
    _optimizer_class()
    _smoothed_loss_class()
    return keras.models.load_model(path)


def lr_multipliers(backbone, blocks: int, decay: float) -> dict[str, float]:
    """Discriminative learning rates: {backbone layer name: decay ** (blocks below the top block)} for
    the layers of the top ``blocks`` blocks (<= 0: all); layers not named (the head) keep the phase's lr."""
    if backbone is None or decay == 1.0:
        return {}
    ids = backbone_block_ids(backbone)
    top = max(ids)
    first = top - blocks + 1 if blocks > 0 else 0
    return {layer.name: float(decay ** (top - b)) for layer, b in zip(backbone.layers, ids)
            if b >= first and layer.weights}


def _optimizer_class():
    """Adam whose learning rate is scaled per layer (``multipliers``: layer name -> factor)."""
    if "LayerwiseAdam" in _custom_layers:
        return _custom_layers["LayerwiseAdam"]
    import keras

    @keras.saving.register_keras_serializable(package="cervix")
    class LayerwiseAdam(keras.optimizers.Adam):
        def __init__(self, multipliers=None, **kwargs):
            super().__init__(**kwargs)
            self.multipliers = {str(k): float(v) for k, v in (multipliers or {}).items()}
            self.scales: list[float] = []

        def scale_of(self, variable) -> float:
            parts = variable.path.split("/")[:-1]
            return next((self.multipliers[p] for p in reversed(parts) if p in self.multipliers), 1.0)

        def build(self, variables):
            super().build(variables)
            self.scales = [self.scale_of(v) for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            scale = self.scales[self._get_variable_index(variable)]
            return super().update_step(gradient, variable, learning_rate * scale if scale != 1.0 else learning_rate)

        def get_config(self):
            return {**super().get_config(), "multipliers": self.multipliers}

    _custom_layers["LayerwiseAdam"] = LayerwiseAdam
    return LayerwiseAdam


def _smoothed_loss_class():
    """Sparse categorical cross-entropy against labels smoothed towards the uniform distribution."""
    if "SmoothedSparseCrossentropy" in _custom_layers:
        return _custom_layers["SmoothedSparseCrossentropy"]
    import keras

    @keras.saving.register_keras_serializable(package="cervix")
    class SmoothedSparseCrossentropy(keras.losses.Loss):
        def __init__(self, smoothing=0.1, name="smoothed_crossentropy", **kwargs):
            super().__init__(name=name, **kwargs)
            self.smoothing = float(smoothing)

        def call(self, y_true, y_pred):
            ops = keras.ops
            target = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), N_CLASSES)
            target = target * (1.0 - self.smoothing) + self.smoothing / N_CLASSES
            return keras.losses.categorical_crossentropy(target, y_pred)

        def get_config(self):
            return {**super().get_config(), "smoothing": self.smoothing}

    _custom_layers["SmoothedSparseCrossentropy"] = SmoothedSparseCrossentropy
    return SmoothedSparseCrossentropy


def compile_model(model, lr: float, label_smoothing: float = 0.0, multipliers: dict | None = None) -> None:
    """Adam (per-layer learning rates when ``multipliers``), cross-entropy (label-smoothed when
    ``label_smoothing`` > 0, with the plain log loss as the "log_loss" metric that early stopping
    then watches)."""
    import keras

    optimizer = _optimizer_class()(multipliers=multipliers, learning_rate=lr) if multipliers \
        else keras.optimizers.Adam(lr)
    if label_smoothing > 0:
        model.compile(optimizer=optimizer, loss=_smoothed_loss_class()(label_smoothing),
                      metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="log_loss")])
        return
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


@dataclass
class Phase:
    name: str  # "full", "head", "fine_tune" (top layers) or "unfreeze_<k>" (top blocks)
    end_epoch: int  # exclusive
    lr: float
    start_epoch: int = 0
    blocks: int = 0  # unfreeze_<k>: top backbone blocks trainable (<= 0: all)
    patience: int | None = None  # early stopping of this phase (None: NetOptions.patience)
    span: tuple | None = None  # (first, end) epochs of the cosine, when it spans several phases


def phase_lr(phase: Phase, epoch: int, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based, global): constant, or a cosine from lr to lr / 100 over
    the phase (the short head-only phase stays constant). A function of the epoch alone, so a
    resumed fold continues on the same curve."""
    if schedule == "constant" or phase.name == "head":
        return phase.lr
    start, end = phase.span or (phase.start_epoch, phase.end_epoch)
    span = max(1, end - start - 1)
    progress = min(max((epoch - start) / span, 0.0), 1.0)
    low = phase.lr / 100
    return float(low + 0.5 * (phase.lr - low) * (1 + math.cos(math.pi * progress)))


def training_phases(arch: str, opts: NetOptions, pretrained: bool) -> list[Phase]:
    """From scratch: one "full" phase. Pretrained: the head alone (backbone frozen, early stopping
    of its own after ``head_patience`` epochs), then fine-tuning at lr / 10: gradual unfreezing,
    ``unfreeze_steps`` phases of ``unfreeze_epochs`` epochs (the last to ``epochs``), each with the
    top ceil(k / steps x ``fine_tune_blocks``) blocks trainable and one cosine over all of them
    (``unfreeze="blocks"``); or (``unfreeze="layers"``) one phase with the top ``fine_tune_layers``
    layers."""
    if arch == "small_cnn" or not pretrained:
        return [Phase("full", opts.epochs, opts.lr)]
    head = min(opts.head_epochs, opts.epochs)
    phases = [Phase("head", head, opts.lr, patience=opts.head_patience)] if head > 0 else []
    if opts.epochs <= head:
        return phases
    if opts.unfreeze == "layers":
        return phases + [Phase("fine_tune", opts.epochs, opts.lr / 10, start_epoch=head)]
    if opts.unfreeze != "blocks":
        raise ValueError(f"unknown unfreeze {opts.unfreeze!r}; use layers or blocks")
    steps, start = max(1, opts.unfreeze_steps), head
    for k in range(1, steps + 1):
        end = opts.epochs if k == steps else min(opts.epochs, start + opts.unfreeze_epochs)
        if end <= start:
            continue
        blocks = math.ceil(opts.fine_tune_blocks * k / steps) if opts.fine_tune_blocks > 0 else (
            0 if k == steps else -k)  # -k: resolved against the backbone's block count in fit
        phases.append(Phase(f"unfreeze_{k}", end, opts.lr / 10, start_epoch=start, blocks=blocks,
                            span=(head, opts.epochs)))
        start = end
    return phases


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    return {k: float(len(y) / (N_CLASSES * c)) if c else 0.0 for k, c in enumerate(counts)}


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

        # The device and precision ($PIPELINES_DEVICE, $PIPELINES_PRECISION, both auto by default: mixed_float16
        # on a GPU with tensor cores, float32 on the CPU) go into run.json; the softmax head computes in float32.
        choice = device_mod.choose_tensorflow(device_mod.default_device(), device_mod.default_precision())
        device_mod.apply_tensorflow(choice)
        self.device = choice.record()
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.opts.seed + fold)
        x_tr, y_tr = np.asarray(self.x_train[train_idx]), self.y[train_idx]
        x_va, y_va = np.asarray(self.x_train[valid_idx]), self.y[valid_idx]
        class_weight = balanced_class_weight(y_tr) if self.opts.class_weight else None
        phases = training_phases(self.name, self.opts, self.pretrained)

        model, backbone = self.build()
        loop = ResumableFit(fold_dir, checkpoint_every_s=self.checkpoint_every_s, label=f"{self.name} fold {fold + 1}")
        resumed = loop.resume_model(load_fold_model)
        if resumed is not None:
            model = resumed
            backbone = model.get_layer(backbone.name) if backbone is not None else None
            if backbone is not None:
                backbone._cervix_arch = self.name
        if backbone is not None:  # gradual unfreezing of every block: the block count is the backbone's
            total = max(backbone_block_ids(backbone)) + 1
            steps = max(1, self.opts.unfreeze_steps)
            for ph in phases:
                if ph.blocks < 0:
                    ph.blocks = math.ceil(total * -ph.blocks / steps)
        if self.pretrained and self.opts.head_init == "probe" and resumed is None and backbone is not None:
            self.probe_head(model, backbone, x_tr, y_tr, fold)

        def prepare(phase: Phase):
            def set_up(net):  # trainable layers, then a new optimizer at the phase's rate
                set_phase(backbone, phase.name, self.opts.fine_tune_layers, phase.blocks, self.opts.bn,
                          self.opts.bn_momentum)
                multipliers = lr_multipliers(backbone, phase.blocks, self.opts.lr_decay) \
                    if phase.name.startswith("unfreeze") else None
                compile_model(net, phase.lr, self.opts.label_smoothing, multipliers)
            return set_up

        fit_phases = [FitPhase(phase.end_epoch, phase.patience if phase.patience is not None else self.opts.patience,
                               name=phase.name, prepare=prepare(phase),
                               learning_rate=lambda epoch, phase=phase: phase_lr(phase, epoch, self.opts.lr_schedule))
                      for phase in phases]
        # with label smoothing the loss is not the log loss: early stopping watches the plain log loss metric
        model = loop.run(model, fit_phases, lambda: (x_tr, y_tr, (x_va, y_va)), batch_size=self.opts.batch_size,
                         seed=self.opts.seed + fold, verbose=self.verbose, class_weight=class_weight)
        self.history = loop.history
        return model

    def probe_head(self, model, backbone, x_tr: np.ndarray, y_tr: np.ndarray, fold: int) -> None:
        """head_init="probe" (linear probing before fine-tuning): the head's weights become a
        logistic regression (C by a 3-fold inner CV) on the frozen backbone's pooled features of the
        fold's train images, standardisation folded into the weights."""
        import warnings

        import keras
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        inputs = model.input
        features = keras.Model(inputs, backbone(model.get_layer("preprocess")(inputs), training=False))
        f = features.predict(x_tr, batch_size=max(self.opts.batch_size * 2, 64), verbose=0).astype(np.float64)
        mu, sd = f.mean(axis=0), f.std(axis=0) + 1e-6
        n_inner = int(min(3, np.bincount(y_tr, minlength=N_CLASSES).min()))
        if n_inner >= 2:
            clf = LogisticRegressionCV(Cs=list(PROBE_CS), scoring="neg_log_loss", max_iter=2000,
                                       cv=StratifiedKFold(n_inner, shuffle=True, random_state=self.opts.seed + fold))
        else:
            clf = LogisticRegression(C=PROBE_CS[len(PROBE_CS) // 2], max_iter=2000)
        from pipelines.cervix.models.cnn_features import single_threaded_blas

        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")  # sklearn's FutureWarnings and ConvergenceWarnings
            clf.fit((f - mu) / sd, y_tr)
        coef = np.zeros((N_CLASSES, f.shape[1]))
        bias = np.zeros(N_CLASSES)
        coef[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_]) / 2
        bias[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.r_[-clf.intercept_, clf.intercept_] / 2
        kernel = (coef / sd).T
        model.get_layer("head").set_weights([kernel.astype(np.float32), (bias - (coef / sd) @ mu).astype(np.float32)])
        c = float(np.atleast_1d(clf.C_)[0]) if hasattr(clf, "C_") else float(clf.C)
        log.info("%s fold %d: head initialised by a linear probe (C %.3g)", self.name, fold + 1, c)

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
        with atomic_path(Path(fold_dir) / "model.keras", suffix=".keras") as tmp:
            model.save(tmp)
        discard(fold_dir)


# ---------------------------------------------------------------------------------------------
# the model specs (pipelines.common.models): small_cnn and one per backbone of backbones.py


def local_weights(arch: str, image_size: int, alpha: float | None = None) -> str | None:
    """ImageNet weights for ``arch`` at ``image_size`` that need no download: "imagenet" when Keras has them
    cached, else the path of a copy in config.WEIGHTS_DIR ($PIPELINES_WEIGHTS_DIR), else None."""
    name = imagenet_file_name(arch, image_size, alpha)
    if any((d / name).is_file() for d in keras_cache_dirs()):
        return "imagenet"
    shared = shared_weights_file(arch, alpha)
    return str(shared) if shared else None


def check_tta(tta: int) -> None:
    if not 1 <= tta <= 8:
        raise StageError(f"--tta {tta}: use 1 to 8 views")


def build(data, options: NetOptions, ctx, arch: str) -> "KerasImageModel":
    """The CV model of a network spec: the weights resolved at the model's input size (small_cnn: none)."""
    import dataclasses

    check_tta(options.tta)
    tensors = data.features
    weights = options.weights
    if arch == "small_cnn":
        weights = "none"
    elif weights is None:
        weights = local_weights(arch, tensors.image_size, options.alpha) or "imagenet"
    opts = dataclasses.replace(options, weights=weights, seed=ctx.seed)
    x_test = tensors.x_test if len(tensors.test_names) else None
    return KerasImageModel(arch, tensors.x_train, tensors.y, x_test, opts, tensors.image_size, verbose=ctx.verbose,
                           checkpoint_every_s=ctx.checkpoint_every_s)


def _specs():
    import functools

    from pipelines.common.models import ModelSpec

    group = "cervix networks (small_cnn and the keras.applications backbones: " + ", ".join(BACKBONES) + ")"
    specs = [ModelSpec(name="small_cnn", options=NetOptions, build=functools.partial(build, arch="small_cnn"),
                       defaults={"epochs": 25}, group=group, help="compact CNN from scratch")]
    own = {"vgg16": {"epochs": 20, "lr": 1e-4}, "resnet50": {"epochs": 20}}
    for name in BACKBONES:
        specs.append(ModelSpec(name=name, options=NetOptions, build=functools.partial(build, arch=name),
                               defaults=own.get(name, {}), group=group,
                               help=f"keras.applications {name} with a new 3-class head"))
    return specs


SPECS = _specs()
