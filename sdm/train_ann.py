"""DDPM training of a diffusers UNet2DModel: the ANN that conversion starts from.

Epsilon objective on the linear 1e-4..0.02 schedule, AdamW, gradient clipping, EMA, bf16 autocast
on a GPU. Every random draw of step s comes from a generator seeded with (seed, s), and the data
order from one seeded permutation per epoch, so a resumed run retraces the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdm.checkpoint import load_training_state, save_training_state
from sdm.data import load_dataset
from sdm.ema import ema_decay, make_ema, update_ema
from sdm.errors import SDMError
from sdm.images import save_grid, to_model_range
from sdm.io import write_json
from sdm.presets import build_unet, preset_config
from sdm.pretrained import DDPM_LINEAR_SCHEDULE, save_pipeline
from sdm.sampler import sample

CHECKPOINT_DIR = "checkpoint"
CONFIG_FILE = "train_config.json"
# Settings a resumed run must share with the run it continues (the step count may grow).
RESUME_INVARIANT = ("data", "preset", "batch_size", "lr", "warmup", "weight_decay", "ema_decay", "seed", "hflip", "fit")


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "fmnist-small"
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    hflip: bool = True
    fit: str = "auto"
    save_every: int = 1000
    sample_every: int = 0
    log_every: int = 50
    device: str = "cpu"

    def validate(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "save_every": self.save_every}
        for name, value in positive.items():
            if not value > 0:
                raise SDMError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise SDMError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        if self.warmup < 0 or self.sample_every < 0 or self.grad_clip <= 0:
            raise SDMError("--warmup and --sample-every must be >= 0 and --grad-clip > 0")
        preset_config(self.preset)


def _noise_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed * 1_000_003 + step)


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator("cpu").manual_seed(seed * 7919 + epoch))


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Indices of batch `step`: consecutive slices of one seeded permutation per epoch."""
    parts, position = [], step * batch_size
    while sum(len(p) for p in parts) < batch_size:
        epoch, offset = divmod(position, n)
        take = min(batch_size - sum(len(p) for p in parts), n - offset)
        parts.append(_epoch_permutation(n, seed, epoch)[offset : offset + take])
        position += take
    return torch.cat(parts)


def diffusion_loss(model, images: torch.Tensor, alphas_cumprod: torch.Tensor, generator: torch.Generator, hflip: bool):
    """The DDPM epsilon objective on one batch of [-1, 1] images."""
    n = images.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (n,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
    device = images.device
    t, noise = t.to(device), noise.to(device)
    a = alphas_cumprod.to(device)[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * images + (1 - a).sqrt() * noise
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pred = model(noisy, t, return_dict=False)[0]
    return F.mse_loss(pred.float(), noise)


def _check_resume(out: Path, config: TrainConfig, resume: bool) -> bool:
    """Whether to resume; refuses to overwrite or to mix runs with different settings."""
    has_state = (out / CHECKPOINT_DIR / "state.json").is_file()
    if not has_state:
        return False
    if not resume:
        raise SDMError(f"'{out}' already holds a training run; pass --resume to continue it or choose another --out")
    saved = json.loads((out / CONFIG_FILE).read_text())
    changed = [k for k in RESUME_INVARIANT if saved.get(k) != getattr(config, k)]
    if changed:
        raise SDMError(
            f"cannot resume '{out}': {', '.join(f'{k}={saved.get(k)!r}' for k in changed)} differ from this "
            "command; use the original settings or another --out"
        )
    return True


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train per `config`; writes a pipeline directory at `config.out` and returns its path.

    `on_step(step, loss)` runs after every optimiser step (logging, tests that interrupt a run).
    """
    from diffusers import DDPMScheduler

    config.validate()
    out = Path(config.out)
    resuming = _check_resume(out, config, resume)
    device = torch.device(config.device)
    unet_config = preset_config(config.preset)
    data = load_dataset(config.data, unet_config["sample_size"], unet_config["in_channels"], fit=config.fit)

    torch.manual_seed(config.seed)
    model = build_unet(config.preset).to(device).train()
    ema = make_ema(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler_config = dict(DDPM_LINEAR_SCHEDULE)
    alphas_cumprod = DDPMScheduler.from_config(scheduler_config).alphas_cumprod.float()

    step = 0
    if resuming:
        step = load_training_state(out / CHECKPOINT_DIR, model=model, ema=ema, optimizer=optimizer)["step"]
    else:
        out.mkdir(parents=True, exist_ok=True)
    write_json(dataclasses.asdict(config), out / CONFIG_FILE)
    if step >= config.steps:
        raise SDMError(f"'{out}' is already trained for {step} steps; pass a larger --steps to continue")

    log_path, losses, started = out / "log.jsonl", [], time.time()
    bar = tqdm(total=config.steps, initial=step, desc="train-ann", disable=not progress, unit="step")
    while step < config.steps:
        generator = _noise_generator(config.seed, step)
        images = to_model_range(data[batch_indices(step, config.batch_size, len(data), config.seed)].to(device))
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        loss = diffusion_loss(model, images, alphas_cumprod, generator, config.hflip)
        if not torch.isfinite(loss):
            raise SDMError(f"the loss became {loss.item()} at step {step}; lower --lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        update_ema(ema, model, ema_decay(step, config.ema_decay))
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(time.time() - started, 1)}
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            losses.clear()
        if step % config.save_every == 0 or step == config.steps:
            save_training_state(out / CHECKPOINT_DIR, step=step, model=model, ema=ema, optimizer=optimizer)
            save_pipeline(ema, scheduler_config, out)
        if config.sample_every and (step % config.sample_every == 0 or step == config.steps):
            grid = sample(ema, scheduler_config, 16, sampler="ddim", steps=50, seed=0, progress=False)
            save_grid(grid, out / "samples" / f"step_{step:07d}.png", nrow=4, scale=2)
        if on_step is not None:
            on_step(step, loss.item())
    bar.close()
    return out
