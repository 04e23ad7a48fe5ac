import numpy as np
import pytest
import torch

from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.sampler import sample
from sdm.errors import SDMError
from sdm.models.pretrained import load_model


@pytest.fixture(scope="module")
def tiny(tiny_pipeline):
    return load_model(tiny_pipeline)


def _draw(tiny, n, **kw):
    return sample(tiny.model, tiny.scheduler_config, n, progress=False, **{"steps": 5, **kw})


def test_same_seed_same_images_and_shape(tiny):
    a, b = _draw(tiny, 3, seed=7), _draw(tiny, 3, seed=7)
    assert a.dtype == np.uint8 and a.shape == (3, 16, 16, 1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _draw(tiny, 3, seed=8))


def test_image_depends_on_its_seed_only(tiny):
    together = _draw(tiny, 5, seed=0, batch_size=5)
    split = _draw(tiny, 5, seed=0, batch_size=2)
    assert np.abs(together.astype(int) - split.astype(int)).max() <= 1
    assert np.abs(together[3].astype(int) - _draw(tiny, 1, seed=3)[0].astype(int)).max() <= 1


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_each_scheduler_is_seeded(tiny, sampler):
    a = _draw(tiny, 2, sampler=sampler, seed=1)
    assert np.array_equal(a, _draw(tiny, 2, sampler=sampler, seed=1))
    assert a.shape == (2, 16, 16, 1)


def test_schedulers_differ(tiny):
    ddpm, ddim, dpm = (_draw(tiny, 2, sampler=s) for s in ("ddpm", "ddim", "dpm"))
    assert not np.array_equal(ddpm, ddim) and not np.array_equal(ddim, dpm)


def test_ddim_matches_hand_written_loop(tiny):
    """An independent DDIM (eta = 0, clipped x0, 'leading' spacing) on the same initial noise."""
    steps, seeds = 4, [11, 12]
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    x = torch.cat([torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(s)) for s in seeds]).double()
    stride = 1000 // steps
    with torch.no_grad():
        for t in range((steps - 1) * stride, -1, -stride):
            eps = tiny.model(x.float(), torch.full((2,), t)).sample.double()
            a, a_prev = abar[t], (abar[t - stride] if t - stride >= 0 else torch.tensor(1.0, dtype=torch.float64))
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    ours = _draw(tiny, 2, sampler="ddim", steps=steps, seed=11)
    assert np.abs(ours.astype(float) - expected).max() <= 1


class NaNModel(torch.nn.Module):
    class config:  # noqa: N801 - mimics a diffusers config object
        sample_size, in_channels = 8, 1

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, return_dict=True):
        return (x * float("nan"),)


def test_nan_model_is_reported():
    with pytest.raises(SDMError, match="NaN"):
        sample(NaNModel(), DDPM_LINEAR_SCHEDULE, 2, steps=3, progress=False)


def test_bad_arguments(tiny):
    for kwargs, match in [({"sampler": "euler"}, "unknown sampler"), ({"steps": 0}, "^steps must be at least 1"),
                          ({"steps": 1001}, "exceeds"), ({"batch_size": 0}, "^batch_size must be at least 1")]:
        with pytest.raises(SDMError, match=match):
            _draw(tiny, 2, **kwargs)
    with pytest.raises(SDMError, match="^num_samples must be at least 1"):
        _draw(tiny, 0)
    with pytest.raises(SDMError, match="config.sample_size"):
        sample(torch.nn.Linear(2, 2), DDPM_LINEAR_SCHEDULE, 1, progress=False)
