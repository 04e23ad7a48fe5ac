"""FID-FMNIST of converted samples at several T beside the ANN's (same seeds, DDIM).

    python -m benchmarks.conversion_fid --num-samples 2000

Window-mode SNNs are evaluated with the rate executor: exactly the step-by-step outputs (tests compare
them), T times faster.
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks.common import provenance, sample_metric, write_table
from calibration import ConversionConfig
from convert import convert
from convert.workflow import ConversionWorkflow
from sdm.commands.options import command
from sdm.diffusion.images import save_comparison
from sdm.models.pretrained import load_model
from sdm.settings import CommaList

# The spike code of the tables this script reproduces (written before the weighted code became the default).
CODING = "rate"


@command(help="FID-FMNIST of the ANN and of its conversions at several T.")
@click.option("--ckpt", default=None, help="[default: the embedded model]")
@click.option("--T", "Ts", type=CommaList(int), default="4,8,16", show_default=True)
@click.option("--calib", default="mse", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=2000, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--encode-analog", is_flag=True, help="Spike-encode the analog inputs of synaptic layers too.")
@click.option("--out", type=click.Path(), default="benchmarks/results/conversion_fid", show_default=True)
def main(ckpt, Ts, calib, num_samples, steps, encode_analog, out):
    out = Path(out)
    meta = provenance(__spec__.name)
    loaded = load_model(ckpt)
    ann = loaded.model
    base = ConversionConfig(coding=CODING, rule=calib, encode_analog=encode_analog)
    stats = ConversionWorkflow(ann, loaded.scheduler_config, base, progress=False).calibrate()
    ann_fid, ann_images, _ = sample_metric(ann, loaded.scheduler_config, num_samples, out / "work" / "ann", steps=steps)
    rows = [{"model": "ANN", "T": "", "FID-FMNIST": f"{ann_fid.value:.3f}", "ratio to ANN": "1.00"}]
    grids = [("ANN", ann_images[:16])]
    for T in Ts:
        snn = convert(ann, stats.retarget(T=T))
        snn.set_executor("rate")
        fid, images, _ = sample_metric(snn, loaded.scheduler_config, num_samples, out / "work" / f"snn_T{T}", steps=steps)
        kind = "IF, window" + (", spike-encoded analog inputs" if encode_analog else "")
        rows.append({"model": f"SNN ({calib}, {kind})", "T": T, "FID-FMNIST": f"{fid.value:.3f}",
                     "ratio to ANN": f"{fid.value / ann_fid.value:.2f}"})
        grids.append((f"SNN T={T}", images[:16]))
    save_comparison(grids, out / "samples.png")
    text = write_table(rows, out, meta, f"N = {num_samples}, DDIM-{steps}, seeds 0..{num_samples - 1}; FID-FMNIST is "
                       "not comparable with Inception FID.", ckpt=loaded.source, num_samples=num_samples, steps=steps)
    click.echo(text)


if __name__ == "__main__":
    main()
