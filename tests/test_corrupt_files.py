"""Damaged files the package wrote itself (cut short by a killed run or a full disk, garbled on disk):
each reader draws them again, or fails with one SDMError line that names the file and the fix."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sdm.commands import evaluate
from sdm.diffusion.checkpoint import load_training_state, save_training_state
from sdm.diffusion.data import load_dataset, read_images
from sdm.diffusion.ema import make_ema
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.shards import gather_shards, sample_sharded
from sdm.diffusion.training import read_run_config, steps_trained
from sdm.errors import SDMError
from sdm.models.pretrained import load_model
from sdm.models.train_ann import TrainConfig, train

SETTINGS = {"sampler": "ddim", "steps": 2, "batch_size": 4, "threshold_scale": 1.0}


def _bitrot(path):
    """Flip one byte in the middle of the first zip member's data (a bad CRC or a broken deflate stream)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage(path, how):
    data = path.read_bytes()
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\xff\xfe\x00 not what was written \x9c" * 4)
    elif how == "tail":  # the last bytes (a zip's central directory) lost
        path.write_bytes(data[:-30])
    elif how == "bitrot":
        _bitrot(path)
    else:
        raise AssertionError(how)


def _assert_one_line(err: SDMError, *fragments):
    message = str(err)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# --- sample shards -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_pipeline):
    return load_model(tiny_pipeline).model


def _draw(model, work_dir, drawn=None):
    return sample_sharded(model, DDPM_LINEAR_SCHEDULE, 4, work_dir, settings=SETTINGS, seed=3, shard_size=2,
                          progress=False, on_shard=None if drawn is None else drawn.append)


@pytest.mark.parametrize("how", ["half", "empty", "garbage", "tail", "bitrot"])
def test_a_damaged_shard_is_drawn_again(tiny_model, tmp_path, how):
    paths = _draw(tiny_model, tmp_path / "w")
    before = gather_shards(paths, 4, 3)
    _damage(paths[1], how)
    with pytest.raises(SDMError) as err:  # read as it lies, the damaged shard is named with the fix
        gather_shards(paths, 4, 3)
    _assert_one_line(err.value, "shard_00001.npz", "damaged", "rerun")
    drawn = []
    assert _draw(tiny_model, tmp_path / "w", drawn) == paths
    assert drawn == [1]  # only the damaged shard is drawn again
    with np.load(paths[1], allow_pickle=False) as shard:
        assert shard["seeds"].tolist() == [5, 6]
    assert np.array_equal(gather_shards(paths, 4, 3), before)


@pytest.mark.parametrize("content", [b'{"model": "ab', b"\xff\xfe garbage", b"[1, 2]"])
def test_a_damaged_manifest_without_shards_is_rewritten(tiny_model, tmp_path, content):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "manifest.json").write_bytes(content)
    paths = _draw(tiny_model, tmp_path / "w")
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["shard_size"] == 2 and manifest["steps"] == 2
    assert gather_shards(paths, 4, 3).shape == (4, 16, 16, 1)


def test_a_damaged_manifest_beside_shards_is_an_error(tiny_model, tmp_path):
    paths = _draw(tiny_model, tmp_path / "w")
    _damage(tmp_path / "w" / "manifest.json", "half")
    shard = paths[0].read_bytes()
    with pytest.raises(SDMError) as err:
        _draw(tiny_model, tmp_path / "w")
    _assert_one_line(err.value, "manifest.json", "--work-dir", "remove")
    assert paths[0].read_bytes() == shard  # nothing was drawn or overwritten


def _eval(pipeline, work_dir):
    return CliRunner().invoke(evaluate.main, [
        "--ckpt", str(pipeline), "--num-samples", "2", "--steps", "1", "--shard-size", "1", "--extractor", "fmnist",
        "--metrics", "fid", "--work-dir", str(work_dir), "--device", "cpu"])


def test_sdm_eval_redraws_a_truncated_shard(tiny_pipeline, tmp_path):
    first = _eval(tiny_pipeline, tmp_path / "work")
    assert first.exit_code == 0, first.output
    shard = tmp_path / "work" / "shard_00000.npz"
    intact = shard.read_bytes()
    _damage(shard, "half")
    again = _eval(tiny_pipeline, tmp_path / "work")
    assert again.exit_code == 0, again.output
    assert "Traceback" not in again.output
    with np.load(shard, allow_pickle=False) as redrawn, np.load(tmp_path / "work" / "shard_00001.npz") as other:
        assert redrawn["seeds"].tolist() == [0] and other["seeds"].tolist() == [1]
        with np.load(io.BytesIO(intact)) as original:
            assert np.array_equal(redrawn["images"], original["images"])  # the same seed draws the same image
    fid = [line for line in first.stdout.splitlines() if line.startswith("FID-FMNIST")]
    assert fid and fid == [line for line in again.stdout.splitlines() if line.startswith("FID-FMNIST")]


# --- training checkpoints, run records and logs --------------------------------------------------------------


def _objects():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()  # the optimiser now holds tensor state
    return model, make_ema(model), optimizer


@pytest.mark.parametrize("name", ["state.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors"])
@pytest.mark.parametrize("how", ["half", "garbage", "empty"])
def test_a_damaged_training_checkpoint_is_one_error_naming_it(tmp_path, name, how):
    model, ema, optimizer = _objects()
    save_training_state(tmp_path / "checkpoint", step=7, model=model, ema=ema, optimizer=optimizer)
    assert load_training_state(tmp_path / "checkpoint", **dict(zip(("model", "ema", "optimizer"), _objects(),
                                                                  strict=True)))["step"] == 7
    _damage(tmp_path / "checkpoint" / name, how)
    fresh = dict(zip(("model", "ema", "optimizer"), _objects(), strict=True))
    with pytest.raises(SDMError) as err:
        load_training_state(tmp_path / "checkpoint", **fresh)
    _assert_one_line(err.value, str(tmp_path / "checkpoint"), name, "remove it to start afresh")


@pytest.mark.parametrize("state", [[1, 2], {"optimizer": {}}, {"step": "7"}])
def test_a_checkpoint_state_without_a_step_is_one_error(tmp_path, state):
    model, ema, optimizer = _objects()
    save_training_state(tmp_path / "checkpoint", step=7, model=model, ema=ema, optimizer=optimizer)
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))
    with pytest.raises(SDMError) as err:
        load_training_state(tmp_path / "checkpoint", model=model, ema=ema, optimizer=optimizer)
    _assert_one_line(err.value, "state.json", "remove it")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run trained for 2 steps (checkpoint at 2, log entries 1 and 2), to copy and damage."""
    root = tmp_path_factory.mktemp("run")
    x = np.random.default_rng(0).integers(0, 255, (16, 16, 16), dtype=np.uint8)
    np.savez(root / "data.npz", x_train=x)
    train(_run_config(root / "data.npz", root / "run", steps=2), progress=False)
    return root / "run"


def _run_config(data, out, steps):
    return TrainConfig(data=str(data), out=str(out), preset="tiny", steps=steps, batch_size=4, save_every=2,
                       warmup=1, log_every=1)


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("tail", [b'{"step": 3, "loss": 0.2', b"\xff\xfe\x00\n{\"step\": 3, \"lo"])
def test_resume_after_a_log_line_cut_short(trained_run, tmp_path, tail):
    run = _copy(trained_run, tmp_path)
    with open(run / "log.jsonl", "ab") as f:  # the killed run's last entry, half written
        f.write(tail)
    train(_run_config(json.loads((run / "train_config.json").read_text())["data"], run, steps=3), progress=False,
          resume=True)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3] and all(entry["loss"] > 0 for entry in log)


@pytest.mark.parametrize("name", ["model.safetensors", "state.json"])
def test_resume_from_a_truncated_checkpoint_names_it(trained_run, tmp_path, name):
    run = _copy(trained_run, tmp_path)
    _damage(run / "checkpoint" / name, "half")
    data = json.loads((run / "train_config.json").read_text())["data"]
    with pytest.raises(SDMError) as err:
        train(_run_config(data, run, steps=3), progress=False, resume=True)
    _assert_one_line(err.value, str(run / "checkpoint"), name, "remove it")
    shutil.rmtree(run / "checkpoint")  # the fix the message names: the run starts afresh
    train(_run_config(data, run, steps=3), progress=False, resume=True)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 3
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("how", ["half", "garbage", "list"])
def test_a_damaged_run_record_is_one_error_naming_it(trained_run, tmp_path, how):
    run = _copy(trained_run, tmp_path)
    assert read_run_config(run)["steps"] == 2 and steps_trained(run) == "2"
    if how == "list":
        (run / "train_config.json").write_text("[2]")
    else:
        _damage(run / "train_config.json", how)
    for reader in (read_run_config, steps_trained):
        with pytest.raises(SDMError) as err:
            reader(run)
        _assert_one_line(err.value, str(run / "train_config.json"), "damaged")


# --- model checkpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("file, how", [
    ("unet/diffusion_pytorch_model.safetensors", "half"),
    ("unet/diffusion_pytorch_model.safetensors", "garbage"),
    ("unet/diffusion_pytorch_model.safetensors", "empty"),
    ("unet/config.json", "half"),
    ("unet/config.json", "garbage"),
    ("unet/config.json", "list"),
    ("scheduler/scheduler_config.json", "half"),
    ("scheduler/scheduler_config.json", "garbage"),
    ("scheduler/scheduler_config.json", "list"),
])
def test_a_damaged_model_checkpoint_is_one_error_naming_the_file(tiny_pipeline, tmp_path, file, how):
    pipe = shutil.copytree(tiny_pipeline, tmp_path / "pipe")
    if how == "list":
        (pipe / file).write_text("[1, 2]")
    else:
        _damage(pipe / file, how)
    with pytest.raises(SDMError) as err:
        load_model(pipe)
    _assert_one_line(err.value, str(pipe / file), "damaged", "save or copy the model again")


def test_a_damaged_file_in_the_hub_cache_says_to_delete_its_cache_folder(tiny_pipeline, tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = shutil.copytree(tiny_pipeline, repo / "snapshots" / "0123abcd")
    _damage(snapshot / "unet" / "diffusion_pytorch_model.safetensors", "half")
    with pytest.raises(SDMError) as err:
        load_model(snapshot)
    _assert_one_line(err.value, "diffusion_pytorch_model.safetensors", f"delete '{repo}' from the hub cache")


# --- data archives -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["half", "empty", "garbage", "tail", "bitrot"])
def test_a_damaged_data_archive_is_one_error_naming_it(fake_fmnist, how):
    assert load_dataset(fake_fmnist, 28, 1).shape == (48, 1, 28, 28)
    _damage(fake_fmnist, how)
    readers = [lambda: load_dataset(fake_fmnist, 28, 1)]
    if how == "bitrot":  # only x_train is damaged: the test split (read_images) still reads
        assert read_images(str(fake_fmnist)).shape == (16, 28, 28, 1)
    else:
        readers.append(lambda: read_images(str(fake_fmnist)))
    for read in readers:
        with pytest.raises(SDMError) as err:
            read()
        _assert_one_line(err.value, str(fake_fmnist), "damaged or not a .npz")


def test_a_bare_npy_named_npz_is_one_error(tmp_path):
    with open(tmp_path / "images.npz", "wb") as f:
        np.save(f, np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(SDMError) as err:
        load_dataset(tmp_path / "images.npz", 28, 1)
    _assert_one_line(err.value, "images.npz", "numpy.savez")


def test_sdm_eval_on_a_truncated_sample_archive_is_one_line(fake_fmnist, tmp_path):
    np.savez(tmp_path / "s.npz", images=np.load(fake_fmnist)["x_train"][..., None])
    _damage(tmp_path / "s.npz", "half")
    result = CliRunner().invoke(evaluate.main, ["--samples", str(tmp_path / "s.npz"), "--extractor", "fmnist"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: could not read") and "s.npz" in lines[0], result.stderr
