"""Cervix train stage: K-fold CV of one model, or of the default set, over the tensor stage's arrays.

    make train COMP=cervix MODEL=bow_svm|small_cnn|mobilenet_v2|vgg16|resnet50|all [ARGS='--epochs 20']

``MODEL=all`` trains what is quick and needs nothing from the network:
  * bow_svm and small_cnn, always;
  * mobilenet_v2 (alpha 0.35, pretrained) only when ImageNet weights are on this machine: in the
    Keras cache (``$KERAS_HOME/models``) or in ``config.SHARED_WEIGHTS``, or given by --weights;
  * never vgg16 or resnet50: on a CPU they take hours; train them by name (MODEL=vgg16).

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
from pipelines.cervix.features import CLASS_NAMES, load_tensors
from pipelines.cervix.models import BowSvmOptions, make_model
from pipelines.common.cv import run_cv
from pipelines.common.log import StageError
from pipelines.common.records import input_fingerprints

log = logging.getLogger(__name__)

MODELS = ("bow_svm", "small_cnn", "mobilenet_v2", "vgg16", "resnet50")
DEFAULT_EPOCHS = {"small_cnn": 25, "mobilenet_v2": 15, "vgg16": 20, "resnet50": 20}
SAMPLE_EPOCHS = 6
SAMPLE_EPOCHS_PRETRAINED = 3  # head only (backbone frozen): one graph to trace per fold, not two
DEFAULT_BATCH_SIZE = 32
# The sample's 96 train images per fold give 3 steps per epoch at batch 32: too few for the
# BatchNormalization statistics to settle; batch 16 doubles the steps for the same images.
SAMPLE_BATCH_SIZE = 16
# ... and even 36 steps leave the BatchNormalization moving variance ~2% on its initial 1 at
# momentum 0.9, ten times the true variance of the smooth synthetic images' first layer.
SAMPLE_BN_MOMENTUM = 0.6
DEFAULT_LR = {"small_cnn": 1e-3, "mobilenet_v2": 1e-3, "vgg16": 1e-4, "resnet50": 1e-3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cervix training")
    g.add_argument("--model", default="all", choices=MODELS + ("all",),
                   help="model to train; all = bow_svm, small_cnn and mobilenet_v2 when its weights are local "
                        "(vgg16/resnet50 only by name)")
    g.add_argument("--image-size", type=int, default=None,
                   help="must equal the features stage's --image-size (default: take the features' size)")
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
    n.add_argument("--fine-tune-layers", type=int, default=30,
                   help="pretrained backbones: top layers unfrozen in the second phase (default 30)")
    n.add_argument("--head-epochs", type=int, default=None,
                   help="pretrained backbones: epochs of the first phase, backbone frozen "
                        "(default 3; all of them on the sample)")
    n.add_argument("--patience", type=int, default=8, help="early stopping patience in epochs (default 8)")
    n.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: decay from --lr to --lr/100 over each training phase (default)")
    n.add_argument("--class-weight", action="store_true", help="weight the loss by inverse class frequency")
    n.add_argument("--augment", choices=("none", "light", "strong"), default="light",
                   help="training-time augmentation (default light)")
    n.add_argument("--dropout", type=float, default=0.3)
    n.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default 0.35)")
    n.add_argument("--width", type=int, default=16,
                   help="small_cnn filters of the first block, doubled per block (default 16)")
    b = parser.add_argument_group("cervix bow_svm")
    b.add_argument("--n-words", type=int, default=BowSvmOptions.n_words, help="visual words (k-means clusters)")
    b.add_argument("--svm-c", type=float, default=BowSvmOptions.svm_c, help="SVM regularisation C")


def local_weights(arch: str, image_size: int, alpha: float) -> str | None:
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
        if args.model in ("mobilenet_v2", "vgg16", "resnet50") and weights is None:
            weights = local_weights(args.model, image_size, args.alpha) or "imagenet"
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
                      class_weight=args.class_weight,
                      augment=args.augment, dropout=args.dropout, alpha=args.alpha, width=args.width,
                      bn_momentum=SAMPLE_BN_MOMENTUM if is_sample else BN_MOMENTUM,
                      seed=args.seed)


def train_models(args: argparse.Namespace) -> dict[str, dict]:
    tensors = load_tensors(args.source, args.image_size)
    inputs = input_fingerprints([tensors.lock_path])
    x_test = tensors.x_test if len(tensors.test_names) else None
    test_ids = np.array(tensors.test_names, dtype=object) if x_test is not None else None
    train_ids = np.array(tensors.train_names, dtype=object)
    results = {}
    for name, weights in models_to_train(args, tensors.image_size):
        bow = BowSvmOptions(n_words=args.n_words, svm_c=args.svm_c, seed=args.seed)
        net = net_options(args, name, weights) if name != "bow_svm" else None
        model = make_model(name, tensors.x_train, tensors.y, x_test, tensors.image_size, bow=bow, net=net,
                           checkpoint_every_s=args.checkpoint_every)
        if tensors.data:  # recorded in params.json and run.json: what the rows were beyond train/
            model.params = {**model.params, "data": tensors.data}
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
