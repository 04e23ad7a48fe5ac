"""Threshold guidance on converted, fine-tuned SNNs: FID and energy per image at each sampling-time scale.

    python -m benchmarks.converted_guidance --model runs/dev/silu-mnist-deep=../shared/data/mnist_10k.npz \
        --snn weighted=benchmarks/results/finetune_defaults/silu-mnist-deep/lr-3e-4-20min/snn \
        --scales 0.9,0.95,1.0,1.05,1.1 --num-samples 500 \
        --work benchmarks/results/finetune_defaults/silu-mnist-deep/work

Threshold guidance (Cao et al. 2024) multiplies every threshold by one scale at sampling time only. In a
converted neuron the threshold is both the size of a spike and the top of the range it codes, so a scale
above 1 clips less, codes coarser levels and fires less; below 1 the reverse. Each SNN is sampled at each
scale (DDIM-50, seeds 0..N-1, scored by the Fashion-MNIST classifier's features against the model's
reference images) and its energy per image is measured at that scale on the conversion's own probes, in
the arithmetic of `benchmarks.finetune_defaults` (energy_report at 50 denoising steps, against the ANN).
`--work` shares sample shards with that benchmark, so its scale-1 samples and the ANN's are reused.
Under `--out`, per model: `table.md`, `frontier.png` (FID against energy through the scales) and, per SNN,
`LABEL-samples.png` (the ANN's samples and the SNN's at each scale, the same seeds in the same cells).
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, sample_metric, write_table
from calibration import ConversionConfig
from convert.model import ConvertedUNet
from convert.workflow import ConversionWorkflow
from sdm.commands.options import command
from sdm.diffusion.data import read_images
from sdm.diffusion.images import save_comparison
from sdm.io import save_figure
from sdm.metrics.extractors import FMNISTExtractor
from sdm.models.pretrained import load_model
from sdm.settings import CommaList
from sdm.snn.modes import scaled_thresholds

DENOISING_STEPS = 50  # DDIM steps of the samples, and of the energy per image


def _labelled(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label.replace("-", "").replace("_", "").isalnum() or not Path(path, "config.json").is_file():
        raise click.BadParameter(f"'{text}' is not LABEL=DIRECTORY: a label of letters, digits, - and _ (it names a file), and a "
                                f"converted model's directory (a config.json in it)")
    return label, Path(path)


GRID_SEEDS = 16  # seeds per panel of the sample grids (a 4 x 4 grid, the same seeds in the same cells)


def _rows(loaded, reference, snns, scales, num_samples, work) -> tuple[list[dict], dict]:
    """The ANN's row, then one row per SNN and scale: FID and energy, each as a ratio to the ANN's; and
    per SNN, the sample panels (the ANN's, then one per scale) for its grid."""
    def scored(model, scale=1.0):
        result, images, _ = sample_metric(model, loaded.scheduler_config, num_samples, work, threshold_scale=scale,
                                          extractor=FMNISTExtractor(), reference=reference)
        return result.value, images[:GRID_SEEDS]

    ann_fid, ann_images = scored(loaded.model)
    rows = [{"SNN": "ANN", "scale": "", "FID": f"{ann_fid:.3f}", "ratio to ANN FID": "1.00", "firing rate": "",
             "energy / image (mJ)": "", "ratio to ANN energy": "1"}]
    panels = {}
    workflow = ConversionWorkflow(loaded.model, loaded.scheduler_config, ConversionConfig(), progress=False)
    for label, directory in snns:
        snn = ConvertedUNet.from_pretrained(directory)
        snn.set_executor("rate")
        panels[label] = [("ANN", ann_images)]
        for scale in scales:
            with scaled_thresholds(snn, scale):
                judged = workflow.judge(snn, denoising_steps=DENOISING_STEPS)
            (value, images), energy = scored(snn, scale), judged["energy"]
            panels[label].append((f"scale {scale:g}", images))
            rows.append({"SNN": label, "scale": f"{scale:g}", "FID": f"{value:.3f}",
                         "ratio to ANN FID": f"{value / ann_fid:.2f}",
                         "firing rate": f"{judged['fidelity']['firing_rate']:.3f}",
                         "energy / image (mJ)": f"{energy['per_image']['energy_mJ']:.3g}",
                         "ratio to ANN energy": f"{energy['energy_ratio_snn_to_ann']:.3f}"})
    return rows, panels


def _plot_frontier(rows: list[dict], title: str, path: Path) -> None:
    """FID against energy, both as ratios to the ANN's, one line per SNN through its scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label in dict.fromkeys(row["SNN"] for row in rows[1:]):
        points = [row for row in rows[1:] if row["SNN"] == label]
        energy = [float(row["ratio to ANN energy"]) for row in points]
        fid = [float(row["ratio to ANN FID"]) for row in points]
        ax.plot(energy, fid, marker="o", label=label)
        for row, x, y in zip(points, energy, fid, strict=True):
            ax.annotate(row["scale"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(1.0, color="gray", linestyle="--", label="ANN")
    ax.set_xlabel("energy per image / ANN's")
    ax.set_ylabel("FID / ANN's")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


@command(help="Threshold guidance on converted SNNs: FID and energy per image at each sampling-time scale.")
@click.option("--model", required=True, help="The ANN the SNNs were converted from: CKPT or CKPT=REFERENCE_IMAGES.")
@click.option("--snn", "snns", multiple=True, required=True, callback=lambda _c, _p, v: [_labelled(s) for s in v],
              help="LABEL=DIRECTORY of a converted (fine-tuned) SNN; repeat.")
@click.option("--scales", type=CommaList(float), default="0.9,0.95,1.0,1.05,1.1", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--work", type=click.Path(), required=True, help="Where sample shards are kept (and reused).")
@click.option("--out", type=click.Path(), default="benchmarks/results/converted_guidance", show_default=True)
def main(model, snns, scales, num_samples, work, out):
    if not scales or any(not s > 0 for s in scales):
        raise click.BadParameter(f"scales must be positive, got {scales}", param_hint="--scales")
    ckpt, _, reference = model.partition("=")
    loaded = load_model(ckpt)
    rows, panels = _rows(loaded, read_images(reference) if reference else None, snns, scales, num_samples, Path(work))
    name = Path(ckpt).absolute().name
    tables = Path(out) / name.replace(":", "-")
    for label, shown in panels.items():
        save_comparison(shown, tables / f"{label}-samples.png")
    _plot_frontier(rows, f"{name}: threshold guidance (N = {num_samples})", tables / "frontier.png")
    note = (f"Threshold guidance at sampling time on SNNs converted from `{name}`; DDIM-{DENOISING_STEPS}, seeds "
            f"0..{num_samples - 1}; FID of the Fashion-MNIST classifier's features against the model's reference "
            "images (not comparable with Inception FID); energy per image at that scale, against the ANN.")
    click.echo(write_table(rows, tables, provenance(__spec__.name), note))


if __name__ == "__main__":
    main()
