"""Which conversion settings to make default: every spike code x threshold granularity at T = 4 on
several DDPMs, judged by sample FID beside energy per image.

    python -m benchmarks.code_defaults --model embedded:fmnist-ddpm \
        --model runs/dev/relu-mnist=../shared/data/mnist_10k.npz --num-samples 500

A `--model` is `CKPT` or `CKPT=REFERENCE` (the images its samples are scored against; by default the
Fashion-MNIST test split the extractor ships). Each model is calibrated once on its own trajectories
(per-channel observers, which serve per-site thresholds too) and converted four ways at T = 4, the first
ResNet analog (`sdm-compare`'s recipe): rate or weighted code, per-site or per-channel thresholds. The
sample metric is the FID of the Fashion-MNIST classifier's features (FID-FMNIST; on other data sets a
proxy that ranks models against that data set's images, not comparable across data sets); the ratio
to the model's own ANN is what compares across models. The dev models are made by examples/dev_models.sh.
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, sample_metric, write_table
from calibration import ConversionConfig
from convert.commands import compare
from convert.workflow import ConversionWorkflow
from sdm.commands.options import command
from sdm.diffusion.data import read_images
from sdm.diffusion.images import save_comparison
from sdm.metrics.extractors import FMNISTExtractor
from sdm.models.pretrained import load_model

VARIANTS = [(coding, per_channel) for coding in ("rate", "weighted") for per_channel in (False, True)]


def _model_rows(spec: str, num_samples: int, steps: int, out: Path) -> tuple[list[dict], list]:
    ckpt, _, reference = spec.partition("=")
    loaded = load_model(ckpt)
    ann, schedule = loaded.model, loaded.scheduler_config
    extractor = FMNISTExtractor()
    ref = read_images(reference) if reference else None
    name = Path(ckpt).name or ckpt
    work = out / "work" / name
    base = ConversionConfig(T=4, per_channel=True, analog_sites=compare.FIRST_RESNET)
    workflow = ConversionWorkflow(ann, schedule, base, progress=False)
    stats = workflow.calibrate()
    ann_fid, ann_images, _ = sample_metric(ann, schedule, num_samples, work, steps=steps, extractor=extractor,
                                           reference=ref)
    rows = [{"model": name, "code": "ANN", "thresholds": "", "eps cosine (t < 100)": "", "firing rate": "",
             "energy / image (mJ)": "", "ratio to ANN energy": "1", f"FID (N = {num_samples})": f"{ann_fid.value:.3f}",
             "ratio to ANN FID": "1.00"}]
    grids = [(f"{name} ANN", ann_images[:16])]
    for coding, per_channel in VARIANTS:
        snn = workflow.convert(stats.retarget(coding=coding, per_channel=per_channel))
        snn.set_executor("rate")
        judged = workflow.judge(snn, denoising_steps=steps)
        fidelity, energy = judged["fidelity"], judged["energy"]
        fid, images, _ = sample_metric(snn, schedule, num_samples, work, steps=steps, extractor=extractor, reference=ref)
        granularity = "per channel" if per_channel else "per site"
        rows.append({"model": name, "code": coding, "thresholds": granularity,
                     "eps cosine (t < 100)": f"{fidelity['eps_cosine']:.4f} ({fidelity['eps_cosine_t_lt_100']:.4f})",
                     "firing rate": f"{fidelity['firing_rate']:.3f}",
                     "energy / image (mJ)": f"{energy['per_image']['energy_mJ']:.3g}",
                     "ratio to ANN energy": f"{energy['energy_ratio_snn_to_ann']:.3f}",
                     f"FID (N = {num_samples})": f"{fid.value:.3f}", "ratio to ANN FID": f"{fid.value / ann_fid.value:.2f}"})
        grids.append((f"{coding} {granularity}, {energy['per_image']['energy_mJ']:.3g} mJ", images[:16]))
    return rows, grids


@command(help="Spike code x threshold granularity at T = 4 on several DDPMs: FID beside energy per image.")
@click.option("--model", "models", multiple=True, default=("embedded:fmnist-ddpm",), show_default=True,
              help="CKPT or CKPT=REFERENCE_IMAGES; repeat for several.")
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/code_defaults", show_default=True)
def main(models, num_samples, steps, out):
    out = Path(out)
    meta = provenance(__spec__.name)
    rows = []
    for spec in models:
        model_rows, grids = _model_rows(spec, num_samples, steps, out)
        rows += model_rows
        save_comparison(grids, out / f"{model_rows[0]['model'].replace(':', '_')}.png")
    text = write_table(rows, out, meta, f"T = 4, first ResNet analog, mse thresholds, rate executor; DDIM-{steps}, "
                       f"seeds 0..{num_samples - 1}; FID of the Fashion-MNIST classifier's features against each "
                       "model's reference images (not comparable with Inception FID, nor across data sets: compare "
                       "the ratios to each model's ANN).", num_samples=num_samples, steps=steps)
    click.echo(text)


if __name__ == "__main__":
    main()
