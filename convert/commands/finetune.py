"""`sdm-finetune`: distil the ANN into its converted SNN (prepare -> calibrate -> convert -> finetune)."""

from __future__ import annotations

from pathlib import Path

import click

from convert.finetune import FinetuneSettings, check_student, run_finetune
from convert.model import ConvertedUNet
from sdm.commands.options import allow_pickle_option, command, device_option, resolve_device, resume_option
from sdm.diffusion.data import load_dataset
from sdm.diffusion.sampler import SamplingSettings
from sdm.errors import SDMError
from sdm.models.pretrained import load_model
from sdm.settings import options_of, settings_from

# sdm-convert's spelling of the fine-tuning flags its own options would clash with.
FINETUNE_FLAGS = {"batch_size": "--finetune-batch-size", "minutes": "--finetune-minutes"}
# sdm-finetune's spelling of the sampling flags (its --steps and --seed are the fine-tuning run's): the
# grid, and the denoising steps per image the energy is reported at.
SAMPLING_FLAGS = {"steps": "--sample-steps", "seed": "--sample-seed", "batch_size": "--sample-batch-size"}


def snn_directory(path: str) -> Path:
    """A converted SNN directory: sdm-convert's OUT/snn, or OUT itself."""
    path = Path(path)
    for candidate in (path, path / "snn"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SDMError(f"--snn '{path}' holds no converted SNN (config.json); pass sdm-convert's OUT or OUT/snn")


def recorded_teacher(snn: ConvertedUNet) -> str:
    teacher = snn.source.get("ckpt")
    if not teacher:
        raise SDMError("the SNN does not record the ANN it was converted from; pass --teacher HUB_ID_OR_DIR")
    return teacher


@command(help="Fine-tune a converted SNN against the ANN it came from (distillation in the SNN's exact rate "
              "form); write OUT/snn (loads wherever sdm-convert's OUT/snn does), OUT/report.json, the loss curve "
              "and the ANN / converted / fine-tuned grid.")
@click.option("--snn", "snn", required=True, help="sdm-convert's OUT or OUT/snn (window mode).")
@click.option("--teacher", default=None, metavar="HUB_ID_OR_DIR",
              help="The ANN [default: the checkpoint recorded at conversion].")
@allow_pickle_option
@options_of(FinetuneSettings)
@click.option("--num-samples", type=click.IntRange(min=0), default=16, show_default=True,
              help="Images per model in comparison.png (0: none).")
@options_of(SamplingSettings, prefix="sample_", flags=SAMPLING_FLAGS)
@click.option("--out", type=click.Path(file_okay=False), default="out/finetune", show_default=True)
@resume_option
@device_option
def main(snn, teacher, allow_pickle, num_samples, out, resume, device, **options):
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise SDMError(f"--out '{out}' is not empty; pass --resume to continue a run there or choose another directory")
    device = resolve_device(device)
    settings = settings_from(FinetuneSettings, options, device=device)
    sampling = settings_from(SamplingSettings, options, prefix="sample_")
    snn_dir = snn_directory(snn)
    student = ConvertedUNet.from_pretrained(snn_dir)
    check_student(student)
    teacher = teacher or recorded_teacher(student)
    loaded = load_model(teacher, device=device, allow_pickle=allow_pickle)
    check_student(student, loaded.model)
    images = None
    if settings.source == "data":
        images = load_dataset(settings.data, loaded.model.config.sample_size, loaded.model.config.in_channels)
    report = run_finetune(snn_dir, loaded.model, loaded.scheduler_config, out, settings, teacher_source=loaded.source,
                          images=images, resume=resume, num_samples=num_samples, sampling=sampling)
    if report is not None:
        summarise(report, out)


def summarise(report: dict, out: Path) -> None:
    """One line on what fine-tuning changed."""
    b, a, budget = report["before"], report["after"], report.get("energy_budget")
    timed = f" (the steps that fit in --minutes {report['minutes']:g})" if report.get("minutes") else ""
    click.echo(f"fine-tuned {report['snn']} for {report['steps']} steps{timed} in {report['seconds']:.0f} s: eps cosine {b['eps_cosine']:.4f} "
               f"-> {a['eps_cosine']:.4f} (t<100: {b['eps_cosine_t_lt_100']:.4f} -> {a['eps_cosine_t_lt_100']:.4f}), "
               f"firing rate {b['firing_rate']:.3f} -> {a['firing_rate']:.3f}, energy {b['energy_mJ_per_image']:.3g} "
               f"-> {a['energy_mJ_per_image']:.3g} mJ per image ({a['energy_ratio_snn_to_ann']:.3f} of the ANN's"
               + (f"; budget {budget['budget']:g} {'met' if budget['met'] else 'NOT met'}" if budget else "")
               + f"). Wrote {out}/snn, {out}/report.json")


if __name__ == "__main__":
    main()
