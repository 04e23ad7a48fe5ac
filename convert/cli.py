"""`sdm-convert`: calibrate, convert and judge a pretrained DDPM UNet as a spiking network."""

from __future__ import annotations

import functools
import time
from collections import Counter
from pathlib import Path

import click
import numpy as np

from calibration import (
    RULES,
    SOURCES,
    calibrate,
    calibration_pairs,
    load_stats,
    prepare,
    probe_pairs,
    require_ann,
    spread_subset,
)
from convert.finetune import FinetuneSettings, run_finetune
from convert.finetune_cli import finetune_options, summarise
from convert.model import READOUTS, ConvertedUNet, NeuronConfig
from convert.passes import SMOOTH_TRANSFERS
from convert.report import compute_profile, eps_fidelity, site_sensitivity
from convert.workflow import convert
from sdm.cli import (
    CommaList,
    ckpt_options,
    command,
    device_option,
    executor_option,
    resolve_device,
    sampling_options,
    use_executor,
)
from sdm.data import load_dataset
from sdm.energy import energy_markdown, energy_report
from sdm.errors import SDMError
from sdm.images import save_comparison, save_grid, save_npz
from sdm.io import atomic_dir, write_json, write_text
from sdm.neurons import NEURONS
from sdm.pretrained import load_model
from sdm.sampler import sample
from sdm.temporal import ANALOG_MODES


def _check_out(out: Path) -> None:
    """Refuse to replace a directory that is not an earlier sdm-convert output."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise SDMError(f"--out '{out}' exists and is not an earlier sdm-convert output; choose another directory")


def _recordable(ckpt: str | None, source: str) -> str:
    """The ANN's checkpoint as later commands can find it again (local directories made absolute)."""
    return str(Path(ckpt).resolve()) if ckpt is not None and Path(ckpt).exists() else source


def _analog_ops(snn: ConvertedUNet, profile: dict) -> dict:
    ops = dict(snn.summary.analog_ops)
    transfers = Counter(m.transfer for m in snn.sites().values())
    if transfers["function"]:
        ops["activation evaluated on the mean input (then spike-encoded)"] = transfers["function"]
    if transfers["analog"]:
        ops["activation kept analog (readout or --analog-sites)"] = transfers["analog"]
    ops.update(profile["analog_layers"])
    ops["timestep-path activations (once per denoising step)"] = snn.summary.timestep_activations
    return ops


@command(help="Calibrate and convert a pretrained DDPM UNet into a spiking network; write OUT/report.json, "
              "OUT/snn/ and sample grids of the ANN and the SNN from the same seeds.")
@ckpt_options
@click.option("--T", "T", type=click.IntRange(min=1), default=4, show_default=True, help="Spiking steps.")
@click.option("--neuron", type=click.Choice(list(NEURONS)), default="if", show_default=True)
@click.option("--tau", type=click.FloatRange(min=1, min_open=True), default=2.0, show_default=True, help="LIF time constant.")
@click.option("--calib", type=click.Choice(RULES), default="mse", show_default=True, help="Threshold rule.")
@click.option("--percentile", type=click.FloatRange(0, 100, min_open=True), default=99.9, show_default=True)
@click.option("--per-channel", is_flag=True, help="One threshold per channel instead of per call site.")
@click.option("--calib-source", type=click.Choice(SOURCES), default="trajectory", show_default=True)
@click.option("--data", default=None, help="Images for --calib-source data: .npz, image folder or data set name.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--stats", type=click.Path(dir_okay=False), default=None,
              help="Reuse saved calibration statistics (calibration_stats.json) instead of calibrating.")
@click.option("--analog", type=click.Choice(ANALOG_MODES), default="window", show_default=True,
              help="How GroupNorm, attention and smooth activations meet spikes: window (layer-synchronous) "
                   "or running (causal running means).")
@click.option("--encode-analog", is_flag=True,
              help="Also spike-encode the analog inputs of synaptic layers (shortcuts, down/up-sampling, attention "
                   "projections): every synaptic layer but the first then accumulates instead of multiplying.")
@click.option("--encode-sites", type=CommaList(), default=None,
              help="Comma-separated shell patterns of the analog inputs to spike-encode (e.g. "
                   "'up_blocks.1.upsamplers.0.conv:input'); implies --encode-analog for these only.")
@click.option("--readout", type=click.Choice(READOUTS), default="analog", show_default=True,
              help="analog: the activation feeding the output layer stays analog, so the output layer reads real "
                   "values (its MACs are counted); spikes: it spikes too.")
@click.option("--activation", type=click.Choice(SMOOTH_TRANSFERS), default="function", show_default=True,
              help="function: smooth activations are evaluated on the mean input, then spike-encoded; neuron: the "
                   "IF neuron's own transfer replaces them, so no activation stays analog (fine-tune afterwards).")
@click.option("--analog-sites", type=CommaList(), default=None,
              help="Comma-separated shell patterns of activation sites to keep analog (their layers count MACs).")
@click.option("--sensitivity", is_flag=True,
              help="Add to the report, for every site, the eps error with only that site spiking and its share of "
                   "the spiking compute, ranked.")
@click.option("--finetune-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Then fine-tune the SNN for this many steps against the ANN (as sdm-finetune; OUT/finetune).")
@functools.partial(finetune_options, batch_flag="--finetune-batch-size")
@executor_option
@click.option("--v-init", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Initial membrane potential, as a fraction of the threshold.")
@click.option("--signed/--unsigned", default=True, show_default=True, help="Allow negative spikes.")
@click.option("--probes", type=click.IntRange(min=2), default=64, show_default=True,
              help="Held-out (x_t, t) pairs for the fidelity figures (half at t < 100).")
@click.option("--num-samples", type=click.IntRange(min=0), default=16, show_default=True, help="0 skips sampling.")
@sampling_options
@click.option("--out", type=click.Path(), default="out/convert", show_default=True)
@click.option("--save-samples", is_flag=True, help="Also write samples_ann.npz and samples_snn.npz.")
@device_option
def main(ckpt, allow_pickle, T, neuron, tau, calib, percentile, per_channel, calib_source, data, calib_samples,
         stats, analog, encode_analog, encode_sites, readout, activation, analog_sites, sensitivity, finetune_steps, ft_batch_size, lr,
         threshold_lr, source, pairs, late_share, train, feature_weight, precision, energy_penalty, energy_budget,
         executor, v_init, signed,
         probes, num_samples, sampler, steps, seed, batch_size, out, save_samples, device):
    out = Path(out)
    _check_out(out)
    encode_analog = encode_analog or bool(encode_sites)
    if calib_source == "data" and data is None and stats is None:
        raise SDMError("--calib-source data needs --data PATH (a .npz, an image folder or a data set name)")
    if finetune_steps and analog != "window":
        raise SDMError("--finetune-steps trains the exact rate form, which needs --analog window")
    finetune_settings = FinetuneSettings(steps=max(finetune_steps, 1), batch_size=ft_batch_size, lr=lr,
                                         threshold_lr=threshold_lr, source=source, data=data, pairs=pairs,
                                         late_share=late_share, train=train, feature_weight=feature_weight,
                                         precision=precision, energy_penalty=energy_penalty,
                                         energy_budget=energy_budget, seed=seed)
    finetune_settings.validate()
    device = resolve_device(device)
    loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
    ann = loaded.model
    require_ann(ann, f"'{loaded.source}'")
    neuron_config = NeuronConfig(kind=neuron, tau=tau, v_init=v_init, signed=signed)
    neuron_config.validate()
    for note in loaded.notes:
        click.echo(f"note: {note}", err=True)

    with atomic_dir(out) as tmp:
        started = time.perf_counter()
        if stats is not None:
            calibration = load_stats(stats, ann)
        else:
            images = None
            if calib_source == "data":
                images = load_dataset(data, ann.config.sample_size, ann.config.in_channels)
            pairs = calibration_pairs(ann, loaded.scheduler_config, calib_samples, source=calib_source, data=images,
                                      seed=seed)
            observed = calibrate(prepare(ann, per_channel=per_channel, encode_analog=encode_analog), pairs,
                                 batch_size=batch_size)
            calibration = observed.stats({"source": calib_source, "samples": calib_samples, "seed": seed,
                                          "data": data})
        snn = convert(ann, calibration, T=T, rule=calib, percentile=percentile, per_channel=per_channel,
                      neuron=neuron_config, analog_mode=analog, encode_analog=encode_analog, activation=activation,
                      readout=readout, analog_sites=tuple(analog_sites or ()), encode_sites=tuple(encode_sites or ()))
        snn.source["ckpt"] = _recordable(ckpt, loaded.source)
        executor = use_executor(snn, executor)
        convert_seconds = time.perf_counter() - started

        probe_set = probe_pairs(ann, loaded.scheduler_config, probes)
        fidelity = eps_fidelity(ann, snn, probe_set, batch_size=batch_size)
        profile = compute_profile(snn)
        spread, spread_t = spread_subset(probe_set)  # a few probes over all t
        energy = energy_report(snn, spread.to(ann.device), spread_t.to(ann.device), denoising_steps=steps, ann=ann)
        calibration.save(tmp / "calibration_stats.json")
        snn.save_pretrained(tmp / "snn", scheduler_config=loaded.scheduler_config)
        report = {
            "ckpt": loaded.source, "T": T,
            "neuron": neuron_config.__dict__ | {"analog_mode": analog, "encode_analog": snn.config["encode_analog"],
                                                "activation": activation, "readout": readout},
            "analog_sites": snn.summary.analog_sites,
            "window_accumulated": snn.summary.window_accumulated,  # analog-input layers run once per window
            "per_step_analog": snn.summary.per_step_analog,        # analog-input layers multiplying every step
            "executor": executor,
            "calibration": {"rule": calib, **({"percentile": percentile} if calib == "percentile" else {}),
                            "per_channel": per_channel, **calibration.source, "sites": len(calibration.sites)},
            "convert_seconds": round(convert_seconds, 2),
            **fidelity,
            "analog_ops": _analog_ops(snn, profile),
            "compute_per_image_per_denoising_step": profile,
            "energy": energy,
            "notes": loaded.notes,
        }
        if sensitivity:
            report["sensitivity"] = site_sensitivity(ann, snn, probe_set, batch_size=batch_size)
        if num_samples:
            sampled = {}
            for name, model in (("ann", ann), ("snn", snn)):
                t0 = time.perf_counter()
                sampled[name] = sample(model, loaded.scheduler_config, num_samples, sampler=sampler, steps=steps,
                                       seed=seed, batch_size=batch_size)
                report[f"{name}_sampling_seconds"] = round(time.perf_counter() - t0, 2)
                save_grid(sampled[name][:64], tmp / f"samples_{name}.png", scale=2)
                if save_samples:
                    save_npz(sampled[name], tmp / f"samples_{name}.npz", seeds=np.arange(seed, seed + num_samples))
            save_comparison([(f"ANN {energy['ann']['energy_mJ_per_image']:.3g} mJ", sampled["ann"][:64]),
                             (f"SNN T={T} {energy['per_image']['energy_mJ']:.3g} mJ", sampled["snn"][:64])],
                            tmp / "comparison.png")
            report["sampling"] = {"sampler": sampler, "steps": steps, "seeds": [seed, seed + num_samples - 1]}
        if finetune_steps:
            images = load_dataset(data, ann.config.sample_size, ann.config.in_channels) if source == "data" else None
            tuned = run_finetune(tmp / "snn", ann, loaded.scheduler_config, tmp / "finetune", finetune_settings,
                                 teacher_source=loaded.source, images=images, num_samples=num_samples,
                                 snn_label=str(out / "snn"),
                                 sampling={"sampler": sampler, "steps": steps, "seed": seed, "batch_size": batch_size})
            report["finetune"] = {k: tuned[k] for k in ("steps", "seconds", "before", "after", "energy_budget")
                                  if k in tuned}
        write_json(report, tmp / "report.json")
        write_text(energy_markdown(energy) + "\n", tmp / "energy.md")
    click.echo(
        f"{loaded.source} -> SNN at T={T} ({neuron}, {calib}) in {convert_seconds:.1f} s: eps cosine "
        f"{fidelity['eps_cosine']:.4f} (t<100: {fidelity['eps_cosine_t_lt_100']:.4f}), rel. MSE "
        f"{fidelity['eps_rel_mse']:.4f}, firing rate {fidelity['firing_rate']:.3f}; analog share "
        f"{profile['analog_share']:.1%}; energy {energy['per_image']['energy_mJ']:.3g} mJ per image "
        f"(ANN {energy['ann']['energy_mJ_per_image']:.3g} mJ). Wrote {out}/report.json, {out}/snn/"
    )
    if finetune_steps:
        summarise(tuned, out / "finetune")


if __name__ == "__main__":
    main()
