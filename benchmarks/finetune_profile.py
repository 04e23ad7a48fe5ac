"""Where one fine-tuning step spends its time: phases, and operator groups from the torch profiler.

    python -m benchmarks.finetune_profile --snn benchmarks/results/finetune_speed/t4-first-channel/snn

One step of `sdm-finetune`'s objective on the converted SNN (its own recorded teacher), timed by
phase (the student's forward pass with the energy and feature terms, the teacher twin's forward for
the feature targets, backward, optimiser, EMA), in fp32 and in bf16 autocast, the median of
`--repeats` steps after two warm-up steps; then one fp32 step under the profiler, its self time
grouped by operator family.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from benchmarks.common import provenance, write_table
from convert.finetune import FinetuneSettings, prepare_student
from convert.finetune.distill import FeatureTargets, site_inputs, teacher_pairs
from convert.model import ConvertedUNet
from sdm.commands.options import command
from sdm.diffusion.ema import make_ema, update_ema
from sdm.models.pretrained import load_model
from sdm.snn.modes import keeping_counts

GROUPS = {  # operator family -> substrings of aten op names, matched in this order
    "convolution (backward)": ("convolution_backward",),
    "convolution (forward)": ("mkldnn_convolution", "aten::convolution", "_convolution"),
    "matmul / linear": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear"),
    "attention": ("scaled_dot_product",),
    "normalisation": ("group_norm", "layer_norm"),
    "neurons and elementwise": ("where", "mul", "div", "add", "sub", "gt", "lt", "neg", "floor", "round", "clamp",
                                "sum", "mean", "silu", "copy_", "fill_", "abs", "sign", "pow", "sigmoid"),
}


def timed_step(student, twin_targets, ema, optimizer, batch, bf16: bool) -> dict[str, float]:
    x, t, eps = batch
    times = {}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        with keeping_counts(student), site_inputs(student, twin_targets.sites) as inputs:
            pred = student(x, t, return_dict=False)[0]
        mse = F.mse_loss(pred.float(), eps)
        times["student forward"] = time.perf_counter() - start
        start = time.perf_counter()
        loss = mse + twin_targets.loss(inputs, x, t)
        times["teacher twin forward (feature targets)"] = time.perf_counter() - start
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    times["backward"] = time.perf_counter() - start
    start = time.perf_counter()
    optimizer.step()
    times["optimiser"] = time.perf_counter() - start
    start = time.perf_counter()
    update_ema(ema, student, 0.999)
    times["EMA"] = time.perf_counter() - start
    return times


def grouped(profile) -> dict[str, float]:
    totals = dict.fromkeys([*GROUPS, "other"], 0.0)
    for event in profile.key_averages():
        family = next((g for g, keys in GROUPS.items() if any(k in event.key for k in keys)), "other")
        totals[family] += event.self_cpu_time_total / 1e3
    return totals


@command(help="Profile one fine-tuning step: phases in fp32 and bf16, operator families.")
@click.option("--snn", "snn_dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=FinetuneSettings.batch_size, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/finetune_profile", show_default=True)
def main(snn_dir, batch_size, repeats, out):
    from torch.profiler import ProfilerActivity, profile

    meta = provenance(__spec__.name)
    student = ConvertedUNet.from_pretrained(snn_dir)
    loaded = load_model(student.source.get("ckpt"))
    x, t, eps = teacher_pairs(loaded.model, loaded.scheduler_config, "trajectory", batch_size, seed=0)
    features = FeatureTargets(student)
    optimizer = torch.optim.AdamW(prepare_student(student, FinetuneSettings()), lr=1e-4)
    ema = make_ema(student)
    rows = []
    for bf16 in (False, True):
        runs = [timed_step(student, features, ema, optimizer, (x, t, eps), bf16) for _ in range(2 + repeats)][2:]
        phases = {phase: statistics.median(r[phase] for r in runs) for phase in runs[0]}
        total = sum(phases.values())
        for phase, seconds in phases.items():
            rows.append({"precision": "bf16" if bf16 else "fp32", "part": phase, "ms": f"{1e3 * seconds:.0f}",
                         "share": f"{100 * seconds / total:.0f} %"})
        rows.append({"precision": "bf16" if bf16 else "fp32", "part": "**step**", "ms": f"**{1e3 * total:.0f}**",
                     "share": "100 %"})
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timed_step(student, features, ema, optimizer, (x, t, eps), False)
    families = grouped(prof)
    whole = sum(families.values())
    rows += [{"precision": "fp32, profiler", "part": family, "ms": f"{ms:.0f}", "share": f"{100 * ms / whole:.0f} %"}
             for family, ms in sorted(families.items(), key=lambda kv: -kv[1])]
    text = write_table(rows, Path(out), meta, f"One fine-tuning step (feature distillation on) at batch {batch_size}, "
                       f"median of {repeats}; operator families: self CPU time of one profiled fp32 step.")
    click.echo(text)


if __name__ == "__main__":
    main()
