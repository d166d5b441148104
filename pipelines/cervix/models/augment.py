"""Augmentation for the image networks: random transforms while training, fixed ones at test time.

Training: one Keras preprocessing layer (``CervixAugment``) placed inside the model, so it runs
on each batch in the model's graph and only when ``training=True`` (fit); predict sees the image
unchanged. A cervix photo has no canonical orientation, so flips in both axes and 90-degree
rotations are label-safe; zoom and colour jitter imitate the spread of distances, lights and
white balances of the devices used.

Test-time augmentation (TTA): the prediction is the mean of the class probabilities over the
first ``n`` symmetries of the square (the dihedral group D4): identity, horizontal flip,
vertical flip, 180-degree rotation, transpose, 90 and 270-degree rotations, anti-transpose.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

AUGMENT_LEVELS = ("none", "light", "strong", "crop", "crop_colour")


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


def predict_tta(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int,
                chunk: int = 256) -> np.ndarray:
    """Mean of ``predict`` over the first ``n`` views of ``x``; (N, K) probabilities.

    The views of up to ``chunk`` images go to ``predict`` in one call (a Keras predict call has a
    fixed cost of its own), so memory stays at chunk * n images whatever the size of ``x``.
    """
    out = []
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk])
        views = tta_views(part, n)
        pred = np.asarray(predict(np.concatenate(views)), dtype=np.float64)
        out.append(pred.reshape(n, len(part), -1).mean(axis=0))
    if not out:
        raise ValueError("predict_tta: no images")
    return np.concatenate(out)


# level -> (zoom: largest fraction cut from the side, brightness: fraction of 255,
#           contrast: fraction, per-channel gain: fraction, aspect: largest |log aspect ratio|)
# "crop" and "crop_colour" are random resized crops (area 25-100%, aspect 3:4 to 4:3, as in
# Inception training), with light and strong colour jitter.
AUGMENT_STRENGTH = {"light": (0.15, 0.08, 0.10, 0.05, 0.0), "strong": (0.30, 0.15, 0.20, 0.10, 0.0),
                    "crop": (0.50, 0.08, 0.10, 0.05, 0.2877), "crop_colour": (0.50, 0.15, 0.20, 0.10, 0.2877)}

_classes: dict = {}


def _augment_class():
    """The CervixAugment Keras layer class (created on first use, so importing this module needs no Keras)."""
    if "CervixAugment" in _classes:
        return _classes["CervixAugment"]
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="cervix")
    class CervixAugment(keras.layers.Layer):
        """Per image, only when training: a random D4 symmetry (flips and 90-degree rotations), a
        random zoom-in crop (up to ``zoom`` of the side, at a random position), and colour jitter
        (brightness shift, contrast scale, per-channel gain as a white-balance change).

        One fused layer instead of keras.layers.RandomFlip/RandomRotation/RandomZoom/...: on a
        2-core CPU those cost about as much as the small CNN itself.
        """

        def __init__(self, zoom=0.15, brightness=0.08, contrast=0.1, gain=0.05, seed=None, aspect=0.0, **kwargs):
            super().__init__(**kwargs)
            self.zoom, self.brightness, self.contrast, self.gain, self.seed = zoom, brightness, contrast, gain, seed
            self.aspect = aspect
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, inputs, training=None):
            if not training:
                return inputs
            x = tf.cast(inputs, "float32")
            n = tf.shape(x)[0]
            u = keras.random.uniform((n, 8), seed=self.seed_generator)
            gains = 1.0 + self.gain * (2.0 * keras.random.uniform((n, 1, 1, 3), seed=self.seed_generator) - 1.0)

            def pick(mask, a, b):
                return tf.where(mask[:, None, None, None], a, b)

            x = pick(u[:, 0] < 0.5, tf.reverse(x, [2]), x)
            x = pick(u[:, 1] < 0.5, tf.reverse(x, [1]), x)
            if x.shape[1] == x.shape[2]:
                x = pick(u[:, 2] < 0.5, tf.transpose(x, [0, 2, 1, 3]), x)
            if self.zoom > 0 and self.aspect > 0:  # random resized crop: area (1 - zoom)^2..1, aspect ratio
                area = (1.0 - self.zoom) ** 2 + (1.0 - (1.0 - self.zoom) ** 2) * u[:, 3]
                ratio = tf.exp(self.aspect * (2.0 * keras.random.uniform((n,), seed=self.seed_generator) - 1.0))
                h, w = tf.minimum(tf.sqrt(area / ratio), 1.0), tf.minimum(tf.sqrt(area * ratio), 1.0)
                top, left = (1.0 - h) * u[:, 4], (1.0 - w) * u[:, 5]
                boxes = tf.stack([top, left, top + h, left + w], axis=1)
                x = tf.image.crop_and_resize(x, boxes, tf.range(n), (x.shape[1], x.shape[2]))
            elif self.zoom > 0:
                side = 1.0 - self.zoom * u[:, 3]
                top, left = (1.0 - side) * u[:, 4], (1.0 - side) * u[:, 5]
                boxes = tf.stack([top, left, top + side, left + side], axis=1)
                x = tf.image.crop_and_resize(x, boxes, tf.range(n), (x.shape[1], x.shape[2]))
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            contrast = (1.0 + self.contrast * (2.0 * u[:, 6] - 1.0))[:, None, None, None]
            shift = (self.brightness * 255.0 * (2.0 * u[:, 7] - 1.0))[:, None, None, None]
            x = ((x - mean) * contrast + mean + shift) * gains
            return tf.clip_by_value(x, 0.0, 255.0)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "zoom": self.zoom, "brightness": self.brightness,
                    "contrast": self.contrast, "gain": self.gain, "seed": self.seed, "aspect": self.aspect}

    _classes["CervixAugment"] = CervixAugment
    return CervixAugment


def augmentation_layers(level: str, seed: int | None = None) -> list:
    """Keras layers for training-time augmentation of [0, 255] images (empty for level "none")."""
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}; use one of {AUGMENT_LEVELS}")
    if level == "none":
        return []
    zoom, brightness, contrast, gain, aspect = AUGMENT_STRENGTH[level]
    return [_augment_class()(zoom=zoom, brightness=brightness, contrast=contrast, gain=gain, seed=seed,
                             aspect=aspect, name="augment")]
