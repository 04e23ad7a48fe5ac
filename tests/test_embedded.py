"""The embedded models (the default DDPM and the directly trained SDM): shipped in the package, loadable offline."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from convert.commands import convert as cli
from sdm.diffusion.sampler import sample
from sdm.models.pretrained import (
    EMBEDDED_MODEL,
    EMBEDDED_MODELS,
    EMBEDDED_NAME,
    EMBEDDED_SDM_NAME,
    load_model,
)


def _stored_dtypes(weights) -> set[str]:
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        return {str(f.get_tensor(k).dtype) for k in f.keys()}


def test_embedded_model_is_small_fp16_and_loads_by_default():
    weights = EMBEDDED_MODEL / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 15e6
    assert _stored_dtypes(weights) == {"torch.float16"}
    loaded = load_model()
    assert loaded.source == EMBEDDED_NAME and loaded.notes == []
    config = loaded.model.config
    assert (config.sample_size, config.in_channels, config.act_fn) == (28, 1, "silu")
    assert "AttnDownBlock2D" in config.down_block_types
    images = sample(loaded.model, loaded.scheduler_config, 2, steps=5, progress=False)
    assert images.shape == (2, 28, 28, 1) and images.std() > 10
    assert (EMBEDDED_MODEL / "MODEL_CARD.md").is_file() and (EMBEDDED_MODEL / "sample_grid.png").is_file()


def test_sdm_convert_defaults_to_the_embedded_model(tmp_path):
    result = CliRunner().invoke(cli.main, [str(a) for a in ["--T", 2, "--calib-samples", 32, "--probes", 4,
                                                            "--num-samples", 2, "--steps", 3, "--out", tmp_path / "o"]])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["ckpt"] == EMBEDDED_NAME and len(report["energy"]["layers"]) > 0
    assert np.isfinite(report["eps_cosine"])


def _classes_and_fid(images) -> tuple[int, float]:
    import torch

    from sdm.metrics.extractors import FMNISTExtractor
    from sdm.metrics.fmnist_extractor import load_extractor, prepare
    from sdm.metrics.quality import evaluate_quality

    with torch.no_grad():
        labels = load_extractor()(prepare(images)).argmax(-1)
    return len(set(labels.tolist())), evaluate_quality(images, FMNISTExtractor(), metrics=("fid",))[0][0].value


@pytest.mark.parametrize("name", [EMBEDDED_NAME, EMBEDDED_SDM_NAME])
def test_embedded_samples_are_recognisably_fashion_mnist(name):
    """24 DDIM-20 samples: the bundled classifier sees at least 5 classes (a collapsed model fails), and
    their FID-FMNIST against the bundled test-split statistics is far below pure noise's (about 94 at
    N = 24; measured 8.3 for the ANN, 13.2 for the SDM)."""
    loaded = load_model(name)
    images = sample(loaded.model, loaded.scheduler_config, 24, sampler="ddim", steps=20, seed=0, progress=False)
    classes, fid = _classes_and_fid(images)
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert classes >= 5 and fid < 25 < 60 < _classes_and_fid(noise)[1]


def _weights_bytes(directory) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*.safetensors"))


def test_embedded_sdm_is_the_anns_size_and_both_ship_small():
    from sdm.models.spiking_unet import SpikingUNet

    ann, sdm = load_model(EMBEDDED_NAME).model, load_model(EMBEDDED_SDM_NAME).model
    assert isinstance(sdm, SpikingUNet) and sdm.config.T == 4 and sdm.config.tsm
    ann_params, sdm_params = (sum(p.numel() for p in m.parameters()) for m in (ann, sdm))
    assert abs(sdm_params - ann_params) <= 0.1 * ann_params
    directory = EMBEDDED_MODELS[EMBEDDED_SDM_NAME]
    assert _weights_bytes(EMBEDDED_MODEL) + _weights_bytes(directory) < 10e6
    assert all(_stored_dtypes(weights) == {"torch.float16"} for weights in directory.rglob("*.safetensors"))
    assert (directory / "MODEL_CARD.md").is_file() and (directory / "sample_grid.png").is_file()
    assert any(abs(p - 1.0) > 1e-3 for p in sdm.mean_tsm_factors())  # the TSM stage learnt something
