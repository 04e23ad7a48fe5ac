"""Image tensors in the three forms the toolkit uses, and their files.

uint8 NHWC numpy arrays are what users see (PNG grids, `.npz` archives, metrics); float NCHW
tensors in [-1, 1] are what models see; uint8 NCHW tensors are the compact in-memory dataset.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from sdm.errors import SDMError
from sdm.io import atomic_file


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 NCHW in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(samples: torch.Tensor) -> np.ndarray:
    """Model output in [-1, 1], NCHW -> uint8 NHWC (values outside [-1, 1] are clipped)."""
    x = samples.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image (grey stays one channel)."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise SDMError(f"expected uint8 images shaped N x H x W x C, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = nrow
    nrows_needed = math.ceil(n / ncol)
    grid = np.zeros((nrows_needed * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int = 1) -> None:
    """Write a PNG grid; `scale` enlarges small images (nearest neighbour) for viewing."""
    from PIL import Image

    grid = make_grid(images, nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    with atomic_file(path) as tmp:
        img.save(tmp, format="PNG")


def save_npz(images: np.ndarray, path: str | os.PathLike, **arrays) -> None:
    """Write samples as `images` (uint8 N x H x W x C) plus any extra arrays, such as the seeds."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, **arrays)


def save_comparison(panels: list[tuple[str, np.ndarray]], path: str | os.PathLike, scale: int = 2) -> None:
    """Sample grids side by side under their labels (same seeds in the same cells)."""
    from PIL import Image, ImageDraw

    grids = [make_grid(images) for _, images in panels]
    grids = [g.repeat(scale, axis=0).repeat(scale, axis=1) for g in grids]
    grids = [np.repeat(g, 3, axis=-1) if g.shape[-1] == 1 else g for g in grids]
    label_h, gap = 18, 8
    height = max(g.shape[0] for g in grids) + label_h
    width = sum(g.shape[1] for g in grids) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for (label, _), grid in zip(panels, grids, strict=True):
        draw.text((x + 2, 3), label, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(grid), (x, label_h))
        x += grid.shape[1] + gap
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
