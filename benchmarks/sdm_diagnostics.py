"""Where a directly trained SDM's error sits along the diffusion: eps MSE per t beside the ANN's, and a
hand-over grid (the ANN denoises above t = cut, the SDM below) that shows which part of the
trajectory spoils the samples.

    python -m benchmarks.sdm_diagnostics --sdm runs/fmnist-sdm-prespike-spike-readout \
        --sdm runs/snap-analog-2500 --data ../shared/data/fashion_mnist.npz
"""

from __future__ import annotations

from pathlib import Path

import click
import torch
from torch import nn

from benchmarks.common import provenance, write_table
from sdm.commands.options import command
from sdm.diffusion.data import load_dataset
from sdm.diffusion.images import save_comparison, to_model_range
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.diffusion.sampler import make_scheduler, sample
from sdm.models.pretrained import EMBEDDED_NAME, load_model
from sdm.settings import CommaList


class HandOver(nn.Module):
    """The ANN's prediction while every t of the batch is above `cut`, the SDM's below."""

    def __init__(self, ann: nn.Module, sdm: nn.Module, cut: int):
        super().__init__()
        self.ann, self.sdm, self.cut, self.config = ann, sdm, cut, ann.config

    def forward(self, sample, timestep, return_dict=False):
        model = self.ann if bool((timestep > self.cut).all()) else self.sdm
        return model(sample, timestep, return_dict=return_dict)


@torch.no_grad()
def eps_mse(model, images: torch.Tensor, t: int, seed: int = 0) -> float:
    alpha = make_scheduler("ddpm", dict(DDPM_LINEAR_SCHEDULE)).alphas_cumprod[t].float()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed + t))
    noisy = alpha.sqrt() * images + (1 - alpha).sqrt() * noise
    pred = model(noisy, torch.full((len(images),), t), return_dict=False)[0]
    return torch.mean((pred - noise) ** 2).item()


@command(help="Eps MSE per diffusion step t of directly trained SDMs beside the ANN, and ANN-to-SDM hand-over grids.")
@click.option("--sdm", "sdms", multiple=True, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--ann", default=EMBEDDED_NAME, show_default=True)
@click.option("--data", required=True, help="Images whose noised versions are scored (the test split is used).")
@click.option("--images", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--t", "ts", type=CommaList(int), default="10,100,300,500,700,900", show_default=True)
@click.option("--cut", type=click.IntRange(0, 999), default=600, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/sdm_diagnostics", show_default=True)
def main(sdms, ann, data, images, ts, cut, out):
    out = Path(out)
    teacher = load_model(ann)
    batch = to_model_range(load_dataset(data, 28, 1, split="test")[:images])
    models = [("ANN", teacher)] + [(str(path), load_model(path)) for path in sdms]
    rows = []
    for name, loaded in models:
        rows.append({"model": f"`{name}`", **{f"t = {t}": f"{eps_mse(loaded.model, batch, t):.4g}" for t in ts}})
    panels = [("ANN", sample(teacher.model, teacher.scheduler_config, 16, sampler="ddim", steps=50, seed=0))]
    for path, (_, loaded) in zip(sdms, models[1:], strict=True):
        label = Path(path).name
        panels.append((label, sample(loaded.model, teacher.scheduler_config, 16, sampler="ddim", steps=50, seed=0)))
        hand_over = HandOver(teacher.model, loaded.model, cut)
        panels.append((f"ANN > {cut} > {label}",
                       sample(hand_over, teacher.scheduler_config, 16, sampler="ddim", steps=50, seed=0)))
    save_comparison(panels, out / "hand_over.png")
    text = write_table(rows, out, provenance(__spec__.name),
                       f"Eps MSE on {images} test images noised to each t (one noise draw per t, the same for every "
                       f"model). Grids: DDIM-50, seeds 0..15; 'ANN > {cut} > X' runs the ANN above t = {cut}, X below.")
    click.echo(text)


if __name__ == "__main__":
    main()
