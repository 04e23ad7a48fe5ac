"""`sdm-finetune`: distil the ANN into its converted SNN (prepare -> calibrate -> convert -> finetune)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from convert.finetune import PAIR_SOURCES, TRAINABLE, FinetuneSettings, check_student, run_finetune
from convert.model import ConvertedUNet
from sdm.cli import command, device_option, resolve_device
from sdm.data import load_dataset
from sdm.errors import SDMError
from sdm.pretrained import load_model
from sdm.training import PRECISIONS

_DEFAULTS = {f.name: f.default for f in fields(FinetuneSettings)}


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


def finetune_options(func, batch_flag: str = "--batch-size"):
    """The options `sdm-finetune` and `sdm-convert --finetune-steps` share (sdm-convert names the batch
    `--finetune-batch-size`, its `--batch-size` being the sampler's)."""
    for decorator in reversed([
        click.option(batch_flag, "ft_batch_size", type=click.IntRange(min=1), default=_DEFAULTS["batch_size"],
                     show_default=True, help="Fine-tuning batch."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS["lr"], show_default=True,
                     help="Learning rate of weights, biases and norm parameters (cosine decay after warm-up)."),
        click.option("--threshold-lr", type=click.FloatRange(min=0), default=_DEFAULTS["threshold_lr"],
                     show_default=True, help="Relative learning rate of the thresholds (fraction per step)."),
        click.option("--source", type=click.Choice(PAIR_SOURCES), default=_DEFAULTS["source"], show_default=True,
                     help="trajectory: the teacher's DDIM paths (data-free); data: real images noised at random t."),
        click.option("--pairs", type=click.IntRange(min=1), default=_DEFAULTS["pairs"],
                     help="(x_t, t) pairs in the training pool, each labelled with the teacher's eps [default: "
                          "sized to the run, each pair drawn about 4 times]."),
        click.option("--late-share", type=click.FloatRange(0, 1, max_open=True), default=_DEFAULTS["late_share"],
                     show_default=True, help="Share of each batch drawn from t < 100, the fine-detail steps."),
        click.option("--train", type=click.Choice(TRAINABLE), default=_DEFAULTS["train"], show_default=True,
                     help="What learns besides the thresholds: nothing more, the norms' affine parameters, or all."),
        click.option("--feature-weight", type=click.FloatRange(min=0), default=_DEFAULTS["feature_weight"],
                     show_default=True, help="Weight of feature distillation: every spiking site's input matched to "
                                             "the ANN's at the same graph position, as a relative error."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=_DEFAULTS["precision"], show_default=True,
                     help="bf16: autocast the training steps; auto: bf16 where it is native (GPUs, CPUs with "
                          "AVX512-BF16 or AMX), else fp32."),
        click.option("--energy-penalty", type=click.FloatRange(min=0), default=_DEFAULTS["energy_penalty"],
                     show_default=True, help="Weight in the loss of the spikes' share of the SNN / ANN energy ratio "
                                             "(each spike priced by the synapses it reaches): trade energy for quality."),
        click.option("--energy-budget", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="An SNN / ANN energy ratio per image to meet: the energy penalty's weight adapts during "
                          "fine-tuning (starting from --energy-penalty); the report says whether it was met."),
    ]):
        func = decorator(func)
    return func


@command(help="Fine-tune a converted SNN against the ANN it came from (distillation in the SNN's exact rate "
              "form); write OUT/snn (loads wherever sdm-convert's OUT/snn does), OUT/report.json, the loss curve "
              "and the ANN / converted / fine-tuned grid.")
@click.option("--snn", "snn_path", required=True, help="sdm-convert's OUT or OUT/snn (window mode).")
@click.option("--teacher", default=None, metavar="HUB_ID_OR_DIR",
              help="The ANN [default: the checkpoint recorded at conversion].")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle (.bin) teacher weights. Only for files you trust.")
@click.option("--steps", type=click.IntRange(min=0), default=_DEFAULTS["steps"], show_default=True)
@finetune_options
@click.option("--data", default=None, help="Images for --source data: .npz, image folder or data set name.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--num-samples", type=click.IntRange(min=0), default=16, show_default=True,
              help="Images per model in comparison.png (0: none).")
@click.option("--out", type=click.Path(file_okay=False), default="out/finetune", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@device_option
def main(snn_path, teacher, allow_pickle, steps, ft_batch_size, lr, threshold_lr, source, pairs, late_share, train,
         feature_weight, precision, energy_penalty, energy_budget, data, seed, num_samples, out, resume, device):
    out = Path(out)
    if steps < 1:
        raise SDMError("--steps must be at least 1 (0 fine-tunes nothing)")
    if out.exists() and any(out.iterdir()) and not resume:
        raise SDMError(f"--out '{out}' is not empty; pass --resume to continue a run there or choose another directory")
    device = resolve_device(device)
    snn_dir = snn_directory(snn_path)
    snn = ConvertedUNet.from_pretrained(snn_dir)
    check_student(snn)
    teacher = teacher or recorded_teacher(snn)
    loaded = load_model(teacher, device=device, allow_pickle=allow_pickle)
    check_student(snn, loaded.model)
    settings = FinetuneSettings(steps=steps, batch_size=ft_batch_size, lr=lr, threshold_lr=threshold_lr, source=source,
                                data=data, pairs=pairs, late_share=late_share, train=train,
                                feature_weight=feature_weight, precision=precision, energy_penalty=energy_penalty, energy_budget=energy_budget, seed=seed, device=device)
    settings.validate()
    images = None
    if source == "data":
        images = load_dataset(data, loaded.model.config.sample_size, loaded.model.config.in_channels)
    report = run_finetune(snn_dir, loaded.model, loaded.scheduler_config, out, settings, teacher_source=loaded.source,
                          images=images, resume=resume, num_samples=num_samples)
    if report is not None:
        summarise(report, out)


def summarise(report: dict, out: Path) -> None:
    """One line on what fine-tuning changed."""
    b, a, budget = report["before"], report["after"], report.get("energy_budget")
    click.echo(f"fine-tuned {report['snn']} for {report['steps']} steps in {report['seconds']:.0f} s: eps cosine {b['eps_cosine']:.4f} "
               f"-> {a['eps_cosine']:.4f} (t<100: {b['eps_cosine_t_lt_100']:.4f} -> {a['eps_cosine_t_lt_100']:.4f}), "
               f"firing rate {b['firing_rate']:.3f} -> {a['firing_rate']:.3f}, energy {b['energy_mJ_per_image']:.3g} "
               f"-> {a['energy_mJ_per_image']:.3g} mJ per image ({a['energy_ratio_snn_to_ann']:.3f} of the ANN's"
               + (f"; budget {budget['budget']:g} {'met' if budget['met'] else 'NOT met'}" if budget else "")
               + f"). Wrote {out}/snn, {out}/report.json")


if __name__ == "__main__":
    main()
