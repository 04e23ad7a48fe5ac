"""Embedded-model quality (FID-FMNIST at N) beside the data floor, and sampling speed.

    python -m benchmarks.foundation --data ../shared/data/fashion_mnist.npz --num-samples 10000

The floor is N Fashion-MNIST *training* images against the test-split reference: the FID-FMNIST a
perfect model would score at this N.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from benchmarks.common import markdown_table, provenance
from sdm.commands.options import ckpt_options, command, device_option, resolve_device
from sdm.diffusion.data import load_dataset
from sdm.diffusion.images import save_npz
from sdm.diffusion.sampler import sample
from sdm.io import write_json, write_text
from sdm.metrics.extractors import FMNISTExtractor
from sdm.metrics.quality import evaluate_quality
from sdm.models.pretrained import load_model


def sampling_speed(loaded, batch_size: int, steps: int) -> float:
    """Images per second for one DDIM batch, after a warm-up batch."""
    sample(loaded.model, loaded.scheduler_config, batch_size, steps=2, batch_size=batch_size, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    sample(loaded.model, loaded.scheduler_config, batch_size, steps=steps, batch_size=batch_size, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return batch_size / (time.perf_counter() - started)


@command(help="FID-FMNIST of the embedded model at N (DDIM-50), the data floor at N, and sampling speed.")
@ckpt_options
@click.option("--data", required=True, help="Fashion-MNIST .npz (x_train) for the floor.")
@click.option("--num-samples", type=click.IntRange(min=2), default=10_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/foundation", show_default=True)
@device_option
def main(ckpt, allow_pickle, data, num_samples, batch_size, out, device):
    device = resolve_device(device)
    loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
    images = sample(loaded.model, loaded.scheduler_config, num_samples, sampler="ddim", steps=50, batch_size=batch_size)
    save_npz(images, Path(out) / "samples_ddim50.npz", seeds=np.arange(num_samples))
    extractor = FMNISTExtractor(device)
    model_fid = evaluate_quality(images, extractor, metrics=("fid",))[0][0]
    train = load_dataset(data, 28, 1, split="train").permute(0, 2, 3, 1).numpy()
    floor_idx = np.random.default_rng(0).choice(len(train), size=min(num_samples, len(train)), replace=False)
    floor = evaluate_quality(train[floor_idx], extractor, metrics=("fid",))[0][0]
    speed = {f"{device} batch {b}": round(sampling_speed(loaded, b, 50), 2) for b in (1, 64)}
    meta = provenance(__spec__.name)
    result = {**meta, "ckpt": loaded.source, "model": model_fid.to_dict(), "floor": floor.to_dict(),
              "images_per_second_ddim50": speed}
    write_json(result, Path(out) / "results.json")
    rows = [
        {"what": f"embedded model, DDIM-50, seeds 0..{num_samples - 1}", "N": num_samples,
         "FID-FMNIST": f"{model_fid.value:.2f}"},
        {"what": "floor: Fashion-MNIST train images vs test split", "N": len(floor_idx), "FID-FMNIST": f"{floor.value:.2f}"},
    ]
    table = markdown_table(rows, ["what", "N", "FID-FMNIST"])
    speed_table = markdown_table([{"device": k, "images/s (DDIM-50)": v} for k, v in speed.items()],
                                 ["device", "images/s (DDIM-50)"])
    text = f"{table}\n\n{speed_table}\n\n`{meta['command']}` on {meta['machine']}, {meta['date']}\n"
    write_text(text, Path(out) / "table.md")
    click.echo(text)


if __name__ == "__main__":
    main()
