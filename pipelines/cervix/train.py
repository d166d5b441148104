"""Cervix train stage: K-fold CV of one model, or of the default set, over the tensor stage's arrays.

    make train COMP=cervix MODEL=bow_svm|small_cnn|cnn_features|<backbone>|all [ARGS='--epochs 20']

(<backbone>: a registry entry of models/backbones.py, e.g. mobilenet_v2, inception_v3, resnet50.)

``MODEL=all`` trains what is quick and needs nothing from the network:
  * bow_svm and small_cnn, always;
  * mobilenet_v2 (alpha 0.35, pretrained) only when ImageNet weights are on this machine: in the
    Keras cache (``$KERAS_HOME/models``) or in ``config.SHARED_WEIGHTS``, or given by --weights;
  * never the other backbones or cnn_features: train them by name (MODEL=vgg16; on a CPU the large ones
    take hours).

Input size per model: ``--image-size``, else the backbone's native size (224 px; InceptionV3 299) for
the keras.applications networks and cnn_features when the features stage built it, else the
features' primary size (bow_svm, small_cnn, and everything on the built-in sample).

Each run writes models/cervix/<source>/<model>/ through the shared CV engine
(pipelines.common.cv.run_cv): OOF and test predictions (Type_1..3), multi-class log loss and
accuracy per fold, times, parameters, the run record (with the features lock's fingerprint),
learning curves for the networks. A finished fold is never trained again, an interrupted fold
resumes from its last epoch.

Epochs: ``--epochs`` defaults to the model's value in DEFAULT_EPOCHS on real data and to
SAMPLE_EPOCHS (SAMPLE_EPOCHS_PRETRAINED for pretrained backbones; batch SAMPLE_BATCH_SIZE) on the
built-in synthetic sample, which only has to show
that the pipeline runs, quickly.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

from pipelines import config
from pipelines.cervix.features import CLASS_NAMES, built_sizes, load_tensors
from pipelines.cervix.models import BowSvmOptions, make_model
from pipelines.cervix.models.augment import AUGMENT_LEVELS
from pipelines.cervix.models.backbones import BACKBONES
from pipelines.common.cv import run_cv
from pipelines.common.log import StageError
from pipelines.common.records import input_fingerprints

log = logging.getLogger(__name__)

MODELS = ("bow_svm", "small_cnn", "cnn_features") + tuple(BACKBONES)
DEFAULT_EPOCHS = {"small_cnn": 25, "vgg16": 20, "resnet50": 20,
                  **{name: 15 for name in BACKBONES if name not in ("vgg16", "resnet50")}}
SAMPLE_EPOCHS = 6
SAMPLE_EPOCHS_PRETRAINED = 3  # head only (backbone frozen): one graph to trace per fold, not two
DEFAULT_BATCH_SIZE = 32
# The sample's 96 train images per fold give 3 steps per epoch at batch 32: too few for the
# BatchNormalization statistics to settle; batch 16 doubles the steps for the same images.
SAMPLE_BATCH_SIZE = 16
# ... and even 36 steps leave the BatchNormalization moving variance ~2% on its initial 1 at
# momentum 0.9, ten times the true variance of the smooth synthetic images' first layer.
SAMPLE_BN_MOMENTUM = 0.6
DEFAULT_LR = {"small_cnn": 1e-3, "vgg16": 1e-4, **{name: 1e-3 for name in BACKBONES if name != "vgg16"}}
DEFAULT_BACKBONE = "mobilenet"  # cnn_features: the best of the local backbones (BENCHMARKS.md, cervix-pretrained)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cervix training")
    g.add_argument("--model", default="all", choices=MODELS + ("all",),
                   help="model to train; all = bow_svm, small_cnn and mobilenet_v2 when its weights are local "
                        "(the other backbones only by name)")
    g.add_argument("--image-size", type=int, default=None,
                   help="input size, one of the sizes the features stage built (default: the backbone's native "
                        "size, e.g. 224, for the keras.applications networks and cnn_features when the features "
                        "have it; the features' primary size for bow_svm and small_cnn)")
    g.add_argument("--no-resume", "--force", dest="no_resume", action="store_true",
                   help="retrain every fold from scratch")
    g.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help=f"seconds between the resumable checkpoints of a network's fit (default "
                        f"{config.CHECKPOINT_EVERY_S:.0f}; 0: after every epoch); one is always written when "
                        "training ends")
    n = parser.add_argument_group("cervix networks (small_cnn, mobilenet_v2, vgg16, resnet50)")
    n.add_argument("--epochs", type=int, default=None,
                   help=f"maximum epochs per fold (default {DEFAULT_EPOCHS}; {SAMPLE_EPOCHS} on the sample)")
    n.add_argument("--batch-size", type=int, default=None,
                   help=f"default {DEFAULT_BATCH_SIZE} ({SAMPLE_BATCH_SIZE} on the sample)")
    n.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {DEFAULT_LR})")
    n.add_argument("--tta", type=int, default=4, help="test-time augmentation views, 1-8 (D4 symmetries; default 4)")
    n.add_argument("--weights", default=None,
                   help="imagenet | none | <Keras .h5 weights file> (default: ImageNet weights if found locally "
                        "(Keras cache or shared weights folder), else imagenet = download)")
    n.add_argument("--unfreeze", choices=("layers", "blocks"), default="layers",
                   help="pretrained backbones, after the head phase: layers = one phase with the top "
                        "--fine-tune-layers layers unfrozen, BatchNorm frozen (default); blocks = gradual unfreezing "
                        "(--fine-tune-blocks, --unfreeze-steps, --unfreeze-epochs, --lr-decay, --bn)")
    n.add_argument("--fine-tune-layers", type=int, default=30,
                   help="pretrained backbones, --unfreeze layers: top layers unfrozen (default 30)")
    n.add_argument("--head-epochs", type=int, default=None,
                   help="pretrained backbones: most epochs of the first phase, backbone frozen "
                        "(default 3; all of them on the sample)")
    n.add_argument("--head-patience", type=int, default=None,
                   help="pretrained backbones: the head phase's own early stopping patience (default: --patience)")
    n.add_argument("--head-init", choices=("train", "probe"), default="train",
                   help="pretrained backbones: probe = start the head as a logistic regression on the frozen "
                        "features of the fold's train images (linear probing), then train (default train)")
    n.add_argument("--fine-tune-blocks", type=int, default=6,
                   help="pretrained backbones: top blocks of the backbone trainable at the end of gradual "
                        "unfreezing (0: all; default 6)")
    n.add_argument("--unfreeze-steps", type=int, default=3,
                   help="pretrained backbones: phases of gradual unfreezing, each unfreezing more top blocks "
                        "(default 3)")
    n.add_argument("--unfreeze-epochs", type=int, default=2,
                   help="pretrained backbones: epochs of each unfreezing phase but the last (default 2)")
    n.add_argument("--lr-decay", type=float, default=0.7,
                   help="pretrained backbones: discriminative learning rates, x this per block below the top "
                        "one (1: one rate; default 0.7)")
    n.add_argument("--bn", choices=("frozen", "train"), default="frozen",
                   help="pretrained backbones: BatchNorm of the unfrozen blocks: frozen statistics (default), or "
                        "trained with momentum 0.9")
    n.add_argument("--label-smoothing", type=float, default=0.0,
                   help="networks: smooth the training labels towards uniform by this much (default 0; early "
                        "stopping then watches the plain log loss)")
    n.add_argument("--patience", type=int, default=8, help="early stopping patience in epochs (default 8)")
    n.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: decay from --lr to --lr/100 over each training phase (default)")
    n.add_argument("--class-weight", action="store_true", help="weight the loss by inverse class frequency")
    n.add_argument("--augment", choices=AUGMENT_LEVELS, default="light",
                   help="training-time augmentation (default light)")
    n.add_argument("--dropout", type=float, default=0.3)
    n.add_argument("--alpha", type=float, default=None,
                   help="MobileNets' width multiplier (default: the model's, e.g. 0.35 for mobilenet_v2)")
    n.add_argument("--width", type=int, default=16,
                   help="small_cnn filters of the first block, doubled per block (default 16)")
    n.add_argument("--depth", type=int, default=4,
                   help="small_cnn conv blocks after the stem, each but the last followed by a 2x2 max-pool "
                        "(default 4; 5 for 160-192 px inputs keeps the last map as small)")
    f = parser.add_argument_group("cervix cnn_features (frozen pretrained features + a regularised head)")
    f.add_argument("--backbone", choices=tuple(BACKBONES), default=DEFAULT_BACKBONE,
                   help=f"backbone of cnn_features (default {DEFAULT_BACKBONE}); its run is cnn_features_<backbone>")
    f.add_argument("--head", choices=("lr", "lgbm"), default="lr",  # lgbm: run cnn_features_<backbone>_lgbm
                   help="cnn_features head: logistic regression (C by inner CV; default) or LightGBM")
    b = parser.add_argument_group("cervix bow_svm")
    b.add_argument("--n-words", type=int, default=BowSvmOptions.n_words, help="visual words (k-means clusters)")
    b.add_argument("--svm-c", type=float, default=BowSvmOptions.svm_c, help="SVM regularisation C")


def local_weights(arch: str, image_size: int, alpha: float | None = None) -> str | None:
    """ImageNet weights for ``arch`` that need no download: "imagenet" when Keras has them cached,
    else the path of a copy in config.SHARED_WEIGHTS, else None."""
    from pipelines.cervix.models.cnn import imagenet_file_name, keras_cache_dirs, shared_weights_file

    name = imagenet_file_name(arch, image_size, alpha)
    if any((d / name).is_file() for d in keras_cache_dirs()):
        return "imagenet"
    shared = shared_weights_file(arch, alpha)
    return str(shared) if shared else None


def models_to_train(args: argparse.Namespace, image_size: int) -> list[tuple[str, str | None]]:
    """[(model, weights option)] for --model (weights None for models that take none)."""
    if args.model != "all":
        weights = args.weights
        arch = args.backbone if args.model == "cnn_features" else args.model
        if arch in BACKBONES and weights is None:
            weights = local_weights(arch, image_size, args.alpha) or "imagenet"
        return [(args.model, weights if args.model not in ("bow_svm", "small_cnn") else None)]
    chosen = [("bow_svm", None), ("small_cnn", None)]
    weights = args.weights or local_weights("mobilenet_v2", image_size, args.alpha)
    if weights:
        chosen.append(("mobilenet_v2", weights))
    else:
        log.info("MODEL=all: skipping mobilenet_v2, no ImageNet weights on this machine (put the Keras file in "
                 "%s, or pass ARGS='--weights <file>'; MODEL=mobilenet_v2 downloads them)",
                 config.KERAS_HOME / "models")
    log.info("MODEL=all: training %s; vgg16 and resnet50 are slow on a CPU and only trained by name: "
             "make train COMP=cervix MODEL=vgg16 (or resnet50)", ", ".join(m for m, _ in chosen))
    return chosen


def model_image_size(args: argparse.Namespace, name: str, sizes: list[int]) -> int:
    """The input size of ``name``: --image-size, else the backbone's native size when the features have
    it (the primary size, with a warning, when they do not), else the features' primary size (always,
    on the built-in sample)."""
    if args.image_size is not None:
        return args.image_size
    arch = args.backbone if name == "cnn_features" else name
    if config.source_label(args.source) == "sample":  # the sample only shows that the pipeline runs: quickly
        return sizes[0]
    if arch in BACKBONES:
        native = BACKBONES[arch].native_size
        if native in sizes:
            return native
        log.warning("%s: the features have no %d-px tensors (the backbone's native size), so it runs at %d px; "
                    "build them with `make features COMP=cervix ARGS='--image-size %s'`", name, native, sizes[0],
                    " ".join(str(s) for s in sorted(set(sizes) | {native})))
    return sizes[0]


def net_options(args: argparse.Namespace, arch: str, weights: str | None):
    from pipelines.cervix.models.cnn import BN_MOMENTUM, NetOptions

    is_sample = config.source_label(args.source) == "sample"
    pretrained = weights not in (None, "none") and arch != "small_cnn"
    sample_epochs = SAMPLE_EPOCHS_PRETRAINED if pretrained else SAMPLE_EPOCHS
    epochs = args.epochs if args.epochs is not None else (sample_epochs if is_sample else DEFAULT_EPOCHS[arch])
    head_epochs = args.head_epochs if args.head_epochs is not None else (SAMPLE_EPOCHS_PRETRAINED if is_sample else 3)
    batch_size = args.batch_size or (SAMPLE_BATCH_SIZE if is_sample else DEFAULT_BATCH_SIZE)
    if args.epochs is None and is_sample:
        log.info("%s: %d epochs on the synthetic sample (pass --epochs to change)", arch, epochs)
    if not 1 <= args.tta <= 8:
        raise StageError(f"--tta {args.tta}: use 1 to 8 views")
    return NetOptions(epochs=epochs, batch_size=batch_size, lr=args.lr or DEFAULT_LR[arch], tta=args.tta,
                      weights=weights or "none", fine_tune_layers=args.fine_tune_layers,
                      head_epochs=head_epochs, patience=args.patience, lr_schedule=args.lr_schedule,
                      unfreeze=args.unfreeze, head_patience=args.head_patience, head_init=args.head_init,
                      fine_tune_blocks=args.fine_tune_blocks, unfreeze_steps=args.unfreeze_steps,
                      unfreeze_epochs=args.unfreeze_epochs, lr_decay=args.lr_decay, bn=args.bn,
                      label_smoothing=args.label_smoothing,
                      class_weight=args.class_weight,
                      augment=args.augment, dropout=args.dropout, alpha=args.alpha, width=args.width,
                      depth=args.depth,
                      bn_momentum=SAMPLE_BN_MOMENTUM if is_sample else BN_MOMENTUM,
                      seed=args.seed)


def feature_options(args: argparse.Namespace, weights: str | None):
    from pipelines.cervix.models.cnn_features import FeatureOptions

    if not 1 <= args.tta <= 8:
        raise StageError(f"--tta {args.tta}: use 1 to 8 views")
    return FeatureOptions(backbone=args.backbone, weights=weights or "none", alpha=args.alpha, tta=args.tta,
                          head=args.head, seed=args.seed)


def train_models(args: argparse.Namespace) -> dict[str, dict]:
    tensors = load_tensors(args.source, args.image_size)  # the primary size (or --image-size): checked first
    sizes = built_sizes(args.source)
    by_size = {tensors.image_size: tensors}
    results = {}
    for name, weights in models_to_train(args, tensors.image_size):
        size = model_image_size(args, name, sizes)
        if size not in by_size:
            by_size[size] = load_tensors(args.source, size)
        tensors = by_size[size]
        inputs = input_fingerprints(list(tensors.lock_paths) or [tensors.lock_path])
        x_test = tensors.x_test if len(tensors.test_names) else None
        test_ids = np.array(tensors.test_names, dtype=object) if x_test is not None else None
        train_ids = np.array(tensors.train_names, dtype=object)
        bow = BowSvmOptions(n_words=args.n_words, svm_c=args.svm_c, seed=args.seed)
        net = net_options(args, name, weights) if name not in ("bow_svm", "cnn_features") else None
        if name == "cnn_features":
            from pipelines.cervix.models.cnn_features import CnnFeaturesModel

            model = CnnFeaturesModel(tensors.x_train, tensors.y, x_test, feature_options(args, weights),
                                     tensors.image_size, cache_dir=config.features_dir("cervix", args.source)
                                     / "cnn_features", cache_inputs=inputs)
        else:
            model = make_model(name, tensors.x_train, tensors.y, x_test, tensors.image_size, bow=bow, net=net,
                               checkpoint_every_s=args.checkpoint_every)
        if tensors.data:  # recorded in params.json and run.json: what the rows were beyond train/
            model.params = {**model.params, "data": tensors.data}
        name = model.name
        out_dir = config.model_dir("cervix", args.source, name)
        n_fit_only = int((tensors.folds < 0).sum())
        log.info("%s: %d-fold CV on %d images%s at %d px, stage-%d test set -> %s", name,
                 int(tensors.folds.max()) + 1, len(tensors.y) - n_fit_only,
                 f" (+ {n_fit_only} fit-only)" if n_fit_only else "", tensors.image_size, tensors.stage, out_dir)
        results[name] = run_cv(model, comp="cervix", source=args.source, out_dir=out_dir, y=tensors.y,
                               folds=tensors.folds, train_ids=train_ids, test_ids=test_ids, task="multiclass",
                               class_names=CLASS_NAMES, seed=args.seed, inputs=inputs, resume=not args.no_resume,
                               fit_exclude=tensors.fit_exclude)
    for name, res in results.items():
        if res.get("complete"):
            log.info("%-13s CV log loss %.4f  accuracy %.3f  fit %.0fs", name, res["log_loss"], res["accuracy"],
                     res["fit_seconds"])
    return results


def main(args: argparse.Namespace) -> int:
    train_models(args)
    return 0
