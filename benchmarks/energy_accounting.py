"""Energy per image of the embedded model's conversions, itemised (the corrected accounting).

    python -m benchmarks.energy_accounting

MACs of a synaptic layer whose input is the same at every spiking step (the input image, window-mode
analog outputs, the timestep path) are counted once per window; spike-fed layers count one accumulate
per synapse a spike reaches. Inputs: 8 probe pairs spread over t; per image = per step x DDIM steps.
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, write_table
from calibration import calibrate, calibration_pairs, prepare, probe_pairs, spread_subset
from convert import convert
from sdm.cli import command
from sdm.energy import energy_report
from sdm.pretrained import load_model

VARIANTS = [
    ("T=4, readout spikes", dict(T=4, readout="spikes")),
    ("T=4", dict(T=4)),
    ("T=8", dict(T=8)),
    ("T=16", dict(T=16)),
    ("T=4, encoded analog inputs", dict(T=4, encode_analog=True)),
    ("T=8, activation neuron", dict(T=8, activation="neuron")),
]


@command(help="Itemised energy per image of the embedded model's conversions.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Denoising steps per image.")
@click.option("--out", type=click.Path(), default="benchmarks/results/energy_accounting", show_default=True)
def main(steps, out):
    meta = provenance(__spec__.name)
    loaded = load_model(None)
    ann, config = loaded.model, loaded.scheduler_config
    observed = calibrate(prepare(ann, encode_analog=True), calibration_pairs(ann, config, 256), progress=False)
    x, t = spread_subset(probe_pairs(ann, config, 64))
    rows = []
    for label, kwargs in VARIANTS:
        snn = convert(observed, **kwargs)
        snn.set_executor("rate")
        report = energy_report(snn, x, t, denoising_steps=steps, ann=ann)
        image = report["per_image"]
        flops = report["analog_nonsynaptic_flops_per_image"]
        rows.append({"SNN": label, "input-layer MACs": f"{image['input_layer_macs']:.3g}",
                     "other analog MACs": f"{image['other_analog_macs']:.3g}",
                     "spike ACs": f"{image['accumulates']:.3g}", "energy (mJ)": f"{image['energy_mJ']:.3g}",
                     "ANN (mJ)": f"{report['ann']['energy_mJ_per_image']:.3g}",
                     "ratio": f"{report['energy_ratio_snn_to_ann']:.3f}",
                     "analog non-synaptic FLOPs": ", ".join(f"{k} {v:.2g}" for k, v in flops.items())})
    text = write_table(rows, Path(out), meta, f"Per image, DDIM-{steps}; 4.6 pJ per MAC, 0.9 pJ per AC; MACs of a layer "
                       "fed the same input at every spiking step counted once per window.", steps=steps)
    click.echo(text)


if __name__ == "__main__":
    main()
