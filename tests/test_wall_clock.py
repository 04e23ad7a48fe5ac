"""Runs sized in minutes: the steps that fit, by hand on a scripted clock, and a timed fine-tuning run."""

import json
from itertools import count

import pytest

from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.wall_clock import MEASURED_STEPS, TimeBudget, fitted_warmup


def _clock(readings):
    values = iter(readings)
    return lambda: next(values)


def test_steps_that_fit_by_hand():
    # made at 0 s with 100 s; the loop starts at 10 s (the pool took 10 s) and is fitted at 12 s, after
    # 20 steps: 0.1 s a step; at the next reading (13 s) 87 s are left: 870 more steps, 890 in all.
    fitted = []
    budget = TimeBudget(100.0, warmup=50, clock=_clock([0.0, 10.0, 12.0, 13.0]), on_fit=fitted.append)
    budget.start_loop(0)
    assert not budget.due(MEASURED_STEPS - 1) and budget.due(MEASURED_STEPS)
    settings = budget.fit(TrainSettings(data="x", out="y", steps=5, warmup=7), MEASURED_STEPS)
    assert settings.steps == 890 and fitted == [890]
    assert settings.warmup == 23  # at most 2.5 % of 890 steps: ceil(22.25), not the 50 asked for


def test_a_resumed_loop_measures_from_where_it_resumed_and_always_takes_one_more_step():
    budget = TimeBudget(10.0, warmup=50, started=0.0, clock=_clock([100.0, 101.0, 102.0]))
    budget.start_loop(300)
    assert budget.due(300 + MEASURED_STEPS)
    assert budget.fit(TrainSettings(data="x", out="y"), 320).steps == 321  # the time is spent: one more step


def test_warmup_fits_short_runs_only():
    assert fitted_warmup(50, 10_000) == 50 and fitted_warmup(50, 400) == 10 and fitted_warmup(50, 1) == 1

