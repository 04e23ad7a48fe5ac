"""FID with Inception (torch-fidelity) when its weights are reachable, FID-FMNIST offline.

The two never share a name: a result is labelled "FID" only when Inception-v3 made it, and
"FID-FMNIST" (with its not-comparable warning) when the bundled classifier did.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sdm.errors import SDMError
from sdm.metrics.frechet import feature_statistics, frechet_distance

FID_FMNIST = "FID-FMNIST"
FID_INCEPTION = "FID"
FMNIST_EXTRACTOR = "sdm FashionClassifier, 256-d pool features"
INCEPTION_EXTRACTOR = "Inception-v3 (torch-fidelity inception-v3-compat, 2048-d pool3)"


@dataclass
class FIDResult:
    metric: str
    value: float
    n: int
    extractor: str
    reference: str
    comparable_with_papers: bool

    def label(self) -> str:
        caveat = "" if self.comparable_with_papers else "; not comparable with papers' Inception FID"
        return f"{self.metric} = {self.value:.3f} (N={self.n}; extractor: {self.extractor}; reference: {self.reference}{caveat})"

    def to_dict(self) -> dict:
        return asdict(self)


def fid_fmnist(images: np.ndarray, *, device: str = "cpu", batch_size: int = 500) -> FIDResult:
    """FID-FMNIST of uint8 N x H x W x C samples against the Fashion-MNIST test split."""
    from sdm.metrics.fmnist_extractor import extract_features, load_extractor, load_reference

    mu_ref, sigma_ref, info = load_reference()
    mu, sigma = feature_statistics(extract_features(images, load_extractor(device=device), batch_size))
    return FIDResult(FID_FMNIST, frechet_distance(mu, sigma, mu_ref, sigma_ref), len(images), FMNIST_EXTRACTOR,
                     f"{info['reference']} (N={info['n']})", comparable_with_papers=False)


class _UInt8Images(torch.utils.data.Dataset):
    """What torch-fidelity reads: bare uint8 3 x H x W tensors (grey repeated to three channels)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _checked_inception_weights(path: str | os.PathLike, workdir: Path) -> str:
    """A weights file torch-fidelity may load: safetensors are re-saved as a plain state dict, and a
    `.pt`/`.pth` file must pass a `weights_only` load first, since torch-fidelity unpickles it fully."""
    path = Path(path)
    if not path.is_file():
        raise SDMError(f"--inception-weights '{path}' not found; pass the path of pt_inception-2015-12-05 weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
            safe = workdir / "inception.pt"
            torch.save(state, safe)
            return str(safe)
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means the file is not plain weights
        raise SDMError(f"--inception-weights '{path}' is not a plain state dict of tensors ({type(err).__name__})") from None
    return str(path)


def fid_inception(
    images: np.ndarray,
    reference: np.ndarray,
    *,
    reference_name: str,
    weights_path: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> FIDResult:
    """Inception FID of uint8 samples against uint8 reference images, through torch-fidelity.

    Without `weights_path` torch-fidelity downloads the weights; offline that fails with a message
    that says how to go on.
    """
    import torch_fidelity

    with tempfile.TemporaryDirectory() as workdir:
        weights = _checked_inception_weights(weights_path, Path(workdir)) if weights_path else None
        try:
            metrics = torch_fidelity.calculate_metrics(
                input1=_UInt8Images(images), input2=_UInt8Images(reference), fid=True,
                cuda=str(device).startswith("cuda"), batch_size=batch_size, verbose=False,
                feature_extractor_weights_path=weights, cache=False,
            )
        except (OSError, RuntimeError) as err:  # urllib errors are OSErrors
            if weights is None:
                raise SDMError(
                    "could not download the Inception-v3 weights for FID (no network?); pass "
                    "--inception-weights PATH, or use --metric fid-fmnist for the offline proxy"
                ) from None
            raise SDMError(f"torch-fidelity failed on the Inception weights '{weights_path}' ({err})") from None
    value = float(metrics["frechet_inception_distance"])
    return FIDResult(FID_INCEPTION, value, len(images), INCEPTION_EXTRACTOR, reference_name, comparable_with_papers=True)
