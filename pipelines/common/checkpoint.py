"""When a Keras fit writes its resumable checkpoint (model with optimizer state, best weights,
early-stopping state): at most every ``interval_s`` seconds, and always when training ends.

Writing after every epoch made the pipeline's fit measurably slower than a plain ``model.fit``
when epochs are short (BENCHMARKS.md has the figures). With a clock the cost is bounded by the
interval, whatever the epoch length, and an interrupted fold loses at most the interval plus one epoch.
``interval_s=0`` writes every epoch.

The building blocks of the resumable Keras fit loop (pipelines/common/keras_fit.py, which every Keras
network trains through): its callback calls ``epoch_finished(epoch)`` at the end of every epoch and
writes when it returns True; in ``on_train_end`` it writes ``pending`` (the last finished epoch no
write has covered), if any; every write ends with ``written()``. Below: the training batches of each
epoch and the layers' random generators, which make a resumed fit equal an uninterrupted one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines import config
from pipelines.common.io import atomic_path


class CheckpointClock:
    def __init__(self, interval_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.interval_s = config.CHECKPOINT_EVERY_S if interval_s is None else float(interval_s)
        self._clock = clock
        self._last = clock()
        self.pending: int | None = None  # the last finished epoch not yet written

    def due(self) -> bool:
        """True when the last write is at least ``interval_s`` old."""
        return self.interval_s <= 0 or self._clock() - self._last >= self.interval_s

    def epoch_finished(self, epoch: int) -> bool:
        """Note ``epoch`` as unwritten; True when a write is due."""
        self.pending = epoch
        return self.due()

    def written(self) -> None:
        self._last = self._clock()
        self.pending = None


def save_weights_as(model, weights: list, path: Path) -> None:
    """Write ``weights`` (a ``model.get_weights()`` list kept from an earlier epoch) to ``path``
    (atomically) through ``model``, whose own weights are left as they were."""
    current = model.get_weights()
    model.set_weights(weights)
    try:
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    finally:
        model.set_weights(current)


# ---------------------------------------------------------------- a resumed fit equals an uninterrupted one
# Two random streams decide a Keras fit besides the weights: the order of the training rows in each epoch,
# and the layers' own generators (Dropout, augmentation), whose states a .keras file does not keep. Both
# are made part of the checkpoint: epoch e's order is a shuffle seeded by (seed, e) alone, so a fit resumed
# at epoch e sees the order an uninterrupted one saw; the generators' states are written with the
# checkpoint and restored with it (BENCHMARKS.md, section resume, for the comparison).

def epoch_batches(x, y, batch_size: int, seed: int, initial_epoch: int, epochs: int, *,
                  lengths: dict | None = None, pool_batches: int = 64):
    """(tf.data.Dataset, steps_per_epoch) of the training batches of epochs ``initial_epoch`` .. ``epochs-1``,
    for ``model.fit(dataset, steps_per_epoch=..., initial_epoch=..., epochs=...)``; ``x`` an array or a
    dict of arrays (one row per sample), ``y`` an array.

    ``lengths`` ({key of x: int array of each row's length}): the arrays under those keys are right-padded
    sequences (a model that masks the padding), and the batches are length-bucketed (``length_batches``):
    rows of similar length together, each such array cut to its batch's longest row, so no step over
    padding a whole batch shares is computed. Each epoch's batches still depend on (seed, epoch) alone."""
    import tensorflow as tf

    n = len(y)
    steps = -(-n // batch_size)
    xs = tf.nest.map_structure(tf.convert_to_tensor, x)
    ys = tf.convert_to_tensor(y)
    last = max(epochs, initial_epoch)

    if lengths is None:
        def one_epoch(epoch):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

        rows = tf.data.Dataset.range(initial_epoch, last).flat_map(one_epoch)
    else:
        key = np.max(np.stack([np.asarray(v) for v in lengths.values()]), axis=0)
        orders = np.stack([length_batches(key, batch_size, seed, e, pool_batches)
                           for e in range(initial_epoch, last)]) if last > initial_epoch else np.zeros((0, n), np.int64)
        rows = tf.data.Dataset.from_tensor_slices(orders).flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        row_lengths = {k: tf.convert_to_tensor(np.asarray(v, dtype=np.int32)) for k, v in lengths.items()}

    def gather(rows, data):
        inputs, targets = data
        batch = tf.nest.map_structure(lambda t: tf.gather(t, rows), inputs)
        if lengths is not None:  # each padded sequence array cut to the batch's longest row (at least 1 step)
            for k, length in row_lengths.items():
                width = tf.maximum(tf.reduce_max(tf.gather(length, rows)), 1)
                batch[k] = batch[k][:, :width]
        return batch, tf.gather(targets, rows)

    # The arrays enter as one dataset element zipped with every batch of row numbers, as Keras feeds
    # arrays itself, rather than as constants copied into the map function's graph.
    data = tf.data.Dataset.from_tensors((xs, ys)).repeat()
    dataset = (tf.data.Dataset.zip((rows, data)).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    # Keras' options for its own dataset of arrays: tf.data's default graph rewrites gain nothing here.
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options), steps


def length_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, pool_batches: int = 64) -> np.ndarray:
    """Epoch ``epoch``'s row order, ``batch_size`` rows a batch, length-bucketed: the rows shuffled (seeded by
    (seed, epoch) alone), cut into pools of ``pool_batches`` batches, each pool sorted by length and cut
    into batches, and the full batches shuffled (the one short batch, if any, stays last, so every other
    batch is whole). Rows of similar length share a batch while batches and their order stay random."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    n = len(lengths)
    order = rng.permutation(n)
    pool = batch_size * max(1, int(pool_batches))
    for start in range(0, n, pool):
        part = order[start:start + pool]
        order[start:start + pool] = part[np.argsort(lengths[part], kind="stable")]
    full = n // batch_size
    batches = order[: full * batch_size].reshape(full, batch_size)[rng.permutation(full)]
    return np.concatenate([batches.ravel(), order[full * batch_size:]]).astype(np.int64)


def _seed_states(model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def rng_state(model) -> list[list[int]]:
    """The states of ``model``'s random generators (Dropout, augmentation), in the layers' order, for the
    checkpoint (by position: a reloaded model names its generators anew, seed_generator_2, ...)."""
    return [np.asarray(v.numpy()).tolist() for v in _seed_states(model)]


def restore_rng_state(model, saved: list | None) -> bool:
    """Set ``model``'s generators to the states ``rng_state`` saved; False (nothing changed) when the
    checkpoint has none (written before they were saved) or they do not fit the model."""
    states = _seed_states(model)
    if not saved or len(saved) != len(states):
        return False
    for variable, value in zip(states, saved):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return True
