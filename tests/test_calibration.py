"""Observers, threshold rules against brute-force references, files, and calibration inputs."""

import numpy as np
import pytest
import torch

from calibration import (
    CalibrationInputs,
    CalibrationStats,
    ConversionConfig,
    NeuronConfig,
    calibrate,
    calibration_pairs,
    load_stats,
    prepare,
    probe_pairs,
)
from calibration.inputs import PROBE_SEED
from calibration.observer import ActivationObserver
from calibration.rules import quantise
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.errors import SDMError
from sdm.models.presets import build_unet


@pytest.fixture(scope="module")
def silu_stats():
    """An observer fed SiLU of Gaussian pre-activations, and the raw values."""
    torch.manual_seed(0)
    values = torch.nn.functional.silu(torch.randn(64, 8, 16, 16) * 1.5)
    observer = ActivationObserver("site", "silu", per_channel=True, per_batch=10**6, per_channel_batch=10**6)
    for chunk in values.split(16):
        observer(chunk)
    return observer.summary(), values.numpy()


def site_thresholds(stats: dict, rule: str, **changes) -> dict:
    """One site's thresholds by `rule`, through the statistics of a conversion config with `changes`
    (the rate code unless they say otherwise: its T is the quantiser's level count these tests check)."""
    neuron = NeuronConfig(**{k: changes.pop(k) for k in ("v_init", "signed") if k in changes})
    config = ConversionConfig(rule=rule, neuron=neuron, **{"coding": "rate", "per_channel": False, **changes})
    return CalibrationStats("", {"site": stats}, config).thresholds().sites["site"]


def _brute_force_mse(values: np.ndarray, T: int) -> tuple[float, float]:
    """The best threshold on a fine grid, evaluated on the raw values (independent of histograms)."""
    grid = np.linspace(0.05, values.max(), 600)
    errors = [np.mean((values - quantise(values, th, T, 0.5)) ** 2) for th in grid]
    i = int(np.argmin(errors))
    return grid[i], errors[i]


def test_max_rule_is_exact(silu_stats):
    stats, values = silu_stats
    th = site_thresholds(stats, "max", T=4)
    assert th["threshold"] == pytest.approx(values.max()) and th["neg_threshold"] == pytest.approx(-values.min())


@pytest.mark.parametrize("p", [99.0, 99.9])
def test_percentile_rule_matches_numpy(silu_stats, p):
    stats, values = silu_stats
    th = site_thresholds(stats, "percentile", T=4, percentile=p)
    assert th["threshold"] == pytest.approx(np.percentile(values, p), rel=0.01)


@pytest.mark.parametrize("T", [2, 4, 16])
def test_mse_rule_matches_brute_force(silu_stats, T):
    stats, values = silu_stats
    positive = np.clip(values, 0, None).ravel()
    best_theta, best_error = _brute_force_mse(positive, T)
    theta = site_thresholds(stats, "mse", T=T)["threshold"]
    error = np.mean((positive - quantise(positive, theta, T, 0.5)) ** 2)
    assert error <= best_error * 1.01
    assert theta == pytest.approx(best_theta, rel=0.05)


def test_quantiser_levels_by_hand():
    # theta 2, T 4: levels 0, 0.5, 1, 1.5, 2; rounding thanks to v_init 0.5, clipped at theta.
    assert quantise(np.array([0.2, 0.3, 1.1, 1.9, 7.0]), 2.0, 4, 0.5).tolist() == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert quantise(np.array([0.3, 0.49]), 2.0, 4, 0.0).tolist() == [0.0, 0.0]  # no initial potential: floor


def test_per_channel_thresholds(silu_stats):
    stats, values = silu_stats
    th = site_thresholds(stats, "max", T=4, per_channel=True)
    assert np.allclose(th["threshold"], values.max(axis=(0, 2, 3)))
    assert len(th["neg_threshold"]) == 8
    with pytest.raises(SDMError, match="per-channel statistics"):
        site_thresholds({k: v for k, v in stats.items() if k != "channels"}, "max", T=4, per_channel=True)


def test_bad_rule_settings_name_the_setting():
    for changes, message in [({"rule": "kl"}, "rule 'kl' is unknown: choose one of max, percentile, mse"),
                             ({"percentile": 0}, "percentile must lie in (0, 100], got 0"),
                             ({"T": 0}, "T must be an integer of at least 1, got 0")]:
        with pytest.raises(SDMError) as raised:
            ConversionConfig(**changes).validate()
        assert str(raised.value) == message


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(3)
    return build_unet("tiny").eval()


def _image_path_silu_calls(unet) -> int:
    """Independent count: forward hooks on every SiLU module, counting calls on 4-d (image) tensors."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(i[0].dim())) for m in unet.modules()
             if isinstance(m, torch.nn.SiLU)]
    with torch.no_grad():
        unet(torch.randn(2, 1, 16, 16), torch.tensor([3, 700]))
    for h in hooks:
        h.remove()
    return sum(1 for d in calls if d == 4)


def test_prepare_observes_every_call_site(tiny_unet):
    observed = prepare(tiny_unet)
    # 8 resnets (2 down, 2 mid, 4 up) call SiLU twice on the image path, plus conv_act: 17.
    assert len(observed.observers()) == _image_path_silu_calls(tiny_unet) == 17
    names = list(observed.observers())
    assert "down_blocks.0.resnets.0.nonlinearity#0" in names and "down_blocks.0.resnets.0.nonlinearity#2" in names
    with pytest.raises(SDMError, match="calibrate"):
        observed.stats()


def test_stats_round_trip_and_refusal_for_another_model(tiny_unet, tmp_path):
    observed = calibrate(prepare(tiny_unet), calibration_pairs(tiny_unet, DDPM_LINEAR_SCHEDULE, 8), progress=False)
    stats = observed.stats({"source": "trajectory"})
    stats.save(tmp_path / "stats.json")
    again = load_stats(tmp_path / "stats.json", tiny_unet)
    assert again.thresholds().sites == stats.thresholds().sites and again.config == stats.config
    other = build_unet("tiny", block_out_channels=(16, 16), norm_num_groups=8)
    with pytest.raises(SDMError, match="another model"):
        load_stats(tmp_path / "stats.json", other)
    with pytest.raises(SDMError, match="not found"):
        CalibrationStats.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"kind": "thresholds"}')
    with pytest.raises(SDMError, match="not a calibration statistics file"):
        CalibrationStats.load(tmp_path / "bad.json")


def test_calibration_inputs_span_t(tiny_unet, fake_fmnist):
    from sdm.diffusion.data import load_dataset

    x, t = calibration_pairs(tiny_unet, DDPM_LINEAR_SCHEDULE, 64)
    assert x.shape == (64, 1, 16, 16) and t.max() >= 900 and t.min() <= 100
    images = load_dataset(fake_fmnist, 16, 1)
    x, t = calibration_pairs(tiny_unet, DDPM_LINEAR_SCHEDULE, 200, source="data", data=images, seed=1)
    assert t.float().std() > 200 and x.shape == (200, 1, 16, 16)
    with pytest.raises(SDMError, match="needs the images"):
        calibration_pairs(tiny_unet, DDPM_LINEAR_SCHEDULE, 8, source="data")
    with pytest.raises(SDMError, match="^data is needed to calibrate on data"):
        CalibrationInputs(source="data").validate()
    x, t = CalibrationInputs(source="data", data=str(fake_fmnist), samples=8, seed=1).pairs(tiny_unet, DDPM_LINEAR_SCHEDULE)
    assert x.shape == (8, 1, 16, 16)
    with pytest.raises(SDMError, match="reserved for probes"):
        calibration_pairs(tiny_unet, DDPM_LINEAR_SCHEDULE, 8, seed=PROBE_SEED)


def test_probes_spread_over_t_plus_low_t(tiny_unet):
    x, t, spread = probe_pairs(tiny_unet, DDPM_LINEAR_SCHEDULE, 16)
    assert spread.sum() == 16 and len(t) == 24
    assert (t[~spread] < 100).all() and t[spread].max() >= 900 and t[spread].min() <= 20


def test_a_capture_is_exported_once_per_structure_and_holds_each_models_own_weights(monkeypatch):
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import AttnProcessor

    import calibration.graph as unet_graph

    exports = []
    export = unet_graph._exported
    monkeypatch.setattr(unet_graph, "_exported", lambda *args: exports.append(1) or export(*args))
    monkeypatch.setattr(unet_graph, "_CAPTURES", type(unet_graph._CAPTURES)())
    torch.manual_seed(3)
    first, second = build_unet("tiny").eval(), build_unet("tiny").eval()
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([999, 400, 2])

    def agrees(model, graph, sample=x):
        with torch.no_grad():
            out = graph(sample, t)
            expected = model(sample, t).sample
        out = out[0] if isinstance(out, (tuple, list)) else out
        owned = dict(model.named_parameters())
        return torch.equal(out, expected) and all(p is owned[name] for name, p in graph.named_parameters())

    observed = prepare(first, ConversionConfig())  # inserts observers into its own copy of the graph
    assert agrees(second, unet_graph.capture(second)) and agrees(first, unet_graph.capture(first))
    assert len(exports) == 1 and "observer" not in str(unet_graph.capture(first).graph)
    assert all(p.is_meta for cached in unet_graph._CAPTURES.values() for p in cached.parameters())
    assert "observer" in str(observed.graph.graph)
    for attention in [m for m in second.modules() if hasattr(m, "set_processor")]:
        attention.set_processor(AttnProcessor())  # another attention processor: another graph
    assert agrees(second, unet_graph.capture(second)) and len(exports) == 2
    doubled = unet_graph.capture(second.double())  # another dtype: another graph
    assert len(exports) == 3 and next(doubled.parameters()).dtype == torch.float64
    # FIR resampling builds its kernel in the forward: the export lifts it into a constant of the graph's own.
    fir = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 8), layers_per_block=1,
               norm_num_groups=4, down_block_types=("SkipDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "SkipUpBlock2D"))
    skips = [UNet2DModel(**fir).eval() for _ in range(2)]
    rgb = torch.randn(3, 3, 16, 16)
    assert all(agrees(model, unet_graph.capture(model), rgb) for model in skips) and len(exports) == 4
    assert any("lifted_tensor" in name for name, _ in unet_graph.capture(skips[0]).named_buffers())
