"""Intel & MobileODT Cervical Cancer Screening, declared for the shared stages (pipelines.common.competition).

``MODEL=all`` trains what is quick and needs nothing from the network: bow_svm and small_cnn, always, and
mobilenet_v2 (alpha 0.35, pretrained) only when ImageNet weights are on this machine (the Keras cache,
``$PIPELINES_WEIGHTS_DIR``, or ``--weights``); the other backbones and cnn_features only by name (on a CPU
the large ones take hours).

Input size per model: ``--image-size``, else the backbone's native size (224 px; InceptionV3 299) for the
keras.applications networks and cnn_features when the features stage built it, else the features' primary
size (bow_svm, small_cnn, and everything on the built-in sample).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from pipelines import config
from pipelines.cervix import data
from pipelines.cervix.models import bow_svm, cnn, cnn_features
from pipelines.cervix.models.backbones import BACKBONES
from pipelines.common.competition import Competition, FunctionSample, ModuleRules, ModuleSubmission, TrainData
from pipelines.common.models import ModelRegistry
from pipelines.common.options import option
from pipelines.common.task import Task

log = logging.getLogger(__name__)
TASK = Task(kind="multiclass", id_column="image_name", pred_columns=data.CLASSES)
PRETRAINED_BY_DEFAULT = "mobilenet_v2"  # the backbone MODEL=all adds when its weights are local


@dataclasses.dataclass
class TrainOptions:
    image_size: int | None = option(None, "input size, one of the sizes the features stage built (default: the "
                                    "backbone's native size, e.g. 224, for the keras.applications networks and "
                                    "cnn_features when the features have it; the features' primary size for "
                                    "bow_svm and small_cnn)")


def architecture(spec_name: str, options) -> str:
    """The network a model runs: the backbone of cnn_features, else the model itself."""
    return options.backbone if spec_name == "cnn_features" else spec_name


def model_image_size(name: str, arch: str, image_size: int | None, source_label: str, sizes: list[int]) -> int:
    """The input size of a model: ``image_size`` (--image-size), else the backbone's native size when the
    features have it (the primary size, with a warning, when they do not), else the features' primary size
    (always, on the built-in sample, which only shows that the pipeline runs: quickly)."""
    if image_size is not None:
        return image_size
    if source_label == "sample":
        return sizes[0]
    if arch in BACKBONES:
        native = BACKBONES[arch].native_size
        if native in sizes:
            return native
        log.warning("%s: the features have no %d-px tensors (the backbone's native size), so it runs at %d px; "
                    "build them with `make features COMP=cervix ARGS='--image-size %s'`", name, native, sizes[0],
                    " ".join(str(s) for s in sorted(set(sizes) | {native})))
    return sizes[0]


def train_data(source: str, spec, options, ctx) -> TrainData:
    from pipelines.cervix.features import built_sizes, load_tensors

    asked = ctx.train_options.image_size if ctx.train_options else None
    load_tensors(source, asked)  # the primary size (or --image-size) first: its checks name what is missing
    size = model_image_size(spec.name, architecture(spec.name, options), asked, ctx.source_label,
                            built_sizes(source))
    tensors = load_tensors(source, size)
    n_fit_only = int((tensors.folds < 0).sum())
    has_test = len(tensors.test_names) > 0
    return TrainData(
        y=tensors.y, folds=tensors.folds, train_ids=np.array(tensors.train_names, dtype=object),
        test_ids=np.array(tensors.test_names, dtype=object) if has_test else None,
        inputs=list(tensors.lock_paths) or [tensors.lock_path], features=tensors, fit_exclude=tensors.fit_exclude,
        extra_params=tensors.data,
        description=(f"{int(tensors.folds.max()) + 1}-fold CV on {len(tensors.y) - n_fit_only} images"
                     f"{f' (+ {n_fit_only} fit-only)' if n_fit_only else ''} at {tensors.image_size} px, "
                     f"stage-{tensors.stage} test set"))


def default_models(ctx) -> list[str]:
    """bow_svm, small_cnn, and mobilenet_v2 when its ImageNet weights need no download."""
    from pipelines.cervix.features import built_sizes

    chosen = ["bow_svm", "small_cnn"]
    args = ctx.args
    weights = getattr(args, "weights", None)
    if weights is None:
        asked = ctx.train_options.image_size if ctx.train_options else None
        sizes = built_sizes(ctx.source) or [BACKBONES[PRETRAINED_BY_DEFAULT].native_size]  # no features yet
        size = model_image_size(PRETRAINED_BY_DEFAULT, PRETRAINED_BY_DEFAULT, asked, ctx.source_label, sizes)
        weights = cnn.local_weights(PRETRAINED_BY_DEFAULT, size, getattr(args, "alpha", None))
    if weights:
        chosen.append(PRETRAINED_BY_DEFAULT)
    else:
        log.info("MODEL=all: skipping %s, no ImageNet weights on this machine (put the Keras file in %s or in "
                 "$PIPELINES_WEIGHTS_DIR, or pass ARGS='--weights <file>'; MODEL=%s downloads them)",
                 PRETRAINED_BY_DEFAULT, config.KERAS_HOME / "models", PRETRAINED_BY_DEFAULT)
    log.info("MODEL=all: training %s; the other backbones are slow on a CPU and only trained by name: "
             "make train COMP=cervix MODEL=vgg16 (or resnet50, ...)", ", ".join(chosen))
    return chosen


# The built-in sample only shows that the pipeline runs, quickly. Its 96 train images per fold give 3 steps
# per epoch at batch 32: too few for BatchNormalization statistics to settle; batch 16 doubles the steps, and
# even then the moving variance stays near its initial 1 at momentum 0.9, ten times the true variance of the
# smooth synthetic images' first layer: momentum 0.6. Pretrained backbones train their head only (backbone
# frozen): 3 epochs, one graph to trace per fold, not two.
_SAMPLE_NETWORK = {"epochs": 6, "batch_size": 16, "bn_momentum": 0.6}
SAMPLE_PROFILE = {"small_cnn": _SAMPLE_NETWORK, **{name: {**_SAMPLE_NETWORK, "epochs": 3} for name in BACKBONES}}

COMPETITION = Competition(
    name="cervix",
    slug="intel-mobileodt-cervical-cancer-screening",
    description="Intel & MobileODT Cervical Cancer Screening: cervix type from a photo (3-class log loss)",
    task=TASK,
    raw=ModuleRules("pipelines.cervix.data"),
    features="pipelines.cervix.features",
    train_data=train_data,
    train_options=TrainOptions,
    models=ModelRegistry([bow_svm.SPEC, cnn.SPECS[0], cnn_features.SPEC, *cnn.SPECS[1:]]),
    default_models=default_models,
    submission=ModuleSubmission("pipelines.cervix.submission"),
    sample=FunctionSample(version=data.GENERATOR_VERSION, options=data.SampleOptions,
                          generate_fn="pipelines.cervix.data:generate_sample", kaggle_size=data.KAGGLE_SIZE),
    archive_password_env="CERVIX_7Z_PASSWORD",
    profiles={"sample": SAMPLE_PROFILE},
)
