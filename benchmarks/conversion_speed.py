"""Conversion time of the google/ddpm-cifar10-32 architecture, and SNN versus ANN forward time.

    python -m benchmarks.conversion_speed --ckpt runs/fmnist-ddpm

Part 1 builds the cifar10-32 UNet2DModel from its config (random weights: the time does not depend on
them) and times calibration plus conversion with 256 calibration inputs, for both calibration
sources. Part 2 times one forward pass of the ANN and of its converted SNN at equal batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from benchmarks.common import markdown_table, provenance
from calibration import calibrate, calibration_pairs, prepare
from convert import convert
from sdm.cli import command
from sdm.io import write_json, write_text
from sdm.presets import build_unet
from sdm.pretrained import DDPM_LINEAR_SCHEDULE, load_model


def conversion_time(source: str, samples: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    unet = build_unet("cifar10-32").eval()
    data = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8) if source == "data" else None
    started = time.perf_counter()
    with torch.no_grad():
        pairs = calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, samples, source=source, data=data)
        after_inputs = time.perf_counter()
        observed = calibrate(prepare(unet), pairs, batch_size=batch_size, progress=False)
        snn = convert(observed, T=4, rule="mse")
    done = time.perf_counter()
    return {"architecture": "cifar10-32 (35.7M parameters)", "calibration source": source,
            "calibration inputs": samples, "making inputs (s)": round(after_inputs - started, 1),
            "calibrate + convert (s)": round(done - after_inputs, 1), "total (s)": round(done - started, 1),
            "neurons": len(snn.summary.neurons)}


def forward_time(model, x, t, repeats: int) -> float:
    with torch.no_grad():
        model(x, t)
        started = time.perf_counter()
        for _ in range(repeats):
            model(x, t)
    return (time.perf_counter() - started) / repeats


@command(help="Conversion time of the cifar10-32 architecture and SNN/ANN forward time at equal batch.")
@click.option("--ckpt", default=None, help="The ANN whose conversion is timed in part 2 [default: embedded model].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/conversion_speed", show_default=True)
def main(ckpt, batch_size, repeats, out):
    meta = provenance(__spec__.name)
    part1 = [conversion_time(source, 256, 64) for source in ("data", "trajectory")]
    loaded = load_model(ckpt)
    ann = loaded.model
    size, channels = ann.config.sample_size, ann.config.in_channels
    x = torch.randn(batch_size, channels, size, size)
    t = torch.linspace(0, 999, batch_size).long()
    observed = calibrate(prepare(ann), calibration_pairs(ann, loaded.scheduler_config, 256), progress=False)
    ann_seconds = forward_time(ann, x, t, repeats)
    part2 = []
    for T in (4, 8, 16):
        snn = convert(observed, T=T, rule="mse")
        steps_seconds = forward_time(snn, x, t, repeats)
        snn.set_executor("rate")
        rate_seconds = forward_time(snn, x, t, repeats)
        part2.append({"T": T, "ANN forward (s)": round(ann_seconds, 3), "SNN steps executor (s)": round(steps_seconds, 3),
                      "SNN / (T x ANN)": round(steps_seconds / (T * ann_seconds), 2),
                      "SNN rate executor (s)": round(rate_seconds, 3)})
    write_json({**meta, "conversion_time": part1, "forward_time": part2, "batch_size": batch_size,
                "ckpt": loaded.source}, Path(out) / "results.json")
    text = (markdown_table(part1, list(part1[0])) + "\n\n" + markdown_table(part2, list(part2[0])) +
            f"\n\nForward time at batch {batch_size} on `{loaded.source}`. `{meta['command']}` on {meta['machine']}, "
            f"{meta['date']}\n")
    write_text(text, Path(out) / "table.md")
    click.echo(text)


if __name__ == "__main__":
    main()
