"""One resumable Keras fit loop: phases, early stopping, a learning-rate schedule, checkpoints by the clock.

Every Keras network of the pipelines trains through ``ResumableFit`` (one per fold and fold folder):

    loop = ResumableFit(fold_dir, checkpoint_every_s=..., label="net fold 1")
    model = loop.resume_model(load) or build()          # the checkpointed model, else a new one
    model = loop.run(model, [FitPhase(end_epoch, patience, ...), ...], data, batch_size=..., seed=...)
    history = loop.history                              # {"loss": [...], "val_loss": [...], ...}
    ...save the fold model...; discard(fold_dir)        # the checkpoint files are no longer needed

A fit is a list of phases (``FitPhase``): each trains up to its ``end_epoch`` (exclusive, counted over the
whole fit) with early stopping of its own (``patience`` epochs without a better monitored value end the
phase); ``prepare(model)`` sets a phase up (trainable layers, compile) when it starts afresh (a phase
continued from a checkpoint keeps the loaded model's flags and optimizer state), and ``learning_rate(epoch)``
(a function of the epoch alone, so a resumed fit stays on the same curve) sets the optimizer's rate at each
epoch. The best value is kept over all phases; a new phase starts from the best weights so far, and the fit
ends on them. The monitored value is the first of ``monitor`` in the epoch's logs: ``val_log_loss`` (the
plain log loss, logged as a metric when the loss is label-smoothed), else ``val_loss``, else ``loss``.
Early stopping follows keras.callbacks.EarlyStopping (min_delta 0, the first epoch counts as the best).

Checkpoints in ``fold_dir``: the model with its optimizer state as ``epoch_<e>.keras``, the best weights as
``best_<e>.weights.h5`` (written when the best epoch changed), then ``train_state.json`` (``FitState``:
epochs done, phase, early-stopping state, history, the layers' random generators), which names them. The
state is written last, so it only ever names complete files; files it no longer names are removed after
it. A write happens at most every ``checkpoint_every_s`` seconds (``CheckpointClock``, default
config.CHECKPOINT_EVERY_S; 0: every epoch) and at the end of every phase. A re-run of the fold loads the
checkpoint and continues at the next epoch with the state it had; epoch e's batches are a shuffle seeded by
(seed, e) alone (``checkpoint.epoch_batches``) and the generators are restored, so a resumed fit ends on
the weights of an uninterrupted one, bit for bit.

Keras is imported inside the functions that use it.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipelines.common.checkpoint import (CheckpointClock, epoch_batches, restore_rng_state, rng_state,
                                         save_weights_as)
from pipelines.common.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
MONITOR = ("val_log_loss", "val_loss", "loss")


@dataclass
class FitPhase:
    end_epoch: int  # exclusive, counted over the whole fit
    patience: int  # epochs without a better monitored value that end the phase
    name: str = "fit"
    prepare: Callable[[Any], None] | None = None  # set the model up when the phase starts afresh
    learning_rate: Callable[[int], float] | None = None  # epoch (0-based, over the whole fit) -> rate


@dataclass
class FitState:
    """What ``train_state.json`` holds: enough to continue a fit where its last checkpoint left it."""
    epoch: int = 0  # epochs done
    phase: int = 0  # index of the phase the epochs done are in
    stopped: bool = False  # that phase was ended by early stopping
    checkpoint: str | None = None  # the model after ``epoch`` epochs (with its optimizer state)
    best_weights: str | None = None  # the best epoch's weights
    best: float | None = None  # the best monitored value so far (over every phase)
    best_epoch: int = -1
    wait: int = 0  # epochs since the best one, in this phase
    history: dict = field(default_factory=dict)  # per logged key, one value per epoch done
    rng: list = field(default_factory=list)  # the layers' random generators (checkpoint.rng_state)

    @classmethod
    def read(cls, fold_dir: Path) -> "FitState | None":
        """The state of ``fold_dir``, None when there is none to continue (none, or one without its
        checkpoint file)."""
        path = Path(fold_dir) / STATE_FILE
        if not path.exists():
            return None
        data = read_json(path)
        names = {f.name for f in fields(cls)}
        if not data.get("checkpoint") or not (Path(fold_dir) / data["checkpoint"]).exists():
            log.info("%s names no checkpoint that exists: the fold starts afresh", path)
            return None
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, fold_dir: Path) -> None:
        write_json(Path(fold_dir) / STATE_FILE, asdict(self))


class ResumableFit:
    """One fold's fit (``run``), resumable from the checkpoints it writes in ``fold_dir``."""

    def __init__(self, fold_dir: Path, *, checkpoint_every_s: float | None = None, label: str = "fit",
                 monitor: Sequence[str] = MONITOR, clock: CheckpointClock | None = None):
        self.fold_dir = Path(fold_dir)
        self.label = label
        self.monitor = tuple(monitor)
        self.clock = clock or CheckpointClock(checkpoint_every_s)
        saved = FitState.read(self.fold_dir)
        self.state = saved or FitState()
        self.resumed_from_epoch = saved.epoch if saved else 0  # 0: nothing to resume
        self._continuing = False  # the model is the loaded checkpoint, in the middle of state.phase
        self._best_unsaved = None  # the best epoch's weights, not yet on disk

    @property
    def history(self) -> dict:
        return self.state.history

    def resume_model(self, load: Callable[[Path], Any]):
        """The checkpointed model (``load(path)``), its random generators restored; None when there is no
        checkpoint to continue."""
        if not self.resumed_from_epoch:
            return None
        model = load(self.fold_dir / self.state.checkpoint)
        restore_rng_state(model, self.state.rng)
        self._continuing = True
        return model

    def run(self, model, phases: Sequence[FitPhase], data: Callable[[], tuple], *, batch_size: int, seed: int,
            verbose: int = 2, class_weight: dict | None = None, sequence_keys: Sequence[str] = ()):
        """Train ``model`` through ``phases`` from where the state left it; returns it with the best
        weights. ``data()`` gives (x, y, validation_data), called only when an epoch is left to train.
        ``sequence_keys``: the keys of ``x`` (a dict) holding right-padded token ids (0 = padding) of a model
        that masks padding: the batches are then length-bucketed (``checkpoint.epoch_batches``)."""
        import keras

        state = self.state
        if self.resumed_from_epoch:
            where = f" (phase {phases[min(state.phase, len(phases) - 1)].name})" if len(phases) > 1 else ""
            log.info("%s: resuming from the checkpoint after epoch %d%s", self.label, state.epoch, where)
        arrays = None
        for p in range(state.phase, len(phases)):
            phase = phases[p]
            if p > state.phase:  # entering a new phase, from the best weights so far
                state.phase, state.stopped, state.wait = p, False, 0
                if state.best_weights:
                    model.load_weights(self.fold_dir / state.best_weights)
                self._continuing = False
            if state.stopped or state.epoch >= phase.end_epoch:
                continue
            if not self._continuing and phase.prepare is not None:
                phase.prepare(model)
            self._continuing = False
            if arrays is None:  # the arrays and their sequences' lengths, once for every phase
                arrays = data()
                lengths = {k: (np.asarray(arrays[0][k]) != 0).sum(axis=1) for k in sequence_keys} or None
            x, y, validation = arrays
            callbacks = []
            if phase.learning_rate is not None:
                callbacks.append(keras.callbacks.LearningRateScheduler(
                    lambda epoch, _lr, rate=phase.learning_rate: rate(epoch)))
                log.info("%s: phase %s, epochs %d-%d, lr %.2g", self.label, phase.name, state.epoch + 1,
                         phase.end_epoch, phase.learning_rate(state.epoch))
            elif len(phases) > 1:
                log.info("%s: phase %s, epochs %d-%d", self.label, phase.name, state.epoch + 1, phase.end_epoch)
            callbacks.append(_callback_class()(self, phase.patience))
            batches, steps = epoch_batches(x, y, batch_size, seed, state.epoch, phase.end_epoch, lengths=lengths)
            model.fit(batches, steps_per_epoch=steps, validation_data=validation, validation_batch_size=batch_size,
                      epochs=phase.end_epoch, initial_epoch=state.epoch, class_weight=class_weight,
                      callbacks=callbacks, verbose=verbose, shuffle=False)
        if state.best_weights:
            model.load_weights(self.fold_dir / state.best_weights)
            log.info("%s: best %.4f at epoch %d", self.label, state.best, state.best_epoch + 1)
        return model

    # ----- the callback's work ------------------------------------------------------------------------
    def epoch_end(self, model, epoch: int, logs: dict, patience: int) -> None:
        """Record the epoch, track early stopping (the best weights in memory until written), write the
        checkpoint when the clock says so."""
        state = self.state
        for key, value in logs.items():
            state.history.setdefault(key, []).append(float(value))
        state.epoch = epoch + 1
        current = next((float(logs[k]) for k in self.monitor if k in logs), None)
        if current is not None:
            if state.best is None or current < state.best:
                state.best, state.best_epoch, state.wait = current, epoch, 0
                self._best_unsaved = model.get_weights()
            else:
                state.wait += 1
                if state.wait >= patience:
                    model.stop_training = True
                    state.stopped = True
                    log.info("%s: early stop, no better %s for %d epochs (best %.4f at epoch %d)", self.label,
                             next(k for k in self.monitor if k in logs), patience, state.best, state.best_epoch + 1)
        if self.clock.epoch_finished(epoch):
            self.write(model)

    def write(self, model) -> None:
        """The model, the best weights (when they changed), then the state naming both; then the files it
        no longer names go."""
        state = self.state
        old = (state.checkpoint, state.best_weights)
        state.checkpoint = f"epoch_{state.epoch}.keras"
        with atomic_path(self.fold_dir / state.checkpoint, suffix=".keras") as tmp:
            model.save(tmp)
        if self._best_unsaved is not None:
            state.best_weights = f"best_{state.best_epoch + 1}.weights.h5"
            save_weights_as(model, self._best_unsaved, self.fold_dir / state.best_weights)
            self._best_unsaved = None
        state.rng = rng_state(model)  # a .keras file does not keep the generators' states
        state.write(self.fold_dir)
        self.clock.written()
        for name in old:
            if name and name not in (state.checkpoint, state.best_weights):
                (self.fold_dir / name).unlink(missing_ok=True)

def discard(fold_dir: Path) -> None:
    """Remove a fit's checkpoint files and its state from ``fold_dir`` (once the fold's model is saved)."""
    path = Path(fold_dir) / STATE_FILE
    if path.exists():
        saved = read_json(path)
        for name in (saved.get("checkpoint"), saved.get("best_weights")):
            if name:
                (Path(fold_dir) / name).unlink(missing_ok=True)
        path.unlink()


_CALLBACK: dict = {}


def _callback_class():
    """The Keras callback of ``ResumableFit``, defined once after Keras is imported."""
    if not _CALLBACK:
        import keras

        class FitCallback(keras.callbacks.Callback):
            def __init__(self, fit: ResumableFit, patience: int):
                super().__init__()
                self.fit, self.patience = fit, patience

            def on_epoch_end(self, epoch, logs=None):
                self.fit.epoch_end(self.model, epoch, logs or {}, self.patience)

            def on_train_end(self, logs=None):
                if self.fit.clock.pending is not None:  # the phase's last epochs, not yet written
                    self.fit.write(self.model)

        _CALLBACK["FitCallback"] = FitCallback
    return _CALLBACK["FitCallback"]
