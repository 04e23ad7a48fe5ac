"""Runs sized in wall-clock minutes instead of steps: a user on a CPU thinks in minutes.

How many steps fit is unknown until some have run. The caller plans from a trial step's cost (it
must size whatever depends on the step count, a fine-tuning pool, before the loop); the training
loop then fits the run from the speed of its first `MEASURED_STEPS` steps, and again halfway through
what is left each time (a CPU's speed drifts under sustained load: on the 2 cores here the first
steps ran 10 % faster than the rest), so that the cosine decay ends at the last step that fits. The
first fit comes inside the warm-up and fixes it; later ones move the decay's end by a few percent.
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
    _mark: tuple[int, float] = field(default=(0, 0.0), init=False, repr=False)  # speed measured from (step, time)
    _due: int | None = field(default=None, init=False, repr=False)  # the step after which the next fit comes
    _fitted: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        if self.started is None:
            self.started = self.clock()

    def start_loop(self, step: int) -> None:
        """The training loop starts (or resumes) at `step`: its speed is measured from here."""
        self._mark, self._due = (step, self.clock()), step + MEASURED_STEPS

    def due(self, step: int) -> bool:
        """Whether the steps are to be fitted after `step`."""
        return step == self._due

    def steps_that_fit(self, done: int, step_seconds: float, now: float) -> int:
        """`done` plus the steps of `step_seconds` each that fit in the time left at `now` (at least one)."""
        left = self.seconds - (now - self.started)
        return done + max(1, int(left / max(step_seconds, 1e-9)))

    def fitted_steps(self, step: int) -> int:
        """The steps that fit, seen after `step`, at the speed since the last fit (the main process's
        count: `settle` makes every process follow it)."""
        (marked, began), now = self._mark, self.clock()
        return self.steps_that_fit(step, (now - began) / max(1, step - marked), now)

    def settle(self, settings: TrainSettings, step: int, steps: int) -> TrainSettings:
        """`settings` with `steps` (from `fitted_steps`); the first fit sizes the warm-up too. The next
        fit is due halfway through the steps left, while more than `MEASURED_STEPS` are left."""
        self._mark = (step, self.clock())
        self._due = step + (steps - step) // 2 if steps - step > MEASURED_STEPS else None
        if self.on_fit is not None:
            self.on_fit(steps)
        warmup = settings.warmup if self._fitted else fitted_warmup(self.warmup, steps)
        self._fitted = True
        return replace(settings, steps=steps, warmup=warmup)
