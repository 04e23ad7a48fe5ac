"""Training and calibration images from `.npz` archives, image folders or torchvision data sets.

Every source ends as a uint8 N x C x H x W tensor already fitted to the model (size and
channels); `sdm.diffusion.images.to_model_range` turns a batch of it into the model's [-1, 1].
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdm.errors import SDMError, reason

TORCHVISION_NAMES = {
    "fashion-mnist": "FashionMNIST",
    "fashion_mnist": "FashionMNIST",
    "fmnist": "FashionMNIST",
    "mnist": "MNIST",
    "cifar10": "CIFAR10",
    "cifar-10": "CIFAR10",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
NPZ_KEYS = {"train": ("x_train", "x", "images", "arr_0"), "test": ("x_test", "x", "images", "arr_0")}
# What np.load and reading an array of a truncated, damaged or foreign .npz raise: BadZipFile (cut short,
# a bad CRC), zlib.error and EOFError (damaged compressed data), NotImplementedError (a garbled
# compression method), ValueError (a bad .npy header, pickled data), KeyError (a garbled member name).
NPZ_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def load_dataset(
    source: str | os.PathLike,
    size: int | None,
    channels: int | None,
    *,
    split: str = "train",
    fit: str = "auto",
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Load `source` and fit it to `size` x `size` images with `channels` channels (uint8 NCHW).

    `fit`: 'pad' centres smaller images on black (exact for MNIST-style data), 'resize'
    interpolates, 'auto' pads when the image is at least 3/4 of `size`, else resizes.
    `size` or `channels` None keeps the images' own (sample archives, for metrics).
    """
    if split not in NPZ_KEYS:
        raise SDMError(f"unknown split '{split}': use train or test")
    if fit not in ("auto", "pad", "resize"):
        raise SDMError(f"unknown fit '{fit}': use auto, pad or resize")
    path = Path(os.path.expanduser(str(source)))
    if path.is_file() and path.suffix == ".npz":
        images = _fit(_from_npz(path, split), size, channels, fit)
    elif path.is_dir():
        images = _from_folder(path, size, channels, fit, limit)
    elif path.exists():
        raise SDMError(f"data source '{source}' is neither a .npz archive nor an image folder")
    elif str(source).lower() in TORCHVISION_NAMES:
        images = _fit(_from_torchvision(str(source).lower(), split, cache_dir), size, channels, fit)
    else:
        known = ", ".join(sorted({"fashion-mnist", "mnist", "cifar10"}))
        raise SDMError(
            f"data source '{source}' not found: pass an existing .npz file, an image folder, or one of {known}"
        )
    if limit is not None:
        images = images[:limit]
    if len(images) == 0:
        raise SDMError(f"data source '{source}' holds no images")
    return images


def _as_nhwc(array: np.ndarray, origin: str) -> np.ndarray:
    """Accept N x H x W, N x H x W x C or N x C x H x W (C in 1, 3, 4) as uint8 or floats in [0, 1]."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise SDMError(f"{origin}: expected images shaped N x H x W (x C), got shape {array.shape}")
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] not in (1, 3, 4):
        raise SDMError(f"{origin}: expected 1, 3 or 4 channels, got shape {array.shape}")
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and array.size and np.isfinite(array).all():
        if array.min() >= 0.0 and array.max() <= 1.0:
            return np.round(array * 255.0).astype(np.uint8)
    raise SDMError(f"{origin}: expected uint8 pixels or floats in [0, 1], got {array.dtype}")


def _unreadable(path: Path, err: Exception) -> SDMError:
    return SDMError(f"could not read '{path}' as a .npz archive ({reason(err)}); the file is damaged or not a .npz: "
                    "write or copy it again")


def _from_npz(path: Path, split: str) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except NPZ_READ_ERRORS as err:
        raise _unreadable(path, err) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy renamed .npz
        raise SDMError(f"'{path}' is a single .npy array, not a .npz archive; save it with numpy.savez")
    with archive:
        key = next((k for k in NPZ_KEYS[split] if k in archive.files), None)
        if key is None:
            raise SDMError(
                f"'{path}' has no image array for split '{split}' (looked for {', '.join(NPZ_KEYS[split])}; "
                f"it holds {', '.join(archive.files) or 'nothing'})"
            )
        try:
            array = archive[key]
        except NPZ_READ_ERRORS as err:  # the central directory is whole but the member is not
            raise _unreadable(path, err) from None
        return _as_nhwc(array, f"'{path}' array '{key}'")


def _from_folder(path: Path, size: int | None, channels: int | None, fit: str, limit: int | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SDMError(f"image folder '{path}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    files = files[:limit] if limit is not None else files
    fitted = []
    for file in files:
        try:
            with Image.open(file) as img:
                mode = {1: "L", 3: "RGB"}.get(channels) or ("L" if img.mode in ("L", "1", "I", "I;16") else "RGB")
                array = np.asarray(img.convert(mode))
        except (OSError, UnidentifiedImageError) as err:
            raise SDMError(f"could not read image '{file}' ({err})") from None
        fitted.append(_fit(_as_nhwc(array[None], f"'{file}'"), size, channels, fit))
    if len({tuple(x.shape[1:]) for x in fitted}) > 1:
        raise SDMError(f"images in '{path}' differ in size or channels; give a target size to fit them")
    return torch.cat(fitted)


def _from_torchvision(name: str, split: str, cache_dir: str | os.PathLike | None) -> np.ndarray:
    import torchvision

    root = Path(cache_dir or os.environ.get("SDM_DATA_CACHE", Path.home() / ".cache" / "sdm" / "datasets"))
    cls = getattr(torchvision.datasets, TORCHVISION_NAMES[name])
    try:
        dataset = cls(root=str(root), train=(split == "train"), download=True)
    except Exception as err:  # torchvision raises URLError, RuntimeError, OSError, ... when offline
        raise SDMError(
            f"could not download the '{name}' data set ({reason(err, 120)}); without network, pass --data PATH "
            "to a .npz archive or an image folder"
        ) from None
    data = dataset.data
    return _as_nhwc(data.numpy() if torch.is_tensor(data) else np.asarray(data), name)


def _fit(images: np.ndarray, size: int | None, channels: int | None, fit: str) -> torch.Tensor:
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2)
    if channels is not None and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise SDMError(f"models with {channels} input channels are not supported; use 1 or 3")
    h, w = x.shape[-2:]
    if size is None or (h, w) == (size, size):
        return x.contiguous()
    pad = fit == "pad" or (fit == "auto" and h <= size and w <= size and min(h, w) * 4 >= size * 3)
    if pad:
        if h > size or w > size:
            raise SDMError(f"cannot pad {h}x{w} images to {size}x{size}; use --fit resize")
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top)).contiguous()
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).contiguous()


def read_images(source: str) -> np.ndarray:
    """uint8 N x H x W x C images from a .npz, an image folder or a data set name (test split): the
    reference and sample sets of the metrics."""
    return load_dataset(source, None, None, split="test").permute(0, 2, 3, 1).numpy()
