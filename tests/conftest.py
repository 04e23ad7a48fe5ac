"""Shared fixtures. The suite never touches the network or ../shared."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hub ids fail at once instead of retrying for ~20 s


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SDM_DATA_CACHE", str(tmp_path / "dataset-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A pipeline directory holding a randomly initialised tiny UNet2DModel."""
    from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE, save_pipeline
    from sdm.models.presets import build_unet

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny") / "pipeline"
    save_pipeline(build_unet("tiny"), DDPM_LINEAR_SCHEDULE, path)
    return path


@pytest.fixture
def fake_fmnist(tmp_path):
    """A small archive in the layout of ../shared/data/fashion_mnist.npz: bright blobs on black."""
    rng = np.random.default_rng(0)
    x = np.zeros((64, 28, 28), np.uint8)
    for i in range(64):
        r, c = rng.integers(6, 22, size=2)
        x[i, r - 4 : r + 4, c - 3 : c + 3] = rng.integers(120, 255)
    path = tmp_path / "fake_fmnist.npz"
    np.savez(path, x_train=x[:48], y_train=np.arange(48) % 10, x_test=x[48:], y_test=np.arange(16) % 10)
    return path
