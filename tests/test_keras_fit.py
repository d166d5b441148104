"""The resumable Keras fit loop (pipelines/common/keras_fit.py) on a tiny network: an interrupted and resumed
fit equals an uninterrupted one bit for bit, in either phase; early stopping's state survives a resume; the
checkpoint is written by the clock and at each phase's end, and named by the state."""
from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipelines.common import keras_fit  # noqa: E402
from pipelines.common.checkpoint import CheckpointClock  # noqa: E402
from pipelines.common.io import read_json  # noqa: E402


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.5, 96) > 0).astype(np.float32)
    return x[:64], y[:64], (x[64:], y[64:])


def _compiled(model, lr: float):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy")
    model.run_eagerly = True  # tracing costs more than a few eager batches
    return model


def _new_model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.Dropout(0.3)(x)  # draws from its own generator: a resume must restore it
    return _compiled(keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)), 1e-2)


def _load(path):
    model = keras.models.load_model(path)
    model.run_eagerly = True
    return model


def _two_phases(end: int = 4, patience: int = 10, lr=None):
    """Phase "a" (epochs 1-2) at a constant rate, phase "b" (to ``end``) recompiled, on a cosine."""
    return [keras_fit.FitPhase(2, patience, name="a", learning_rate=lambda epoch: 1e-2),
            keras_fit.FitPhase(end, patience, name="b", prepare=lambda m: _compiled(m, 3e-3),
                               learning_rate=lr or (lambda epoch: 3e-3 * (1 + math.cos(math.pi * (epoch - 2) / 4)) / 2))]


def _fit(fold_dir, phases, every_s=0):
    loop = keras_fit.ResumableFit(fold_dir, checkpoint_every_s=every_s, label="tiny")
    model = loop.resume_model(_load) or _new_model()
    model = loop.run(model, phases, _data, batch_size=16, seed=3, verbose=0)
    return loop, model


class _Interrupt:
    """Ctrl-C right after the ``n``-th checkpoint write."""

    def __init__(self, monkeypatch, n: int):
        self.writes, real = 0, CheckpointClock.written

        def written(clock):
            real(clock)
            self.writes += 1
            if self.writes == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(CheckpointClock, "written", written)


@pytest.mark.parametrize("interrupt_after", [1, 3])  # in phase "a", in phase "b" (its optimizer state loaded)
def test_a_resumed_fit_equals_an_uninterrupted_one(tmp_path, monkeypatch, interrupt_after):
    straight_loop, straight = _fit(tmp_path / "straight", _two_phases())
    with monkeypatch.context() as patch:
        _Interrupt(patch, interrupt_after)
        with pytest.raises(KeyboardInterrupt):
            _fit(tmp_path / "resumed", _two_phases())
    state = read_json(tmp_path / "resumed" / keras_fit.STATE_FILE)
    assert state["epoch"] == interrupt_after and (tmp_path / "resumed" / state["checkpoint"]).exists()
    loop, resumed = _fit(tmp_path / "resumed", _two_phases())
    assert loop.resumed_from_epoch == interrupt_after
    assert loop.history == straight_loop.history and len(loop.history["loss"]) == 4
    assert loop.history["learning_rate"][2] == pytest.approx(3e-3)  # phase b's cosine, from its first epoch
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the fit ends on the best epoch's weights
    val_loss = straight_loop.history["val_loss"]
    assert straight_loop.state.best_epoch == int(np.argmin(val_loss)) and straight_loop.state.best == min(val_loss)
    x_valid, y_valid = _data()[2]
    assert straight.evaluate(x_valid, y_valid, batch_size=16, verbose=0) == pytest.approx(min(val_loss), rel=1e-5)


def test_early_stopping_state_survives_a_resume(tmp_path, monkeypatch):
    """At rate 0 the weights never move, so val_loss never improves on epoch 1: patience 3 stops the phase
    after epoch 4, whether or not the fit was interrupted after epoch 2 (a resume that forgot the wait
    would run to epoch 5)."""
    frozen = [keras_fit.FitPhase(10, 3, prepare=lambda m: _compiled(m, 0.0), learning_rate=lambda epoch: 0.0)]
    with monkeypatch.context() as patch:
        _Interrupt(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            _fit(tmp_path, frozen)
    assert read_json(tmp_path / keras_fit.STATE_FILE)["wait"] == 1
    loop, _ = _fit(tmp_path, frozen)
    assert len(loop.history["loss"]) == 4 and loop.state.stopped and loop.state.best_epoch == 0
    # a fit resumed after it ended trains nothing (its data are not even built) and ends on the best weights
    again = keras_fit.ResumableFit(tmp_path, label="tiny")
    model = again.run(again.resume_model(_load), frozen, lambda: pytest.fail("nothing to train"), batch_size=16,
                      seed=3)
    assert again.resumed_from_epoch == 4 and len(again.history["loss"]) == 4
    best = _load(tmp_path / again.state.checkpoint)
    best.load_weights(tmp_path / again.state.best_weights)
    for a, b in zip(best.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_by_the_clock_and_at_each_phase_end(tmp_path, monkeypatch):
    writes = []
    real = CheckpointClock.written
    monkeypatch.setattr(CheckpointClock, "written", lambda clock: (writes.append(1), real(clock)))
    loop, _ = _fit(tmp_path, _two_phases(end=5), every_s=3600)
    assert len(writes) == 2  # the clock never came due: once at the end of each phase
    state = read_json(tmp_path / keras_fit.STATE_FILE)
    assert state["epoch"] == 5 and state["phase"] == 1 and state["checkpoint"] == "epoch_5.keras"
    assert state["best_weights"] == f"best_{state['best_epoch'] + 1}.weights.h5"
    # only the files the state names are left; discard removes them and the state
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([keras_fit.STATE_FILE, state["checkpoint"],
                                                                 state["best_weights"]])
    keras_fit.discard(tmp_path)
    assert list(tmp_path.iterdir()) == []
    writes.clear()
    _fit(tmp_path, _two_phases(end=3), every_s=0)
    assert len(writes) == 3  # every epoch


def test_a_state_without_its_checkpoint_starts_afresh(tmp_path):
    (tmp_path / keras_fit.STATE_FILE).write_text('{"epochs_done": 2, "phase": 0}')  # no checkpoint named
    loop = keras_fit.ResumableFit(tmp_path)
    assert loop.resumed_from_epoch == 0 and loop.resume_model(_load) is None and loop.state.epoch == 0


def test_a_new_phase_starts_from_the_best_weights_so_far(tmp_path):
    """Phase "a"'s second epoch, at a rate far too high, is worse than its first: phase "b" starts from
    epoch 1's weights (best_1.weights.h5), not from the last ones (epoch_2.keras)."""
    seen = []

    def prepare(model):
        last = _load(tmp_path / "epoch_2.keras")
        best = _load(tmp_path / "epoch_2.keras")
        best.load_weights(tmp_path / "best_1.weights.h5")
        seen.append([any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), ref.get_weights()))
                     for ref in (best, last)])
        _compiled(model, 1e-3)

    phases = [keras_fit.FitPhase(2, 10, name="a", learning_rate=lambda epoch: (1e-2, 50.0)[epoch]),
              keras_fit.FitPhase(3, 10, name="b", prepare=prepare)]
    loop, _ = _fit(tmp_path, phases, every_s=3600)
    assert loop.history["val_loss"][1] > loop.history["val_loss"][0]  # the premise: epoch 2 made it worse
    assert seen == [[False, True]]  # equal to the best weights, different from the last


# ----- length-bucketed batches (checkpoint.length_batches / epoch_batches(lengths=...)) ----------------------
def _padded(lengths, width=12, seed=0):
    rng = np.random.default_rng(seed)
    seqs = np.zeros((len(lengths), width), dtype=np.int32)
    for i, n in enumerate(lengths):
        seqs[i, :n] = rng.integers(1, 50, n)
    return seqs


def test_length_batches_are_a_seeded_permutation_of_length_sorted_batches():
    from pipelines.common.checkpoint import length_batches

    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 13, 1003)
    order = length_batches(lengths, 16, seed=5, epoch=2, pool_batches=8)
    assert sorted(order.tolist()) == list(range(1003))  # every row once
    np.testing.assert_array_equal(order, length_batches(lengths, 16, seed=5, epoch=2, pool_batches=8))
    assert not np.array_equal(order, length_batches(lengths, 16, seed=5, epoch=3, pool_batches=8))
    full = order[: 1003 // 16 * 16].reshape(-1, 16)
    spread = np.ptp(lengths[full], axis=1).mean()
    random_spread = np.ptp(lengths[rng.permutation(1003)[: full.size].reshape(-1, 16)], axis=1).mean()
    assert spread < random_spread / 3  # similar lengths share a batch
    # the batches' order is shuffled: not sorted by length over the epoch
    assert not np.all(np.diff(lengths[full].max(axis=1)) >= 0)


def test_length_bucketed_batches_are_cut_to_their_longest_row_and_resume_alike():
    import tensorflow as tf  # noqa: F401

    from pipelines.common.checkpoint import epoch_batches

    rng = np.random.default_rng(2)
    l1, l2 = rng.integers(0, 13, 70), rng.integers(1, 13, 70)
    x = {"q1": _padded(l1), "q2": _padded(l2, seed=1), "f": rng.normal(size=(70, 3)).astype(np.float32)}
    y = np.arange(70, dtype=np.float32)  # the row number: which rows each batch holds
    dataset, steps = epoch_batches(x, y, 8, seed=4, initial_epoch=0, epochs=2, lengths={"q1": l1, "q2": l2})
    batches = list(dataset.take(2 * steps).as_numpy_iterator())
    assert steps == 9
    for epoch in range(2):
        rows = np.concatenate([b[1] for b in batches[epoch * steps:(epoch + 1) * steps]]).astype(int)
        assert sorted(rows.tolist()) == list(range(70))
    for bx, by in batches:
        rows = by.astype(int)
        assert bx["q1"].shape[1] == max(1, l1[rows].max()) and bx["q2"].shape[1] == l2[rows].max()
        np.testing.assert_array_equal(bx["q1"], x["q1"][rows, : bx["q1"].shape[1]])  # only padding cut
        assert bx["f"].shape == (len(rows), 3)
    # a fit resumed at epoch 1 sees the batches an uninterrupted one saw in epoch 1
    resumed, _ = epoch_batches(x, y, 8, seed=4, initial_epoch=1, epochs=2, lengths={"q1": l1, "q2": l2})
    for a, b in zip(resumed.take(steps).as_numpy_iterator(), batches[steps:]):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0]["q2"], b[0]["q2"])
