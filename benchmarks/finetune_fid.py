"""FID-FMNIST and energy of converted SNNs before and after fine-tuning, beside the ANN (same seeds, DDIM).

    python -m benchmarks.finetune_fid --variants t4-first,t8-first --num-samples 2000

Each variant: calibrate + convert (readout analog; `-first`: the first ResNet's two activations, which
carry most of the T = 4 error for 10 % of the spiking compute (section 5.2), also analog),
`sdm-finetune`'s defaults for the given steps, then FID-FMNIST of the fine-tuned SNN and, for the
`--baseline` variants, of the converted one (rate executor: exact), with their energy per image
(corrected accounting). Finished variants and sample shards are reused on a rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmarks.common import provenance, sample_metric, write_table
from calibration import (
    CalibrationInputs,
    ConversionConfig,
    calibrate,
    prepare,
    probe_pairs,
    spread_subset,
)
from convert import convert
from convert.finetune import FinetuneSettings, run_finetune
from convert.model import ConvertedUNet
from sdm.commands.options import command
from sdm.diffusion.images import save_comparison
from sdm.models.pretrained import load_model
from sdm.settings import CommaList
from sdm.snn.energy import energy_report

FIRST = ("down_blocks.0.resnets.0.*",)
VARIANTS = {  # ConversionConfig's settings
    "t4": {"T": 4},
    "t8": {"T": 8},
    "t4-encoded": {"T": 4, "encode_analog": True},
    "t8-neuron": {"T": 8, "activation": "neuron"},
    "t4-first": {"T": 4, "analog_sites": FIRST},
    "t8-first": {"T": 8, "analog_sites": FIRST},
    "t4-encoded-first": {"T": 4, "encode_analog": True, "analog_sites": FIRST},
    "t8-neuron-first": {"T": 8, "activation": "neuron", "analog_sites": FIRST},
    "t4-first-channel": {"T": 4, "analog_sites": FIRST, "per_channel": True},
    "t8-first-channel": {"T": 8, "analog_sites": FIRST, "per_channel": True},
}


# The spike code of the tables this script reproduces (written before the weighted code became the default).
CODING = "rate"


def convert_variant(loaded, variant: str, pairs, directory: Path) -> None:
    """Calibrate and convert the ANN as `VARIANTS[variant]` says; the SNN directory records its teacher."""
    spec = VARIANTS[variant]
    config = ConversionConfig(coding=CODING, **spec)
    snn = convert(calibrate(prepare(loaded.model, config), pairs, progress=False))
    snn.source["ckpt"] = loaded.source
    snn.save_pretrained(directory, scheduler_config=loaded.scheduler_config)


def _energy(model, ann, probes) -> dict:
    report = energy_report(model, *spread_subset(probes), denoising_steps=50, ann=ann)
    return {"mJ": report["per_image"]["energy_mJ"], "ratio": report["energy_ratio_snn_to_ann"]}


def _training(report: dict) -> str:
    penalty, budget = report["settings"]["energy_penalty"], report.get("energy_budget")
    return (f"{report['steps']} steps, {report['seconds'] / 60:.1f} min"
            + (f", energy penalty {penalty:g}" if penalty and not budget else "")
            + (f", budget {budget['budget']:g} ({'met' if budget['met'] else 'not met'})" if budget else ""))


@command(help="FID-FMNIST and energy of converted SNNs before and after fine-tuning.")
@click.option("--ckpt", default=None, help="[default: the embedded model]")
@click.option("--variants", type=CommaList(choices=list(VARIANTS)), default="t4,t8", show_default=True)
@click.option("--finetune-steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--energy-budget", "budgets", type=CommaList(float), default=None,
              help="Energy budgets (ratios to the ANN's energy): one fine-tuning run of every variant per budget, "
                   "beside the unbudgeted one.")
@click.option("--num-samples", type=click.IntRange(min=2), default=2000, show_default=True)
@click.option("--ann-fid", type=float, default=None, help="Reuse the ANN's FID-FMNIST at these seeds instead of sampling.")
@click.option("--baseline", type=CommaList(choices=["all", "none", *VARIANTS]), default="all", show_default=True,
              help="Variants whose converted SNN is also measured before fine-tuning.")
@click.option("--out", type=click.Path(), default="benchmarks/results/finetune_fid", show_default=True)
def main(ckpt, variants, finetune_steps, budgets, num_samples, ann_fid, baseline, out):
    out = Path(out)
    meta = provenance(__spec__.name)
    loaded = load_model(ckpt)
    ann, config = loaded.model, loaded.scheduler_config
    pairs = CalibrationInputs().pairs(ann, config)
    probes = probe_pairs(ann, config)
    if ann_fid is None:
        ann_fid = sample_metric(ann, config, num_samples, out / "work" / "ann")[0].value
    rows, grids = [{"model": "ANN", "FID-FMNIST": f"{ann_fid:.3f}", "ratio to ANN": "1.00", "energy / image (mJ)": "",
                    "energy ratio": "1.00", "fine-tuning": ""}], []
    budgets = budgets or []
    if any(not b > 0 for b in budgets):
        raise click.BadParameter("energy budgets must be positive", param_hint="--energy-budget")
    runs = [(name, name, None) for name in variants]
    runs += [(f"{name}-budget{b:g}", name, b) for name in variants for b in budgets]
    baselined: set[str] = set()  # one converted row per variant, whatever its budgets
    for name, variant, budget in runs:
        run = out / name
        if not (run / "finetune" / "report.json").is_file():
            if not (run / "snn" / "config.json").is_file():
                convert_variant(loaded, variant, pairs, run / "snn")
            settings = FinetuneSettings(steps=finetune_steps, energy_budget=budget)
            run_finetune(run / "snn", ann, config, run / "finetune", settings, teacher_source=loaded.source,
                         num_samples=0)
        report = json.loads((run / "finetune" / "report.json").read_text())
        measured_before = ("all" in baseline or variant in baseline) and variant not in baselined
        if measured_before:
            baselined.add(variant)
        models = [(variant, "converted", run / "snn")] * measured_before + [(name, "fine-tuned", run / "finetune" / "snn")]
        for shown, label, directory in models:
            model = ConvertedUNet.from_pretrained(directory)
            fid, images, _ = sample_metric(model, config, num_samples, out / "work" / f"{shown}-{label}")
            energy = _energy(model, ann, probes)
            rows.append({"model": f"{shown} {label}", "FID-FMNIST": f"{fid.value:.3f}",
                         "ratio to ANN": f"{fid.value / ann_fid:.2f}", "energy / image (mJ)": f"{energy['mJ']:.3g}",
                         "energy ratio": f"{energy['ratio']:.3f}",
                         "fine-tuning": _training(report) if label == "fine-tuned" else ""})
            grids.append((f"{shown} {label}", images[:16]))
    save_comparison(grids, out / "samples.png")
    text = write_table(rows, out, meta, f"N = {num_samples}, DDIM-50, seeds 0..{num_samples - 1}; FID-FMNIST is not "
                       "comparable with Inception FID; energy per image with MACs of constant inputs counted once.",
                       ckpt=loaded.source, num_samples=num_samples, finetune_steps=finetune_steps)
    click.echo(text)


if __name__ == "__main__":
    main()
