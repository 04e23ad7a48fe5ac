"""Resumable sharded sampling, and energy accounting counted by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.shards import gather_shards, keyed_work_dir, sample_sharded
from sdm.errors import SDMError
from sdm.models.pretrained import load_model
from sdm.snn.energy import E_AC_PJ, E_MAC_PJ, LayerActivity, ann_macs, energy_report, record_synaptic_layers

SETTINGS = {"sampler": "ddim", "steps": 3, "batch_size": 4, "threshold_scale": 1.0}


class Killed(Exception):
    pass


def test_killed_evaluation_resumes_to_the_same_final_set(tiny_pipeline, tmp_path):
    model = load_model(tiny_pipeline).model
    full = gather_shards(sample_sharded(model, DDPM_LINEAR_SCHEDULE, 10, tmp_path / "a", settings=SETTINGS, seed=5,
                                        shard_size=4, progress=False), 10, 5)
    drawn = []

    def kill_after_first(k):
        drawn.append(k)
        if len(drawn) == 1:
            raise Killed

    with pytest.raises(Killed):
        sample_sharded(model, DDPM_LINEAR_SCHEDULE, 10, tmp_path / "b", settings=SETTINGS, seed=5, shard_size=4,
                       progress=False, on_shard=kill_after_first)
    assert sorted(p.name for p in (tmp_path / "b").glob("shard_*.npz")) == ["shard_00000.npz"]
    paths = sample_sharded(model, DDPM_LINEAR_SCHEDULE, 10, tmp_path / "b", settings=SETTINGS, seed=5, shard_size=4,
                           progress=False, on_shard=drawn.append)
    assert drawn == [0, 1, 2]  # the finished shard was not drawn again
    resumed = gather_shards(paths, 10, 5)
    assert resumed.shape == (10, 16, 16, 1) and np.array_equal(resumed, full)


def test_a_larger_n_reuses_the_full_shards(tiny_pipeline, tmp_path):
    model = load_model(tiny_pipeline).model
    kw = dict(settings=SETTINGS, seed=0, shard_size=2, progress=False)
    first = gather_shards(sample_sharded(model, DDPM_LINEAR_SCHEDULE, 3, tmp_path / "w", **kw), 3, 0)
    drawn = []
    paths = sample_sharded(model, DDPM_LINEAR_SCHEDULE, 6, tmp_path / "w", on_shard=drawn.append, **kw)
    assert drawn == [1, 2]  # shard 0 (seeds 0, 1) reused; shard 1 held only seed 2, so it is drawn again
    more = gather_shards(paths, 6, 0)
    assert np.array_equal(more[:3], first) and len(more) == 6


def test_ranks_split_the_shards_and_settings_cannot_mix(tiny_pipeline, tmp_path):
    model = load_model(tiny_pipeline).model
    kw = dict(settings=SETTINGS, seed=0, shard_size=2, progress=False)
    for rank in (0, 1):
        drawn = []
        sample_sharded(model, DDPM_LINEAR_SCHEDULE, 7, tmp_path / "w", rank=rank, world=2, on_shard=drawn.append, **kw)
        assert drawn == [k for k in range(4) if k % 2 == rank]
    assert len(gather_shards(sorted((tmp_path / "w").glob("shard_*.npz")), 7, 0)) == 7
    with pytest.raises(SDMError, match="steps differ"):
        sample_sharded(model, DDPM_LINEAR_SCHEDULE, 7, tmp_path / "w", **{**kw, "settings": {**SETTINGS, "steps": 4}})
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(SDMError, match="model"):
        sample_sharded(model, DDPM_LINEAR_SCHEDULE, 7, tmp_path / "w", **kw)


def test_keyed_work_dirs_share_samples_of_one_model_and_setting_only(tiny_pipeline, tmp_path):
    model = load_model(tiny_pipeline).model
    key = keyed_work_dir(tmp_path, model, SETTINGS)
    assert key.parent == tmp_path
    assert keyed_work_dir(tmp_path, model, {**SETTINGS, "batch_size": 64}) == key  # batching does not change images
    others = {keyed_work_dir(tmp_path, model, {**SETTINGS, "threshold_scale": 0.95}),
              keyed_work_dir(tmp_path, model, {**SETTINGS, "steps": 4}), keyed_work_dir(tmp_path, model, SETTINGS, seed=1),
              keyed_work_dir(tmp_path, model, SETTINGS, shard_size=2)}
    assert key not in others and len(others) == 4
    sample_sharded(model, DDPM_LINEAR_SCHEDULE, 2, key, settings=SETTINGS, progress=False)
    drawn = []  # a second command with another batch size finds the samples under the same key
    again = {**SETTINGS, "batch_size": 1}
    sample_sharded(model, DDPM_LINEAR_SCHEDULE, 2, keyed_work_dir(tmp_path, model, again), settings=again,
                   progress=False, on_shard=drawn.append)
    assert drawn == []
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert keyed_work_dir(tmp_path, model, SETTINGS) != key


def test_synaptic_layer_counts_by_hand():
    """A 1x1 conv (2 -> 3 channels) on 2 x 2 maps, 2 images, of which 3 of 16 inputs are spikes."""
    conv = nn.Conv2d(2, 3, 1)
    x = torch.zeros(2, 2, 2, 2)
    x[0, 0, 0, 0] = x[0, 1, 1, 1] = x[1, 0, 0, 1] = 1.0
    layers = record_synaptic_layers({"conv": conv}, lambda: conv(x), batch=2, role=lambda name: "spiking")
    (layer,) = layers
    # dense: per image 3 x 2 x 2 outputs x 2 inputs each = 24 MACs; 3 / 16 inputs are non-zero.
    assert layer.dense_ops == 24 and layer.input_rate == 3 / 16
    assert layer.accumulates == pytest.approx(4.5) and layer.energy_pj == pytest.approx(4.5 * E_AC_PJ)
    analog = LayerActivity("a", "analog", 24, 1.0)
    assert analog.macs == 24 and analog.energy_pj == pytest.approx(24 * E_MAC_PJ)


def test_ann_macs_by_hand():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x, t):
            return self.conv(x)

    # 4 output channels x 5 x 5 positions x 9 taps = 900 MACs per image
    assert ann_macs(Net(), torch.zeros(2, 1, 5, 5), torch.zeros(2)) == 900


def test_ann_macs_count_attention_products_on_a_cpu():
    class Attend(nn.Module):
        def forward(self, x, t):  # 2 heads, 5 tokens of 3 channels
            q = x.reshape(x.shape[0], 2, 5, 3)
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    # Q K^T: 2 heads x 5 x 5 scores x 3 = 150 MACs; A V as many: 300 per image
    assert ann_macs(Attend(), torch.randn(2, 30), torch.zeros(2)) == 300


def test_energy_report_totals():
    class Fake(nn.Module):
        class config:  # noqa: N801
            T = 4

        def layer_activity(self, x, t):
            return [LayerActivity("s", "spiking", 1000.0, 0.25), LayerActivity("a", "analog", 40.0, 1.0)]

    report = energy_report(Fake(), torch.zeros(1), torch.zeros(1), denoising_steps=10)
    step = report["per_denoising_step"]
    assert step["accumulates"] == 250 and step["macs"] == 40
    assert step["energy_uJ"] == pytest.approx((250 * 0.9 + 40 * 4.6) / 1e6)
    assert report["per_image"]["energy_mJ"] == pytest.approx((250 * 0.9 + 40 * 4.6) * 10 / 1e9)
    assert report["ann"]["macs_per_step"] == pytest.approx(260)  # dense ops / T
    with pytest.raises(SDMError, match="not a spiking model"):
        energy_report(nn.Linear(1, 1), torch.zeros(1), torch.zeros(1), denoising_steps=1)


def test_a_constant_analog_input_is_counted_once():
    """T = 3 steps of 2 images folded into a batch of 6: a 1x1 conv (2 -> 3 channels) on 2 x 2 maps does
    24 MACs per image and step. Fed the same input at every step it computes once (24 MACs per image);
    fed an input that changes, three times (72); fed spikes, every synapse of every step counts (72 dense)."""
    conv = nn.Conv2d(2, 3, 1)
    image = torch.randn(2, 2, 2, 2)
    repeated = image.repeat(3, 1, 1, 1)
    changing = torch.randn(6, 2, 2, 2)
    (const,) = record_synaptic_layers({"c": conv}, lambda: conv(repeated), batch=2, role=lambda name: "input")
    (varying,) = record_synaptic_layers({"c": conv}, lambda: conv(changing), batch=2, role=lambda name: "analog")
    (spikes,) = record_synaptic_layers({"c": conv}, lambda: conv((repeated > 0).float()), batch=2,
                                       role=lambda name: "spiking")
    assert const.macs == 24 and varying.macs == 72
    assert spikes.dense_ops == 72 and spikes.macs == 0
