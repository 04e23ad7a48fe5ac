"""FID-FMNIST of converted SNNs against the length of their fine-tuning (same seeds, DDIM-50).

    python -m benchmarks.finetune_curve --variants t4-first,t8-first --steps 0,300,600,1200 \
        --num-samples 500

Each length is a fine-tuning run of its own with `sdm-finetune`'s defaults (so each run's cosine
schedule ends at its own length), from one converted SNN per variant. A variant that
`benchmarks.finetune_fid` already converted (and fine-tuned for one of the lengths) in `--runs` is
reused; sample shards are reused on a rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmarks.common import plot_fid_curves, provenance, sample_metric, write_table
from benchmarks.finetune_fid import VARIANTS, convert_variant
from calibration import CalibrationInputs
from convert.finetune import FinetuneSettings, run_finetune
from convert.model import ConvertedUNet
from sdm.commands.options import command
from sdm.models.pretrained import load_model
from sdm.settings import CommaList


def _reusable(runs: Path, variant: str) -> tuple[Path | None, int | None]:
    """`benchmarks.finetune_fid`'s converted SNN of `variant` and the length of its fine-tuning, if any."""
    snn = runs / variant / "snn"
    report = runs / variant / "finetune" / "report.json"
    steps = json.loads(report.read_text())["steps"] if report.is_file() else None
    return (snn if (snn / "config.json").is_file() else None), steps


@command(help="FID-FMNIST of converted SNNs against the number of fine-tuning steps.")
@click.option("--ckpt", default=None, help="[default: the embedded model]")
@click.option("--variants", type=CommaList(choices=list(VARIANTS)), default="t4-first,t8-first", show_default=True)
@click.option("--steps", "lengths", type=CommaList(int), default="0,300,600,1200", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--ann-fid", type=float, default=None, help="Reuse the ANN's FID-FMNIST at these seeds and N instead of sampling.")
@click.option("--runs", type=click.Path(file_okay=False), default="benchmarks/results/finetune_fid", show_default=True,
              help="benchmarks.finetune_fid's output: its converted SNNs and finished runs are reused.")
@click.option("--out", type=click.Path(), default="benchmarks/results/finetune_curve", show_default=True)
def main(ckpt, variants, lengths, num_samples, ann_fid, runs, out):
    runs, out = Path(runs), Path(out)
    if any(length < 0 for length in lengths):
        raise click.BadParameter("fine-tuning lengths must be >= 0", param_hint="--steps")
    meta = provenance(__spec__.name)
    loaded = load_model(ckpt)
    if ann_fid is None:
        ann_fid = sample_metric(loaded.model, loaded.scheduler_config, num_samples, out / "work" / "ann")[0].value
    pairs = None
    rows, curves = [], {}
    for variant in variants:
        snn_dir, finished = _reusable(runs, variant)
        if snn_dir is None:
            snn_dir = out / variant / "snn"
            if not (snn_dir / "config.json").is_file():
                if pairs is None:
                    pairs = CalibrationInputs().pairs(loaded.model, loaded.scheduler_config)
                convert_variant(loaded, variant, pairs, snn_dir)
        curves[variant] = []
        for length in sorted(set(lengths)):
            if length == 0:
                directory = snn_dir
            elif length == finished:
                directory = runs / variant / "finetune" / "snn"
            else:
                run = out / variant / f"steps-{length}"
                if not (run / "report.json").is_file():
                    run_finetune(snn_dir, loaded.model, loaded.scheduler_config, run,
                                 FinetuneSettings(steps=length, save_every=length),
                                 teacher_source=loaded.source, num_samples=0)
                directory = run / "snn"
            model = ConvertedUNet.from_pretrained(directory)
            fid = sample_metric(model, loaded.scheduler_config, num_samples, out / "work" / f"{variant}-{length}")[0]
            curves[variant].append((length, fid.value))
            rows.append({"variant": variant, "fine-tuning steps": length, "FID-FMNIST": f"{fid.value:.3f}",
                         "ratio to ANN": f"{fid.value / ann_fid:.2f}"})
    plot_fid_curves(curves, ann_fid, out / "curve.png", xlabel="fine-tuning steps (batch 32)",
                    title="FID-FMNIST against fine-tuning", target=1.5)
    text = write_table(rows, out, meta, f"N = {num_samples}, DDIM-50, seeds 0..{num_samples - 1}; ANN "
                       f"{ann_fid:.3f}; FID-FMNIST is not comparable with Inception FID.", ckpt=loaded.source)
    click.echo(text)


if __name__ == "__main__":
    main()
