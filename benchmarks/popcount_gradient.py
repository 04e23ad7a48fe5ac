"""How well the energy objective's gradient tracks the measured energy, rate code against weighted code.

    python -m benchmarks.popcount_gradient

The energy term of fine-tuning (`convert.finetune.energy_objective.SpikeEnergy`) is exact in value in
both codes; what fine-tuning moves by is its gradient. In the rate code the spike count passes the
gradient straight through; in the weighted code a popcount has no useful derivative and the stand-in
is the slope of its envelope (`sdm.snn.coding._PopcountSTE`). For every spiking site of the embedded
model's conversion (`sdm-compare`'s recipe at T = 4), this compares the gradient's prediction of the
change in the SNN / ANN spike-energy ratio when that site's thresholds are scaled by 1 +- h with the
change measured by converting and counting again (a central difference over the probes, everything
downstream included). Reported per code: the correlation of predicted and measured changes over the
sites, and the slope of a least-squares fit through the origin (1: the gradient is calibrated).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.common import provenance, write_table
from calibration import ConversionConfig
from convert import convert
from convert.commands import compare
from convert.finetune.energy_objective import SpikeEnergy
from convert.workflow import ConversionWorkflow
from sdm.commands.options import command
from sdm.models.pretrained import load_model
from sdm.snn.modes import keeping_counts

STEP = 0.05  # relative threshold change of the central difference


def _spike_ratio(snn, energy: SpikeEnergy, x: torch.Tensor, t: torch.Tensor, grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad), keeping_counts(snn) as neurons:
        snn(x, t)
        return energy.ratio(neurons, len(x))


def _site_rows(ann, stats, coding: str, x: torch.Tensor, t: torch.Tensor) -> list[dict]:
    snn = convert(ann, stats.retarget(coding=coding, T=4))
    snn.set_executor("rate")
    energy = SpikeEnergy(snn, ann, x, t)
    neurons = snn.neurons()
    sites = snn.spiking_sites()
    for site in sites:
        neurons[site].learn_thresholds()
    _spike_ratio(snn, energy, x, t, grad=True).backward()
    rows = []
    for site in tqdm(sites, desc=f"{coding} sites", unit="site"):
        neuron = neurons[site]
        thetas = [p for p in (neuron.threshold, neuron.neg_threshold) if isinstance(p, torch.nn.Parameter)]
        predicted = sum(float((p.grad * p.detach()).sum()) for p in thetas) * 2 * STEP
        measured = []
        for sign in (1, -1):
            with torch.no_grad():
                for p in thetas:
                    p.mul_(1 + sign * STEP)
                measured.append(float(_spike_ratio(snn, energy, x, t, grad=False)))
                for p in thetas:
                    p.div_(1 + sign * STEP)
        rows.append({"site": site, "predicted": predicted, "measured": measured[0] - measured[1]})
    return rows


@command(help="The energy objective's gradient against measured energy changes, rate and weighted code.")
@click.option("--out", type=click.Path(), default="benchmarks/results/popcount_gradient", show_default=True)
def main(out):
    meta = provenance(__spec__.name)
    loaded = load_model(None)
    ann, config = loaded.model, loaded.scheduler_config
    workflow = ConversionWorkflow(ann, config, ConversionConfig(**compare.RECIPE), progress=False)
    stats = workflow.calibrate()
    x, t = workflow.probes.spread
    summary = []
    for coding in ("rate", "weighted"):
        rows = _site_rows(ann, stats, coding, x, t)
        predicted, measured = (np.array([r[k] for r in rows]) for k in ("predicted", "measured"))
        slope = float(predicted @ measured / (predicted @ predicted))
        summary.append({"code (T = 4)": coding, "sites": len(rows),
                        "correlation, predicted vs measured": f"{np.corrcoef(predicted, measured)[0, 1]:.3f}",
                        "slope measured / predicted": f"{slope:.2f}",
                        "sum predicted": f"{predicted.sum():+.4f}", "sum measured": f"{measured.sum():+.4f}"})
    text = write_table(summary, Path(out), meta,
                       f"Per spiking site of the embedded model's T = 4 conversion (per-channel, first ResNet analog): "
                       f"the change of the SNN / ANN spike-energy ratio when the site's thresholds are scaled by "
                       f"1 +- {STEP}, predicted by the energy term's gradient and measured by counting again "
                       f"({len(x)} probes spread over t, rate form).")
    click.echo(text)


if __name__ == "__main__":
    main()
