"""The distillation pool and objective: trajectory eps, pool sizing, the analog twin, feature targets,
and the one progress bar's time estimate."""

import copy

import pytest
import torch

from calibration import ConversionConfig, calibrate, calibration_pairs, prepare
from convert import convert
from convert.finetune import FinetuneSettings
from convert.finetune.distill import (
    PAIR_SEED,
    FeatureTargets,
    distillation_objective,
    pool_evaluations,
    pool_inputs,
    pool_size,
    site_inputs,
    teacher_pairs,
)
from convert.finetune.energy_objective import BudgetController, SpikeEnergy
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.sampler import trajectory
from sdm.diffusion.snr import min_snr_weights
from sdm.models.presets import build_unet
from sdm.progress import StagedBar


@pytest.fixture(scope="module")
def tiny_snn():
    torch.manual_seed(5)
    unet = build_unet("tiny").eval()
    observed = calibrate(prepare(unet, ConversionConfig(T=2)), calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 32),
                         progress=False)
    return unet, convert(observed)


def test_trajectory_eps_is_the_models_output_at_each_pair(tiny_snn):
    unet, _ = tiny_snn
    x, t, eps = trajectory(unet, DDPM_LINEAR_SCHEDULE, range(3), steps=4)
    assert x.shape[0] == t.shape[0] == eps.shape[0] == 12
    with torch.no_grad():
        again = unet(x, t).sample
    assert torch.allclose(eps, again, atol=1e-5)


def test_the_pool_takes_one_teacher_pass_per_pair(tiny_snn):
    """A pool of 120 trajectory pairs: 3 paths of 50 steps, one teacher batch per step; each eps is the
    teacher's at its own pair."""
    unet, _ = tiny_snn
    calls = []
    hook = unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        x, t, eps = teacher_pairs(unet, DDPM_LINEAR_SCHEDULE, "trajectory", 120, seed=0)
    finally:
        hook.remove()
    assert len(x) == len(t) == len(eps) == 120
    assert (len(calls), 0) == pool_evaluations("trajectory", 120) == (50, 0)
    with torch.no_grad():
        assert torch.allclose(unet(x[:8], t[:8]).sample, eps[:8], atol=1e-5)


def test_a_student_pool_walks_the_students_paths_with_the_teachers_labels(tiny_snn):
    """The student's pool: the inputs of the student's own DDIM paths (not the teacher's), each labelled
    with the teacher's eps; 3 paths of 50 student steps, then 2 teacher batches of up to 64 to label 120."""
    unet, snn = tiny_snn
    teacher_calls, student_calls = [], []
    hooks = [unet.register_forward_hook(lambda *_: teacher_calls.append(1)),
             snn.register_forward_hook(lambda *_: student_calls.append(1))]
    try:
        with snn.executing("rate"):
            x, t, eps = teacher_pairs(unet, DDPM_LINEAR_SCHEDULE, "student", 120, seed=0, student=snn)
    finally:
        for hook in hooks:
            hook.remove()
    assert (len(teacher_calls), len(student_calls)) == pool_evaluations("student", 120) == (2, 50)
    assert pool_inputs("student", 120) == (120, 150) and pool_inputs("trajectory", 120) == (150, 0)
    assert pool_inputs("data", 120) == (120, 0)
    with snn.executing("rate"):
        path_x, path_t, _ = trajectory(snn, DDPM_LINEAR_SCHEDULE, range(PAIR_SEED, PAIR_SEED + 3), steps=50)
        teacher_x, _, _ = trajectory(unet, DDPM_LINEAR_SCHEDULE, range(PAIR_SEED, PAIR_SEED + 3), steps=50)
    assert torch.equal(x, path_x[:120]) and torch.equal(t, path_t[:120])
    assert not torch.allclose(x[60:], teacher_x[60:120])  # the student's paths part from the teacher's
    with torch.no_grad():
        assert torch.allclose(unet(x[::7], t[::7]).sample, eps[::7], atol=1e-5)


def test_the_default_pool_is_sized_to_the_run():
    assert pool_size(400, 32) == 3200          # 12,800 draws, each pair drawn 4 times
    assert pool_size(2000, 32) == 16_000
    assert pool_size(30, 32) == 250            # 240, rounded up to whole 50-step trajectories
    assert pool_size(1, 64) == 64              # never under one batch
    assert pool_size(10**6, 32) == 51_200      # capped
    assert pool_size(400, 32, reuse=1) == 12_800  # every draw a pair of its own


def test_the_analog_twin_is_the_ann_and_its_features_have_no_error(tiny_snn):
    unet, snn = tiny_snn
    snn.set_executor("rate")
    twin = snn.analog_twin()
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([10, 500, 990])
    with torch.no_grad():
        assert torch.allclose(twin(x, t).sample, unet(x, t).sample, atol=1e-5)
        targets = FeatureTargets(snn)
        with site_inputs(twin, targets.sites) as same:
            twin(x, t)
        assert targets.loss(same, x, t).item() == pytest.approx(0.0, abs=1e-12)
        with site_inputs(snn, targets.sites) as student:
            snn(x, t)
        error = targets.loss(student, x, t).item()
    # by hand: the mean over sites of each site's squared error relative to the ANN's mean square there
    with torch.no_grad(), site_inputs(twin, targets.sites) as reference:
        twin(x, t)
    by_hand = sum(float(((student[s] - reference[s]) ** 2).sum() / (reference[s] ** 2).sum())
                  for s in targets.sites) / len(targets.sites)
    assert error > 1e-4 and error == pytest.approx(by_hand, rel=1e-5)
    assert set(targets.sites) == {n for n, a in snn.sites().items() if a.spiking} and not any(p.requires_grad for p in twin.parameters())


def test_staged_bar_counts_seconds_of_work(monkeypatch):
    """Stage a: 4 items estimated at 1 s, stage b: 2 items estimated at 5 s (14 s in all). After two a
    items measured at 3 s each, a costs 3 s: the total becomes 4 x 3 + 2 x 5 = 22 s, 6 s of it done."""
    clock = iter([0.0, 3.0, 6.0, 6.0, 16.0])
    monkeypatch.setattr("sdm.progress.time.perf_counter", lambda: next(clock))
    bar = StagedBar("job", {"a": (4, 1.0), "b": (2, 5.0)}, disable=True)
    assert bar.bar.total == pytest.approx(14.0)
    bar.update()
    bar.update()
    assert (bar.bar.total, bar.bar.n) == pytest.approx((22.0, 6.0))
    bar.start("b")  # a ended after 2 of its 4 items (a cached pool): only what ran counts
    assert bar.bar.total == pytest.approx(6.0 + 10.0)
    bar.update()  # b's first item took 10 s
    assert (bar.bar.total, bar.bar.n) == pytest.approx((26.0, 16.0))
    bar.close()


def test_an_unreadable_pool_is_not_reused(tmp_path):
    """A pool cut short (a killed write, a full disk) reads as none, so the run draws it again; a whole
    one reads back as it was stored."""
    from convert.finetune.distill import store_pairs, stored_pairs

    path, key = tmp_path / "pairs.safetensors", {"seed": 0}
    pairs = (torch.zeros(2, 1, 4, 4), torch.tensor([1, 2]), torch.ones(2, 1, 4, 4))
    assert stored_pairs(path, key) is None
    store_pairs(path, key, pairs)
    assert all(torch.equal(a, b) for a, b in zip(stored_pairs(path, key), pairs, strict=True))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert stored_pairs(path, key) is None
    redrawn = (torch.full((2, 1, 4, 4), 3.0), torch.tensor([1, 2]), torch.ones(2, 1, 4, 4))
    store_pairs(path, key, redrawn)  # the redrawn pool replaces the damaged file, and is reused
    assert all(torch.equal(a, b) for a, b in zip(stored_pairs(path, key), redrawn, strict=True))


def test_a_pool_is_reused_only_under_its_own_key(tiny_snn, tmp_path):
    """Another size, seed, source or teacher finds no stored pool; the same settings find it."""
    from convert.finetune.distill import pool_key, store_pairs, stored_pairs

    unet, snn = tiny_snn
    path = tmp_path / "pairs.safetensors"
    base = dict(source="trajectory", pairs=48, seed=0, data=None)
    store_pairs(path, pool_key(unet, snn, **base), (torch.full((2, 1), 7.0), torch.tensor([1, 2]), torch.ones(2, 1)))
    assert stored_pairs(path, pool_key(unet, snn, **base))[0][0].item() == 7
    other_teacher = copy.deepcopy(unet)
    with torch.no_grad():
        next(other_teacher.parameters()).add_(1e-3)
    for key in [pool_key(unet, snn, **{**base, "pairs": 32}), pool_key(unet, snn, **{**base, "seed": 1}),
                pool_key(unet, snn, **{**base, "source": "student"}), pool_key(other_teacher, snn, **base)]:
        assert stored_pairs(path, key) is None


def test_the_snr_weighted_loss_weights_each_pairs_error_and_logs_the_plain_mse(tiny_snn, tmp_path):
    unet, snn = tiny_snn
    student = copy.deepcopy(snn)
    student.set_executor("rate")
    path = teacher_pairs(unet, DDPM_LINEAR_SCHEDULE, "trajectory", 50, 0)  # one DDIM-50 path, t from 999 to 0
    x, t, eps = (v[torch.tensor([0, 20, 40, 45, 47, 48, 49, 49])] for v in path)
    settings = FinetuneSettings(batch_size=8, pairs=8, snr_gamma=1.0, late_share=0.0)
    objective = distillation_objective((x, t, eps), settings, "cpu", SpikeEnergy(student, unet, x[:2], t[:2]),
                                       BudgetController(0.0, None, tmp_path), None, dict(DDPM_LINEAR_SCHEDULE))
    loss, logged = objective(student, 0, torch.Generator().manual_seed(3))
    idx = torch.multinomial(torch.ones(8), 8, replacement=True, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        errors = (student(x[idx], t[idx], return_dict=False)[0] - eps[idx]).square().flatten(1).mean(1)
    weights = min_snr_weights(t[idx], dict(DDPM_LINEAR_SCHEDULE), 1.0)
    assert loss.item() == pytest.approx((weights * errors).mean().item(), rel=1e-5)
    assert logged["mse"] == pytest.approx(errors.mean().item(), rel=1e-5)
    assert weights.min() < 0.5  # the draw holds low-noise pairs, so the weighting changes the loss
