"""Energy per image of the embedded model's conversions, itemised, beside both references.

    python -m benchmarks.energy_accounting

MACs of a synaptic layer whose input is the same at every spiking step (the input image, window-mode
analog outputs, the timestep path) are counted once per window; layers reading the analog residual
stream run once per window on its accumulated input (their MACs once, T - 1 accumulates per input
value); spike-fed layers count one accumulate per synapse a spike reaches. Inputs: 8 probe pairs
spread over t; per image = per step x DDIM steps. The second reference is the ANN with activations
quantised to the SNN's levels (2T + 1 in the rate code, 2^(T+1) - 1 in the weighted code) and 8-bit
weights in integer MACs (`sdm.snn.energy.quantised_ann_reference`); beside it the SNN in the same
integer arithmetic (0.1 pJ per accumulate, 0.3 pJ per 8-bit analog MAC) and in FP32 (mixed).
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, write_table
from calibration import ConversionConfig
from convert import convert
from convert.commands import compare
from convert.workflow import ConversionWorkflow
from sdm.commands.options import command
from sdm.models.pretrained import load_model
from sdm.snn.energy import energy_report

# Every variant names its code and threshold granularity, so that the rows keep their meaning whatever
# the defaults are; RECIPE is make demo's and sdm-compare's per-channel, first-ResNet-analog conversion.
RECIPE = {"per_channel": True, "analog_sites": compare.FIRST_RESNET}
RATE, PER_SITE = {"coding": "rate"}, {"per_channel": False}
VARIANTS = [
    ("T=4, readout spikes", dict(T=4, readout="spikes", **RATE, **PER_SITE)),
    ("T=4", dict(T=4, **RATE, **PER_SITE)),
    ("T=8", dict(T=8, **RATE, **PER_SITE)),
    ("T=16", dict(T=16, **RATE, **PER_SITE)),
    ("T=2, per-channel, first ResNet analog", dict(T=2, **RATE, **RECIPE)),
    ("T=4, per-channel, first ResNet analog", dict(T=4, **RATE, **RECIPE)),
    ("T=8, per-channel, first ResNet analog", dict(T=8, **RATE, **RECIPE)),
    ("T=4, per-channel, first ResNet analog, widest upsampler encoded",
     dict(T=4, **RATE, **RECIPE, encode_analog=True, encode_sites=("up_blocks.1.upsamplers.0.conv:input",))),
    ("T=4, encoded analog inputs", dict(T=4, encode_analog=True, **RATE, **PER_SITE)),
    ("T=8, activation neuron", dict(T=8, activation="neuron", **RATE, **PER_SITE)),
    *[(f"weighted T={T}, per-channel, first ResNet analog", dict(T=T, coding="weighted", **RECIPE)) for T in (2, 3, 4, 5)],
    ("weighted T=4, per-channel, encoded analog inputs", dict(T=4, coding="weighted", per_channel=True, encode_analog=True)),
]


@command(help="Itemised energy per image of the embedded model's conversions.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Denoising steps per image.")
@click.option("--out", type=click.Path(), default="benchmarks/results/energy_accounting", show_default=True)
def main(steps, out):
    meta = provenance(__spec__.name)
    loaded = load_model(None)
    ann, config = loaded.model, loaded.scheduler_config
    # One calibration per observer kind, encoders observed too; each variant retargets its statistics.
    workflows = {per_channel: ConversionWorkflow(ann, config, ConversionConfig(per_channel=per_channel), progress=False)
                 for per_channel in (False, True)}
    stats = {per_channel: workflow.calibrate(encoders=True) for per_channel, workflow in workflows.items()}
    x, t = workflows[False].probes.spread
    rows = []
    for label, kwargs in VARIANTS:
        snn = convert(ann, stats[kwargs["per_channel"]].retarget(**{"encode_analog": False, "analog_sites": (), **kwargs}))
        snn.set_executor("rate")
        report = energy_report(snn, x, t, denoising_steps=steps, ann=ann)
        image = report["per_image"]
        flops = report["analog_nonsynaptic_flops_per_image"]
        quantised = report["quantised_ann"]
        rows.append({"SNN": label, "input-layer MACs": f"{image['input_layer_macs']:.3g}",
                     "other analog MACs": f"{image['other_analog_macs']:.3g}",
                     "ACs (window accumulation)": f"{image['accumulates']:.3g} ({image['window_accumulation_acs']:.2g})",
                     "firing rate": f"{report['mean_input_firing_rate']:.3f}",
                     "energy FP32 (mJ)": f"{image['energy_mJ']:.3g}", "ANN FP32 (mJ)": f"{report['ann']['energy_mJ_per_image']:.3g}",
                     "ratio FP32": f"{report['energy_ratio_snn_to_ann']:.3f}",
                     "quantised ANN (mJ, bits)": f"{quantised['energy_mJ_per_image']:.3g} ({quantised['activation_bits']})",
                     "SNN integer (mJ)": f"{quantised['snn_integer_energy_mJ_per_image']:.3g}",
                     "integer SNN / quantised ANN": f"{quantised['energy_ratio_snn_integer_to_quantised_ann']:.2f}",
                     "break-even rate, integer (no analog)": _even(quantised["break_even_firing_rate_integer"],
                                                                   quantised["break_even_firing_rate_no_analog_integer"]),
                     "FP32 SNN / quantised ANN (mixed)": f"{quantised['energy_ratio_snn_fp32_to_quantised_ann']:.1f}",
                     "break-even rate, FP32 mixed (no analog)": _even(quantised["break_even_firing_rate_fp32"],
                                                                      quantised["break_even_firing_rate_no_analog_fp32"]),
                     "analog non-synaptic FLOPs": ", ".join(f"{k} {v:.2g}" for k, v in flops.items())})
    text = write_table(rows, Path(out), meta, f"Per image, DDIM-{steps}; 4.6 pJ per MAC, 0.9 pJ per AC; MACs of a layer "
                       "fed the same input at every spiking step counted once per window, layers reading the residual "
                       "stream window-accumulated. Quantised ANN: the SNN's activation levels (2T + 1 rate, 2^(T+1) - 1 "
                       "weighted), 8-bit weights, integer MACs (Horowitz 2014, 45 nm). The SNN in the same integer "
                       "arithmetic: 0.1 pJ per accumulate (32-bit add of an 8-bit weight), 0.3 pJ per MAC of an 8-bit "
                       "analog input; FP32 (mixed): the paper's 0.9 / 4.6 pJ against the integer ANN. Break-even: the mean "
                       "firing rate at which the SNN would spend what the quantised ANN does (none: its analog MACs and "
                       "accumulations alone exceed it), in brackets the same for spike ACs against its MACs alone.",
                       steps=steps)
    click.echo(text)


def _even(rate: float | None, no_analog: float) -> str:
    return ("none" if rate is None else f"{rate:.3f}") + f" ({no_analog:.3f})"


if __name__ == "__main__":
    main()
