"""The diffusion training loop shared by the ANN trainer and the spiking-UNet trainer.

Epsilon objective on the linear 1e-4..0.02 schedule, AdamW, gradient clipping, EMA, bf16 autocast
(GPUs by default; CPUs with bf16 units on request); `accelerate` takes care of devices and several
processes (`accelerate launch` or `torchrun`). Every
random draw of step s comes from a generator seeded with (seed, s, rank), and the data order from
one seeded permutation per epoch, so a resumed run retraces the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from sdm.diffusion.checkpoint import STATE_FILE, load_training_state, save_training_state
from sdm.diffusion.ddpm_objective import ddpm_objective
from sdm.diffusion.ema import ema_decay, make_ema, update_ema
from sdm.diffusion.images import save_grid
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE, save_pipeline
from sdm.diffusion.sampler import sample
from sdm.diffusion.train_settings import TrainSettings, autocasts_bf16
from sdm.diffusion.wall_clock import TimeBudget
from sdm.errors import ConfigError, SDMError
from sdm.io import write_json, write_text

if TYPE_CHECKING:
    from accelerate import Accelerator

CHECKPOINT_DIR = "checkpoint"
CONFIG_FILE = "train_config.json"
# Settings a resumed run must share with the run it continues (the step count may grow).
RESUME_INVARIANT = ("data", "batch_size", "lr", "warmup", "weight_decay", "ema_decay", "seed", "hflip", "fit")


def read_run_config(run: str | Path) -> dict | None:
    """A training run's recorded settings (`train_config.json`), or None for a directory without one."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError (truncated), UnicodeDecodeError (garbled bytes)
        reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)[:120]
        raise SDMError(f"'{path}' is not valid JSON ({reason}); the run record is damaged: restore it, or "
                       "train the run again into a new directory") from None
    if not isinstance(config, dict):
        raise SDMError(f"'{path}' holds no settings (a JSON {type(config).__name__}, not an object); the run "
                       "record is damaged: restore it, or train the run again into a new directory")
    return config


def steps_trained(run: str | Path) -> str:
    """A run's training steps; a stage started from another run counts on top of it ("1000 + 250")."""
    config = read_run_config(run) or {}
    parent = config.get("init_from") or config.get("model", {}).get("init_from")
    own = str(config.get("steps", "?"))
    parent_config = read_run_config(parent) if parent else None
    return own if parent_config is None else f"{parent_config['steps']} + {own}"


def _noise_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step) * 1009 + rank)


def _check_resume(out: Path, record: dict, resume: bool) -> bool:
    """Whether to resume; refuses to overwrite or to mix runs with different settings."""
    if not (out / CHECKPOINT_DIR / STATE_FILE).is_file():
        return False
    if not resume:
        raise ConfigError("out", f"'{out}' already holds a training run: resume it, or choose another directory")
    saved = read_run_config(out) or {}
    changed = [k for k in RESUME_INVARIANT if saved.get(k) != record.get(k)]
    changed += [f"model.{k}" for k in record["model"] if saved.get("model", {}).get(k) != record["model"][k]]
    if changed:
        shown = ", ".join(f"{k}={saved.get(k, saved.get('model', {}).get(k.removeprefix('model.')))!r}" for k in changed)
        raise SDMError(f"cannot resume '{out}': {shown} differ from this command; use the original settings or "
                       "another --out")
    return True


def train_diffusion(
    settings: TrainSettings,
    model_settings: dict,
    build_model: Callable[[], nn.Module],
    *,
    initialise: Callable[[nn.Module], None] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    objective: Callable[[nn.Module, int, torch.Generator], tuple[torch.Tensor, dict]] | None = None,
    param_groups: Callable[[nn.Module], list[dict]] | None = None,
    constrain: Callable[[nn.Module], None] | None = None,
    save_model: Callable[[nn.Module, Path], None] | None = None,
    time_budget: TimeBudget | None = None,
) -> Path:
    """Train `build_model()` per `settings`; writes a pipeline directory at `settings.out`.

    `model_settings` (JSON-able) describe the model and must match when resuming; `initialise` runs
    on a fresh (not resumed) model, e.g. to copy weights from a parent checkpoint. `on_step(step,
    loss)` runs after every optimiser step (logging, tests that interrupt a run).

    The default is DDPM training on `settings.data`. Other objectives (distillation of a converted
    SNN) pass `objective(model, step, generator) -> (loss, logged scalars)`, drawing their batch from
    the step's generator; `param_groups(model)` gives the optimiser groups (a group's 'lr' is its base
    rate), `constrain(model)` runs after each update, and `save_model(ema, out)` writes the result.
    With a `time_budget`, `settings.steps` is a plan: the steps' measured speed fits it again as the run
    goes (`sdm.diffusion.wall_clock`), and the run's record says how many.
    """
    settings.validate()
    out = Path(settings.out)
    bf16 = autocasts_bf16(settings.precision, settings.device)
    record = {**dataclasses.asdict(settings), "model": model_settings, "autocast": "bf16" if bf16 else "fp32"}
    resuming = _check_resume(out, record, resume)
    accelerator, autocast = _accelerated(settings, bf16)
    torch.manual_seed(settings.seed)
    model = build_model()
    objective = objective or ddpm_objective(settings, model, accelerator)
    optimizer = _optimizer(model, settings, param_groups)
    ema = make_ema(model)
    step, elapsed = _starting_point(out, settings, resuming, model, ema, optimizer, initialise)
    model.train()
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(record, out / CONFIG_FILE)
        _drop_log_after(out / "log.jsonl", step)
    trainee = _Trainee(model, optimizer, ema, objective, constrain, accelerator, autocast)
    save_model = save_model or functools.partial(_save_ddpm_pipeline, dict(DDPM_LINEAR_SCHEDULE))
    _train_steps(trainee, settings, record, out, step, elapsed, save_model, time_budget=time_budget,
                 progress=progress, on_step=on_step)
    return out


@dataclasses.dataclass(frozen=True)
class _Trainee:
    """What every step of a run uses: the accelerated model and optimiser, the EMA, the objective and the
    constraint after each update, and the process's accelerator and autocast."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: nn.Module
    objective: Callable[[nn.Module, int, torch.Generator], tuple[torch.Tensor, dict]]
    constrain: Callable[[nn.Module], None] | None
    accelerator: Accelerator
    autocast: Callable[[], torch.autocast]


def _accelerated(settings: TrainSettings, bf16: bool) -> tuple[Accelerator, Callable[[], torch.autocast]]:
    """The run's `Accelerator` and autocast context. Autocast is ours, not accelerate's: its precision is
    process-wide state that a second run in the same process (a test, a notebook) could not change."""
    from accelerate import Accelerator

    on_gpu = settings.device.startswith("cuda")
    accelerator = Accelerator(cpu=not on_gpu)
    autocast = functools.partial(torch.autocast, "cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=bf16)
    if settings.batch_size % accelerator.num_processes:
        raise ConfigError("batch_size", f"({settings.batch_size}) must be divisible by the "
                          f"{accelerator.num_processes} processes")
    return accelerator, autocast


def _train_steps(trainee: _Trainee, settings: TrainSettings, record: dict, out: Path, step: int, elapsed: float,
                 save_model: Callable[[nn.Module, Path], None], *, time_budget: TimeBudget | None, progress: bool,
                 on_step: Callable[[int, float], None] | None) -> None:
    """The steps from `step` to the run's end (a timed run's end fitted again as it goes): each update, then
    its log, checkpoint and `on_step`."""
    accelerator = trainee.accelerator
    losses, started = [], time.time() - elapsed  # a resumed run's clock continues from its checkpoint
    if time_budget is not None:
        time_budget.start_loop(step)
    bar = tqdm(total=settings.steps, initial=step, desc="train", unit="step",
               disable=not progress or not accelerator.is_main_process)
    while step < settings.steps:
        with trainee.autocast():
            loss, scalars = _update(trainee, settings, step)
        step += 1
        if time_budget is not None and time_budget.due(step):
            settings = _fit_to_time(settings, time_budget, record, out, step, accelerator)
            bar.total = settings.steps
        losses.append({"loss": loss.item(), **scalars})
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]['loss']:.4f}")
        model = accelerator.unwrap_model(trainee.model)
        # every process takes part in the digests' gathering
        digests = _rank_digests(accelerator, model, step) if settings.saves_at(step) else None
        if accelerator.is_main_process:
            _checkpoint(settings, out, step, model, trainee.ema, trainee.optimizer, losses, started, save_model,
                        digests)
        if on_step is not None:
            on_step(step, loss.item())
    bar.close()
    accelerator.wait_for_everyone()


def _optimizer(model: nn.Module, settings: TrainSettings, param_groups) -> torch.optim.Optimizer:
    """AdamW over `param_groups(model)` (every parameter when None); each group keeps its base rate."""
    groups = param_groups(model) if param_groups is not None else [{"params": list(model.parameters())}]
    for group in groups:
        group["base_lr"] = group.get("lr", settings.lr)
    return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def _starting_point(out: Path, settings: TrainSettings, resuming: bool, model, ema, optimizer, initialise):
    """(step, seconds trained) to start from: a resumed run's checkpoint (model, EMA and optimiser
    restored), else 0 after `initialise`."""
    step, elapsed = 0, 0.0
    if resuming:
        state = load_training_state(out / CHECKPOINT_DIR, model=model, ema=ema, optimizer=optimizer)
        step, elapsed = state["step"], state.get("seconds", 0.0)
    elif initialise is not None:
        initialise(model)
        ema.load_state_dict(model.state_dict())
    if step >= settings.steps:
        raise ConfigError("steps", f"({settings.steps}) is no more than '{out}' is already trained for {step} steps; "
                          "ask for more to continue")
    return step, elapsed


def _update(trainee: _Trainee, settings: TrainSettings, step: int):
    """One optimiser step at `step`'s learning rate, the constraint and the EMA after it; (loss, scalars)."""
    model, optimizer, accelerator = trainee.model, trainee.optimizer, trainee.accelerator
    factor = settings.lr_factor(step)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    loss, scalars = trainee.objective(model, step, _noise_generator(settings.seed, step, accelerator.process_index))
    if not torch.isfinite(loss):
        raise SDMError(f"the loss became {loss.item()} at step {step}; lower the learning rate or check the data")
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    if trainee.constrain is not None:
        trainee.constrain(accelerator.unwrap_model(model))
    update_ema(trainee.ema, accelerator.unwrap_model(model), ema_decay(step, settings.ema_decay))
    return loss, scalars


def _save_ddpm_pipeline(scheduler_config: dict, ema: nn.Module, out: Path) -> None:
    save_pipeline(ema, scheduler_config, out)


def _fit_to_time(settings: TrainSettings, budget: TimeBudget, record: dict, out: Path, step: int,
                 accelerator) -> TrainSettings:
    """A timed run's settings fitted after `step` (the main process's count, which every process
    follows); its record follows them, so that `--resume` continues the same schedule."""
    from accelerate.utils import broadcast_object_list

    steps = budget.fitted_steps(step) if accelerator.is_main_process else 0
    if accelerator.num_processes > 1:
        steps = broadcast_object_list([steps])[0]
    settings = budget.settle(settings, step, steps)
    record.update(steps=settings.steps, warmup=settings.warmup)
    if accelerator.is_main_process:
        write_json(record, out / CONFIG_FILE)
    return settings


def _logged_step(line: str) -> int | None:
    """The step of a log line; None for a line that is not a whole entry (a killed run cut it short)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    step = entry.get("step") if isinstance(entry, dict) else None
    return step if isinstance(step, int) else None


def _drop_log_after(path: Path, step: int) -> None:
    """Forget log entries past the checkpoint a run resumes from: that work is redone. Lines that are
    not whole entries (the last line of a killed run, garbled bytes) are dropped too, so that the next
    entry starts a line of its own."""
    if path.is_file():
        lines = path.read_text(errors="replace").splitlines()
        kept = [line for line in lines if (logged := _logged_step(line)) is not None and logged <= step]
        if len(kept) != len(lines):
            write_text("".join(line + "\n" for line in kept), path)


def weight_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal only for bit-identical weights."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _rank_digests(accelerator, model: nn.Module, step: int) -> list[str]:
    """Every process's `weight_digest`; data-parallel processes must hold the same weights, and a run
    whose processes diverged stops here rather than save one process's weights as the run's."""
    from accelerate.utils import gather_object

    digests = gather_object([weight_digest(model)]) if accelerator.num_processes > 1 else [weight_digest(model)]
    if len(set(digests)) > 1:
        raise SDMError(f"the {len(digests)} processes' weights differ at step {step}; the data-parallel run is "
                       "broken (rerun with one process and report it)")
    return digests


def _checkpoint(settings, out, step, model, ema, optimizer, losses, started, save_model, digests) -> None:
    """Logging, checkpoints and sample grids due after `step` (main process only)."""
    last = step == settings.steps
    if step % settings.log_every == 0 or last:
        means = {k: sum(entry[k] for entry in losses) / len(losses) for k in losses[0]}
        entry = {"step": step, **means, "lr": optimizer.param_groups[0]["lr"],
                 "seconds": round(time.time() - started, 1)}
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        losses.clear()
    if settings.saves_at(step):
        save_training_state(out / CHECKPOINT_DIR, step=step, model=model, ema=ema, optimizer=optimizer,
                            extra={"seconds": round(time.time() - started, 1), "weight_digests": digests})
        save_model(ema, out)
    if settings.sample_every and (step % settings.sample_every == 0 or last):
        ema.eval()
        grid = sample(ema, dict(DDPM_LINEAR_SCHEDULE), 16, progress=False)
        save_grid(grid, out / "samples" / f"step_{step:07d}.png", nrow=4, scale=2)
