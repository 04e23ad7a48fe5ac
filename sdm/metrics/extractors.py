"""Feature extractors for sample metrics: Inception-v3 through torch-fidelity, or the bundled
Fashion-MNIST classifier offline. Each one says whether its figures compare with papers'."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from sdm.errors import SDMError

EXTRACTORS = ("auto", "inception", "fmnist")


class FMNISTExtractor:
    """The project's Fashion-MNIST classifier: 256-d pool features and 10 logits."""

    name, suffix, comparable = "fmnist-classifier", "-FMNIST", False
    description = "sdm FashionClassifier (256-d pool, 10 logits); not comparable with papers' Inception figures"

    def __init__(self, device: str = "cpu"):
        from sdm.metrics.fmnist_extractor import load_extractor

        self.net, self.device = load_extractor(device=device), device

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        from sdm.metrics.fmnist_extractor import prepare

        pools, logits = [], []
        for i in range(0, len(images), batch_size):
            x = prepare(images[i : i + batch_size]).to(self.device)
            pool = self.net.features(x)
            pools.append(pool.double().cpu())
            logits.append(self.net.head(pool).double().cpu())
        return torch.cat(pools).numpy(), torch.cat(logits).numpy()


class InceptionExtractor:
    """torch-fidelity's Inception-v3 (the TF-FID port): 2048-d pool3 and unbiased logits."""

    name, suffix, comparable = "inception-v3-compat", "", True
    description = "Inception-v3 (torch-fidelity inception-v3-compat, 2048-d pool3)"

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str = "cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        with tempfile.TemporaryDirectory() as workdir:
            weights = checked_inception_weights(weights_path, Path(workdir)) if weights_path else None
            try:
                self.net = FeatureExtractorInceptionV3(self.name, ["2048", "logits_unbiased"],
                                                       feature_extractor_weights_path=weights)
            except (OSError, RuntimeError) as err:  # urllib errors are OSErrors
                if weights is None:
                    raise SDMError("could not download the Inception-v3 weights (no network?); pass "
                                   "--inception-weights PATH, or --extractor fmnist for the offline proxy") from None
                raise SDMError(f"torch-fidelity could not load the Inception weights '{weights_path}' ({err})") from None
        self.net = self.net.to(device).eval()
        self.device = device

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        pools, logits = [], []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            pool, logit = self.net(x.contiguous().to(self.device))
            pools.append(pool.double().cpu())
            logits.append(logit.double().cpu())
        return torch.cat(pools).numpy(), torch.cat(logits).numpy()


def checked_inception_weights(path: str | os.PathLike, workdir: Path) -> str:
    """A weights file torch-fidelity may load: safetensors are re-saved as a plain state dict, and a
    `.pt`/`.pth` file must pass a `weights_only` load first, since torch-fidelity unpickles it fully."""
    path = Path(path)
    if not path.is_file():
        raise SDMError(f"--inception-weights '{path}' not found; pass the path of pt_inception-2015-12-05 weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            safe = workdir / "inception.pt"
            torch.save(load_file(path), safe)
            return str(safe)
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means the file is not plain weights
        raise SDMError(f"--inception-weights '{path}' is not a plain state dict of tensors ({type(err).__name__})") from None
    return str(path)


def make_extractor(kind: str = "auto", *, weights_path=None, device: str = "cpu") -> tuple[object, list[str]]:
    """The extractor of `kind` and notes; 'auto' is Inception when reachable, else the offline proxy."""
    if kind not in EXTRACTORS:
        raise SDMError(f"unknown extractor '{kind}': choose one of {', '.join(EXTRACTORS)}")
    if kind == "fmnist":
        return FMNISTExtractor(device), []
    try:
        return InceptionExtractor(weights_path, device), []
    except SDMError as err:
        if kind == "inception":
            raise
        return FMNISTExtractor(device), [f"{err}; reporting the FMNIST-classifier proxies instead"]


class TorchFidelityFMNIST(FeatureExtractorBase):
    """The FMNIST classifier as a torch-fidelity feature extractor ("sdm-fmnist": 'pool', 'logits'),
    so `torch_fidelity.calculate_metrics(feature_extractor="sdm-fmnist", ...)` works too."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        from sdm.metrics.fmnist_extractor import load_extractor

        self.net = load_extractor()

    @staticmethod
    def get_provided_features_list():
        return "pool", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        from sdm.metrics.fmnist_extractor import prepare

        pool = self.net.features(prepare(x.permute(0, 2, 3, 1).cpu()).to(next(self.net.parameters()).device))
        out = {"pool": pool, "logits": self.net.head(pool)}
        return tuple(out[name] for name in self.features_list)


def register_with_torch_fidelity() -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if "sdm-fmnist" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("sdm-fmnist", TorchFidelityFMNIST)
