"""When a Keras fit writes its resumable checkpoint (model with optimizer state, best weights,
early-stopping state): at most every ``interval_s`` seconds, and always when training ends.

Writing after every epoch made the pipeline's fit measurably slower than a plain ``model.fit``
when epochs are short (ResNet50 from scratch on 205 images: ~5 s to save, 9% of a 55 s epoch;
a Siamese epoch on the 9k real pairs: 7 s). With a clock the cost is bounded by the interval,
whatever the epoch length, and an interrupted fold loses at most the interval plus one epoch.
Both the cervix networks and the Siamese networks use it; ``interval_s=0`` writes every epoch.
"""
from __future__ import annotations

import time
from typing import Callable

from pipelines import config


class CheckpointClock:
    def __init__(self, interval_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.interval_s = config.CHECKPOINT_EVERY_S if interval_s is None else float(interval_s)
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        """True when the last write is at least ``interval_s`` old."""
        return self.interval_s <= 0 or self._clock() - self._last >= self.interval_s

    def written(self) -> None:
        self._last = self._clock()
