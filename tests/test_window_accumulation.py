"""Window accumulation: synaptic layers fed by the analog residual stream run once per window on its
mean, in both executors, with the same outputs and one T-th of the multiplications."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from safetensors.torch import load_file

from calibration import ConversionConfig, NeuronConfig
from calibration.graph import activation_sites, capture
from convert import ConvertedUNet
from sdm.models.pretrained import load_model
from sdm.snn.energy import E_AC_PJ, E_MAC_PJ, SNNSpend, energy_report

DATA = Path(__file__).parent / "data"


class Residual(ModelMixin, ConfigMixin):
    """conv_in (1 -> 2, 1x1) -> h; a spiking branch c(relu(h)) added to h; b (2 -> 1, 1x1) reads the sum.

    The sum is the analog residual stream: it changes from step to step with the branch's spikes."""

    @register_to_config
    def __init__(self, sample_size=4, in_channels=1, out_channels=1):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 2, 1, bias=False)
        self.c = torch.nn.Conv2d(2, 2, 1, bias=False)
        self.b = torch.nn.Conv2d(2, 1, 1, bias=False)
        for conv, value in ((self.a, 1.0), (self.c, 0.5), (self.b, 1.0)):
            torch.nn.init.constant_(conv.weight, value)

    def forward(self, sample, timestep, return_dict=True):
        h = self.a(sample)
        return (self.b(h + self.c(F.relu(h))),)


def _residual_snn(analog_mode="window", T=4, coding="rate"):
    toy = Residual().eval()
    sites = activation_sites(capture(toy))
    thresholds = {s.name: {"threshold": 1.0, "neg_threshold": 0.0} for s in sites}
    config = ConversionConfig(T=T, coding=coding, neuron=NeuronConfig(signed=False), analog_mode=analog_mode,
                              readout="spikes")
    return toy, ConvertedUNet(dict(toy.config), config, thresholds, unet=toy)


def test_energy_of_a_residual_block_by_hand():
    """A 4 x 4 image of 0.5s, T = 4, threshold 1: h = 0.5 in both channels; relu(h) fires 2 of 4 steps
    (floor(4 * 0.5 + 0.5) = 2), so the stream h + c(spikes) changes from step to step.
    Per image and denoising step: a, 16 pixels x 2 x 1 = 32 MACs (the image repeats: once); c, fed
    spikes, 16 x 2 x 2 = 64 synapses x 4 steps x rate 0.5 = 128 ACs; b reads the stream once per window,
    16 x 1 x 2 = 32 MACs, after 32 values x (4 - 1) = 96 accumulation additions. The ANN: 128 MACs."""
    toy, snn = _residual_snn()
    assert snn.summary.window_accumulated == ["b"] and snn.summary.per_step_analog == []
    x, t = torch.full((1, 1, 4, 4), 0.5), torch.zeros(1, dtype=torch.long)
    report = energy_report(snn, x, t, denoising_steps=1, ann=toy)
    step = report["per_denoising_step"]
    assert step["macs"] == 64 and step["accumulates"] == pytest.approx(128 + 96)
    assert report["per_image"]["window_accumulation_acs"] == 96
    assert report["ann"]["macs_per_step"] == 128
    # Without the ANN, the SNN's own layers give it, one spiking step each: 32 + 64 + 32.
    assert energy_report(snn, x, t, denoising_steps=1)["ann"]["macs_per_step"] == 128
    assert report["energy_ratio_snn_to_ann"] == pytest.approx((64 * E_MAC_PJ + 224 * E_AC_PJ) / (128 * E_MAC_PJ))
    # The second reference: 9 levels are 4 bits; a 4 x 8-bit integer MAC is 0.2 x 32 / 64 + 0.1 = 0.2 pJ,
    # so the quantised ANN spends 128 x 0.2 pJ per step. The SNN's MACs and accumulations alone (380.8 pJ)
    # exceed that: no firing rate breaks even. Spike ACs against integer MACs alone: 0.2 / (4 x 0.9).
    quantised = report["quantised_ann"]
    assert quantised["activation_bits"] == 4 and quantised["pJ_per_mac"] == pytest.approx(0.2)
    assert quantised["energy_uJ_per_step"] == pytest.approx(128 * 0.2 / 1e6)
    assert quantised["break_even_firing_rate_fp32"] is None
    assert quantised["break_even_firing_rate_no_analog_fp32"] == pytest.approx(0.2 / 3.6)
    # The same SNN in the integer arithmetic: 64 MACs of 8-bit inputs at 0.3 pJ, 224 accumulates at 0.1 pJ:
    # 41.6 pJ, 1.625x the quantised ANN's 25.6. Its MACs and 96 window additions alone (28.8 pJ) exceed
    # that, so no firing rate breaks even; spike ACs against integer MACs alone: 0.2 / (4 x 0.1).
    assert quantised["snn_integer_energy_uJ_per_step"] == pytest.approx((64 * 0.3 + 224 * 0.1) / 1e6)
    assert quantised["energy_ratio_snn_integer_to_quantised_ann"] == pytest.approx(41.6 / 25.6)
    assert quantised["break_even_firing_rate_integer"] is None
    assert quantised["break_even_firing_rate_no_analog_integer"] == pytest.approx(0.2 / 0.4)
    assert report["spike_energy_ratio_to_ann"] == pytest.approx(128 * E_AC_PJ / (128 * E_MAC_PJ))
    # Simulated step by step, b multiplies at every step: 4 x 32 MACs, no accumulation.
    _, running = _residual_snn("running")
    assert running.summary.per_step_analog == ["b"] and running.summary.window_accumulated == []
    step = energy_report(running, x, t, denoising_steps=1, ann=toy)["per_denoising_step"]
    assert step["macs"] == 32 + 4 * 32


def test_both_executors_run_the_accumulated_layer_once_and_agree():
    toy, snn = _residual_snn()
    calls = []
    snn.graph.get_submodule("window_value").register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        steps = snn(x, t).sample
        snn.set_executor("rate")
        rate = snn(x, t).sample
    # The step executor averages the stream (3 images) before b, then decodes the output; b sees [3, ...].
    assert calls[0] == (3, 2, 4, 4)
    assert torch.allclose(steps, rate, atol=1e-6)
    # Exact: h = x; spikes count clamp(floor(4x + 0.5), 0, 4) / 4; b sums both channels.
    count = torch.clamp(torch.floor(4 * x + 0.5), 0, 4) / 4
    assert torch.allclose(rate, 2 * (x + count), atol=1e-6)


def test_the_embedded_models_outputs_are_unchanged():
    """Step executor outputs of the embedded DDPM converted at T = 4, against those of the pass before
    window accumulation (tests/data/make_step_outputs.py, same thresholds and inputs)."""
    loaded = load_model()
    thresholds = json.loads((DATA / "step_thresholds.json").read_text())
    snn = ConvertedUNet(dict(loaded.model.config), ConversionConfig(T=4, coding="rate"), thresholds, unet=loaded.model)
    assert len(snn.summary.window_accumulated) == 10  # 2 downsamplers, 2 upsamplers, 6 shortcuts
    stored = load_file(DATA / "step_outputs.safetensors")
    snn.set_executor("steps")
    with torch.no_grad():
        out = snn(stored["x"], stored["t"]).sample
    # Float rounding alone: 1.1e-7 measured here; a layer left out of the mean, or averaged twice, is > 1e-2.
    error = (out - stored["out"]).norm() / stored["out"].norm()
    assert error < 1e-3, error


def test_energy_of_the_weighted_code_by_hand():
    """The same block in the weighted code at T = 3: relu(0.5) is m = floor(0.5 x 7 + 0.5) = 4 = 100b, one
    spike in three steps. c: 64 synapses x 3 steps x rate 1/3 = 64 ACs (one per synapse per emitted spike);
    b reads the stream once per window after 32 values x 2 accumulation additions, and its Horner read
    doubles those 32 values twice: 64 doublings, reported as non-synaptic operations. The output is
    b(h + c(4/7)) = 2 x (0.5 + 4/7) = 15/7, in both executors."""
    toy, snn = _residual_snn(T=3, coding="weighted")
    x, t = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    snn = snn.double()
    for executor in ("steps", "rate"):
        with torch.no_grad(), snn.executing(executor):
            assert snn(x, t).sample.flatten().tolist() == pytest.approx([15 / 7] * 16, abs=1e-12)
    report = energy_report(snn, x, t, denoising_steps=1, ann=toy.double())
    assert report["coding"] == "weighted" and "weighted code" in report["code"]
    assert report["per_denoising_step"]["macs"] == 64
    assert report["per_denoising_step"]["accumulates"] == pytest.approx(64 + 64)
    assert report["analog_nonsynaptic_flops_per_image"]["doublings (weighted code, Horner)"] == 64
    # 7 levels a side (15 signed) are 4 bits: a 4 x 8-bit integer MAC, 0.2 x 32 / 64 + 0.1 = 0.2 pJ. At T = 4
    # the weighted code's 31 levels need 5 bits: 0.225 pJ.
    assert report["quantised_ann"]["levels"] == 15 and report["quantised_ann"]["pJ_per_mac"] == pytest.approx(0.2)
    _, four = _residual_snn(T=4, coding="weighted")
    quantised = energy_report(four, x.float(), t, denoising_steps=1)["quantised_ann"]
    assert quantised["levels"] == 31 and quantised["pJ_per_mac"] == pytest.approx(0.225)


def test_break_even_firing_rates_by_hand():
    """10 analog MACs, 100 accumulates of which 80 from spikes, 200 synapses fed by spikes, T = 4. Integer:
    the fixed part is 10 x 0.3 + 20 x 0.1 = 5 pJ, so 20 pJ is reached at (20 - 5) / (200 x 0.1) = 0.75.
    FP32: 10 x 4.6 + 20 x 0.9 = 64 pJ, so 100 pJ at (100 - 64) / (200 x 0.9) = 0.2; 50 pJ never."""
    spend = SNNSpend(macs=10, accumulates=100, spike_accumulates=80, spiking_dense_ops=200, T=4)
    assert spend.pj(integer=True) == pytest.approx(3 + 10)
    assert spend.break_even(20, integer=True) == pytest.approx(0.75)
    assert spend.break_even(100, integer=False) == pytest.approx(0.2)
    assert spend.break_even(50, integer=False) is None
