"""finetune: the fourth step of prepare -> calibrate -> convert -> finetune.

Calibration reaches ideal T-level rounding and stops there; the rounding error it leaves compounds
over the denoising steps. Fine-tuning distils the ANN (the teacher) into its converted SNN (the
student): the student's noise prediction is trained to match the teacher's on (x_t, t) pairs, in the
student's exact rate form (one pass instead of T steps), with a straight-through gradient for the
spike count and LSQ's gradient for the thresholds. It runs on the shared training loop
(`sdm.diffusion.training.train_diffusion`): EMA, clipping, atomic checkpoints and exact `--resume` come from there.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from convert.finetune.distill import (
    POOL_FILE,
    TEACHER_BATCH,
    FeatureTargets,
    distillation_objective,
    pool_evaluations,
    pool_inputs,
    pool_key,
    store_pairs,
    stored_pairs,
    teacher_pairs,
)
from convert.finetune.energy_objective import BudgetController, SpikeEnergy
from convert.finetune.settings import FinetuneSettings, check_student
from convert.model import ConvertedUNet
from sdm.diffusion.checkpoint import saved_step
from sdm.diffusion.train_settings import TrainSettings
from sdm.diffusion.training import CHECKPOINT_DIR, read_run_config, train_diffusion
from sdm.diffusion.wall_clock import TimeBudget, fitted_warmup
from sdm.progress import StagedBar
from sdm.snn.neurons import spiking_neurons
from sdm.snn.temporal import TemporalMean

aten = torch.ops.aten
ENERGY_PROBES = 8         # pool pairs (spread over the pool) that measure the energy not spent by spikes


def norm_parameters(snn: ConvertedUNet) -> set[str]:
    """Names of the affine parameters of the analog normalisations (GroupNorm, LayerNorm)."""
    modules = dict(snn.graph.named_modules())
    names = set()
    for node in snn.graph.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, TemporalMean) and module.fn in (aten.group_norm.default, aten.layer_norm.default):
            names.update(f"graph.{a.target}" for a in node.all_input_nodes if a.op == "get_attr")
    return names


def prepare_student(snn: ConvertedUNet, settings: FinetuneSettings) -> list[dict]:
    """Make the thresholds learnable, freeze what `settings.train` leaves out, switch to the rate
    form; returns the optimiser's parameter groups."""
    snn.set_executor("rate")
    snn.requires_grad_(False)
    groups = []
    neurons = snn.neurons()
    for site in snn.spiking_sites():  # an analog site's thresholds take no part in its output: nothing to learn
        for theta in neurons[site].learn_thresholds():  # Adam moves each by ~lr; scaling it by theta makes that relative
            theta.requires_grad_(settings.threshold_lr > 0)
            groups.append({"params": [theta], "lr": settings.threshold_lr * float(theta.detach().abs().mean())})
    if settings.train != "thresholds":
        norms = norm_parameters(snn)
        thresholds = {id(p) for g in groups for p in g["params"]}
        chosen = [p for name, p in snn.named_parameters()
                  if id(p) not in thresholds and (settings.train == "all" or name in norms)]
        for p in chosen:
            p.requires_grad_(True)
        groups.append({"params": chosen, "lr": settings.lr})
    return [g for g in groups if g["params"]]


@torch.no_grad()
def keep_thresholds_positive(snn: nn.Module) -> None:
    for neuron in spiking_neurons(snn):
        for theta in (neuron.threshold, neuron.neg_threshold):
            if isinstance(theta, nn.Parameter):
                theta.clamp_(min=1e-4)


def finetune(snn_dir: str | Path, teacher: nn.Module, scheduler_config: dict, out: str | Path,
             settings: FinetuneSettings, *, teacher_source: str = "", images: torch.Tensor | None = None,
             resume: bool = False, progress: bool = True, on_step=None) -> ConvertedUNet:
    """Fine-tune the converted SNN saved in `snn_dir` against `teacher`; writes `out/snn` (the EMA
    student, a converted SNN directory) plus the training run's checkpoint and log. Returns the EMA
    student. The report (`convert.finetune.report.finetune_report`) is the caller's. One progress bar covers the
    teacher's pool and the training steps."""
    from accelerate import PartialState

    started = time.perf_counter()  # a run sized in minutes counts from here
    settings.validate()
    out = Path(out)
    device = settings.device
    student = ConvertedUNet.from_pretrained(snn_dir).to(device)
    check_student(student, teacher)
    state = PartialState(cpu=not device.startswith("cuda"))  # as the training loop's Accelerator will see it
    features = FeatureTargets(student) if settings.feature_weight else None
    done = steps_done(out) if resume else 0
    timed = settings.minutes is not None
    shown = progress and state.is_main_process
    plan = _planned(teacher, student, settings, features, out, done, started, timed=timed, shown=shown)
    settings = plan.settings
    evaluations = sum(pool_evaluations(settings.source, settings.pool))
    bar = StagedBar("fine-tuning", {"pair pool": (evaluations, _pool_seconds(settings, plan.pool_cost) / evaluations),
                                    "training": (settings.steps, plan.step_cost)}, disable=not shown)
    pool = plan.stored or _drawn_pool(teacher, student, scheduler_config, settings, images, out / POOL_FILE, plan.key, bar)
    probes = torch.linspace(0, len(pool[0]) - 1, ENERGY_PROBES).long()
    energy = SpikeEnergy(student, teacher, pool[0][probes].to(device), pool[1][probes].to(device))
    budget = BudgetController(settings.energy_penalty, settings.energy_budget, out)
    holder: dict[str, list[dict]] = {}

    def build() -> ConvertedUNet:
        holder["groups"] = prepare_student(student, settings)
        return student

    def save(ema: ConvertedUNet, directory: Path) -> None:
        ema.save_pretrained(directory / "snn", scheduler_config=scheduler_config)
        budget.save()

    def stepped(step: int, loss: float) -> None:
        bar.update(1)
        if on_step is not None:
            on_step(step, loss)

    clock = (TimeBudget(settings.minutes * 60, warmup=settings.warmup, started=started,
                        on_fit=lambda n: bar.resize("training", n)) if timed and not done else None)  # a resumed timed run keeps the plan its record holds
    record = {k: v for k, v in asdict(settings).items() if k not in ("steps", "save_every", "device")}
    record |= {"pairs": settings.pool, "snn": str(snn_dir), "snn_fingerprint": student.config["architecture_fingerprint"],
               "T": student.T}
    bar.start("training", done)
    try:
        train_diffusion(_training_loop_settings(settings, plan.warmup, out, teacher_source), record, build,
                        resume=resume, progress=False, on_step=stepped,
                        objective=distillation_objective(pool, settings, device, energy, budget, features,
                                                         scheduler_config, state.num_processes),
                        param_groups=lambda model: holder["groups"], constrain=keep_thresholds_positive,
                        save_model=save, time_budget=clock)
    finally:
        bar.close()
    return ConvertedUNet.from_pretrained(out / "snn")


def _training_loop_settings(settings: FinetuneSettings, warmup: int, out: Path, teacher_source: str) -> TrainSettings:
    """What the shared training loop runs: the run's steps, batch, learning rate and warm-up on a cosine
    decay, its EMA, seed and precision; its data named by the pool's source."""
    return TrainSettings(data=f"{settings.source}:{settings.data or teacher_source}", out=str(out),
                         steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr, warmup=warmup,
                         ema_decay=settings.ema_decay, seed=settings.seed, hflip=False,
                         save_every=settings.save_every, log_every=10, schedule="cosine", device=settings.device,
                         precision=settings.precision)


def _drawn_pool(teacher: nn.Module, student: ConvertedUNet, scheduler_config: dict, settings: FinetuneSettings,
                images: torch.Tensor | None, path: Path, key: dict, bar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's pair pool, drawn (a student walks its paths in its rate form) and stored at `path` under
    `key`, for a resumed run to reuse."""
    with student.executing("rate"):
        pairs = teacher_pairs(teacher, scheduler_config, settings.source, settings.pool, settings.seed, images,
                              bar, student)
    store_pairs(path, key, pairs)
    return pairs


def _pool_key(teacher: nn.Module, student: ConvertedUNet, settings: FinetuneSettings) -> dict:
    return pool_key(teacher, student, settings.source, settings.pool, settings.seed, settings.data)


@dataclass(frozen=True)
class _Plan:
    """What a run will do, decided before its pool is drawn: its settings (a timed run's with the steps that
    fit), its warm-up, the measured seconds per pool input (teacher, student) and per training step, and its
    pool's key with the pool stored under it (None where the run draws its own)."""

    settings: FinetuneSettings
    warmup: int
    pool_cost: tuple[float, float]
    step_cost: float
    key: dict
    stored: tuple[torch.Tensor, ...] | None


def _planned(teacher: nn.Module, student: ConvertedUNet, settings: FinetuneSettings, features, out: Path, done: int,
             started: float, *, timed: bool, shown: bool) -> _Plan:
    """The run's plan: a timed run's settings carry the steps that fit or, resumed, the plan its record holds.
    The key (a hash of every teacher weight) is computed once, for the run's final settings. The stored pool
    is the one at `out` under that key; a fresh timed run always draws its own, as its plan sizes it. The
    costs are timed only where a progress bar or a plan reads them, and the pool's only where it will be drawn."""
    warmup = settings.warmup
    if timed and done:
        settings, warmup = _recorded_plan(settings, out)
    fresh_timed = timed and not done
    key = None if fresh_timed else _pool_key(teacher, student, settings)
    stored = None if fresh_timed else stored_pairs(out / POOL_FILE, key)
    pool_cost = _pool_cost(teacher, student, settings.source) if stored is None and (shown or timed) else (0.0, 0.0)
    step_cost = _step_cost(student, settings, features) if shown or timed else 0.0
    if fresh_timed:
        settings, warmup = _fitted_plan(settings, started, pool_cost, step_cost)
        key = _pool_key(teacher, student, settings)
    return _Plan(settings, warmup, pool_cost, step_cost, key, stored)


def steps_done(out: Path) -> int:
    """Steps of the fine-tuning run in `out` so far, from its checkpoint (0 without one)."""
    return saved_step(out / CHECKPOINT_DIR)


def _second_of_two(call) -> float:
    """Seconds of `call()`, the second of two calls (the first pays for one-off set-up)."""
    for _ in range(2):
        started = time.perf_counter()
        call()
    return time.perf_counter() - started


@torch.no_grad()
def _pool_cost(teacher: nn.Module, student: ConvertedUNet, source: str) -> tuple[float, float]:
    """Seconds per input of the teacher and of the student (the student's only where its paths make the
    pool), timed on a full pool batch: the progress estimate, and a timed run's plan."""
    def evaluation(model: nn.Module) -> float:
        size, channels = int(model.config.sample_size), int(model.config.in_channels)
        p = next(model.parameters())
        x = torch.zeros(TEACHER_BATCH, channels, size, size, dtype=p.dtype, device=p.device)
        t = torch.full((TEACHER_BATCH,), 500, device=p.device)
        return _second_of_two(lambda: model(x, t, return_dict=False)) / TEACHER_BATCH

    if source != "student":
        return evaluation(teacher), 0.0
    with student.executing("rate"):
        return evaluation(teacher), evaluation(student)


def _pool_seconds(settings: FinetuneSettings, pool_cost: tuple[float, float]) -> float:
    """Seconds that making the pool of `settings` takes at `pool_cost` per teacher and student input."""
    inputs = pool_inputs(settings.source, settings.pool)
    return sum(n * cost for n, cost in zip(inputs, pool_cost, strict=True))


def _step_cost(student: ConvertedUNet, settings: FinetuneSettings, features) -> float:
    """Seconds of one training step, from a forward and backward pass of one batch: the progress estimate,
    and a timed run's plan."""
    size, channels = int(student.config.sample_size), int(student.config.in_channels)
    x = torch.zeros(settings.batch_size, channels, size, size, device=settings.device)
    t = torch.full((settings.batch_size,), 500, device=settings.device)

    def step() -> None:
        student(x, t, return_dict=False)[0].square().mean().backward()
        if features is not None:
            features.twin(x, t, return_dict=False)
        student.zero_grad(set_to_none=True)

    with student.executing("rate"):
        return _second_of_two(step)


def _recorded_plan(settings: FinetuneSettings, out: Path) -> tuple[FinetuneSettings, int]:
    """A resumed timed run's settings and warm-up, as its record holds them."""
    recorded = read_run_config(out) or {}
    return replace(settings, steps=recorded["steps"], pairs=recorded["model"]["pairs"]), recorded["warmup"]


def _fitted_plan(settings: FinetuneSettings, started: float, pool_cost: tuple[float, float],
                 step_cost: float) -> tuple[FinetuneSettings, int]:
    """A `--minutes` run's settings with a step count, which sizes its pool, and its warm-up: the most steps
    whose pool (`pool_cost` per teacher and student input) and training (`step_cost` per step) fit in the
    time left. The training loop fits the steps again as it runs."""
    seconds = settings.minutes * 60 - (time.perf_counter() - started)

    def cost(steps: int) -> float:
        return _pool_seconds(replace(settings, steps=steps), pool_cost) + steps * step_cost

    low, high = 1, 1
    while cost(high) <= seconds:
        low, high = high, high * 2
    while high - low > 1:  # cost grows with the steps: the last that fits lies in [low, high)
        middle = (low + high) // 2
        low, high = (middle, high) if cost(middle) <= seconds else (low, middle)
    return replace(settings, steps=low), fitted_warmup(settings.warmup, low)
