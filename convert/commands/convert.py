"""`sdm-convert`: calibrate, convert and judge a pretrained DDPM UNet as a spiking network."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import click
import numpy as np

from calibration import CalibrationInputs, ConversionConfig, load_stats
from convert.commands.finetune import FINETUNE_FLAGS, summarise
from convert.finetune import FinetuneSettings, run_finetune
from convert.model import ConvertedUNet
from convert.report import site_sensitivity
from convert.workflow import ConversionWorkflow
from sdm.commands import options as cli
from sdm.diffusion.data import load_dataset
from sdm.diffusion.images import save_comparison, save_grid, save_npz
from sdm.diffusion.sampler import SamplingSettings, sample
from sdm.errors import ConfigError, SDMError
from sdm.io import atomic_dir, write_json, write_text
from sdm.models.pretrained import load_model
from sdm.settings import flag_for, options_of, settings_from
from sdm.snn.energy import energy_markdown, energy_report


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


@cli.command(help="Calibrate and convert a pretrained DDPM UNet into a spiking network; write OUT/report.json, "
              "OUT/snn/ and sample grids of the ANN and the SNN from the same seeds.")
@cli.ckpt_options
@options_of(ConversionConfig)
@options_of(CalibrationInputs, prefix="calib_")
@click.option("--stats", type=click.Path(dir_okay=False), default=None,
              help="Reuse saved calibration statistics (calibration_stats.json) instead of calibrating.")
@click.option("--sensitivity", is_flag=True,
              help="Add to the report, for every site, the eps error with only that site spiking and its share of "
                   "the spiking compute, ranked.")
@click.option("--finetune-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Then fine-tune the SNN for this many steps against the ANN (as sdm-finetune; OUT/finetune); "
                   "--finetune-minutes fine-tunes for a time instead.")
@options_of(FinetuneSettings, skip=("steps", "data", "seed"), prefix="ft_", flags=FINETUNE_FLAGS)
@cli.executor_option
@click.option("--num-samples", type=click.IntRange(min=0), default=16, show_default=True, help="0 skips sampling.")
@cli.sampling_options
@click.option("--out", type=click.Path(), default="out/convert", show_default=True)
@click.option("--save-samples", is_flag=True, help="Also write samples_ann.npz and samples_snn.npz.")
@cli.device_option
def main(ckpt, allow_pickle, stats, sensitivity, finetune_steps, executor, num_samples, out, save_samples, device,
         **options):
    out = Path(out)
    _check_out(out)
    config = settings_from(ConversionConfig, options)
    inputs = settings_from(CalibrationInputs, options, prefix="calib_")
    sampling = settings_from(SamplingSettings, options)
    device = cli.resolve_device(device)
    finetune_settings = settings_from(FinetuneSettings, options, prefix="ft_", steps=max(finetune_steps, 1),
                                      data=inputs.data, seed=sampling.seed, device=device)
    finetuning = bool(finetune_steps) or finetune_settings.minutes is not None
    if finetuning and config.analog_mode != "window":
        raise SDMError("fine-tuning trains the exact rate form, which needs --analog window")
    loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
    workflow = ConversionWorkflow(loaded.model, loaded.scheduler_config, config, inputs, label=f"'{loaded.source}'")
    for note in loaded.notes:
        click.echo(f"note: {note}", err=True)
    budget = finetune_settings.energy_budget
    with atomic_dir(out) as tmp:
        started = time.perf_counter()
        calibration, choice = _statistics(workflow, stats, budget, sampling.steps)
        snn = workflow.convert(calibration, source=_recordable(ckpt, loaded.source))
        executor = cli.use_executor(snn, executor)
        convert_seconds = time.perf_counter() - started
        judged = workflow.judge(snn, denoising_steps=sampling.steps, profile=True)
        calibration.save(tmp / "calibration_stats.json")
        snn.save_pretrained(tmp / "snn", scheduler_config=loaded.scheduler_config)
        report = _report(loaded, snn, executor, calibration, convert_seconds, judged)
        if choice is not None:
            report["site_choice"] = choice.record()
        if sensitivity:
            report["sensitivity"] = site_sensitivity(workflow.ann, snn, workflow.probes.pairs)
        beside = _draw_grids(workflow, snn, calibration, report, sampling, num_samples, tmp, save_samples) \
            if num_samples else []  # the other code's panel, for the fine-tuning grid too
        if finetuning:
            tuned = _finetune(workflow, loaded.source, finetune_settings, tmp, out, sampling, num_samples, beside)
            report["finetune"] = {k: tuned[k] for k in ("steps", "seconds", "before", "after", "energy_budget")
                                  if k in tuned}
        write_json(report, tmp / "report.json")
        write_text(energy_markdown(judged["energy"]) + "\n", tmp / "energy.md")
    _summarise(loaded.source, config, convert_seconds, judged, out, choice, budget)
    if finetuning:
        summarise(tuned, out / "finetune")


def _statistics(workflow: ConversionWorkflow, stats: str | None, budget: float | None, denoising_steps: int):
    """The calibration this conversion uses (saved statistics under `--stats`, else calibrated) and, under
    an energy budget, the site choice it was retargeted to (else None)."""
    if stats is not None:
        calibration = _retargeted(load_stats(stats, workflow.ann), workflow.config, stats)
    else:  # under a budget, every analog input is observed: any of them may be chosen for spike encoding
        calibration = workflow.calibrate(encoders=budget is not None)
    if budget is None:
        return calibration, None
    if not calibration.encoders_observed:
        raise SDMError(f"--energy-budget chooses among the analog inputs, but --stats '{stats}' observed "
                       "none: calibrate again without --stats, or with statistics saved under --encode-analog")
    return workflow.within_budget(calibration, budget, denoising_steps=denoising_steps)


def _report(loaded, snn: ConvertedUNet, executor: str, calibration, convert_seconds: float, judged: dict) -> dict:
    profile = judged["profile"]
    return {
        "ckpt": loaded.source, "T": snn.T, "conversion": snn.conversion.to_dict(),
        "analog_sites": snn.summary.analog_sites,
        "window_accumulated": snn.summary.window_accumulated,  # analog-input layers run once per window
        "per_step_analog": snn.summary.per_step_analog,        # analog-input layers multiplying every step
        "executor": executor,
        "calibration": {**calibration.source, "sites": len(calibration.sites)},
        "convert_seconds": round(convert_seconds, 2),
        **judged["fidelity"],
        "analog_ops": _analog_ops(snn, profile),
        "compute_per_image_per_denoising_step": profile,
        "energy": judged["energy"],
        "notes": loaded.notes,
    }


def _finetune(workflow: ConversionWorkflow, source: str, settings: FinetuneSettings, tmp: Path, out: Path, sampling,
              num_samples: int, beside: list) -> dict:
    images = None
    if settings.source == "data":
        ann = workflow.ann
        images = load_dataset(settings.data, ann.config.sample_size, ann.config.in_channels)
    return run_finetune(tmp / "snn", workflow.ann, workflow.scheduler_config, tmp / "finetune", settings,
                        teacher_source=source, images=images, num_samples=num_samples, snn_label=str(out / "snn"),
                        sampling=sampling, probes=workflow.probes, beside=beside)


def _summarise(source: str, config: ConversionConfig, seconds: float, judged: dict, out: Path, choice, budget) -> None:
    fidelity, profile, energy = judged["fidelity"], judged["profile"], judged["energy"]
    click.echo(
        f"{source} -> SNN at T={config.T} ({config.neuron.kind}, {config.rule}) in {seconds:.1f} s: eps "
        f"cosine {fidelity['eps_cosine']:.4f} (t<100: {fidelity['eps_cosine_t_lt_100']:.4f}), rel. MSE "
        f"{fidelity['eps_rel_mse']:.4f}, firing rate {fidelity['firing_rate']:.3f}; analog share "
        f"{profile['analog_share']:.1%}; energy {energy['per_image']['energy_mJ']:.3g} mJ per image "
        f"(ANN {energy['ann']['energy_mJ_per_image']:.3g} mJ). Wrote {out}/report.json, {out}/snn/"
    )
    if choice is not None:
        click.echo(f"energy budget {budget:g}: {len(choice.changes)} site changes took the energy ratio from "
                   f"{choice.start.energy_ratio:.3f} to {choice.end.energy_ratio:.3f} (eps error {choice.start.error:.4f} "
                   f"-> {choice.end.error:.4f}); {'met' if choice.met else 'not met by the conversion alone'}")


def _other_code(workflow: ConversionWorkflow, calibration, snn: ConvertedUNet) -> ConvertedUNet | None:
    """The same statistics converted in the other spike code, to be seen beside the chosen one; None where
    the chosen settings have no weighted form (LIF neurons, running mode)."""
    other = "rate" if snn.conversion.coding == "weighted" else "weighted"
    try:
        twin = workflow.convert(calibration.for_config(calibration.config.replace(coding=other)))
    except ConfigError:
        return None
    cli.use_executor(twin, snn.executor)
    return twin


def _draw_grids(workflow: ConversionWorkflow, snn: ConvertedUNet, calibration, report: dict, sampling, num_samples: int,
                tmp: Path, save_samples: bool) -> list[tuple[str, np.ndarray]]:
    """Samples of the ANN, the SNN and its twin in the other code from the same seeds: their grids, the
    side-by-side comparison.png titled with each one's energy, and the twin's figures in the report
    (`other_code`). Returns the twin's panel, for the fine-tuning grid."""
    twin = _other_code(workflow, calibration, snn)
    models = {"ann": workflow.ann, "snn": snn} | ({"other_code": twin} if twin is not None else {})
    titles = {"ann": f"ANN {report['energy']['ann']['energy_mJ_per_image']:.3g} mJ",
              "snn": f"SNN {snn.conversion.coding} T={snn.T}, {report['energy']['per_image']['energy_mJ']:.3g} mJ"}
    if twin is not None:
        energy = energy_report(twin, *workflow.probes.spread, denoising_steps=sampling.steps, ann=workflow.ann)
        report["other_code"] = {"coding": twin.conversion.coding, "energy_mJ_per_image": energy["per_image"]["energy_mJ"],
                                "energy_ratio_snn_to_ann": energy["energy_ratio_snn_to_ann"]}
        titles["other_code"] = f"SNN {twin.conversion.coding} T={twin.T}, {energy['per_image']['energy_mJ']:.3g} mJ"
    sampled = {}
    for name, model in models.items():
        started = time.perf_counter()
        sampled[name] = sample(model, workflow.scheduler_config, num_samples, **sampling.kwargs())
        report[f"{name}_sampling_seconds"] = round(time.perf_counter() - started, 2)
        save_grid(sampled[name][:64], tmp / f"samples_{name}.png", scale=2)
        if save_samples:
            save_npz(sampled[name], tmp / f"samples_{name}.npz", seeds=np.arange(sampling.seed, sampling.seed + num_samples))
    save_comparison([(titles[name], sampled[name][:64]) for name in models], tmp / "comparison.png")
    report["sampling"] = {"sampler": sampling.sampler, "steps": sampling.steps,
                          "seeds": [sampling.seed, sampling.seed + num_samples - 1]}
    return [(titles["other_code"], sampled["other_code"][:64])] if twin is not None else []


def _retargeted(stats, config: ConversionConfig, path: str):
    """Saved statistics pointed at this command's conversion: the flags decide, the file must allow it."""
    try:
        return stats.for_config(config)
    except ConfigError as err:
        flag = flag_for(err.field, click.get_current_context().command.params)
        raise SDMError(f"--stats '{path}' cannot serve this conversion: {flag} {err.problem}") from None


if __name__ == "__main__":
    main()
