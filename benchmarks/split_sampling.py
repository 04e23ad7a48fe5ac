"""Which denoising steps carry a fine-tuned SNN's gain or harm: sample with one SNN above a timestep and
another below it.

    python -m benchmarks.split_sampling --ann runs/dev/silu-mnist-deep \
        --first benchmarks/results/finetune_defaults/silu-mnist-deep/converted-weighted \
        --second benchmarks/results/finetune_defaults/silu-mnist-deep/lr-3e-4-4min/snn --num-samples 256

Each row samples the same seeds (DDIM-50) with `--second` at t >= a split and `--first` below it, or the
other way round, and reports the mean pixel MSE to the ANN's sample of the same seed and the share of
seeds more than 0.01 away (most of them another digit or garment). No feature extractor in between: the
figures say where along the path two SNNs part from the ANN, not how good their images look.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from torch import nn

from benchmarks.common import provenance, write_table
from convert.model import ConvertedUNet
from sdm.commands.options import command
from sdm.diffusion.sampler import sample
from sdm.models.pretrained import load_model
from sdm.settings import CommaList

FAR = 0.01  # a seed's pixel MSE to the ANN's sample above which its image is, by eye, another one


class SplitAtTimestep(nn.Module):
    """Denoises with `high` at t >= `split` and with `low` below: one sampler path, two models."""

    def __init__(self, high: nn.Module, low: nn.Module, split: int):
        super().__init__()
        self.high, self.low, self.split, self.config = high, low, split, high.config

    def forward(self, x, t, return_dict=False):
        return (self.high if int(t[0]) >= self.split else self.low)(x, t, return_dict=return_dict)


def _snn(directory: str) -> ConvertedUNet:
    snn = ConvertedUNet.from_pretrained(directory)
    snn.set_executor("rate")
    return snn.eval()


@command(help="Sample with one SNN above a timestep and another below: where along the path each departs from the ANN.")
@click.option("--ann", required=True, help="The ANN both SNNs were converted from.")
@click.option("--first", required=True, help="An SNN directory (e.g. the conversion).")
@click.option("--second", required=True, help="Another SNN directory (e.g. its fine-tuned student).")
@click.option("--splits", type=CommaList(int), default="600,300,100", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/split_sampling", show_default=True)
def main(ann, first, second, splits, num_samples, out):
    loaded = load_model(ann)

    def draw(model: nn.Module) -> np.ndarray:
        return sample(model, loaded.scheduler_config, num_samples, batch_size=128, progress=False).astype(np.float32) / 255

    reference = draw(loaded.model)
    one, two = _snn(first), _snn(second)
    models = {"first": one, "second": two}
    for split in splits:
        models[f"second at t >= {split}, first below"] = SplitAtTimestep(two, one, split)
        models[f"first at t >= {split}, second below"] = SplitAtTimestep(one, two, split)
    rows = []
    for label, model in models.items():
        per_seed = ((draw(model) - reference) ** 2).reshape(num_samples, -1).mean(1)
        rows.append({"sampled by": label, "sample MSE to ANN": f"{per_seed.mean():.5f}",
                     f"seeds > {FAR} away": f"{np.mean(per_seed > FAR):.1%}"})
        click.echo(f"{label}: {rows[-1]['sample MSE to ANN']}")
    note = (f"first: `{first}`; second: `{second}`; DDIM-50, seeds 0..{num_samples - 1}; each seed's pixel MSE "
            "(in [0, 1]) to the ANN's sample of the same seed.")
    click.echo(write_table(rows, Path(out) / Path(ann).name, provenance(__spec__.name), note))


if __name__ == "__main__":
    main()
