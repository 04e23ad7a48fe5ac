"""Ship a trained DDPM run as the package's embedded default model (fp16 safetensors + model card).

    python examples/package_embedded_model.py --run runs/fmnist-ddpm \
        [--quality benchmarks/results/foundation/results.json]
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import click
import torch

from sdm.cli import command
from sdm.errors import SDMError
from sdm.images import save_grid
from sdm.io import write_text
from sdm.pretrained import EMBEDDED_MODEL, load_model, save_pipeline
from sdm.sampler import sample
from sdm.training import read_run_config


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


@command(help="Package a sdm-train-ann run as the embedded default model.")
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--quality", type=click.Path(exists=True, dir_okay=False), default=None,
              help="benchmarks/results/foundation/results.json, quoted in the card.")
@click.option("--out", type=click.Path(file_okay=False), default=str(EMBEDDED_MODEL), show_default=True)
def main(run, quality, out):
    run, out = Path(run), Path(out)
    loaded = load_model(run)
    config = read_run_config(run)
    if config is None:
        raise SDMError(f"'{run}' has no train_config.json: pass the directory sdm-train-ann wrote")
    preset = config.get("model", {}).get("preset", config.get("preset"))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    trained = json.loads((run / "checkpoint" / "state.json").read_text())["step"]
    logged = [entry for entry in log if entry["step"] <= trained]
    schedule = f"{trained} steps" if trained == config["steps"] else (
        f"{trained} of the {config['steps']} planned steps (the CPU run was stopped there by a session time limit; "
        "`--resume` finishes it)")
    save_pipeline(loaded.model, loaded.scheduler_config, out, dtype=torch.float16)
    shipped = load_model(out)
    grid = sample(shipped.model, shipped.scheduler_config, 64, sampler="ddim", steps=50, seed=0)
    save_grid(grid, out / "sample_grid.png", nrow=8, scale=2)
    params = sum(p.numel() for p in shipped.model.parameters())
    size_mb = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size / 1e6
    figure = "not measured yet"
    if quality:
        q = json.loads(Path(quality).read_text())
        figure = (f"**FID-FMNIST {q['model']['value']:.2f}** at N = {q['model']['n']} (DDIM-50, seeds 0..{q['model']['n'] - 1}); "
                  f"the data floor at the same N (training images against the test split) is {q['floor']['value']:.2f}. "
                  "FID-FMNIST is not comparable with Inception FID (see the extractor's card).")
    command_line = (f"sdm-train-ann --data {config['data']} --out {run} --preset {preset} "
                    f"--steps {config['steps']} --batch-size {config['batch_size']} --lr {config['lr']} "
                    f"--warmup {config['warmup']} --save-every {config['save_every']} --sample-every {config['sample_every']}")
    write_text(f"""# Embedded model: Fashion-MNIST DDPM (`{preset}`)

The default `--ckpt` of every command. A diffusers `UNet2DModel` of the `google/ddpm-cifar10-32`
family (SiLU, GroupNorm, attention at the second resolution), trained with this package.

| | |
|---|---|
| architecture | `{preset}` preset: 28 x 28 x 1, blocks {list(shipped.model.config.block_out_channels)}, attention at 14 x 14, {params / 1e6:.2f}M parameters |
| schedule | DDPM, epsilon prediction, linear betas 1e-4..0.02 over 1000 steps |
| data | Fashion-MNIST training split (60,000 images), random horizontal flips |
| training | {schedule}, batch {config['batch_size']}, AdamW lr {config['lr']} ({config['warmup']} warm-up steps), EMA {config['ema_decay']}, gradient clipping {config['grad_clip']} |
| hardware | CPU only ({_cpu()}, 2 cores): no GPU was available for this run, hence the small preset and the short schedule; {logged[-1]['seconds'] / 3600:.1f} h |
| final training loss | {logged[-1]['loss']:.4f} (mean of the last {config['log_every']} steps) |
| weights | EMA weights, fp16 safetensors, {size_mb:.1f} MB |
| quality | {figure} |
| command | `{command_line}` then `python examples/package_embedded_model.py --run {run}` |

![64 samples, DDIM-50, seeds 0..63](sample_grid.png)
""", out / "MODEL_CARD.md")
    click.echo(f"packaged {run} -> {out} ({size_mb:.1f} MB, {params / 1e6:.2f}M parameters)")


if __name__ == "__main__":
    main()
