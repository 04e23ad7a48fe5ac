"""Conversion time of the google/ddpm-cifar10-32 architecture.

    python -m benchmarks.conversion_speed

Builds the cifar10-32 UNet2DModel from its config (random weights: the time does not depend on them)
and times calibration plus conversion with 256 calibration inputs, for both calibration sources.
Forward and sampling times of the converted SNN are `benchmarks.execution_speed`'s.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from benchmarks.common import markdown_table, provenance
from calibration import ConversionConfig, calibrate, calibration_pairs, prepare
from convert import convert
from sdm.commands.options import command
from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.io import write_json, write_text
from sdm.models.presets import build_unet


def conversion_time(source: str, samples: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    unet = build_unet("cifar10-32").eval()
    data = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8) if source == "data" else None
    started = time.perf_counter()
    with torch.no_grad():
        pairs = calibration_pairs(unet, DDPM_LINEAR_SCHEDULE, samples, source=source, data=data)
        after_inputs = time.perf_counter()
        observed = calibrate(prepare(unet, ConversionConfig(T=4, coding="rate", rule="mse")), pairs, batch_size=batch_size,
                             progress=False)
        snn = convert(observed)
    done = time.perf_counter()
    return {"architecture": "cifar10-32 (35.7M parameters)", "calibration source": source,
            "calibration inputs": samples, "making inputs (s)": round(after_inputs - started, 1),
            "calibrate + convert (s)": round(done - after_inputs, 1), "total (s)": round(done - started, 1),
            "neurons": len(snn.summary.neurons)}


@command(help="Conversion time of the cifar10-32 architecture.")
@click.option("--out", type=click.Path(), default="benchmarks/results/conversion_speed", show_default=True)
def main(out):
    meta = provenance(__spec__.name)
    rows = [conversion_time(source, 256, 64) for source in ("data", "trajectory")]
    write_json({**meta, "conversion_time": rows}, Path(out) / "results.json")
    text = (markdown_table(rows, list(rows[0])) + f"\n\n`{meta['command']}` on {meta['machine']}, {meta['date']}\n")
    write_text(text, Path(out) / "table.md")
    click.echo(text)


if __name__ == "__main__":
    main()
