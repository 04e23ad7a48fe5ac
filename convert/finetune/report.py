"""What a fine-tuning run is judged by: fidelity, firing rate and energy before and after, the loss
curve, and the teacher / converted / fine-tuned grid."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convert.finetune.loop import finetune, steps_done
from convert.finetune.settings import FinetuneSettings
from convert.model import ConvertedUNet
from convert.workflow import Probes, judge
from sdm.diffusion.sampler import SAMPLING, SamplingSettings
from sdm.diffusion.training import read_run_config
from sdm.io import save_figure, write_json


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
    return steps_done(Path(snn_dir).parent) or None


def loss_curve(out: Path) -> list[dict]:
    """The run's logged losses, one entry per logged step (a resumed run's repeats replaced)."""
    by_step: dict[int, dict] = {}
    path = out / "log.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                by_step[int(entry["step"])] = entry
            except (ValueError, KeyError, TypeError):  # a line cut short by a killed run: not a logged step
                continue
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
    save_figure(fig, path)


def finetune_report(before: ConvertedUNet, after: ConvertedUNet, teacher: nn.Module, scheduler_config: dict,
                    out: Path, settings: FinetuneSettings, seconds: float, *, denoising_steps: int,
                    probes: Probes | None = None) -> dict:
    """Fidelity, firing rate and energy before and after (energy per image at `denoising_steps`, the
    sampling the user asked for; on `probes`, the default held-out pairs when None), the loss curve
    (JSON and PNG), time and steps."""
    probes = probes or Probes.of(teacher, scheduler_config)
    result = {}
    for name, model in (("before", before), ("after", after)):
        with model.executing("rate"):
            judged = judge(teacher, model, probes, denoising_steps=denoising_steps)
        result[name] = {**judged["fidelity"], "energy_mJ_per_image": judged["energy"]["per_image"]["energy_mJ"],
                        "energy_ratio_snn_to_ann": judged["energy"]["energy_ratio_snn_to_ann"]}
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
    steps = steps_done(out)  # a run sized in minutes planned its own
    return {"settings": {**asdict(settings), "steps": steps}, "steps": steps, "minutes": settings.minutes,
            "seconds": round(seconds, 1),
            "T": after.T, "energy_denoising_steps": denoising_steps, **result, **budget, "loss_curve": "loss.json", "loss_plot": "loss.png"}


def run_finetune(snn_dir: Path, teacher: nn.Module, scheduler_config: dict, out: Path, settings: FinetuneSettings,
                 *, teacher_source: str, images: torch.Tensor | None = None, resume: bool = False,
                 num_samples: int = 16, sampling: SamplingSettings = SAMPLING, progress: bool = True,
                 snn_label: str | None = None, probes: Probes | None = None,
                 beside: list[tuple[str, np.ndarray]] = ()) -> dict | None:
    """`finetune` plus its report: report.json, loss.json / loss.png and, with `num_samples`, the
    teacher / converted / fine-tuned grid from the same seeds (comparison.png), with the titled grids
    `beside` (drawn from the same seeds) after the converted one. Energy is reported at
    `sampling.steps` denoising steps, on `probes` (the default held-out pairs when None). Under several processes the main one reports; the others return None."""
    from accelerate import PartialState

    from sdm.diffusion.images import save_comparison
    from sdm.diffusion.sampler import sample

    started = time.perf_counter()
    after = finetune(snn_dir, teacher, scheduler_config, out, settings, teacher_source=teacher_source,
                     images=images, resume=resume, progress=progress)
    seconds = time.perf_counter() - started
    if not PartialState().is_main_process:  # the report is the main process's, once
        return None
    device = next(teacher.parameters()).device  # the probes are the teacher's: the students join it there
    before, after = ConvertedUNet.from_pretrained(snn_dir).to(device), after.to(device)
    report = {"snn": snn_label or str(snn_dir), "teacher": teacher_source,
              **finetune_report(before, after, teacher, scheduler_config, out, settings, seconds,
                                denoising_steps=sampling.steps, probes=probes)}
    if num_samples:
        mj = {name: f"{report[name]['energy_mJ_per_image']:.3g} mJ" for name in ("before", "after")}
        ann_mj = report["before"]["energy_mJ_per_image"] / report["before"]["energy_ratio_snn_to_ann"]
        panels = ((f"ANN {ann_mj:.3g} mJ", teacher), (f"SNN {after.conversion.coding} T={after.T}, {mj['before']}", before),
                  (f"fine-tuned {mj['after']}", after))
        grids = [(label, sample(model, scheduler_config, num_samples, progress=progress, **sampling.kwargs())[:64])
                 for label, model in panels]
        save_comparison([*grids[:2], *beside, grids[2]], out / "comparison.png")
        report["sampling"] = {**sampling.kwargs(), "num_samples": num_samples}
    write_json(report, out / "report.json")
    return report
