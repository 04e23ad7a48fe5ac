"""The FID-FMNIST feature extractor: a small Fashion-MNIST classifier shipped with the package.

Inception weights cannot always be downloaded; this network plays Inception's part offline. Its
256-d features are the global average pool of its last convolution (as Inception's pool3 is). The
resulting "FID-FMNIST" is a Fréchet distance in a different feature space: it ranks models, but it is
not comparable with any paper's Inception FID.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sdm.diffusion.data import NPZ_READ_ERRORS
from sdm.errors import SDMError

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "fmnist-extractor"
WEIGHTS_FILE = "model.safetensors"
REFERENCE_FILE = "reference_fashion_mnist_test.npz"
INPUT_SIZE = 28
FEATURE_DIM = 256


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FashionClassifier(nn.Module):
    """Six 3x3 conv layers (28 -> 14 -> 7), global average pool to 256 features, linear to 10 classes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            *_block(1, 32), *_block(32, 32), nn.MaxPool2d(2),
            *_block(32, 64), *_block(64, 64), nn.MaxPool2d(2),
            *_block(64, 128), *_block(128, FEATURE_DIM),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def prepare(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x C images -> the classifier's input: grey, 28 x 28, [-1, 1], N x 1 x 28 x 28."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise SDMError(f"FID-FMNIST takes uint8 images shaped N x H x W x (1 or 3), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    if x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x / 127.5 - 1.0


def load_extractor(directory: Path = ASSET_DIR, device: str | torch.device = "cpu") -> FashionClassifier:
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise SDMError(f"the FID-FMNIST extractor weights are missing ({path}); reinstall the package")
    net = FashionClassifier()
    try:
        net.load_state_dict(load_file(path))
    except (OSError, RuntimeError, SafetensorError) as err:
        raise SDMError(f"the FID-FMNIST extractor weights '{path}' are damaged ({type(err).__name__}); reinstall "
                       "the package") from None
    return net.to(device).eval()


@torch.no_grad()
def extract_features(
    images: np.ndarray, net: FashionClassifier | None = None, batch_size: int = 500, device: str = "cpu"
) -> np.ndarray:
    """N x 256 float64 features of uint8 N x H x W x C images."""
    net = net or load_extractor(device=device)
    device = next(net.parameters()).device
    out = [net.features(prepare(images[i : i + batch_size]).to(device)).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def load_reference(directory: Path = ASSET_DIR) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, info) of the Fashion-MNIST test split in the extractor's feature space."""
    path = Path(directory) / REFERENCE_FILE
    if not path.is_file():
        raise SDMError(f"the FID-FMNIST reference statistics are missing ({path}); reinstall the package")
    try:
        with np.load(path, allow_pickle=False) as ref:
            return ref["mu"], ref["sigma"], json.loads(str(ref["info"]))
    except (*NPZ_READ_ERRORS, json.JSONDecodeError) as err:
        raise SDMError(f"the FID-FMNIST reference statistics '{path}' are damaged ({type(err).__name__}); reinstall "
                       "the package") from None
