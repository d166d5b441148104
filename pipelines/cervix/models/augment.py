"""Augmentation for the image networks: random transforms while training, fixed ones at test time.

Training: Keras preprocessing layers placed inside the model, so they run on each batch in the
model's graph and only when ``training=True`` (fit); predict sees the image unchanged. A cervix
photo has no canonical orientation, so flips in both axes and small rotations are label-safe;
zoom and colour jitter imitate the spread of distances, lights and white balances of the
devices used.

Test-time augmentation (TTA): the prediction is the mean of the class probabilities over the
first ``n`` symmetries of the square (the dihedral group D4): identity, horizontal flip,
vertical flip, 180-degree rotation, transpose, 90 and 270-degree rotations, anti-transpose.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

AUGMENT_LEVELS = ("none", "light", "strong")


def _identity(x):
    return x


def _hflip(x):
    return x[:, :, ::-1]


def _vflip(x):
    return x[:, ::-1, :]


def _rot180(x):
    return x[:, ::-1, ::-1]


def _transpose(x):
    return np.swapaxes(x, 1, 2)


def _rot90(x):
    return np.rot90(x, k=1, axes=(1, 2))


def _rot270(x):
    return np.rot90(x, k=3, axes=(1, 2))


def _antitranspose(x):
    return np.swapaxes(x, 1, 2)[:, ::-1, ::-1]


# Order matters: --tta N uses the first N. Flips first (cheap, the most common TTA set).
TTA_TRANSFORMS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    _identity, _hflip, _vflip, _rot180, _transpose, _rot90, _rot270, _antitranspose)
MAX_TTA = len(TTA_TRANSFORMS)


def tta_views(x: np.ndarray, n: int) -> list[np.ndarray]:
    """The first ``n`` D4 views of a batch (N, H, W, C) of square images."""
    if not 1 <= n <= MAX_TTA:
        raise ValueError(f"--tta must be between 1 and {MAX_TTA}, got {n}")
    return [np.ascontiguousarray(t(x)) for t in TTA_TRANSFORMS[:n]]


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``predict`` over the first ``n`` views of ``x``; (N, K) probabilities."""
    total = None
    for view in tta_views(x, n):
        pred = np.asarray(predict(view), dtype=np.float64)
        total = pred if total is None else total + pred
    return total / n


def augmentation_layers(level: str, seed: int | None = None) -> list:
    """Keras preprocessing layers for training-time augmentation (inputs in [0, 255])."""
    import keras

    if level not in AUGMENT_LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}; use one of {AUGMENT_LEVELS}")
    if level == "none":
        return []
    strong = level == "strong"
    layers = keras.layers
    return [
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomRotation(0.25 if strong else 0.08, fill_mode="reflect", seed=seed),
        layers.RandomZoom((-0.2, 0.1) if strong else (-0.1, 0.05), fill_mode="reflect", seed=seed),
        layers.RandomBrightness(0.15 if strong else 0.08, value_range=(0, 255), seed=seed),
        layers.RandomContrast(0.2 if strong else 0.1, seed=seed),
    ]
