"""Sampling N images in resumable shards, across processes.

Shard k holds the images of seeds `seed + k*size` .. (exclusive) `seed + (k+1)*size`. Each process
(rank r of W, from `accelerate launch` or `torchrun`) draws the shards k = r, r + W, ...; a shard is
written atomically, so a killed run leaves only whole shards, and a rerun skips them. A manifest ties
the directory to the model (a hash of its weights) and the sampling settings: shards of another
model or setting are never mixed in. N is not part of it: a larger N reuses every full shard already
drawn (a sweep at N = 500 is the first shard of the same model's N = 2000), and a shard whose seeds
differ from the ones asked for (a partial last shard) is drawn again.

`keyed_work_dir` names a directory by that manifest, so commands pointed at one root share samples:
`sdm-compare --work-dir R` reuses what a benchmark drew under R for the same model and settings.

Damaged files (a disk that filled up, a copy cut short) never end in a traceback. A shard that cannot
be read is drawn again, like a missing one. A manifest that cannot be read is rewritten when the
directory holds no shard yet; beside shards it is an `SDMError`, since nothing then says which model
drew them (mixing them in could silently corrupt a score): remove the directory or choose another.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sdm.diffusion.data import NPZ_READ_ERRORS
from sdm.diffusion.images import save_npz
from sdm.diffusion.sampler import sample
from sdm.errors import ConfigError, SDMError, reason
from sdm.io import write_json

SHARD_SIZE = 500


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's class, the config that decides its outputs and every parameter and buffer:
    exactly what decides its samples. That config is the model's `output_config()` where it has one (a
    converted SNN's leaves out how its thresholds were found), else its whole config."""
    digest = hashlib.sha256(type(model).__name__.encode())
    if hasattr(model, "output_config"):
        config = model.output_config()
    else:
        config = {k: v for k, v in dict(getattr(model, "config", {})).items() if not k.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _manifest(model: torch.nn.Module, settings: dict, seed: int, shard_size: int) -> dict:
    """What the samples depend on. A converted SNN run by its step executor rounds differently from
    its rate form, so those samples are keyed apart (rate-form samples keep their earlier keys)."""
    executor = {"executor": model.executor} if getattr(model, "executor", "rate") != "rate" else {}
    return {"model": weights_fingerprint(model), "seed": seed, "shard_size": shard_size, **executor,
            **{k: v for k, v in settings.items() if k != "batch_size"}}


def keyed_work_dir(root: str | os.PathLike, model: torch.nn.Module, settings: dict, *, seed: int = 0,
                   shard_size: int = SHARD_SIZE) -> Path:
    """`root`'s sub-directory for this model and these settings (a digest of the manifest)."""
    digest = hashlib.sha256(json.dumps(_manifest(model, settings, seed, shard_size), sort_keys=True).encode())
    return Path(root) / digest.hexdigest()[:16]


def _shard_path(directory: Path, k: int) -> Path:
    return directory / f"shard_{k:05d}.npz"


def _valid(path: Path, seeds: np.ndarray) -> bool:
    """Whether `path` is a whole, readable shard of exactly `seeds` (else it is drawn again)."""
    try:
        with np.load(path, allow_pickle=False) as shard:
            return np.array_equal(shard["seeds"], seeds) and len(shard["images"]) == len(seeds)
    except (*NPZ_READ_ERRORS, TypeError):  # TypeError: a 0-d 'images' array
        return False


def _read_manifest(path: Path, directory: Path) -> dict | None:
    """The manifest at `path`; None when it is damaged but no shard depends on it (it is rewritten)."""
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError: a truncated or foreign file
        manifest, problem = None, f"not valid JSON: {reason(err, 120)}"
    else:
        problem = "not a JSON object"
    if isinstance(manifest, dict):
        return manifest
    if not any(directory.glob("shard_*.npz")):
        return None
    raise SDMError(f"manifest '{path}' is damaged ({problem}), so nothing says which model drew the shards beside it; "
                   "remove that directory to draw them afresh, or choose another --work-dir")


def sample_sharded(
    model: torch.nn.Module,
    scheduler_config: dict,
    num_samples: int,
    work_dir: str | os.PathLike,
    *,
    settings: dict,
    seed: int = 0,
    shard_size: int = SHARD_SIZE,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> list[Path]:
    """Draw this process's missing shards; returns the paths of all shards (in order).

    `settings` are the sampler's keyword arguments (sampler, steps, batch_size, threshold_scale).
    A shard that is missing, damaged or of other seeds is drawn (again); a damaged manifest is rewritten
    when no shard is there yet, and is an `SDMError` otherwise (see the module's docstring).
    """
    if num_samples < 1 or shard_size < 1:
        raise ConfigError("num_samples" if num_samples < 1 else "shard_size", "must be at least 1")
    directory = Path(work_dir)
    manifest = _manifest(model, settings, seed, shard_size)
    manifest_path = directory / "manifest.json"
    previous = _read_manifest(manifest_path, directory) if manifest_path.is_file() else None
    if previous is not None:
        if previous != manifest:
            changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise SDMError(f"'{directory}' holds samples of another model or setting ({', '.join(changed)} differ); "
                           "choose another --work-dir")
    elif rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(manifest, manifest_path)
    shards = math.ceil(num_samples / shard_size)
    paths = []
    for k in range(shards):
        start, stop = seed + k * shard_size, seed + min((k + 1) * shard_size, num_samples)
        path = _shard_path(directory, k)
        paths.append(path)
        if k % world != rank or _valid(path, np.arange(start, stop)):
            continue
        images = sample(model, scheduler_config, stop - start, seed=start, progress=progress, **settings)
        save_npz(images, path, seeds=np.arange(start, stop))
        if on_shard is not None:
            on_shard(k)
    return paths


def gather_shards(paths: list[Path], num_samples: int, seed: int) -> np.ndarray:
    """All shards as one uint8 array, checked to be exactly the images of seeds seed..seed+N-1."""
    images, seeds = [], []
    for path in paths:
        if not path.is_file():
            raise SDMError(f"shard '{path}' is missing; rerun the command to draw it")
        try:
            with np.load(path, allow_pickle=False) as shard:
                images.append(shard["images"])
                seeds.append(shard["seeds"])
        except (*NPZ_READ_ERRORS, TypeError) as err:
            raise SDMError(f"shard '{path}' is damaged ({reason(err, 120)}); rerun the command to draw it again") from None
    seeds = np.concatenate(seeds)
    if not np.array_equal(seeds, np.arange(seed, seed + num_samples)):
        raise SDMError("the shards do not hold exactly the requested seeds; remove the work directory and rerun")
    return np.concatenate(images)
