"""The weighted spike code: hand-computed spike trains, the receivers' Horner sum, popcount counting,
its energy, thresholds calibrated for its levels, and the settings it refuses."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from calibration import CalibrationStats, ConversionConfig, NeuronConfig
from calibration.rules import quantise
from convert.commands import convert as convert_cli
from sdm.errors import ConfigError
from sdm.snn.coding import SpikeCode, popcount
from sdm.snn.modes import counting, keeping_counts
from sdm.snn.neurons import IFNeuron, LIFNeuron

W3 = SpikeCode("weighted", 3)  # steps worth 4, 2, 1 sevenths of theta


def test_spike_trains_spell_the_count_in_bits_by_hand():
    # theta 1, K 3: m = floor(7 x + 0.5). x = 0.6 -> 4.7 -> 4 = 100b; 0.95 -> 7 = 111b; 0.3 -> 2 = 010b;
    # 0.05 -> 0; 3.0 saturates at 7. Each spike is emitted at theta's size.
    neuron = IFNeuron(1.0, v_init=0.5)
    x = torch.tensor([0.6, 0.95, 0.3, 0.05, 3.0], dtype=torch.float64)
    with torch.no_grad(), counting([neuron]) as counts:
        train = neuron.constant_response(x, W3)
    assert train.T.tolist() == [[1, 0, 0], [1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]]
    assert W3.window(train).tolist() == pytest.approx([4 / 7, 1.0, 2 / 7, 0.0, 1.0])
    assert counts.spikes() == 1 + 3 + 1 + 0 + 3 and counts.neuron_steps() == 5 * 3


def test_signed_neurons_spike_on_the_side_of_the_drive():
    # x = -0.3, theta_n = 0.5: |x| / theta_n x 7 + 0.5 = 4.7 -> 4 = 100b of -0.5 spikes; the window value
    # is -0.5 x 4 / 7. A side without a threshold stays silent.
    neuron = IFNeuron(1.0, neg_threshold=0.5, signed=True, v_init=0.5)
    with torch.no_grad():
        train = neuron.constant_response(torch.tensor([-0.3, 0.3], dtype=torch.float64), W3)
    assert train.T.tolist() == [[-0.5, 0, 0], [0, 1, 0]]
    silent = IFNeuron(1.0, neg_threshold=0.0, signed=True, v_init=0.5)
    with torch.no_grad():
        assert silent.constant_response(torch.tensor([-0.8]), W3).abs().sum() == 0


@pytest.mark.parametrize("signed", [False, True])
def test_rate_form_equals_the_simulated_bits(signed):
    """The closed form (one rounding to 2^K - 1 levels) against the simulated K steps, in float64, with
    per-channel thresholds and the spike counts of both paths (popcount in the rate form)."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64) * 1.5
    theta, theta_n = torch.tensor([0.7, 2.0, 1.1, 0.4]), torch.tensor([0.2, 0.0, 0.5, 0.3])
    for K in (1, 2, 4, 6):
        code = SpikeCode("weighted", K)
        steps, rate = (IFNeuron(theta, neg_threshold=theta_n, signed=signed, v_init=0.5) for _ in range(2))
        with torch.no_grad(), counting([steps, rate]) as counts:
            expected = code.window(steps.constant_response(x, code))
            got = rate.constant_rate(x, code)
        assert torch.allclose(got, expected, rtol=0, atol=1e-12)
        assert counts.spikes([steps]) == counts.spikes([rate]) and counts.neuron_steps([rate]) == x.numel() * K
        trained = IFNeuron(theta, neg_threshold=theta_n, signed=signed, v_init=0.5).constant_rate(
            x.clone().requires_grad_(), code)  # the differentiable path gives the same numbers
        assert trained.requires_grad and torch.allclose(trained, expected, rtol=0, atol=1e-12)


def test_the_receivers_horner_sum_is_the_weighted_sum():
    x_seq = torch.randn(4, 3, 2, dtype=torch.float64)
    weights = torch.tensor([8, 4, 2, 1], dtype=torch.float64).view(4, 1, 1) / 15
    assert torch.allclose(SpikeCode("weighted", 4).window(x_seq), (x_seq * weights).sum(0), rtol=0, atol=1e-15)
    assert torch.equal(SpikeCode("rate", 4).window(x_seq), x_seq.mean(0))
    assert SpikeCode("weighted", 4).levels == 15 and SpikeCode("rate", 4).levels == 4


def test_popcount_and_its_differentiable_stand_in():
    counts = torch.tensor([0.0, 1, 2, 3, 4, 7, 8, 15])
    assert popcount(counts, 4).tolist() == [0, 1, 1, 2, 1, 3, 1, 4]
    m = counts.clone().requires_grad_()
    spikes = SpikeCode("weighted", 4).spikes(m)
    spikes.sum().backward()
    assert spikes.tolist() == [0, 1, 1, 2, 1, 3, 1, 4]  # the forward value is exact
    # The gradient is the secant's slope to zero, popcount(m) / m, and 1 at m = 0 (the first spike).
    assert m.grad.tolist() == pytest.approx([1, 1, 1 / 2, 2 / 3, 1 / 4, 3 / 7, 1 / 8, 4 / 15])
    rate = torch.tensor([3.0], requires_grad=True)
    SpikeCode("rate", 4).spikes(rate).sum().backward()
    assert rate.grad.item() == 1.0  # a rate code's spikes are its count


def test_kept_counts_are_popcounts_for_the_energy_objective():
    neuron = IFNeuron(1.0, v_init=0.5)
    neuron.learn_thresholds()
    with keeping_counts(torch.nn.ModuleList([neuron])) as neurons:
        neuron.constant_rate(torch.tensor([0.6, 0.95, 0.3]), W3)
    assert neurons[0].counts[0].tolist() == [1, 3, 1] and neurons[0].counts[0].requires_grad


@pytest.mark.parametrize("T", [2, 3])
def test_mse_thresholds_are_chosen_for_the_codes_levels(T):
    """The weighted code at T steps is calibrated as a (2^T - 1)-level quantiser: its mse threshold is the
    rate code's at T' = 2^T - 1 steps, and better than the rate code's own threshold for those levels."""
    torch.manual_seed(0)
    from calibration.observer import ActivationObserver

    values = torch.relu(torch.randn(16, 4, 8, 8))
    observer = ActivationObserver("site", "relu", per_batch=10**6)
    observer(values)
    stats = observer.summary()

    def threshold(coding, steps):
        config = ConversionConfig(T=steps, coding=coding, per_channel=False, neuron=NeuronConfig(signed=False))
        return CalibrationStats("", {"site": stats}, config).thresholds().sites["site"]["threshold"]

    weighted, rate_same_levels, rate = threshold("weighted", T), threshold("rate", 2**T - 1), threshold("rate", T)
    assert weighted == rate_same_levels and weighted != rate
    error = [np.mean((v - quantise(v, th, 2**T - 1, 0.5)) ** 2) for v, th in [(values.numpy(), weighted),
                                                                             (values.numpy(), rate)]]
    assert error[0] < error[1]


def test_settings_the_weighted_code_refuses():
    with pytest.raises(ConfigError, match="IF neurons"):
        ConversionConfig(coding="weighted", neuron=NeuronConfig(kind="lif")).validate()
    with pytest.raises(ConfigError, match="window"):
        ConversionConfig(coding="weighted", analog_mode="running").validate()
    with pytest.raises(ConfigError, match="1..24"):
        ConversionConfig(coding="weighted", T=30).validate()
    with pytest.raises(Exception, match="weighted code needs integrate-and-fire"):
        LIFNeuron(1.0).constant_response(torch.ones(2), W3)


@pytest.mark.parametrize("args, fragment", [(["--neuron", "lif"], "--coding"), (["--analog", "running"], "--coding")])
def test_cli_refuses_in_one_line(tiny_pipeline, tmp_path, args, fragment):
    result = CliRunner().invoke(convert_cli.main, ["--ckpt", str(tiny_pipeline), "--coding", "weighted", *args,
                                                   "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_records_before_the_weighted_code_were_rate_coded():
    """A statistics file or saved SNN written before the code existed records no `coding`: it ran the rate
    code, whatever the default is now; a record that names a code keeps it."""
    assert ConversionConfig.from_dict({"T": 4, "per_channel": True}).coding == "rate"
    for coding in ("rate", "weighted"):
        assert ConversionConfig.from_dict(ConversionConfig(coding=coding).to_dict()).coding == coding
