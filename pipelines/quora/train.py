"""Train stage for Quora: ``make train COMP=quora MODEL=<name>|all [ARGS='--epochs 5 ...']``.

Every model runs through the one CV engine (``pipelines.common.cv.run_cv``) on the folds saved by
the features stage, and writes ``models/quora/<source>/<model>/``. A re-run resumes: finished
folds are kept (and, for the neural models, the epoch inside an interrupted fold); changed
parameters or features start the folds afresh.
"""
from __future__ import annotations

import argparse
import logging

from pipelines import config
from pipelines.common.cv import run_cv
from pipelines.common.records import input_fingerprints
from pipelines.quora.models import QuoraFeatures

log = logging.getLogger(__name__)

MODELS = ("bow_svm", "bow_lr", "lgbm", "siamese_lstm", "siamese_gru")
CLASS_NAMES = ["is_duplicate"]

# The built-in sample only has to show that the networks learn: a few epochs keep `make all` quick on a
# CPU; real data gets room for early stopping to choose.
DEFAULT_EPOCHS = 30
SAMPLE_EPOCHS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="all", choices=[*MODELS, "all"],
                        help="model to train, or 'all' for every model in order (default: all)")
    parser.add_argument("--no-resume", "--force", dest="no_resume", action="store_true",
                        help="refit every fold, ignoring earlier checkpoints")
    parser.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                        help=f"seconds between the resumable checkpoints of a network's fit (default "
                             f"{config.CHECKPOINT_EVERY_S:.0f}; 0: after every epoch); one is always written when "
                             "training ends")
    bow = parser.add_argument_group("bag-of-words models (bow_svm, bow_lr)")
    bow.add_argument("--bow-C", type=float, default=None,
                     help="inverse regularisation strength (default: 1.0 for bow_lr, 0.1 for bow_svm)")
    bow.add_argument("--bow-word-only", action="store_true", help="word TF-IDF only (no char n-grams)")
    bow.add_argument("--bow-no-sum", action="store_true", help="leave out the q1+q2 (topic) block")
    gbm = parser.add_argument_group("LightGBM (lgbm)")
    gbm.add_argument("--lgbm-learning-rate", type=float, default=None)
    gbm.add_argument("--lgbm-num-leaves", type=int, default=None)
    gbm.add_argument("--lgbm-min-data-in-leaf", type=int, default=None,
                     help="default: 0.1%% of the train rows, at least 20")
    gbm.add_argument("--lgbm-feature-fraction", type=float, default=None)
    gbm.add_argument("--lgbm-rounds", type=int, default=None, help="most boosting rounds (early stopping picks)")
    gbm.add_argument("--lgbm-early-stopping", type=int, default=None,
                     help="stop after N rounds without improvement on the fold's validation part (default 200; "
                          "0: always run --lgbm-rounds, e.g. to time a fixed amount of work)")
    gbm.add_argument("--lgbm-device", choices=["cpu", "gpu"], default="cpu",
                     help="cpu (default) or gpu: LightGBM's OpenCL GPU learner (needs the GPU's OpenCL driver)")
    gbm.add_argument("--lgbm-bow-columns", type=int, default=None,
                     help="also give the trees the N most used columns of the word TF-IDF pair blocks "
                          "(default 2000; 0: the pair features alone)")
    nn = parser.add_argument_group("siamese networks (siamese_lstm, siamese_gru)")
    nn.add_argument("--epochs", type=int, default=None,
                    help=f"most epochs (early stopping picks; default {DEFAULT_EPOCHS}, {SAMPLE_EPOCHS} on the sample)")
    nn.add_argument("--batch-size", type=int, default=256)
    nn.add_argument("--units", type=int, default=64, help="recurrent units per direction")
    nn.add_argument("--patience", type=int, default=4, help="early-stopping patience in epochs (default 4)")
    nn.add_argument("--dense", type=int, default=64, help="units of the dense layer after the merge")
    nn.add_argument("--dropout", type=float, default=0.2)
    nn.add_argument("--learning-rate", type=float, default=1e-3)
    nn.add_argument("--fine-tune", action="store_true", help="train the embedding too (default: frozen)")
    nn.add_argument("--bidirectional", action="store_true", help="bidirectional encoder")
    nn.add_argument("--with-features", dest="with_features", action="store_true", default=True,
                    help="append the standardised pair features to the merged encodings (default: on; on the "
                         "11,587 real pairs it takes siamese_gru's CV log loss from 0.538 to 0.420)")
    nn.add_argument("--no-features", dest="with_features", action="store_false",
                    help="the text alone: the two question encodings, without the pair features")
    nn.add_argument("--pooling", choices=["max", "last"], default="max",
                    help="question encoding: max over the encoder's time steps (default) or its last state")
    nn.add_argument("--device", choices=["auto", "cpu", "gpu"], default=None,
                    help="auto (default, or $PIPELINES_DEVICE): the GPU when TensorFlow sees one, else the CPU; "
                         "gpu: the GPU, or stop saying how to get one")
    nn.add_argument("--precision", choices=["auto", "float32", "mixed_float16"], default="auto",
                    help="auto: mixed_float16 on a GPU with tensor cores (output layer float32), float32 elsewhere")
    nn.add_argument("--execution", choices=["auto", "graph", "eager"], default="auto",
                    help="TensorFlow graphs, or eager execution (auto: eager below 2,000 train pairs, where "
                         "tracing the graphs costs more than it saves)")


def build_model(name: str, data: QuoraFeatures, args: argparse.Namespace):
    """The CVModel for ``name`` configured from the command-line options."""
    if name in ("bow_svm", "bow_lr"):
        from pipelines.quora.models.bow import BowModel

        return BowModel(data, kind=name[4:], C=args.bow_C, char=not args.bow_word_only,
                        with_sum=not args.bow_no_sum, seed=args.seed)
    if name == "lgbm":
        from pipelines.quora.models.lgbm import LgbmModel

        return LgbmModel(data, seed=args.seed, learning_rate=args.lgbm_learning_rate,
                         num_leaves=args.lgbm_num_leaves, min_data_in_leaf=args.lgbm_min_data_in_leaf,
                         feature_fraction=args.lgbm_feature_fraction, num_boost_round=args.lgbm_rounds,
                         early_stopping_rounds=args.lgbm_early_stopping, bow_columns=args.lgbm_bow_columns,
                         device=getattr(args, "lgbm_device", "cpu"))
    if name in ("siamese_lstm", "siamese_gru"):
        from pipelines.common.device import default_device as device_default
        from pipelines.quora.models.siamese import SiameseModel

        epochs = args.epochs or (SAMPLE_EPOCHS if config.source_label(args.source) == "sample" else DEFAULT_EPOCHS)
        return SiameseModel(data, rnn=name[8:], epochs=epochs, batch_size=args.batch_size, units=args.units,
                            patience=args.patience, bidirectional=args.bidirectional, fine_tune=args.fine_tune,
                            with_features=args.with_features, dense=args.dense, dropout=args.dropout,
                            learning_rate=args.learning_rate, pooling=args.pooling, execution=args.execution,
                            seed=args.seed, checkpoint_every_s=args.checkpoint_every,
                            device=getattr(args, "device", None) or device_default(),
                            precision=getattr(args, "precision", "auto"))
    raise ValueError(f"unknown model {name!r}; use one of {', '.join(MODELS)}")


def train_one(name: str, data: QuoraFeatures, args: argparse.Namespace) -> dict:
    model = build_model(name, data, args)
    return run_cv(model, comp="quora", source=args.source, out_dir=config.model_dir("quora", args.source, name),
                  y=data.labels, folds=data.folds, train_ids=data.ids_train, test_ids=data.ids_test,
                  task="binary", class_names=CLASS_NAMES, seed=args.seed,
                  inputs=input_fingerprints([data.lock_path]), resume=not args.no_resume)


def main(args: argparse.Namespace) -> int:
    source = config.source_label(args.source)
    data = QuoraFeatures(config.features_dir("quora", args.source), source_hint=args.source)
    names = list(MODELS) if args.model == "all" else [args.model]
    results = {}
    for i, name in enumerate(names, 1):
        log.info("training %s (%d of %d) on quora/%s: %d train pairs, %d test pairs, %d folds", name, i,
                 len(names), source, len(data.labels), len(data.ids_test), int(data.folds.max()) + 1)
        results[name] = train_one(name, data, args)
        log.info("%s: CV log loss %.5f", name, results[name]["log_loss"])
    if len(names) > 1:
        log.info("quora/%s CV log loss: %s", source,
                 ", ".join(f"{n} {r['log_loss']:.5f}" for n, r in results.items()))
    return 0
