"""Pipeline directories as diffusers writes them: `unet/`, `scheduler/` and `model_index.json`
(`sdm.models.pretrained` reads them back), and the DDPM schedule assumed where none is saved."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sdm.io import atomic_dir, write_json

# The schedule every DDPM of the google/ddpm-* family was trained with.
DDPM_LINEAR_SCHEDULE = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}


def save_pipeline(
    model: torch.nn.Module, scheduler_config: dict, out: str | os.PathLike, dtype: torch.dtype | None = None
) -> None:
    """Write `out/unet`, `out/scheduler` and `out/model_index.json`, each atomically.

    The result is a diffusers pipeline directory (`DDPMPipeline.from_pretrained` reads it); other
    files already in `out` (training state, logs) are left alone.
    """
    import copy

    from diffusers import DDPMScheduler

    out = Path(out)
    with atomic_dir(out / "unet") as tmp:
        to_save = copy.deepcopy(model).to(dtype) if dtype is not None else model
        to_save.save_pretrained(tmp, safe_serialization=True)
    with atomic_dir(out / "scheduler") as tmp:
        config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        DDPMScheduler.from_config(config).save_pretrained(tmp)
    write_json(
        {
            "_class_name": "DDPMPipeline",
            "_diffusers_version": _diffusers_version(),
            "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": [type(model).__module__.split(".")[0], type(model).__name__],
        },
        out / "model_index.json",
    )


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
