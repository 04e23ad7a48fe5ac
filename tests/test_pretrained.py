import json

import pytest
import torch

from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE, save_pipeline
from sdm.errors import SDMError
from sdm.models.presets import PRESETS, build_unet
from sdm.models.pretrained import load_model

# The published config.json of google/ddpm-cifar10-32 (the hub is unreachable here).
GOOGLE_DDPM_CIFAR10_32 = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}


def test_cifar10_preset_is_the_google_config():
    preset = {k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS["cifar10-32"].items()}
    expected = {k: v for k, v in GOOGLE_DDPM_CIFAR10_32.items() if not k.startswith("_")}
    assert preset == expected


def test_google_config_model_saves_and_loads_from_local_dir(tmp_path):
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_config({k: v for k, v in GOOGLE_DDPM_CIFAR10_32.items()})
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307
    unet.save_pretrained(tmp_path / "bare", safe_serialization=True)
    loaded = load_model(tmp_path / "bare")
    assert any("assumed the DDPM linear schedule" in n for n in loaded.notes)
    assert loaded.scheduler_config["beta_end"] == 0.02
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(unet.eval()(x, t).sample, loaded.model(x, t).sample)


def test_pipeline_layout_round_trip_and_fp16_storage(tmp_path):
    unet = build_unet("tiny").eval()
    save_pipeline(unet, DDPM_LINEAR_SCHEDULE, tmp_path / "pipe", dtype=torch.float16)
    loaded = load_model(tmp_path / "pipe")
    assert loaded.notes == [] and loaded.scheduler_config["_class_name"] == "DDPMScheduler"
    assert next(loaded.model.parameters()).dtype == torch.float32
    for (name, a), (_, b) in zip(unet.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a.half().float(), b), name
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]


def test_diffusers_pipeline_reads_our_directory(tmp_path):
    from diffusers import DDPMPipeline

    save_pipeline(build_unet("tiny"), DDPM_LINEAR_SCHEDULE, tmp_path / "pipe")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.unet.config.sample_size == 16


def test_missing_path(tmp_path):
    with pytest.raises(SDMError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(SDMError, match="not found"):
        load_model("./also-missing")


def test_unknown_embedded_name_lists_the_shipped_ones():
    with pytest.raises(SDMError, match="no embedded model 'embedded:cifar10'.*embedded:fmnist-ddpm or embedded:fmnist-sdm"):
        load_model("embedded:cifar10")


def test_unreachable_hub_id_is_one_line():
    with pytest.raises(SDMError, match="could not fetch 'google/ddpm-cifar10-32'") as err:
        load_model("google/ddpm-cifar10-32")
    assert "\n" not in str(err.value) and "--ckpt" in str(err.value)


def test_wrong_model_and_missing_weights(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(SDMError, match="holds a AutoencoderKL"):
        load_model(tmp_path / "vae")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SDMError, match="not a model directory"):
        load_model(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(SDMError, match="no weights"):
        load_model(tmp_path / "noweights")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(SDMError, match="is a file"):
        load_model(tmp_path / "file.json")


def test_pickle_weights_need_opt_in(tmp_path):
    unet = build_unet("tiny")
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    with pytest.raises(SDMError, match="--allow-pickle"):
        load_model(tmp_path / "bin")
    assert load_model(tmp_path / "bin", allow_pickle=True).model.config.sample_size == 16


def test_weights_for_another_architecture(tmp_path):
    build_unet("tiny").save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["block_out_channels"] = [16, 32]
    config["norm_num_groups"] = 8
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SDMError, match="could not load the UNet2DModel"):
        load_model(tmp_path / "m")
