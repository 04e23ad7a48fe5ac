"""Fine-tuning methods against each other: FID-FMNIST against wall-clock minutes, energy beside each.

    python -m benchmarks.finetune_speed --candidates baseline,lr3,lr3-features,lr3-features-bf16 \
        --steps 1000 --snapshots 2 --num-samples 500

Every candidate fine-tunes the same converted SNN (the embedded model at `--variant`, converted once
with `benchmarks.finetune_fid`'s recipe) for `--steps` steps with `sdm-finetune`'s defaults changed as
`CANDIDATES` says. The EMA student is kept at `--snapshots` evenly spaced steps, each with the wall
time since the run began (the teacher's pool included), and measured: FID-FMNIST at `--num-samples`
(DDIM-50, seeds 0..N-1) and energy per image. A snapshot sits part-way along its run's cosine
schedule, the same for every candidate. Finished candidates and sample shards are reused on a rerun
(one interrupted mid-run starts again).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from benchmarks.common import plot_fid_curves, provenance, sample_metric, write_table
from benchmarks.finetune_fid import VARIANTS, _energy, convert_variant
from calibration import CalibrationInputs, probe_pairs
from convert.finetune import FinetuneSettings, finetune
from convert.model import ConvertedUNet
from sdm.commands.options import command
from sdm.io import write_json
from sdm.models.pretrained import load_model
from sdm.settings import CommaList

OLD = {"lr": 1e-4, "threshold_lr": 1e-3, "feature_weight": 0.0, "precision": "fp32"}  # the defaults before issue 22
CANDIDATES = {  # FinetuneSettings fields, every one that a candidate changes, spelt out
    "baseline": OLD,
    "lr3": {**OLD, "lr": 3e-4, "threshold_lr": 3e-3},
    "lr3-bf16": {**OLD, "lr": 3e-4, "threshold_lr": 3e-3, "precision": "bf16"},
    "lr3-features": {**OLD, "lr": 3e-4, "threshold_lr": 3e-3, "feature_weight": 1.0},
    "lr3-features-bf16": {**OLD, "lr": 3e-4, "threshold_lr": 3e-3, "feature_weight": 1.0, "precision": "bf16"},
    "features": {**OLD, "feature_weight": 1.0},
    "lr10-features-bf16": {**OLD, "lr": 1e-3, "threshold_lr": 1e-2, "feature_weight": 1.0, "precision": "bf16"},
    "batch64-lr3-features-bf16": {**OLD, "lr": 3e-4, "threshold_lr": 3e-3, "feature_weight": 1.0,
                                  "precision": "bf16", "batch_size": 64},
}


def run_candidate(loaded, snn_dir: Path, run: Path, overrides: dict, steps: int, snapshots: int) -> dict[int, float]:
    """Fine-tune with `overrides`; keep the EMA student at each snapshot step; {step: wall minutes}."""
    timing_file = run / "timing.json"
    if timing_file.is_file():
        return {int(k): v for k, v in json.loads(timing_file.read_text()).items()}
    shutil.rmtree(run, ignore_errors=True)
    every = max(1, steps // snapshots)
    marks = {min(steps, every * k) for k in range(1, snapshots + 1)}
    settings = FinetuneSettings(steps=steps, save_every=every, **overrides)
    timing, started, paused = {}, time.perf_counter(), 0.0

    def keep(step: int, _loss: float) -> None:
        nonlocal paused
        if step in marks:  # the checkpoint of this step has just written run/snn
            timing[step] = (time.perf_counter() - started - paused) / 60
            copy_started = time.perf_counter()
            shutil.copytree(run / "snn", run / "snapshots" / f"step-{step}")
            paused += time.perf_counter() - copy_started

    finetune(snn_dir, loaded.model, loaded.scheduler_config, run, settings, teacher_source=loaded.source,
             on_step=keep)
    write_json(timing, timing_file)
    return timing


@command(help="Fine-tuning candidates: FID-FMNIST against wall-clock minutes, energy beside each.")
@click.option("--ckpt", default=None, help="[default: the embedded model]")
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="t4-first-channel", show_default=True)
@click.option("--candidates", type=CommaList(choices=list(CANDIDATES)), default="baseline,lr3,lr3-features",
              show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--snapshots", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--ann-fid", type=float, default=None, help="Reuse the ANN's FID-FMNIST at these seeds and N.")
@click.option("--out", type=click.Path(), default="benchmarks/results/finetune_speed", show_default=True)
def main(ckpt, variant, candidates, steps, snapshots, num_samples, ann_fid, out):
    out = Path(out)
    meta = provenance(__spec__.name)
    loaded = load_model(ckpt)
    ann, config = loaded.model, loaded.scheduler_config
    snn_dir = out / variant / "snn"
    if not (snn_dir / "config.json").is_file():
        convert_variant(loaded, variant, CalibrationInputs().pairs(ann, config), snn_dir)
    if ann_fid is None:
        ann_fid = sample_metric(ann, config, num_samples, out / "work" / "ann")[0].value
    probes = probe_pairs(ann, config)
    converted = ConvertedUNet.from_pretrained(snn_dir)
    fid0 = sample_metric(converted, config, num_samples, out / "work" / f"{variant}-converted")[0].value
    energy0 = _energy(converted, ann, probes)
    rows = [{"candidate": "converted", "step": 0, "minutes": "0.0", "FID-FMNIST": f"{fid0:.3f}",
             "ratio to ANN": f"{fid0 / ann_fid:.2f}", "energy / image (mJ)": f"{energy0['mJ']:.3g}",
             "energy ratio": f"{energy0['ratio']:.3f}"}]
    curves = {}
    for name in candidates:
        run = out / variant / name
        timing = run_candidate(loaded, snn_dir, run, CANDIDATES[name], steps, snapshots)
        curves[name] = [(0.0, fid0)]
        for step, minutes in sorted(timing.items()):
            model = ConvertedUNet.from_pretrained(run / "snapshots" / f"step-{step}")
            fid = sample_metric(model, config, num_samples, out / "work" / f"{variant}-{name}-{step}")[0].value
            energy = _energy(model, ann, probes)
            curves[name].append((minutes, fid))
            rows.append({"candidate": name, "step": step, "minutes": f"{minutes:.1f}", "FID-FMNIST": f"{fid:.3f}",
                         "ratio to ANN": f"{fid / ann_fid:.2f}", "energy / image (mJ)": f"{energy['mJ']:.3g}",
                         "energy ratio": f"{energy['ratio']:.3f}"})
        plot_fid_curves(curves, ann_fid, out / "speed.png", xlabel="wall-clock minutes of fine-tuning (2 cores)",
                        title=f"{variant}: FID-FMNIST (N = {num_samples}) against time", target=1.3)
    text = write_table(rows, out, meta, f"{variant}, N = {num_samples}, DDIM-50, seeds 0..{num_samples - 1}; ANN "
                       f"{ann_fid:.3f}; FID-FMNIST is not comparable with Inception FID; minutes: wall time of "
                       "fine-tuning on the machine below, the teacher's pool included.",
                       ckpt=loaded.source, candidates={n: CANDIDATES[n] for n in candidates}, steps=steps)
    click.echo(text)


if __name__ == "__main__":
    main()
