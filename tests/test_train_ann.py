import json

import pytest
import torch
from safetensors.torch import load_file

from sdm.diffusion.ddpm_objective import batch_indices
from sdm.errors import SDMError
from sdm.models.pretrained import load_model
from sdm.models.train_ann import TrainConfig, train


def _config(data, out, **kw):
    return TrainConfig(data=str(data), out=str(out), **{"preset": "tiny", "steps": 6, "batch_size": 8,
                                                        "save_every": 2, "warmup": 2, **kw})


class Interrupted(Exception):
    pass


def _interrupt_at(step_to_stop):
    def on_step(step, loss):
        if step == step_to_stop:
            raise Interrupted

    return on_step


def test_interrupted_run_resumes_to_the_same_state(fake_fmnist, tmp_path):
    train(_config(fake_fmnist, tmp_path / "straight"), progress=False)
    with pytest.raises(Interrupted):
        train(_config(fake_fmnist, tmp_path / "resumed", log_every=1), progress=False, on_step=_interrupt_at(3))
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 2
    train(_config(fake_fmnist, tmp_path / "resumed", log_every=1), progress=False, resume=True)
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]  # step 3's first, lost try is forgotten
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(log, log[1:], strict=False))  # the clock continues
    for name in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "straight" / "checkpoint" / f"{name}.safetensors")
        b = load_file(tmp_path / "resumed" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 6


def test_output_is_a_loadable_pipeline_with_ema_weights(fake_fmnist, tmp_path):
    out = train(_config(fake_fmnist, tmp_path / "run", sample_every=6), progress=False)
    loaded = load_model(out)
    ema = load_file(out / "checkpoint" / "ema.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in loaded.model.state_dict().items())
    raw = load_file(out / "checkpoint" / "model.safetensors")
    assert any(not torch.equal(v, raw[k]) for k, v in ema.items())
    assert (out / "samples" / "step_0000006.png").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and log[-1]["loss"] > 0


def test_training_lowers_the_loss(fake_fmnist, tmp_path):
    losses = []
    train(_config(fake_fmnist, tmp_path / "run", steps=40, save_every=40, lr=2e-3, warmup=1), progress=False,
          on_step=lambda step, loss: losses.append(loss))
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5


def _output_dtypes(run) -> set:
    """The dtypes of every module output while `run()` trains."""
    from torch.nn.modules.module import register_module_forward_hook

    seen = set()
    hook = register_module_forward_hook(lambda module, inputs, out: seen.add(getattr(out, "dtype", None)))
    try:
        run()
    finally:
        hook.remove()
    return seen


def test_bf16_autocast_on_the_cpu_trains_in_bf16_and_stores_fp32(fake_fmnist, tmp_path):
    bf16 = _config(fake_fmnist, tmp_path / "bf16", steps=2, precision="bf16")
    assert torch.bfloat16 in _output_dtypes(lambda: train(bf16, progress=False))
    assert json.loads((tmp_path / "bf16" / "train_config.json").read_text())["precision"] == "bf16"
    weights = load_file(tmp_path / "bf16" / "checkpoint" / "model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float32}
    fp32 = _config(fake_fmnist, tmp_path / "fp32", steps=1, precision="fp32")  # the next run in the same process
    assert torch.bfloat16 not in _output_dtypes(lambda: train(fp32, progress=False))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_exactly_where_it_is_native(fake_fmnist, tmp_path, monkeypatch, native):
    """One meaning of --precision auto for every command: bf16 where the device has bf16 units (here
    pretended either way), fp32 elsewhere, and the record says which."""
    monkeypatch.setattr("sdm.diffusion.train_settings.native_bf16", lambda device: native)
    auto = _config(fake_fmnist, tmp_path / "auto", steps=1)
    assert (torch.bfloat16 in _output_dtypes(lambda: train(auto, progress=False))) is native
    record = json.loads((tmp_path / "auto" / "train_config.json").read_text())
    assert record["precision"] == "auto" and record["autocast"] == ("bf16" if native else "fp32")


def test_refuses_to_overwrite_or_mix_runs(fake_fmnist, tmp_path):
    train(_config(fake_fmnist, tmp_path / "run", steps=2), progress=False)
    with pytest.raises(SDMError, match="already holds a training run: resume it"):
        train(_config(fake_fmnist, tmp_path / "run", steps=4), progress=False)
    with pytest.raises(SDMError, match="lr=0.0002 differ"):
        train(_config(fake_fmnist, tmp_path / "run", steps=4, lr=1e-3), progress=False, resume=True)
    with pytest.raises(SDMError, match="already trained for 2 steps"):
        train(_config(fake_fmnist, tmp_path / "run", steps=2), progress=False, resume=True)


def test_bad_settings_write_nothing(fake_fmnist, tmp_path):
    for kw, match in [({"steps": 0}, "^steps must be positive"), ({"ema_decay": 1.0}, "^ema_decay must lie"), ({"preset": "huge"}, "preset"),
                      ({"precision": "fp8"}, "^precision .fp8. is unknown")]:
        with pytest.raises(SDMError, match=match):
            train(_config(fake_fmnist, tmp_path / "bad", **kw), progress=False)
    with pytest.raises(SDMError, match="not found"):
        train(_config(tmp_path / "missing.npz", tmp_path / "bad"), progress=False)
    assert not (tmp_path / "bad").exists()


def test_batches_walk_through_seeded_epochs():
    first_epoch = torch.cat([batch_indices(s, 4, 10, seed=3) for s in range(2)])
    wrap = batch_indices(2, 4, 10, seed=3)
    assert sorted(torch.cat([first_epoch, wrap[:2]]).tolist()) == list(range(10))
    assert torch.equal(batch_indices(5, 4, 10, seed=3), batch_indices(5, 4, 10, seed=3))
