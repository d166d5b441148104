"""The keras.applications backbones the cervix networks and ``cnn_features`` can use: one registry
entry each (one line), and the block structure that gradual unfreezing walks.

An entry names the keras.applications class and the module whose ``preprocess_input`` it needs,
its width multiplier (MobileNets), its native input size (the ImageNet training resolution: the
default input size of the network), the smallest input it builds at, the no-top ImageNet weights
file Keras downloads for it, and a regular expression that finds its blocks in the layer names.

Blocks: ``block_ids`` walks the backbone's layers in order; a layer whose name matches the entry's
``block`` pattern starts a new block (``ends=True``: ends the current one, as InceptionV3's
``mixedN`` concatenations do) unless it belongs to the block already open (same captured key);
other layers (pads, activations, BatchNorm named after their conv) stay in the open block, and the
layers before the first match form the stem (block 0). Gradual unfreezing then unfreezes the top
blocks of this list, and discriminative learning rates scale by the distance from the top block.

Keras and TensorFlow are imported only when a backbone is built.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backbone:
    name: str            # the pipeline's model name (``--model``)
    application: str     # keras.applications class
    module: str          # keras.applications module with the matching preprocess_input
    native_size: int     # ImageNet training resolution: the default input size
    min_size: int        # smallest input keras.applications accepts for it
    weights_file: str    # no-top ImageNet file; {alpha} / {rows} filled for the MobileNets
    block: str           # regex on layer names: group 1 is the block's key
    alpha: float | None = None  # width multiplier (MobileNets); None: the application takes none
    ends: bool = False   # the block pattern ends a block instead of starting one
    sizes: tuple = field(default=(224,))  # input sizes with their own ImageNet file (MobileNets)

    def file_name(self, image_size: int, alpha: float | None = None) -> str:
        alpha = self.alpha if alpha is None else alpha
        rows = image_size if image_size in self.sizes else 224
        if self.application == "MobileNet":  # Keras spells 0.25 as "2_5", 1.0 as "1_0"
            return self.weights_file.format(alpha=_mobilenet_alpha_text(alpha), rows=rows)
        return self.weights_file.format(alpha=float(alpha) if alpha is not None else "", rows=rows)

    def kwargs(self, alpha: float | None = None) -> dict:
        return {} if self.alpha is None else {"alpha": self.alpha if alpha is None else alpha}


def _mobilenet_alpha_text(alpha: float) -> str:
    texts = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
    if float(alpha) not in texts:
        raise ValueError(f"MobileNet has ImageNet weights for alpha {sorted(texts)} only, not {alpha}")
    return texts[float(alpha)]


_MOBILENET_SIZES = (128, 160, 192, 224)
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"

# One line per backbone.
BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("mobilenet", "MobileNet", "mobilenet", 224, 32, "mobilenet_{alpha}_{rows}_tf_no_top.h5", r"^conv(?:_dw|_pw|_pad)?_?(\d+)", alpha=0.25, sizes=_MOBILENET_SIZES),
    Backbone("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, 32, _V2_FILE, r"^(Conv1|expanded_conv|block_\d+|Conv_1)(?:_|$)", alpha=0.35, sizes=_MOBILENET_V2_SIZES),
    Backbone("mobilenet_v2_050", "MobileNetV2", "mobilenet_v2", 224, 32, _V2_FILE, r"^(Conv1|expanded_conv|block_\d+|Conv_1)(?:_|$)", alpha=0.5, sizes=_MOBILENET_V2_SIZES),
    Backbone("inception_v3", "InceptionV3", "inception_v3", 299, 75, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", r"^(mixed\d+)$", ends=True),
    Backbone("efficientnet_b0", "EfficientNetB0", "efficientnet", 224, 32, "efficientnetb0_notop.h5", r"^(stem|block\d[a-z]|top)_"),
    Backbone("vgg16", "VGG16", "vgg16", 224, 32, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", r"^(block\d+)_"),
    Backbone("resnet50", "ResNet50", "resnet50", 224, 32, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", r"^(conv1|conv\d+_block\d+)_"),
)}


def get(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, image_size: int, weights: str | None, alpha: float | None = None):
    """The no-top keras.applications model with global average pooling (``weights`` as Keras takes it)."""
    import keras

    entry = get(name)
    cls = getattr(keras.applications, entry.application)
    return cls(include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg",
               **entry.kwargs(alpha))


def preprocess(name: str, x):
    """The application's own input preprocessing of [0, 255] RGB images."""
    import keras

    return getattr(keras.applications, get(name).module).preprocess_input(x)


def block_ids(name: str, layer_names: list[str]) -> list[int]:
    """Block index (0 = stem, increasing towards the top) of every layer, in the backbone's order."""
    pattern = re.compile(get(name).block)
    ends = get(name).ends
    out, block, key = [], 0, None
    for layer in layer_names:
        m = pattern.search(layer)
        if ends:
            out.append(block)
            if m:
                block += 1
            continue
        if m and m.group(1) != key:
            key = m.group(1)
            block += 1
        out.append(block)
    if ends:  # layers after the last block end (pooling) belong to it
        last = max(b for b, n in zip(out, layer_names) if pattern.search(n)) if any(
            pattern.search(n) for n in layer_names) else 0
        out = [min(b, last) for b in out]
    return out
