"""Runs sized in wall-clock minutes instead of steps: a user on a CPU thinks in minutes.

How many steps fit is unknown until some have run. The caller plans from a trial step's cost (it
must size whatever depends on the step count, a fine-tuning pool, before the loop); the training
loop then fits the run once more, from the speed of its first `MEASURED_STEPS` steps, and from there
the cosine decay ends at the last step that fits. The fit comes early, inside the warm-up of any
run worth timing, so the schedule after it is the one a run of that many steps would have had.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sdm.diffusion.train_settings import TrainSettings

MEASURED_STEPS = 20        # steps whose mean time fixes how many fit
MAX_WARMUP_SHARE = 0.025   # a timed run's warm-up takes at most this share of its steps (50 of 2,000)


def fitted_warmup(warmup: int, steps: int) -> int:
    """The warm-up of a run of `steps` sized by time: `warmup`, or less in a run too short for it."""
    return min(warmup, max(1, math.ceil(MAX_WARMUP_SHARE * steps)))


@dataclass
class TimeBudget:
    """`seconds` of wall time from `started` (a `clock()` reading taken when the run began, so that what
    precedes the loop counts too; by default, when the budget is made); `warmup` is the run's warm-up
    before it is fitted. `on_fit(steps)` hears the step count the loop settles on."""

    seconds: float
    warmup: int
    started: float | None = None
    on_fit: Callable[[int], None] | None = None
    clock: Callable[[], float] = time.perf_counter
    _loop: tuple[int, float] = (0, 0.0)

    def __post_init__(self):
        if self.started is None:
            self.started = self.clock()

    def left(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def start_loop(self, step: int) -> None:
        """The training loop starts (or resumes) at `step`: its speed is measured from here."""
        self._loop = (step, self.clock())

    def due(self, step: int) -> bool:
        """Whether the steps are to be fitted after `step`: once, `MEASURED_STEPS` into the loop."""
        return step - self._loop[0] == MEASURED_STEPS

    def steps_that_fit(self, done: int, step_seconds: float) -> int:
        """`done` plus the steps of `step_seconds` each that fit in the time left (at least one more)."""
        return done + max(1, int(self.left() / max(step_seconds, 1e-9)))

    def fit(self, settings: TrainSettings, step: int) -> TrainSettings:
        """`settings` with the steps that fit after `step` at the loop's speed so far, and a warm-up sized
        to them."""
        first, began = self._loop
        steps = self.steps_that_fit(step, (self.clock() - began) / max(1, step - first))
        if self.on_fit is not None:
            self.on_fit(steps)
        return replace(settings, steps=steps, warmup=fitted_warmup(self.warmup, steps))
