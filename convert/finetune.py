"""finetune: the fourth step of prepare -> calibrate -> convert -> finetune.

Calibration reaches ideal T-level rounding and stops there; the rounding error it leaves compounds
over the denoising steps. Fine-tuning distils the ANN (the teacher) into its converted SNN (the
student): the student's noise prediction is trained to match the teacher's on (x_t, t) pairs, in the
student's exact rate form (one pass instead of T steps), with a straight-through gradient for the
spike count and LSQ's gradient for the thresholds. It runs on the shared training loop
(`sdm.training.train_diffusion`): EMA, clipping, atomic checkpoints and exact `--resume` come from there.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from calibration.stats import model_fingerprint
from convert.distill import (
    PAIR_SOURCES,
    POOL_FILE,
    TEACHER_BATCH,
    FeatureTargets,
    cached_pairs,
    distillation_objective,
    pool_batches,
    pool_size,
    teacher_pairs,
)
from convert.energy_objective import BudgetController, SpikeEnergy
from convert.model import ConvertedUNet
from sdm.errors import SDMError
from sdm.io import atomic_file, write_json
from sdm.neurons import spiking_neurons
from sdm.progress import StagedBar
from sdm.temporal import TemporalMean
from sdm.training import (
    CHECKPOINT_DIR,
    PRECISIONS,
    TrainSettings,
    native_bf16,
    read_run_config,
    train_diffusion,
)

aten = torch.ops.aten
TRAINABLE = ("thresholds", "norms", "all")
ENERGY_PROBES = 8         # pool pairs (spread over the pool) that measure the energy not spent by spikes


@dataclass
class FinetuneSettings:
    """What a fine-tuning run is configured by (`sdm-finetune`'s options)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4               # weights, biases and norm parameters (BENCHMARKS.md 8: 3x 1e-4 converges faster)
    threshold_lr: float = 3e-3     # relative: each threshold moves by about this fraction per step
    source: str = "trajectory"     # trajectory (data-free, the teacher's DDIM paths) | data (noised images)
    data: str | None = None
    pairs: int | None = None       # the pool; None: sized to the run (`convert.distill.pool_size`)
    late_share: float = 0.25       # fraction of each batch drawn from t < 100
    train: str = "all"
    energy_penalty: float = 0.0    # weight of the spikes' share of the SNN / ANN energy ratio in the loss
    energy_budget: float | None = None  # an SNN / ANN energy ratio to meet: the penalty weight adapts to it
    feature_weight: float = 0.0    # weight of the sites' relative input error against the ANN's (feature
                                   # distillation; no faster per minute on the embedded model, BENCHMARKS.md 8.1)
    precision: str = "auto"        # auto (bf16 where native: GPUs, CPUs with bf16 units) | bf16 | fp32
    warmup: int = 50
    ema_decay: float = 0.999
    seed: int = 0
    save_every: int = 250
    device: str = "cpu"

    @property
    def pool(self) -> int:
        """Pairs in the pool: `pairs`, or the run's draws over `convert.distill.PAIR_REUSE`."""
        return self.pairs if self.pairs is not None else pool_size(self.steps, self.batch_size)

    def validate(self) -> None:
        if self.steps < 1:
            raise SDMError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1 or self.pool < self.batch_size:
            raise SDMError(f"--pairs ({self.pool}) must be at least --batch-size ({self.batch_size}), which is >= 1")
        if not (self.lr > 0 and self.threshold_lr >= 0):
            raise SDMError("--lr must be positive and --threshold-lr non-negative")
        if self.source not in PAIR_SOURCES:
            raise SDMError(f"unknown --source '{self.source}': choose one of {', '.join(PAIR_SOURCES)}")
        if self.source == "data" and not self.data:
            raise SDMError("--source data needs --data PATH (a .npz, an image folder or a data set name)")
        if self.train not in TRAINABLE:
            raise SDMError(f"unknown --train '{self.train}': choose one of {', '.join(TRAINABLE)}")
        if not 0.0 <= self.late_share < 1.0:
            raise SDMError(f"--late-share must lie in [0, 1), got {self.late_share}")
        if self.energy_penalty < 0 or not math.isfinite(self.energy_penalty):
            raise SDMError(f"--energy-penalty must be a finite number >= 0, got {self.energy_penalty}")
        if self.feature_weight < 0 or not math.isfinite(self.feature_weight):
            raise SDMError(f"--feature-weight must be a finite number >= 0, got {self.feature_weight}")
        if self.precision not in PRECISIONS:
            raise SDMError(f"unknown --precision '{self.precision}': choose one of {', '.join(PRECISIONS)}")
        if self.energy_budget is not None and not (self.energy_budget > 0 and math.isfinite(self.energy_budget)):
            raise SDMError(f"--energy-budget must be a positive ratio to the ANN's energy, got {self.energy_budget}")


def check_student(snn: nn.Module, teacher: nn.Module | None = None) -> None:
    """The student must be a window-mode converted SNN (of the teacher's architecture, given one)."""
    if not isinstance(snn, ConvertedUNet):
        raise SDMError(f"--snn must be a converted SNN (sdm-convert's OUT/snn), not a {type(snn).__name__}")
    if snn.analog_mode != "window":
        raise SDMError("fine-tuning trains the exact rate form, which needs a window-mode SNN; convert with "
                       "--analog window")
    if teacher is None:
        return
    if isinstance(teacher, ConvertedUNet) or not hasattr(teacher, "config"):
        raise SDMError(f"the teacher must be the ANN the SNN was converted from, not a {type(teacher).__name__}")
    if model_fingerprint(dict(teacher.config)) != snn.config["model_fingerprint"]:
        raise SDMError("the teacher's architecture differs from the SNN's; pass the ANN it was converted from "
                       "with --teacher")


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
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise SDMError("nothing to train: --train thresholds with --threshold-lr 0 leaves no parameter free")
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
    student. The report (`convert.finetune_report`) is the caller's. One progress bar covers the
    teacher's pool and the training steps."""
    from accelerate import PartialState

    settings.validate()
    out = Path(out)
    device = settings.device
    student = ConvertedUNet.from_pretrained(snn_dir).to(device)
    check_student(student, teacher)
    fingerprint = student.config["model_fingerprint"]
    state = PartialState(cpu=not device.startswith("cuda"))  # as the training loop's Accelerator will see it
    features = FeatureTargets(student) if settings.feature_weight else None
    done = _steps_done(out) if resume else 0
    shown = progress and state.is_main_process  # the trial timings serve the bar's estimate only
    drawing = shown and not (out / POOL_FILE).is_file()
    bar = StagedBar("fine-tuning", {"teacher pool": (pool_batches(settings.source, settings.pool),
                                                     _teacher_cost(teacher) if drawing else 0.0),
                                    "training": (settings.steps, _step_cost(student, settings, features) if shown else 0.0)},
                    disable=not shown)
    pool = cached_pairs(out / POOL_FILE, lambda: teacher_pairs(teacher, scheduler_config, settings.source,
                                                               settings.pool, settings.seed, images, bar))
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

    train = TrainSettings(data=f"{settings.source}:{settings.data or teacher_source}", out=str(out),
                          steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                          warmup=settings.warmup, ema_decay=settings.ema_decay, seed=settings.seed, hflip=False,
                          save_every=settings.save_every, log_every=10, schedule="cosine", device=device,
                          precision="bf16" if settings.precision == "auto" and native_bf16(device) else settings.precision)
    record = {k: v for k, v in asdict(settings).items() if k not in ("steps", "save_every", "device")}
    record |= {"pairs": settings.pool, "snn": str(snn_dir), "snn_fingerprint": fingerprint, "T": student.T}
    bar.start("training", done)
    try:
        train_diffusion(train, record, build, resume=resume, progress=False, on_step=stepped,
                        objective=distillation_objective(pool, settings, device, energy, budget, features,
                                                         state.num_processes),
                        param_groups=lambda model: holder["groups"], constrain=keep_thresholds_positive,
                        save_model=save)
    finally:
        bar.close()
    return ConvertedUNet.from_pretrained(out / "snn")


def _steps_done(out: Path) -> int:
    state = out / CHECKPOINT_DIR / "state.json"
    return int(json.loads(state.read_text())["step"]) if state.is_file() else 0


@torch.no_grad()
def _teacher_cost(teacher: nn.Module) -> float:
    """Seconds of one teacher evaluation of a pool batch (timed once, for the progress estimate)."""
    import time

    size, channels = int(teacher.config.sample_size), int(teacher.config.in_channels)
    p = next(teacher.parameters())
    x = torch.zeros(TEACHER_BATCH, channels, size, size, dtype=p.dtype, device=p.device)
    started = time.perf_counter()
    teacher(x, torch.full((TEACHER_BATCH,), 500, device=p.device), return_dict=False)
    return time.perf_counter() - started


def _step_cost(student: ConvertedUNet, settings: FinetuneSettings, features) -> float:
    """Seconds of one training step, from a forward and backward pass of one batch (progress estimate)."""
    import time

    size, channels = int(student.config.sample_size), int(student.config.in_channels)
    x = torch.zeros(settings.batch_size, channels, size, size, device=settings.device)
    t = torch.full((settings.batch_size,), 500, device=settings.device)
    student.set_executor("rate")
    started = time.perf_counter()
    student(x, t, return_dict=False)[0].square().mean().backward()
    if features is not None:
        features.twin(x, t, return_dict=False)
    student.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def _finetune_record(snn_dir: str | Path) -> dict | None:
    """The settings of the fine-tuning run whose `OUT/snn` is `snn_dir`; None for any other directory."""
    config = read_run_config(Path(snn_dir).parent) if Path(snn_dir).name == "snn" else None
    record = (config or {}).get("model", {})
    return record if "snn_fingerprint" in record else None


def finetune_budget(snn_dir: str | Path) -> float | None:
    """The energy budget a fine-tuning run behind `snn_dir` trained under, if any."""
    return (_finetune_record(snn_dir) or {}).get("energy_budget")


def finetuned_steps(snn_dir: str | Path) -> int | None:
    """Steps of fine-tuning behind `snn_dir` when it is a fine-tuning run's `OUT/snn`, else None."""
    if _finetune_record(snn_dir) is None:
        return None
    return _steps_done(Path(snn_dir).parent) or None


def loss_curve(out: Path) -> list[dict]:
    """The run's logged losses, one entry per logged step (a resumed run's repeats replaced)."""
    by_step: dict[int, dict] = {}
    path = out / "log.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            by_step[entry["step"]] = entry
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(curve: list[dict], path: Path, budget: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [e["step"] for e in curve]
    ax.plot(steps, [e.get("mse", e["loss"]) for e in curve], label="MSE to the teacher's eps")
    ax.set_yscale("log")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("MSE")
    ax.grid(alpha=0.3)
    if any("energy_ratio" in e for e in curve):  # what the spikes cost, the budget's measure
        energy_ax = ax.twinx()
        energy_ax.plot(steps, [e.get("energy_ratio") for e in curve], color="tab:orange")
        energy_ax.set_ylabel("SNN / ANN energy", color="tab:orange")
        if budget is not None:
            energy_ax.axhline(budget, color="tab:orange", linestyle="--", linewidth=1)
    elif any("firing_rate" in e for e in curve):
        rate_ax = ax.twinx()
        rate_ax.plot(steps, [e.get("firing_rate") for e in curve], color="tab:orange", label="firing rate")
        rate_ax.set_ylabel("firing rate", color="tab:orange")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def finetune_report(before: ConvertedUNet, after: ConvertedUNet, teacher: nn.Module, scheduler_config: dict,
                    out: Path, settings: FinetuneSettings, seconds: float, *, probes: int = 64,
                    denoising_steps: int = 50) -> dict:
    """Fidelity, firing rate and energy before and after, the loss curve (JSON and PNG), time and steps."""
    from calibration.inputs import probe_pairs, spread_subset
    from convert.report import eps_fidelity
    from sdm.energy import energy_report

    probe_set = probe_pairs(teacher, scheduler_config, probes)
    spread, spread_t = (v.to(teacher.device) for v in spread_subset(probe_set))
    result = {}
    for name, model in (("before", before), ("after", after)):
        model.to(teacher.device).set_executor("rate")
        energy = energy_report(model, spread, spread_t, denoising_steps=denoising_steps, ann=teacher)
        result[name] = {**eps_fidelity(teacher, model, probe_set),
                        "energy_mJ_per_image": energy["per_image"]["energy_mJ"],
                        "energy_ratio_snn_to_ann": energy["energy_ratio_snn_to_ann"]}
    curve = loss_curve(out)
    write_json(curve, out / "loss.json")
    if curve:
        plot_loss(curve, out / "loss.png", settings.energy_budget)
    budget = {}
    if settings.energy_budget is not None:
        reached = result["after"]["energy_ratio_snn_to_ann"]
        budget = {"energy_budget": {"budget": settings.energy_budget, "reached": reached,
                                    "met": reached <= settings.energy_budget,
                                    "final_weight": curve[-1].get("energy_weight") if curve else None}}
    return {"settings": asdict(settings), "steps": settings.steps, "seconds": round(seconds, 1),
            "T": after.T, **result, **budget, "loss_curve": "loss.json", "loss_plot": "loss.png"}


def run_finetune(snn_dir: Path, teacher: nn.Module, scheduler_config: dict, out: Path, settings: FinetuneSettings,
                 *, teacher_source: str, images: torch.Tensor | None = None, resume: bool = False,
                 num_samples: int = 16, sampling: dict | None = None, progress: bool = True,
                 snn_label: str | None = None) -> dict | None:
    """`finetune` plus its report: report.json, loss.json / loss.png and, with `num_samples`, the
    teacher / converted / fine-tuned grid from the same seeds (comparison.png). Under several
    processes the main one reports; the others return None."""
    import time

    from accelerate import PartialState

    from sdm.images import save_comparison
    from sdm.sampler import sample

    started = time.perf_counter()
    after = finetune(snn_dir, teacher, scheduler_config, out, settings, teacher_source=teacher_source,
                     images=images, resume=resume, progress=progress)
    seconds = time.perf_counter() - started
    if not PartialState().is_main_process:  # the report is the main process's, once
        return None
    before = ConvertedUNet.from_pretrained(snn_dir)
    report = {"snn": snn_label or str(snn_dir), "teacher": teacher_source,
              **finetune_report(before, after, teacher, scheduler_config, out, settings, seconds)}
    if num_samples:
        sampling = {"sampler": "ddim", "steps": 50, "seed": 0, "batch_size": 64, **(sampling or {})}
        mj = {name: f"{report[name]['energy_mJ_per_image']:.3g} mJ" for name in ("before", "after")}
        ann_mj = report["before"]["energy_mJ_per_image"] / report["before"]["energy_ratio_snn_to_ann"]
        panels = ((f"ANN {ann_mj:.3g} mJ", teacher), (f"SNN T={after.T} {mj['before']}", before),
                  (f"fine-tuned {mj['after']}", after))
        grids = [(label, sample(model, scheduler_config, num_samples, progress=progress, **sampling))
                 for label, model in panels]
        save_comparison([(label, images[:64]) for label, images in grids], out / "comparison.png")
        report["sampling"] = {**sampling, "num_samples": num_samples}
    write_json(report, out / "report.json")
    return report
