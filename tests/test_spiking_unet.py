"""The directly trained spiking UNet, TSM, threshold guidance and sdm-train."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from sdm.commands import train as train_command
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.sampler import sample
from sdm.diffusion.training import steps_trained
from sdm.errors import SDMError
from sdm.models.pretrained import load_model
from sdm.models.spiking_unet import SPIKING_PRESETS, SpikingUNet, SynapticConv
from sdm.models.train_snn import SNNTrainConfig, train_snn
from sdm.snn.modes import counting, scaled_thresholds
from sdm.snn.neurons import spiking_neurons


def _tiny(**kw) -> SpikingUNet:
    torch.manual_seed(0)
    return SpikingUNet(**{**SPIKING_PRESETS["tiny"], **kw})


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 1000, (n,), generator=g)


@pytest.mark.parametrize("tsm, readout", [(False, "spikes"), (True, "spikes"), (True, "analog")])
def test_gradients_reach_every_weight(tsm, readout):
    model = _tiny(tsm=tsm, readout=readout)
    x, t = _batch(8)
    model(x, t).sample.pow(2).mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_tsm_factors_start_at_one_and_move():
    model = _tiny(tsm=True)
    factors = model.tsm_parameters()
    assert factors and all(torch.equal(p, torch.ones(4)) for p in factors.values())
    assert model.mean_tsm_factors() == [1.0] * 4 and _tiny().mean_tsm_factors() == []
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, t = _batch()
    model(x, t).sample.pow(2).mean().backward()
    optimizer.step()
    assert all(not torch.equal(p, torch.ones(4)) for p in factors.values())


def test_tsm_keeps_a_bf16_autocast_current_in_bf16():
    """p is an fp32 parameter; multiplying by it must not lift the layer (and the neurons after it) to fp32."""
    torch.manual_seed(0)
    plain, with_tsm = SynapticConv(2, 3, 3, T=4, tsm=False), SynapticConv(2, 3, 3, T=4, tsm=True)
    with_tsm.conv.load_state_dict(plain.conv.state_dict())
    x = torch.randn(4, 2, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, current = plain(x), with_tsm(x)
    assert current.dtype == expected.dtype == torch.bfloat16 and torch.equal(current, expected)
    current.float().sum().backward()
    assert with_tsm.tsm.grad.dtype == torch.float32 and with_tsm.tsm.grad.abs().min() > 0


def test_tsm_child_with_unit_factors_reproduces_its_parent(tmp_path):
    parent = _tiny().eval()
    parent.save_pretrained(tmp_path / "parent")
    child, new = SpikingUNet.from_prespike(tmp_path / "parent")
    assert new == sorted(child.tsm_parameters()) and len(new) == 41
    x, t = _batch()
    with torch.no_grad():
        assert torch.equal(parent(x, t).sample, child.eval()(x, t).sample)
    child.save_pretrained(tmp_path / "child")
    with pytest.raises(SDMError, match="already has TSM"):
        SpikingUNet.from_prespike(tmp_path / "child")


def test_analog_readout_is_one_mac_convolution_per_pass():
    """Tiny: 8 channels into 1 over 16 x 16 pixels, 3 x 3 kernel: 8 * 9 * 256 = 18,432 MACs per image,
    once per pass (the T steps are averaged before the linear convolution), not T times."""
    model = _tiny(readout="analog").eval()
    x, t = _batch(2)
    decode = {a.name: a for a in model.layer_activity(x, t)}["decode"]
    assert decode.role == "analog" and decode.dense_ops == 8 * 9 * 16 * 16
    assert type(model.decode) is torch.nn.Conv2d  # a plain convolution: no TSM factor
    with pytest.raises(SDMError, match="unknown readout 'rates'"):
        _tiny(readout="rates")


def _firing_rate(model, x, t, scale):
    with torch.no_grad(), scaled_thresholds(model, scale), counting(model) as counts:
        model(x, t)
    return counts.rate()


def test_higher_threshold_scale_lowers_firing_rates():
    model = _tiny().eval()
    x, t = _batch(8)
    rates = [_firing_rate(model, x, t, s) for s in (0.8, 1.0, 1.25)]
    assert rates[0] > rates[1] > rates[2] > 0
    assert all(n.threshold_scale == 1.0 for n in spiking_neurons(model))  # restored afterwards


def test_threshold_guidance_changes_samples_and_refuses_anns():
    model = _tiny().eval()
    plain = sample(model, DDPM_LINEAR_SCHEDULE, 2, steps=3, progress=False)
    guided = sample(model, DDPM_LINEAR_SCHEDULE, 2, steps=3, threshold_scale=1.2, progress=False)
    assert not (plain == guided).all()
    from sdm.models.presets import build_unet

    with pytest.raises(SDMError, match="needs a spiking model"):
        sample(build_unet("tiny"), DDPM_LINEAR_SCHEDULE, 1, steps=2, threshold_scale=1.1, progress=False)


def test_neuron_state_never_leaks_between_batches():
    model = _tiny().eval()
    x1, t1 = _batch(4, seed=1)
    x2, t2 = _batch(3, seed=2)
    with torch.no_grad():
        fresh = model(x2, t2).sample
        model(x1, t1)
        assert torch.equal(model(x2, t2).sample, fresh)


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_state(fake_fmnist, tmp_path):
    def config(out):
        return SNNTrainConfig(data=str(fake_fmnist), out=str(out), preset="tiny", steps=4, batch_size=4, save_every=2,
                              warmup=1)

    train_snn(config(tmp_path / "a"), progress=False, report=lambda _: None)

    def stop(step, loss):
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_snn(config(tmp_path / "b"), progress=False, on_step=stop, report=lambda _: None)
    train_snn(config(tmp_path / "b"), progress=False, resume=True, report=lambda _: None)
    for name in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "a" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoint" / f"{name}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert isinstance(load_model(tmp_path / "a").model, SpikingUNet)


def test_tsm_stage_through_the_cli(fake_fmnist, tmp_path):
    runner = CliRunner()
    base = ["--data", fake_fmnist, "--batch-size", 4, "--steps", 2]
    result = runner.invoke(train_command.main, [str(a) for a in [*base, "--preset", "tiny", "--out", tmp_path / "pre"]])
    assert result.exit_code == 0, result.output
    result = runner.invoke(train_command.main, [str(a) for a in [*base, "--out", tmp_path / "tsm", "--stage", "tsm",
                                                                  "--init-from", tmp_path / "pre"]])
    assert result.exit_code == 0, result.output
    assert "40 new parameters" in result.stderr  # every convolution but the analog readout's
    record = json.loads((tmp_path / "tsm" / "train_config.json").read_text())
    assert record["model"]["stage"] == "tsm" and load_model(tmp_path / "tsm").model.config.tsm
    assert record["model"]["readout"] == "analog" and load_model(tmp_path / "tsm").model.config.readout == "analog"
    assert record["model"]["preset"] == "tiny"  # inherited from the pre-spike run, not the option's default
    assert steps_trained(tmp_path / "tsm") == "2 + 2"
    same = runner.invoke(train_command.main, [str(a) for a in [*base, "--out", tmp_path / "tsm2", "--stage", "tsm",
                                                                "--init-from", tmp_path / "pre", "--preset", "tiny"]])
    assert same.exit_code == 0, same.output
    other = runner.invoke(train_command.main, [str(a) for a in [*base, "--out", tmp_path / "tsm3", "--stage", "tsm",
                                                                 "--init-from", tmp_path / "pre", "--preset", "fmnist-cpu"]])
    lines = other.stderr.strip().splitlines()
    assert other.exit_code != 0 and len(lines) == 1 and "--preset fmnist-cpu disagrees" in lines[0], other.stderr
    assert not (tmp_path / "tsm3").exists()
    spikes = runner.invoke(train_command.main, [str(a) for a in [*base, "--out", tmp_path / "tsm4", "--stage", "tsm",
                                                                  "--init-from", tmp_path / "pre", "--readout", "spikes"]])
    assert spikes.exit_code != 0 and "--readout spikes differs" in spikes.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--stage", "tsm"], "--init-from"),
    (["--T", 0], "--T"),
    (["--preset", "huge"], "--preset"),
    (["--readout", "rates"], "--readout"),
    (["--stage", "tsm", "--init-from", "./nope"], "not found"),
])
def test_train_bad_inputs_write_nothing(fake_fmnist, tmp_path, args, fragment):
    result = CliRunner().invoke(train_command.main, [str(a) for a in ["--data", fake_fmnist, "--out", tmp_path / "o", *args]])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "o").exists()
