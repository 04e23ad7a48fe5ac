"""The graph pass: exactness against quantised ANNs, convergence in T, coverage, files and errors."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from calibration import ConversionConfig, NeuronConfig, calibrate, calibration_pairs, prepare, probe_pairs
from calibration.graph import activation_sites, capture, is_encoder_site
from convert import ConvertedUNet, UnsupportedOpError, convert
from convert.accounting import compute_profile
from convert.report import eps_fidelity
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.shards import keyed_work_dir
from sdm.errors import SDMError
from sdm.models.presets import build_unet, preset_config
from sdm.snn.neurons import LIFNeuron


def _calibrated(act_fn: str, seed: int = 0):
    """A tiny UNet calibrated for the rate code (T up to 64 and running mode; tests of the weighted code
    retarget the statistics at it)."""
    torch.manual_seed(seed)
    unet = build_unet("tiny", act_fn=act_fn).eval()
    observed = calibrate(prepare(unet, ConversionConfig(coding="rate", per_channel=False)),
                         calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 32), progress=False)
    return unet, observed


def _convert(observed, **changes):
    """The observed model converted by the config given at prepare with `changes` (its statistics retargeted)."""
    return convert(observed, observed.stats().retarget(**changes))


@pytest.fixture(scope="module")
def relu_model():
    return _calibrated("relu")


@pytest.fixture(scope="module")
def silu_model():
    return _calibrated("silu")


def _inputs(n=4, size=16):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 1, size, size, generator=g), torch.tensor([999, 500, 60, 3])[:n]


def _quantised_ann(unet, thresholds, T, x, t):
    """Independent reference: forward hooks quantise every image-path activation call, found by call order,
    to T levels per side (the rate code at T steps; the weighted code at K steps carries 2^K - 1).

    (The ReLU UNet still ends in diffusers' fixed SiLU `conv_act`, quantised with its negative part.)
    """
    calls = {}

    def hook(module, inputs, output, name=None):
        if output.dim() != 4:  # the timestep path stays analog
            calls[name] = calls.get(name, 0) + 1
            return None
        k = calls.get(name, 0)
        calls[name] = k + 1
        theta, theta_n = thresholds[f"{name}#{k}"]["threshold"], thresholds[f"{name}#{k}"]["neg_threshold"]
        positive = torch.clamp(torch.floor(output * T / theta + 0.5), 0, T) * theta / T
        negative = torch.clamp(torch.floor(-output * T / theta_n + 0.5), 0, T) * theta_n / T if theta_n else 0
        return positive - negative

    handles = [m.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n))
               for name, m in unet.named_modules() if isinstance(m, (torch.nn.ReLU, torch.nn.SiLU))]
    try:
        with torch.no_grad():
            return unet(x, t).sample
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("coding, T, levels", [("rate", 2, 2), ("rate", 5, 5), ("weighted", 2, 3), ("weighted", 3, 7)])
@pytest.mark.parametrize("executor", ["steps", "rate"])
def test_converted_relu_network_equals_the_quantised_ann(relu_model, coding, T, levels, executor):
    """In float64: the two compute each activation in a different order, and in float32 a CPU whose
    rounding puts one on a rounding boundary would round it the other way. The weighted code's step
    executor spells each count in bits and its receivers double and add: the same network."""
    unet, observed = relu_model
    snn = _convert(observed, T=T, coding=coding, rule="max", readout="spikes").double()
    x, t = _inputs()
    with torch.no_grad(), snn.executing(executor):
        out = snn(x.double(), t).sample
    expected = _quantised_ann(copy.deepcopy(unet).double(), snn.thresholds, levels, x.double(), t)
    assert torch.allclose(out, expected, rtol=0, atol=1e-9), (out - expected).abs().max()


@pytest.mark.parametrize("act_fn, mode", [("relu", "window"), ("relu", "running"), ("silu", "window"),
                                          ("silu", "running")])
def test_snn_approaches_the_ann_as_T_grows(relu_model, silu_model, act_fn, mode):
    unet, observed = relu_model if act_fn == "relu" else silu_model
    x, t = _inputs()
    with torch.no_grad():
        ref = unet(x, t).sample.flatten(1)
    errors = []
    for T in (2, 8, 64):
        with torch.no_grad():
            out = _convert(observed, T=T, rule="max", analog_mode=mode, readout="spikes")(x, t).sample.flatten(1)
        errors.append((out - ref).pow(2).sum().item() / ref.pow(2).sum().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


@pytest.mark.parametrize("act_fn, coding", [("relu", "rate"), ("silu", "rate"), ("relu", "weighted"),
                                            ("silu", "weighted")])
def test_rate_form_equals_step_by_step_simulation(relu_model, silu_model, act_fn, coding):
    """In float64, where no drive falls within rounding of a spike-count boundary (in float32 the two
    executors round differently, and a CPU whose rounding puts a drive on a boundary flips a spike).
    The firing rates agree exactly: the rate form counts a weighted code's spikes by popcount."""
    unet, observed = relu_model if act_fn == "relu" else silu_model
    unet = copy.deepcopy(unet).double()
    x, t, spread = probe_pairs(unet, DDPM_LINEAR_SCHEDULE, 6)
    probes = (x.double(), t, spread)
    for T in (2, 5):
        snn = _convert(observed, T=T, coding=coding, rule="mse").double()
        steps = eps_fidelity(unet, snn, probes)
        with torch.no_grad():
            a = snn(probes[0], t).sample
            snn.set_executor("rate")
            b = snn(probes[0], t).sample
        rate = eps_fidelity(unet, snn, probes)
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
        assert rate["firing_rate"] == steps["firing_rate"]
        assert rate["eps_cosine"] == pytest.approx(steps["eps_cosine"], abs=1e-9)
    with pytest.raises(SDMError, match="window"):
        _convert(observed, T=2, analog_mode="running").set_executor("rate")


def test_eps_fidelity_improves_with_T(silu_model):
    unet, observed = silu_model
    probes = probe_pairs(unet, DDPM_LINEAR_SCHEDULE, 8)
    low, high = (eps_fidelity(unet, _convert(observed, T=T, rule="mse"), probes) for T in (2, 32))
    assert high["eps_cosine"] > low["eps_cosine"] and high["eps_cosine"] > 0.97
    assert high["eps_rel_mse"] < low["eps_rel_mse"]
    assert 0 < high["firing_rate"] < 1 and high["probes"] == {"spread_over_t": 8, "t_lt_100": 5}


def test_the_weighted_eps_error_weighs_each_spread_probe_by_hand(silu_model):
    """Weights that keep two spread probes: the figure is their errors over their references, computed
    here from the two networks' outputs; the probes off the spread never count. In float64, so that
    evaluating two probes alone rounds no drive across a spike-count boundary."""
    unet, observed = silu_model
    unet = copy.deepcopy(unet).double()
    x, t, spread = probe_pairs(unet, DDPM_LINEAR_SCHEDULE, 8)
    x = x.double()
    snn = _convert(observed, T=2, rule="mse").double()
    weights = torch.zeros(len(t))
    weights[[1, 4]] = torch.tensor([3.0, 1.0])
    weights[~spread] = 100.0
    with torch.no_grad():
        a = unet(x[[1, 4]], t[[1, 4]]).sample.flatten(1).double()
        s = snn(x[[1, 4]], t[[1, 4]]).sample.flatten(1).double()
    error, reference = (s - a).pow(2).sum(1), a.pow(2).sum(1)
    expected = (3 * error[0] + error[1]) / (3 * reference[0] + reference[1])
    figure = eps_fidelity(unet, snn, (x, t, spread), weights=weights)["eps_rel_mse_weighted"]
    assert figure == pytest.approx(expected.item(), abs=1e-6)  # the figure is rounded to 6 places
    assert "eps_rel_mse_weighted" not in eps_fidelity(unet, snn, (x, t, spread))


def test_every_activation_call_of_the_cifar10_32_architecture_is_converted():
    torch.manual_seed(0)
    unet = UNet2DModel(**preset_config("cifar10-32")).eval()
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(i[0].dim())) for m in unet.modules()
             if isinstance(m, torch.nn.SiLU)]
    with torch.no_grad():
        unet(torch.randn(1, 3, 32, 32), torch.tensor([10]))
    for h in hooks:
        h.remove()
    sites = activation_sites(capture(unet))
    thresholds = {s.name: {"threshold": 3.0, "neg_threshold": 0.28} for s in sites}
    snn = ConvertedUNet(dict(unet.config), ConversionConfig(T=2), thresholds, unet=unet)
    image_calls = sum(1 for d in calls if d == 4)
    assert len(snn.summary.neurons) == image_calls == 45
    assert len(snn.summary.neurons) + snn.summary.timestep_activations == len(calls) == 68
    assert len({id(n) for n in snn.neurons().values()}) == 45  # one neuron per call site, none shared
    with torch.no_grad():
        out = snn(torch.randn(33, 3, 32, 32), torch.full((33,), 500)).sample  # T x batch = 66 > 63
    assert out.shape == (33, 3, 32, 32) and torch.isfinite(out).all()
    # 22 resnets x 2 + 6 attention blocks + conv_norm_out GroupNorms; 2 + 1 + 3 attention blocks.
    assert snn.summary.analog_ops == {"group_norm": 51, "scaled_dot_product_attention": 6}


def test_the_snn_owns_its_weights(relu_model):
    unet, observed = relu_model
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    snn = _convert(observed, T=2).double()
    with torch.no_grad():
        for p in snn.parameters():
            p.add_(1.0)
    after = unet.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_save_and_load_give_identical_outputs(silu_model, tmp_path):
    from sdm.models.pretrained import load_model

    _, observed = silu_model
    snn = _convert(observed, T=3, rule="percentile", percentile=99.0, per_channel=False)
    snn.save_pretrained(tmp_path / "snn", scheduler_config=DDPM_LINEAR_SCHEDULE)
    config = json.loads((tmp_path / "snn" / "config.json").read_text())
    assert config["T"] == 3 and config["neuron"]["kind"] == "if" and len(config["thresholds"]) == 17
    assert ConversionConfig.from_dict(config) == snn.conversion == ConversionConfig(
        T=3, coding="rate", per_channel=False, rule="percentile", percentile=99.0)
    loaded = load_model(tmp_path / "snn")  # through the sdm.models entry point
    assert isinstance(loaded.model, ConvertedUNet) and loaded.notes == []
    x, t = _inputs()
    with torch.no_grad():
        assert torch.equal(snn(x, t).sample, loaded.model(x, t).sample)


def test_per_channel_and_lif_variants_run(silu_model):
    unet, _ = silu_model
    config = ConversionConfig(T=4, coding="rate", rule="mse", per_channel=True, neuron=NeuronConfig(kind="lif", tau=4.0))
    observed = calibrate(prepare(unet, config), calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 16), progress=False)
    snn = convert(observed)
    neuron = next(iter(snn.neurons().values()))
    assert neuron.threshold.numel() == 8 and isinstance(neuron, LIFNeuron) and neuron.decay == 0.75
    x, t = _inputs()
    with torch.no_grad():
        assert torch.isfinite(snn(x, t).sample).all()


def test_profile_separates_spiking_and_analog_compute(silu_model):
    _, observed = silu_model
    profile = compute_profile(_convert(observed, T=2))
    assert profile["spiking_input_synaptic_ops_dense"] > 0 and profile["analog_input_macs"] > 0
    assert 0 < profile["analog_share"] < 1


class Toy(ModelMixin, ConfigMixin):
    """A diffusers-style model with a chosen op after its activation."""

    @register_to_config
    def __init__(self, sample_size=8, in_channels=1, out_channels=1, op="cumsum", activate=True):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, sample, timestep, return_dict=True):
        h = self.a(sample)
        h = F.silu(h) if self.config.activate else h
        if self.config.op == "cumsum":
            h = torch.cumsum(h, dim=-1)
        return (self.b(h),)


def test_unknown_op_is_named():
    toy = Toy().eval()
    thresholds = {s.name: {"threshold": 1.0, "neg_threshold": 0.2} for s in activation_sites(capture(toy))}
    with pytest.raises(UnsupportedOpError, match=r"unsupported op aten\.cumsum\.default at node 'cumsum'"):
        ConvertedUNet(dict(toy.config), ConversionConfig(T=2), thresholds, unet=toy)


def test_nothing_to_convert_raises():
    with pytest.raises(SDMError, match="nothing to convert"):
        prepare(Toy(op="none", activate=False))


def test_bad_T_and_foreign_thresholds(silu_model):
    unet, observed = silu_model
    with pytest.raises(SDMError, match="^T must be an integer of at least 1, got 0$"):
        _convert(observed, T=0)
    thresholds = _convert(observed, T=2).thresholds
    other = build_unet("tiny", layers_per_block=2)
    with pytest.raises(SDMError, match="another model"):
        ConvertedUNet(dict(other.config), ConversionConfig(T=2), thresholds, unet=other)
    with pytest.raises(SDMError, match="another model architecture"):
        convert(other, observed.stats())


def test_the_configuration_is_given_once_at_prepare(silu_model):
    """convert() builds what prepare() recorded: thresholds computed for T = 8 build a T = 8 network (they
    were once built at convert's own default T = 4), and a config that disagrees is refused."""
    unet, observed = silu_model
    stats = observed.stats()
    assert stats.config == ConversionConfig(coding="rate", per_channel=False)  # what prepare() was given, recorded
    thresholds = stats.retarget(T=8, rule="max").thresholds()
    snn = convert(unet, thresholds)
    assert snn.T == 8 and snn.config["T"] == 8 and snn.config["rule"] == "max"
    assert all(activation.T == 8 for activation in snn.sites().values())
    with pytest.raises(SDMError, match=r"disagrees .* T=4 \(recorded: 8\)"):
        convert(unet, thresholds, config=ConversionConfig(T=4, rule="max"))
    assert convert(unet, thresholds, config=stats.config.replace(T=8, rule="max")).T == 8  # agreeing is fine
    with pytest.raises(SDMError, match="per_channel needs per-channel statistics"):
        stats.retarget(per_channel=True)
    eight = calibrate(prepare(unet, ConversionConfig(T=8)), calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 8),
                      progress=False)
    assert convert(eight).T == 8 and eight.stats().config.T == 8


def test_encode_analog_turns_every_synaptic_layer_but_the_first_into_accumulates(tmp_path):
    torch.manual_seed(0)
    unet = build_unet("tiny").eval()
    observed = calibrate(prepare(unet, ConversionConfig(coding="rate", encode_analog=True, readout="spikes")),
                         calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, 16), progress=False)
    snn = convert(observed)
    encoders = [name for name in snn.summary.neurons if is_encoder_site(name)]
    assert "down_blocks.0.downsamplers.0.conv:input" in encoders
    x, t = _inputs()
    layers = snn.layer_activity(x, t)
    # Left analog: the image's own convolution (plus the timestep path and the attention products).
    assert [layer.name for layer in layers if layer.role in ("input", "analog")] == ["conv_in"]
    assert {layer.role for layer in layers} == {"input", "spiking", "timestep", "attention", "nonsynaptic",
                                                "accumulation"}
    # Nothing analog changes over the steps but the output, whose T values are summed to decode it.
    assert [layer.name for layer in layers if layer.role == "accumulation"] == ["output (window accumulation)"]
    assert any("attentions.0.to_q" in layer.name and layer.spiking_input for layer in layers)
    snn.save_pretrained(tmp_path / "snn")
    loaded = ConvertedUNet.from_pretrained(tmp_path / "snn")
    with torch.no_grad():
        assert loaded.config["encode_analog"] and torch.equal(loaded(x, t).sample, snn(x, t).sample)
    # Chosen encoders only: the upsampler reads spikes, the other analog inputs are window-accumulated.
    chosen = _convert(observed, encode_analog=False, encode_sites=("*upsamplers*",))
    assert [name for name in chosen.summary.neurons if is_encoder_site(name)] == ["up_blocks.0.upsamplers.0.conv:input"]
    assert "up_blocks.0.upsamplers.0.conv" not in chosen.summary.window_accumulated
    assert "up_blocks.0.resnets.0.conv_shortcut" in chosen.summary.window_accumulated
    assert any(layer.name == "up_blocks.0.upsamplers.0.conv" and layer.spiking_input for layer in chosen.layer_activity(x, t))
    chosen.save_pretrained(tmp_path / "chosen")
    with torch.no_grad():
        assert torch.equal(ConvertedUNet.from_pretrained(tmp_path / "chosen")(x, t).sample, chosen(x, t).sample)
    with pytest.raises(SDMError, match="encode_sites pattern 'nowhere"):
        _convert(observed, encode_sites=("nowhere*",))
    assert chosen.config["encode_sites"] == ["*upsamplers*"] and not chosen.config["encode_analog"]
    with pytest.raises(SDMError, match="spike-encoder sites"):
        _convert(_calibrated("silu")[1], T=4, encode_sites=("*upsamplers*",))
    plain = _convert(observed, encode_analog=False)  # the same statistics serve a conversion without encoders
    assert not any(is_encoder_site(name) for name in plain.summary.neurons)
    with pytest.raises(SDMError, match="encode_analog needs"):
        _convert(_calibrated("silu")[1], T=4, encode_analog=True)
    errors = []
    with torch.no_grad():
        ref = unet(x, t).sample
        for T in (2, 64):
            out = _convert(observed, T=T, rule="max")(x, t).sample
            errors.append((out - ref).pow(2).sum().item() / ref.pow(2).sum().item())
    assert errors[1] < errors[0] and errors[1] < 0.02


def test_execution_modes_hold_for_their_block_only(silu_model):
    """`executing` and `spiking_only` set a mode for a block and restore the model's own, even on an error."""
    from sdm.snn.temporal import Folded

    _, observed = silu_model
    snn = _convert(observed, T=2)
    x, t = _inputs(2)
    with torch.no_grad():
        rate = snn(x, t).sample
        with pytest.raises(RuntimeError, match="inside"), snn.executing("steps"):
            assert snn.executor == "steps"
            assert not any(m.rate for m in snn.graph.modules() if isinstance(m, Folded))
            raise RuntimeError("inside")
        assert snn.executor == "rate" and torch.equal(snn(x, t).sample, rate)
    name = snn.spiking_sites()[0]
    with snn.spiking_only(name):
        assert snn.spiking_sites() == [name]
    assert len(snn.spiking_sites()) == 16  # 17 sites, the readout's kept analog
    with pytest.raises(SDMError, match="executor 'fast' is unknown"), snn.executing("fast"):
        pass


def test_the_sample_cache_keys_what_decides_the_samples(silu_model):
    """A converted model built with other threshold-finding settings but the same thresholds computes the
    same outputs, so it keeps the cache; one at another T does not."""
    unet, observed = silu_model
    snn = _convert(observed, coding="weighted")
    settings = {"sampler": "ddim", "steps": 4}
    same = ConvertedUNet(snn.unet_config, snn.conversion.replace(rule="percentile", percentile=99.0), snn.thresholds,
                         unet=unet, source={"calibration": {"note": "another record"}})
    other_T = ConvertedUNet(snn.unet_config, snn.conversion.replace(T=8), snn.thresholds, unet=unet)
    x, t = _inputs()
    with torch.no_grad():
        assert torch.equal(snn(x, t).sample, same(x, t).sample)
    assert keyed_work_dir("w", same, settings) == keyed_work_dir("w", snn, settings)
    assert keyed_work_dir("w", other_T, settings) != keyed_work_dir("w", snn, settings)
