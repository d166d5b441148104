"""Siamese recurrent networks (Keras 3 on TensorFlow): ``siamese_lstm`` and ``siamese_gru``.

    q1 tokens -> shared Embedding (from embedding_matrix) -> shared LSTM/GRU encoder -> a
    q2 tokens -> (the same layers)                                                   -> b
    (the encoding: max over the time steps' outputs, ``--pooling max``, default; or the last state)
    [|a - b|, a * b] + standardised pair features (``--no-features``: without) -> Dropout -> Dense (relu) -> Dropout -> sigmoid

q1/q2 order: swap augmentation exists to teach a network that the order of the two questions
means nothing. Here that holds exactly, by construction: the encoder is shared, the merge is
symmetric, and the pair features enter in an order-free form (each q1_*/q2_* column pair, e.g.
q1_len_words/q2_len_words, becomes its min and max: ``symmetric_plan``). A swapped pair is
therefore the very same input, so training on both orders would only show every pair twice per
epoch (twice the time, no new information) and predicting both orders would compute the same
number twice; the network trains and predicts each pair once. (Until this was noticed it did
both, doubling training and test-prediction time.) Early stopping watches the fold's validation
part and restores the best weights.

Resuming inside a fold: the fit is one phase of pipelines/common/keras_fit.py's resumable loop. At
most every ``--checkpoint-every`` seconds (default 60) and when the fit ends, the model (with its
optimizer state) is saved as ``fold_dir/epoch_<e>.keras``, the best weights so far as
``best_<e>.weights.h5``, and then ``train_state.json`` (epochs done, early-stopping state, history
so far), which names them. A re-run of the fold loads the checkpoint and continues at the next
epoch with the early-stopping state it had.

Execution: TensorFlow graphs (Keras' default) except on tiny data (``--execution auto``, fewer
than EAGER_BELOW train pairs, e.g. the built-in sample and the test fixtures), where tracing the
graphs of each fold's new model costs far more than eager
execution of a few batches.

Keras and TensorFlow are imported inside the functions that use them: importing them costs
seconds, and the other models and stages must not pay that.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np

from pipelines.common import device as device_mod
from pipelines.common.io import atomic_path
from pipelines.common.keras_fit import FitPhase, ResumableFit, discard
from pipelines.common.models import ModelSpec
from pipelines.common.options import option
from pipelines.quora.models import QuoraFeatures

log = logging.getLogger(__name__)
PREDICT_CHUNK = 2048  # pairs per predict call: small enough that padding the last chunk wastes little
ENCODE_CHUNK = 8192  # distinct questions per call of the test set's question encoder (and pairs per head call)
LENGTH_STEP = 8  # the encoder's call widths are multiples of this (length_chunks): few shapes, few traces
# Question slots per distinct test question below which the test set is predicted pair by pair: sharing
# little saves less than the distinct path's fixed cost (BENCHMARKS.md, siamese-predict-real).
MIN_SLOTS_PER_QUESTION = 1.05
EAGER_BELOW = 2000  # train pairs under which ``execution='auto'`` runs eagerly


def keras_modules():
    """Import Keras and TensorFlow (seconds: only the siamese models do); returns (keras, tf)."""
    import tensorflow as tf  # noqa: F401  (backend of Keras 3 here)
    import keras

    return keras, tf


_CUSTOM = {}


def custom_objects() -> dict:
    """The custom layers of the model, defined once after Keras is imported."""
    if not _CUSTOM:
        keras, _ = keras_modules()

        @keras.saving.register_keras_serializable(package="quora")
        class PairMerge(keras.layers.Layer):
            """[|a - b|, a * b]: symmetric in a/b, so the pair's order does not matter."""

            def call(self, inputs):
                a, b = inputs
                return keras.ops.concatenate([keras.ops.abs(a - b), a * b], axis=-1)

            def compute_output_shape(self, input_shapes):
                shape = list(input_shapes[0])
                shape[-1] = None if shape[-1] is None else 2 * shape[-1]
                return tuple(shape)

        @keras.saving.register_keras_serializable(package="quora")
        class MaskedMaxPool(keras.layers.Layer):
            """Max over the time steps the mask keeps (padding never wins); 0 for an empty question."""

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.supports_masking = True

            def call(self, x, mask=None):
                if mask is None:
                    return keras.ops.max(x, axis=1)
                keep = keras.ops.expand_dims(keras.ops.cast(mask, "bool"), -1)
                fill = -1e9 if keras.backend.standardize_dtype(x.dtype) != "float16" else -6e4  # float16 max 65504
                pooled = keras.ops.max(keras.ops.where(keep, x, fill), axis=1)
                return keras.ops.where(keras.ops.any(keep, axis=1), pooled, 0.0)

            def compute_mask(self, inputs, mask=None):
                return None

            def compute_output_shape(self, input_shape):
                return (input_shape[0], input_shape[2])

        @keras.saving.register_keras_serializable(package="quora")
        class NonEmptyMask(keras.layers.Layer):
            """Its input unchanged, with the mask of a question without a word (all padding) opened at
            the first step: cuDNN's recurrent kernels stop with an error on a fully masked sequence.
            ZeroEmpty sets such a question's encoding to 0 afterwards, as a fully masked one had."""

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.supports_masking = True

            def call(self, x, mask=None):
                return x

            def compute_mask(self, inputs, mask=None):
                if mask is None:
                    return None
                mask = keras.ops.cast(mask, "bool")
                # the first step, without arange over the length: the test set's encoder takes any length (None)
                first = keras.ops.cumsum(keras.ops.ones_like(mask, dtype="int32"), axis=1) == 1
                empty = keras.ops.logical_not(keras.ops.any(mask, axis=1, keepdims=True))
                return keras.ops.logical_or(mask, keras.ops.logical_and(empty, first))

            def compute_output_shape(self, input_shape):
                return input_shape

        @keras.saving.register_keras_serializable(package="quora")
        class ZeroEmpty(keras.layers.Layer):
            """[encoding, tokens] -> the encoding, 0 for a question without a word."""

            def call(self, inputs):
                encoding, tokens = inputs
                has_words = keras.ops.any(keras.ops.not_equal(tokens, 0), axis=1, keepdims=True)
                return keras.ops.where(has_words, encoding, keras.ops.zeros_like(encoding))

            def compute_output_shape(self, input_shapes):
                return tuple(input_shapes[0])

        _CUSTOM["PairMerge"] = PairMerge
        _CUSTOM["MaskedMaxPool"] = MaskedMaxPool
        _CUSTOM["NonEmptyMask"] = NonEmptyMask
        _CUSTOM["ZeroEmpty"] = ZeroEmpty
    return dict(_CUSTOM)


# The arguments under which Keras 3 runs LSTM/GRU on cuDNN's kernel on a GPU (any other value falls back
# to the generic kernel, several times slower): Keras' own defaults, written out so that no later
# change of them slips by (tests check them). Masks must be right-padded (the sequences are
# post-padded) and no sequence fully masked (NonEmptyMask).
CUDNN_RNN_ARGS = {"activation": "tanh", "recurrent_activation": "sigmoid", "recurrent_dropout": 0.0,
                  "unroll": False, "use_bias": True, "use_cudnn": "auto"}
CUDNN_GRU_ARGS = {"reset_after": True}


def build_keras_model(*, max_len: int, embedding_matrix: np.ndarray, rnn: str, units: int, bidirectional: bool,
                      fine_tune: bool, n_features: int, dense: int, dropout: float, learning_rate: float,
                      pooling: str = "last", cudnn_safe_mask: bool = True):
    """The compiled siamese network; inputs q1, q2 (int32 (n, width), right-padded, width at most max_len)
    and, with n_features > 0, feats.

    ``cudnn_safe_mask=False`` leaves out NonEmptyMask/ZeroEmpty (the network before they existed; the
    same predictions, which a test checks)."""
    keras, _ = keras_modules()
    layers = keras.layers
    custom = custom_objects()
    PairMerge, MaskedMaxPool = custom["PairMerge"], custom["MaskedMaxPool"]
    vocab, dim = embedding_matrix.shape
    # Any width up to max_len: training batches are cut to their longest question (``--batching length``).
    q1 = keras.Input((None,), dtype="int32", name="q1")
    q2 = keras.Input((None,), dtype="int32", name="q2")
    embed = layers.Embedding(vocab, dim, mask_zero=True, trainable=fine_tune, name="embedding")
    rnn_args = {**CUDNN_RNN_ARGS, **(CUDNN_GRU_ARGS if rnn == "gru" else {})}
    rnn_layer = {"lstm": layers.LSTM, "gru": layers.GRU}[rnn](units, return_sequences=pooling != "last",
                                                              name=f"{rnn}_encoder", **rnn_args)
    encoder = layers.Bidirectional(rnn_layer, name="encoder") if bidirectional else rnn_layer
    pool = MaskedMaxPool(name="max_pool") if pooling != "last" else None  # else: the last state
    if cudnn_safe_mask:
        nonempty, zero = custom["NonEmptyMask"](name="nonempty_mask"), custom["ZeroEmpty"](name="zero_empty")
    else:
        nonempty = zero = None

    def encode(q):
        x = embed(q)
        x = encoder(nonempty(x) if nonempty else x)
        x = pool(x) if pool else x  # max over the time steps' outputs, padding excluded
        return zero([x, q]) if zero else x

    a, b = encode(q1), encode(q2)
    merged = PairMerge(name="pair_merge")([a, b])
    inputs = [q1, q2]
    if n_features:
        feats = keras.Input((n_features,), dtype="float32", name="feats")
        inputs.append(feats)
        merged = layers.Concatenate(name="with_features")([merged, feats])
    x = layers.Dropout(dropout)(merged)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout)(x)
    # float32 output whatever the policy: under mixed_float16 the sigmoid and the loss stay exact enough.
    out = layers.Dense(1, activation="sigmoid", name="is_duplicate", dtype="float32")(x)
    model = keras.Model(inputs, out, name="siamese")
    # Weights set after building: an initializer holding the matrix would be copied into the model's
    # config (every checkpoint would carry it twice).
    model.get_layer("embedding").set_weights([embedding_matrix])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="binary_crossentropy")
    return model


def swapped_name(column: str) -> str:
    """The column describing the other question: q1_len_words <-> q2_len_words, num_q1 <-> num_q2."""
    parts = column.split("_")
    swap = {"q1": "q2", "q2": "q1"}
    return "_".join(swap.get(part, part) for part in parts)


def symmetric_plan(columns) -> list[tuple[str, str, str | None, str | None]]:
    """(name, column, other column, 'min'|'max'|None) of each order-free feature, in column order.

    Every q1_*/q2_* column pair becomes its min and max; every other column is already symmetric in
    q1/q2 (absolute differences, min/max ratios, shares, similarities) and is kept as it is.
    """
    columns = list(columns)
    plan, done = [], set()
    for column in columns:
        if column in done:
            continue
        other = swapped_name(column)
        if other != column and other in columns:
            stem = "_".join(p for p in column.split("_") if p not in ("q1", "q2"))
            # graph_freq_min/max (say) are already among the features: the pair then adds nothing.
            if f"{stem}_min" not in columns:
                plan += [(f"{stem}_min", column, other, "min"), (f"{stem}_max", column, other, "max")]
            done.update((column, other))
        else:
            plan.append((column, column, None, None))
    return plan


def symmetric_matrix(table) -> np.ndarray:
    """float32 (n, k) matrix of the order-free features (``symmetric_plan``) of ``table`` (a DataFrame or a
    pyarrow Table), filled column by column: one copy of the data (GBs at Kaggle's test size)."""
    plan = symmetric_plan(table.column_names if hasattr(table, "column_names") else table.columns)
    out = np.empty((len(table), len(plan)), dtype=np.float32)
    for j, (_, column, other, op) in enumerate(plan):
        a = np.asarray(table[column])
        out[:, j] = a if op is None else (np.minimum if op == "min" else np.maximum)(a, np.asarray(table[other]))
    return out


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n,) + x.shape[1:], dtype=x.dtype)
    out[: len(x)] = x
    return out


def shared_slots(qids) -> float:
    """Question slots (two a pair) per distinct question of (qid1, qid2)."""
    slots = np.concatenate([np.asarray(qids[0]), np.asarray(qids[1])])
    return len(slots) / max(len(np.unique(slots)), 1)


def length_chunks(lengths: np.ndarray, chunk: int, max_len: int, step: int = LENGTH_STEP) -> list[tuple[np.ndarray, int]]:
    """(question positions, width) per encoder call: the questions in order of length, ``chunk`` a call, each call
    cut to its longest question rounded up to a multiple of ``step`` (at most ``max_len``), so a handful of widths
    (one trace each) and no recurrent step over padding the whole chunk shares. The sequences are right-padded and
    the encoder masks padding, so a question's encoding does not depend on its call's width."""
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        width = min(max_len, max(step, -(-int(lengths[part].max()) // step) * step))
        out.append((part, width))
    return out


def standardise(feats, fitted: "FittedSiamese") -> np.ndarray:
    """The pair features standardised with the fold's train statistics (float32)."""
    return ((np.asarray(feats, dtype=np.float32) - fitted.feat_mean) / fitted.feat_std).astype(np.float32)


def encoder_and_head(model, params: dict, n_features: int):
    """(question encoder, pair head): two Keras models made of ``model``'s own (trained) layers, the
    first mapping tokens to a question's encoding, the second two encodings (+ the pair features) to
    the probability; Dropout, a no-op at inference, is left out. None for a model without the layers
    (saved before NonEmptyMask/ZeroEmpty existed)."""
    keras, _ = keras_modules()
    try:
        embed, nonempty, zero = (model.get_layer(n) for n in ("embedding", "nonempty_mask", "zero_empty"))
        encoder = model.get_layer("encoder" if params["bidirectional"] else f"{params['rnn']}_encoder")
        pool = model.get_layer("max_pool") if params["pooling"] != "last" else None
        merge, dense, out = (model.get_layer(n) for n in ("pair_merge", "dense", "is_duplicate"))
        concat = model.get_layer("with_features") if n_features else None
    except ValueError:
        return None
    # Any length: the test questions are encoded in chunks cut to their longest question (length_chunks).
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = encoder(nonempty(embed(tokens)))
    code = zero([pool(x) if pool else x, tokens])
    question_encoder = keras.Model(tokens, code, name="question_encoder")
    a = keras.Input((code.shape[-1],), dtype=code.dtype, name="a")
    b = keras.Input((code.shape[-1],), dtype=code.dtype, name="b")
    inputs, h = [a, b], merge([a, b])
    if concat is not None:
        feats = keras.Input((n_features,), dtype="float32", name="feats")
        inputs.append(feats)
        h = concat([h, feats])
    head = keras.Model(inputs, out(dense(h)), name="pair_head")
    return question_encoder, head


@dataclasses.dataclass
class FittedSiamese:
    model: object                       # keras.Model with the best weights
    feat_mean: np.ndarray | None        # standardisation of the pair features (fold's train part)
    feat_std: np.ndarray | None
    resumed_from_epoch: int = 0


@dataclasses.dataclass
class SiameseOptions:
    """Options of the Siamese networks (siamese_lstm, siamese_gru), each default once."""

    epochs: int = option(30, "most epochs (early stopping picks)")
    batch_size: int = option(256, "pairs per batch", space=("categorical", [128, 256, 512]))
    units: int = option(64, "recurrent units per direction", space=("categorical", [32, 64, 128]))
    patience: int = option(4, "early-stopping patience in epochs")
    dense: int = option(64, "units of the dense layer after the merge", space=("categorical", [32, 64, 128]))
    dropout: float = option(0.2, "dropout after the merge", space=("float", 0.0, 0.5))
    learning_rate: float = option(1e-3, "Adam learning rate", space=("float", 3e-4, 3e-3, "log"))
    fine_tune: bool = option(False, "train the embedding too (default: frozen)")
    bidirectional: bool = option(False, "bidirectional encoder", space=("categorical", [False, True]))
    with_features: bool = option(True, "append the standardised pair features to the merged encodings "
                                 "(default: on; BENCHMARKS.md, quora-models, measures the difference)",
                                 negate="--no-features")
    batching: str = option("length", "training batches: length (pairs of similar length together, each batch cut "
                           "to its longest question: no recurrent step over padding) or random",
                           choices=("length", "random"))
    pooling: str = option("max", "question encoding: max over the encoder's time steps or its last state",
                          choices=("max", "last"))
    device: str | None = option(None, "auto (default, or $PIPELINES_DEVICE): the GPU when TensorFlow sees one, "
                                "else the CPU; gpu: the GPU, or stop saying how to get one",
                                choices=("auto", "cpu", "gpu"))
    precision: str = option("auto", "auto: mixed_float16 on a GPU with tensor cores (output layer float32), "
                            "float32 elsewhere", choices=("auto", "float32", "mixed_float16"))
    execution: str = option("auto", "TensorFlow graphs, or eager execution (auto: eager below 2,000 train "
                            "pairs, where tracing the graphs costs more than it saves)",
                            choices=("auto", "graph", "eager"))


class SiameseModel:
    def __init__(self, data: QuoraFeatures, rnn: str = "lstm", *, seed: int = 42, verbose: int = 2,
                 checkpoint_every_s: float | None = None, gpus=None, **options):
        """``options``: fields of SiameseOptions (its defaults for those not given: each default once)."""
        unknown = set(options) - {f.name for f in dataclasses.fields(SiameseOptions)}
        if unknown:
            raise TypeError(f"SiameseModel got unknown options {sorted(unknown)}")
        o = dataclasses.replace(SiameseOptions(), **options)
        epochs, batch_size, units, patience, bidirectional = o.epochs, o.batch_size, o.units, o.patience, o.bidirectional
        fine_tune, with_features, dense, dropout = o.fine_tune, o.with_features, o.dense, o.dropout
        learning_rate, pooling, execution, precision = o.learning_rate, o.pooling, o.execution, o.precision
        if o.batching not in ("length", "random"):
            raise ValueError(f"unknown batching {o.batching!r}")
        device = o.device or "auto"
        if rnn not in ("lstm", "gru"):
            raise ValueError(f"unknown encoder {rnn!r}")
        if pooling not in ("last", "max"):
            raise ValueError(f"unknown pooling {pooling!r}")
        if execution not in ("auto", "graph", "eager"):
            raise ValueError(f"unknown execution mode {execution!r}")
        self.data = data
        self.name = f"siamese_{rnn}"
        self.params = {"rnn": rnn, "epochs": int(epochs), "batch_size": int(batch_size), "units": int(units),
                       "patience": int(patience), "bidirectional": bool(bidirectional),
                       "fine_tune": bool(fine_tune), "with_features": bool(with_features), "dense": int(dense),
                       "dropout": float(dropout), "learning_rate": float(learning_rate), "pooling": pooling, "batching": o.batching, "execution": execution, "seed": int(seed),
                       "order_invariant": True, "deterministic_ops": True}
        # Device and precision (pipelines/common/device.py; ``gpus``: the GPU list, for tests). On the CPU
        # nothing is added to the parameters, so CPU runs keep the parameters (and resume keys) they had.
        self.choice = device_mod.choose_tensorflow(device, precision, gpus)
        if self.choice.kind == "gpu":
            self.params["device"] = "gpu"
        if self.choice.precision != "float32":
            self.params["precision"] = self.choice.precision
        self.device = self.choice.record()
        self.verbose = verbose
        # how often a fit writes its checkpoint: not a parameter (the results do not depend on it)
        self.checkpoint_every_s = checkpoint_every_s
        self.history: dict = {}
        self._feats = {}

    # ----- inputs -------------------------------------------------------------------------------
    def _features(self, part: str) -> np.ndarray | None:
        if not self.params["with_features"]:
            return None
        if part not in self._feats:
            self._feats[part] = symmetric_matrix(self.data.pair_feature_table(part))
        return self._feats[part]

    def _inputs(self, q1, q2, feats, fitted: FittedSiamese | None) -> dict:
        x = {"q1": np.asarray(q1, dtype=np.int32), "q2": np.asarray(q2, dtype=np.int32)}
        if feats is not None:
            x["feats"] = standardise(feats, fitted)
        return x

    @property
    def n_features(self) -> int:
        feats = self._features("train")
        return 0 if feats is None else feats.shape[1]

    def feature_scaler(self, train_idx: np.ndarray) -> FittedSiamese:
        """Standardisation of the pair features fitted on the fold's train part (a model without weights yet)."""
        feats = self._features("train")
        if feats is None:
            return FittedSiamese(None, None, None)
        mean = feats[train_idx].mean(axis=0)
        std = feats[train_idx].std(axis=0)
        std[std == 0] = 1.0
        return FittedSiamese(None, mean, std)

    def training_arrays(self, train_idx: np.ndarray, valid_idx: np.ndarray, scaler: FittedSiamese):
        """(x, y) for fit and (x, y) of the validation part (one order each: the network is order-free)."""
        q1, q2 = self.data.seq("q1", "train"), self.data.seq("q2", "train")
        y = self.data.labels.astype(np.float32)
        feats = self._features("train")
        x_train = self._inputs(q1[train_idx], q2[train_idx], None if feats is None else feats[train_idx], scaler)
        x_valid = self._inputs(q1[valid_idx], q2[valid_idx], None if feats is None else feats[valid_idx], scaler)
        return x_train, y[train_idx], x_valid, y[valid_idx]

    def new_keras_model(self, n_features: int | None = None):
        n_features = self.n_features if n_features is None else n_features
        p = self.params
        return build_keras_model(max_len=self.data.seq("q1", "train").shape[1],
                                 embedding_matrix=self.data.embedding_matrix(), rnn=p["rnn"], units=p["units"],
                                 bidirectional=p["bidirectional"], fine_tune=p["fine_tune"],
                                 n_features=n_features, dense=p["dense"], dropout=p["dropout"],
                                 learning_rate=p["learning_rate"], pooling=p["pooling"])

    @property
    def eager(self) -> bool:
        mode = self.params["execution"]
        return mode == "eager" or (mode == "auto" and len(self.data.labels) < EAGER_BELOW)

    # ----- CV engine interface ------------------------------------------------------------------
    def fit(self, fold: int, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path) -> FittedSiamese:
        keras, tf = keras_modules()
        fold_dir = Path(fold_dir)
        device_mod.apply_tensorflow(self.choice)
        keras.utils.set_random_seed(self.params["seed"] + fold)
        tf.config.experimental.enable_op_determinism()

        fitted = self.feature_scaler(train_idx)
        n_features = self.n_features

        loop = ResumableFit(fold_dir, checkpoint_every_s=self.checkpoint_every_s, label=f"{self.name} fold {fold + 1}")
        model = loop.resume_model(lambda path: keras.models.load_model(path, custom_objects=custom_objects()))
        fitted.resumed_from_epoch = loop.resumed_from_epoch
        if model is None:
            model = self.new_keras_model(n_features)
        model.run_eagerly = self.eager
        fitted.model = model

        def arrays():
            x_train, y_train, x_valid, y_valid = self.training_arrays(train_idx, valid_idx, fitted)
            return x_train, y_train, (x_valid, y_valid)

        phase = FitPhase(self.params["epochs"], self.params["patience"])
        loop.run(model, [phase], arrays, batch_size=self.params["batch_size"], seed=self.params["seed"] + fold,
                 verbose=self.verbose, sequence_keys=("q1", "q2") if self.params["batching"] == "length" else ())
        self.history = loop.history
        return fitted

    def _predict_rows(self, fitted: FittedSiamese, q1, q2, feats, rows: np.ndarray | None, n: int,
                      desc: str) -> np.ndarray:
        """Predictions over chunks of the (memory-mapped) arrays; nothing else held at once."""
        from tqdm import tqdm

        out = np.empty(n, dtype=np.float64)
        # One batch shape for every call (the last chunk is padded): each new shape would cost a
        # retrace of the predict function, seconds each.
        chunk = min(PREDICT_CHUNK, len(self.data.labels))
        starts = range(0, n, chunk)
        for start in tqdm(starts, desc=desc, unit="chunk", leave=False, disable=len(starts) < 20):
            sel = slice(start, min(start + chunk, n))
            idx = sel if rows is None else rows[sel]
            a, b = np.asarray(q1[idx]), np.asarray(q2[idx])
            f = None if feats is None else np.asarray(feats[idx])
            m = len(a)
            if m < chunk:
                a, b = _pad_rows(a, chunk), _pad_rows(b, chunk)
                f = None if f is None else _pad_rows(f, chunk)
            out[sel] = np.asarray(fitted.model.predict_on_batch(self._inputs(a, b, f, fitted))).ravel()[:m]
        return out

    def predict_valid(self, fitted: FittedSiamese, valid_idx: np.ndarray) -> np.ndarray:
        return self._predict_rows(fitted, self.data.seq("q1", "train"), self.data.seq("q2", "train"),
                                  self._features("train"), np.asarray(valid_idx), len(valid_idx),
                                  f"{self.name} valid")

    def predict_test(self, fitted: FittedSiamese) -> np.ndarray:
        """Every test pair's probability, encoding each distinct test question once (the encoder is
        shared, so a question's encoding is the same in every pair it is in); per pair when the
        features lack question ids or the model predates the layers it needs."""
        qids = self.data.question_ids("test")
        # The cheap checks first: the encoder and head are two new Keras models, built only when used.
        parts = None if qids is None or shared_slots(qids) < MIN_SLOTS_PER_QUESTION else \
            encoder_and_head(fitted.model, self.params, self.n_features)
        if parts is None:
            return self.predict_test_pairs(fitted)  # nothing (worth) sharing: one model, one pass
        q1, q2 = self.data.seq("q1", "test"), self.data.seq("q2", "test")
        return self._predict_distinct(fitted, parts, q1, q2, qids, self._features("test"))

    def predict_test_pairs(self, fitted: FittedSiamese) -> np.ndarray:
        """The test predictions pair by pair, both questions encoded in each pair."""
        q1, q2 = self.data.seq("q1", "test"), self.data.seq("q2", "test")
        return self._predict_rows(fitted, q1, q2, self._features("test"), None, len(q1), f"{self.name} test")

    def _predict_distinct(self, fitted: FittedSiamese, parts, q1, q2, qids, feats) -> np.ndarray:
        from tqdm import tqdm

        encoder, head = parts
        encoder.run_eagerly = head.run_eagerly = self.eager
        n = len(q1)
        qid1, qid2 = (np.asarray(q) for q in qids)
        if len(qid1) != n or len(qid2) != n:
            raise RuntimeError(f"{len(qid1)}/{len(qid2)} question ids for {n} test pairs")
        # Each distinct question once, read from its first pair; inverse maps every pair slot back to it.
        distinct, first, inverse = np.unique(np.concatenate([qid1, qid2]), return_index=True, return_inverse=True)
        dim = int(encoder.outputs[0].shape[-1])
        in_q1 = first < n  # each distinct question's first slot, in [q1 slots..., q2 slots...]
        seqs = np.empty((len(distinct), q1.shape[1]), dtype=np.int32)
        seqs[in_q1] = q1[first[in_q1]]
        seqs[~in_q1] = q2[first[~in_q1] - n]
        codes = np.empty((len(distinct), dim), dtype=np.float32)
        chunk = min(ENCODE_CHUNK, len(distinct))
        calls = length_chunks((seqs != 0).sum(axis=1), chunk, q1.shape[1])
        for part, width in tqdm(calls, desc=f"{self.name} test questions", unit="chunk", leave=False,
                                disable=len(calls) < 20):
            batch = _pad_rows(seqs[part, :width], chunk)  # padded rows: one batch shape per width, one trace
            codes[part] = np.asarray(encoder.predict_on_batch(batch))[: len(part)]
        a_of, b_of = inverse[:n], inverse[n:]
        out = np.empty(n, dtype=np.float64)
        chunk = min(ENCODE_CHUNK, n)
        for start in range(0, n, chunk):
            sel = slice(start, min(start + chunk, n))
            m = sel.stop - sel.start
            x = [_pad_rows(codes[a_of[sel]], chunk), _pad_rows(codes[b_of[sel]], chunk)]
            if feats is not None:
                x.append(_pad_rows(standardise(feats[sel], fitted), chunk))
            out[sel] = np.asarray(head.predict_on_batch(x)).ravel()[:m]
        return out

    def save(self, fitted: FittedSiamese, fold_dir: Path) -> None:
        fold_dir = Path(fold_dir)
        with atomic_path(fold_dir / "model.keras", suffix=".keras") as tmp:
            fitted.model.save(tmp)
        if fitted.feat_mean is not None:
            from pipelines.common.io import save_npz

            save_npz(fold_dir / "feature_scaler.npz", mean=fitted.feat_mean, std=fitted.feat_std)
        # The fold model is saved: the epoch checkpoints (each as large as the model) are no longer needed.
        discard(fold_dir)


def build(data, options: SiameseOptions, ctx, rnn: str) -> SiameseModel:
    """The CV model of the Siamese spec with encoder ``rnn`` (lstm / gru)."""
    from pipelines.common.device import default_device

    fields = dataclasses.asdict(options)
    fields["device"] = options.device or default_device()
    return SiameseModel(data.features, rnn=rnn, seed=ctx.seed,
                        checkpoint_every_s=ctx.checkpoint_every_s, **fields)


SPECS = [ModelSpec(name=f"siamese_{rnn}", options=SiameseOptions, build=functools.partial(build, rnn=rnn), group="siamese networks "
                   "(siamese_lstm, siamese_gru)", help=f"Siamese {rnn.upper()} encoder on word2vec embeddings")
         for rnn in ("lstm", "gru")]
