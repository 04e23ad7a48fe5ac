"""Runs sized in minutes: the steps that fit, by hand on a scripted clock (the fine-tuning run is in
test_finetune.py)."""

from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.wall_clock import MEASURED_STEPS, TimeBudget, fitted_warmup


def _clock(readings):
    values = iter(readings)
    return lambda: next(values)


def test_steps_that_fit_by_hand():
    # Made at 0 s with 100 s; the loop starts at 10 s (the pool took 10 s) and its first 20 steps end at
    # 12 s: 0.1 s a step, 88 s left, 880 more steps, 900 in all; warm-up at most 2.5 % of them (ceil 22.5).
    # The fit is settled at 12.5 s; the next is due halfway through the 880 left, at step 460. Those 440
    # steps took 55 s (0.125 s each, a CPU slowing under load): 32.5 s left, 260 more, 720 in all.
    fitted = []
    budget = TimeBudget(100.0, warmup=50, clock=_clock([0.0, 10.0, 12.0, 12.5, 67.5, 67.5]), on_fit=fitted.append)
    budget.start_loop(0)
    assert not budget.due(MEASURED_STEPS - 1) and budget.due(MEASURED_STEPS)
    first = TrainSettings(data="x", out="y", steps=5, warmup=7)
    settings = budget.settle(first, MEASURED_STEPS, budget.fitted_steps(MEASURED_STEPS))
    assert (settings.steps, settings.warmup) == (900, 23) and budget.due(460) and not budget.due(459)
    settings = budget.settle(settings, 460, budget.fitted_steps(460))
    assert (settings.steps, settings.warmup) == (720, 23) and fitted == [900, 720]
    assert budget.due(460 + 130)


def test_a_resumed_loop_measures_from_where_it_resumed_and_always_takes_one_more_step():
    budget = TimeBudget(10.0, warmup=50, started=0.0, clock=_clock([100.0, 101.0, 102.0]))
    budget.start_loop(300)
    assert budget.due(300 + MEASURED_STEPS)
    steps = budget.fitted_steps(320)
    assert steps == 321  # the time is spent: one more step
    budget.settle(TrainSettings(data="x", out="y"), 320, steps)
    assert not any(budget.due(s) for s in range(320, 400))  # too few left to fit again


def test_warmup_fits_short_runs_only():
    assert fitted_warmup(50, 10_000) == 50 and fitted_warmup(50, 400) == 10 and fitted_warmup(50, 1) == 1

