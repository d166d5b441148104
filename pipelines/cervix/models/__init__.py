"""Cervix models, each a CV model for pipelines.common.cv.run_cv.

    bow_svm        colour histograms + colour layout + bag of visual words -> RBF SVM (numpy/sklearn)
    small_cnn      compact CNN from scratch (Keras)
    mobilenet_v2   keras.applications backbones with a new 3-class head (pretrained or from scratch):
    ...            one registry entry each in backbones.py (mobilenet, mobilenet_v2, mobilenet_v2_050,
                   inception_v3, efficientnet_b0, vgg16, resnet50)
    cnn_features   a backbone's frozen pooled features (TTA-averaged, cached) -> LR / LightGBM head
                   (cnn_features.py; trained by the train stage, run name cnn_features_<backbone>)

Keras/TensorFlow are imported only when a network is built (``cnn`` is imported lazily).
"""
from __future__ import annotations

from pipelines.cervix.models.backbones import BACKBONES
from pipelines.cervix.models.bow_svm import BowSvmModel, BowSvmOptions

NETWORKS = ("small_cnn",) + tuple(BACKBONES)  # every registry entry (backbones.py) is a network
MODEL_NAMES = ("bow_svm",) + NETWORKS


def make_model(name: str, x_train, y, x_test, image_size: int, bow: BowSvmOptions | None = None, net=None,
               verbose: int = 2, checkpoint_every_s: float | None = None):
    """The CV model object for ``name``; ``net`` is a cnn.NetOptions for the networks."""
    if name == "bow_svm":
        return BowSvmModel(x_train, y, x_test, bow or BowSvmOptions())
    if name in NETWORKS:
        from pipelines.cervix.models.cnn import KerasImageModel, NetOptions

        return KerasImageModel(name, x_train, y, x_test, net or NetOptions(), image_size, verbose=verbose,
                               checkpoint_every_s=checkpoint_every_s)
    raise ValueError(f"unknown cervix model {name!r}; use one of {', '.join(MODEL_NAMES)}")


__all__ = ["BowSvmModel", "BowSvmOptions", "MODEL_NAMES", "NETWORKS", "make_model"]
