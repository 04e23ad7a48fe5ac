"""Energy per image of the embedded model's conversions, itemised, beside both references.

    python -m benchmarks.energy_accounting

MACs of a synaptic layer whose input is the same at every spiking step (the input image, window-mode
analog outputs, the timestep path) are counted once per window; layers reading the analog residual
stream run once per window on its accumulated input (their MACs once, T - 1 accumulates per input
value); spike-fed layers count one accumulate per synapse a spike reaches. Inputs: 8 probe pairs
spread over t; per image = per step x DDIM steps. The second reference is the ANN with activations
quantised to 2T + 1 levels and 8-bit weights in integer MACs (`sdm.snn.energy.quantised_ann_reference`).
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, write_table
from calibration import ConversionConfig, calibrate, prepare
from calibration.inputs import CalibrationInputs, probe_pairs, spread_subset
from convert import convert
from convert.commands import compare
from sdm.commands.options import command
from sdm.models.pretrained import load_model
from sdm.snn.energy import energy_report

RECIPE = compare.RECIPE  # make demo's and sdm-compare's conversion
VARIANTS = [
    ("T=4, readout spikes", dict(T=4, readout="spikes")),
    ("T=4", dict(T=4)),
    ("T=8", dict(T=8)),
    ("T=16", dict(T=16)),
    ("T=2, per-channel, first ResNet analog", dict(T=2, **RECIPE)),
    ("T=4, per-channel, first ResNet analog", dict(T=4, **RECIPE)),
    ("T=8, per-channel, first ResNet analog", dict(T=8, **RECIPE)),
    ("T=4, per-channel, first ResNet analog, widest upsampler encoded",
     dict(T=4, **RECIPE, encode_analog=True, encode_sites=("up_blocks.1.upsamplers.0.conv:input",))),
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
    pairs = CalibrationInputs().pairs(ann, config, seed=0)
    # One calibration per observer kind, encoders observed too; each variant retargets its statistics.
    stats = {per_channel: calibrate(prepare(ann, ConversionConfig(per_channel=per_channel, encode_analog=True)), pairs,
                                    progress=False).stats() for per_channel in (False, True)}
    x, t = spread_subset(probe_pairs(ann, config))
    rows = []
    for label, kwargs in VARIANTS:
        snn = convert(ann, stats[kwargs.get("per_channel", False)].retarget(**{"encode_analog": False, **kwargs}))
        snn.set_executor("rate")
        report = energy_report(snn, x, t, denoising_steps=steps, ann=ann)
        image = report["per_image"]
        flops = report["analog_nonsynaptic_flops_per_image"]
        quantised = report["quantised_ann"]
        even = quantised["break_even_firing_rate"]
        rows.append({"SNN": label, "input-layer MACs": f"{image['input_layer_macs']:.3g}",
                     "other analog MACs": f"{image['other_analog_macs']:.3g}",
                     "ACs (window accumulation)": f"{image['accumulates']:.3g} ({image['window_accumulation_acs']:.2g})",
                     "firing rate": f"{report['mean_input_firing_rate']:.3f}",
                     "energy (mJ)": f"{image['energy_mJ']:.3g}", "ANN (mJ)": f"{report['ann']['energy_mJ_per_image']:.3g}",
                     "ratio": f"{report['energy_ratio_snn_to_ann']:.3f}",
                     "quantised ANN (mJ, bits)": f"{quantised['energy_mJ_per_image']:.3g} ({quantised['activation_bits']})",
                     "ratio to it": f"{quantised['energy_ratio_snn_to_quantised_ann']:.1f}",
                     "break-even rate (no analog)": ("none" if even is None else f"{even:.3f}")
                     + f" ({quantised['break_even_firing_rate_no_analog']:.3f})",
                     "analog non-synaptic FLOPs": ", ".join(f"{k} {v:.2g}" for k, v in flops.items())})
    text = write_table(rows, Path(out), meta, f"Per image, DDIM-{steps}; 4.6 pJ per MAC, 0.9 pJ per AC; MACs of a layer "
                       "fed the same input at every spiking step counted once per window, layers reading the residual "
                       "stream window-accumulated. Quantised ANN: 2T + 1 activation levels, 8-bit weights, integer MACs "
                       "(Horowitz 2014, 45 nm); break-even: the mean firing rate at which the SNN would spend what it "
                       "does (none: its analog MACs alone exceed it), in brackets the same for spike ACs alone.",
                       steps=steps)
    click.echo(text)


if __name__ == "__main__":
    main()
