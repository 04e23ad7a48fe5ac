"""Ship a trained run as one of the package's embedded models (fp16 safetensors + model card).

    python examples/package_embedded_model.py --run runs/fmnist-ddpm \
        [--quality benchmarks/results/foundation/results.json]           # -> embedded:fmnist-ddpm
    python examples/package_embedded_model.py --run runs/fmnist-sdm-tsm \
        [--quality benchmarks/results/direct_training/results.json]      # -> embedded:fmnist-sdm

The kind of run (an ANN from sdm-train-ann, a spiking UNet from sdm-train) picks the destination.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import click
import torch

from sdm.commands.options import command
from sdm.diffusion.images import save_grid
from sdm.diffusion.pipeline import save_pipeline
from sdm.diffusion.sampler import sample
from sdm.diffusion.training import read_run_config
from sdm.errors import SDMError
from sdm.io import write_text
from sdm.models.pretrained import EMBEDDED_MODELS, EMBEDDED_NAME, EMBEDDED_SDM_NAME, load_model

NOT_INCEPTION = "FID-FMNIST is not comparable with Inception FID (see the extractor's card)."


def _keep_training_records(run: Path, out: Path) -> None:
    """The run's settings and log (and those of the run it started from) beside the model card, in
    `out/training/RUN`: the record of how the shipped weights were made, without the run directory."""
    config = read_run_config(run) or {}
    for source in [run] + ([Path(config["init_from"])] if config.get("init_from") else []):
        for name in ("train_config.json", "log.jsonl"):
            write_text((source / name).read_text(), out / "training" / source.name / name)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _run_record(run: Path) -> dict:
    """A run's settings, trained steps, wall time (summed over resumed segments) and final loss."""
    config = read_run_config(run)
    if config is None:
        raise SDMError(f"'{run}' has no train_config.json: pass the directory sdm-train or sdm-train-ann wrote")
    trained = json.loads((run / "checkpoint" / "state.json").read_text())["step"]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [entry for entry in log if entry["step"] <= trained]
    return {"config": config, "steps": trained, "hours": _training_seconds(log) / 3600, "loss": logged[-1]["loss"]}


def _training_seconds(log: list[dict]) -> float:
    """Wall time of the work a run kept. Logs of older versions restart their clock on every resume and
    keep the entries past the checkpoint it resumed from: each such segment counts up to that point."""
    segments: list[list[dict]] = [[]]
    for entry in log:
        last = segments[-1][-1] if segments[-1] else None
        if last is not None and (entry["step"] <= last["step"] or entry["seconds"] < last["seconds"]):
            segments.append([])
        segments[-1].append(entry)
    total = 0.0
    for segment, following in zip(segments, segments[1:] + [None], strict=True):
        kept = [e for e in segment if following is None or e["step"] < following[0]["step"]]
        total += kept[-1]["seconds"] if kept else 0.0
    return total


def _schedule(record: dict) -> str:
    config = record["config"]
    steps = f"{record['steps']} steps" if record["steps"] == config["steps"] else (
        f"{record['steps']} of the {config['steps']} planned steps (the CPU run was stopped there by a session time "
        "limit; `--resume` finishes it)")
    precision = ", bf16 autocast" if config.get("precision") == "bf16" else ""
    return (f"{steps}, batch {config['batch_size']}, AdamW lr {config['lr']} ({config['warmup']} warm-up steps), "
            f"EMA {config['ema_decay']}, gradient clipping {config['grad_clip']}{precision}")


def _command(tool: str, run: Path, config: dict, extra: str = "") -> str:
    return (f"{tool} --data {config['data']} --out {run}{extra} --steps {config['steps']} "
            f"--batch-size {config['batch_size']} --lr {config['lr']} --warmup {config['warmup']} "
            f"--save-every {config['save_every']} --sample-every {config['sample_every']}"
            + (" --precision bf16" if config.get("precision") == "bf16" else ""))


def _ann_card(run: Path, shipped, params: float, size_mb: float, quality: dict | None) -> str:
    record = _run_record(run)
    config = record["config"]
    preset = config.get("model", {}).get("preset", config.get("preset"))
    figure = "not measured yet"
    if quality:
        n = quality["model"]["n"]
        figure = (f"**FID-FMNIST {quality['model']['value']:.2f}** at N = {n} (DDIM-50, seeds 0..{n - 1}); the data "
                  f"floor at the same N (training images against the test split) is {quality['floor']['value']:.2f}. "
                  + NOT_INCEPTION)
    return f"""# Embedded model: Fashion-MNIST DDPM (`{preset}`, `{EMBEDDED_NAME}`)

The default `--ckpt` of every command. A diffusers `UNet2DModel` of the `google/ddpm-cifar10-32`
family (SiLU, GroupNorm, attention at the second resolution), trained with this package.

| | |
|---|---|
| architecture | `{preset}` preset: 28 x 28 x 1, blocks {list(shipped.config.block_out_channels)}, attention at 14 x 14, {params / 1e6:.2f}M parameters |
| schedule | DDPM, epsilon prediction, linear betas 1e-4..0.02 over 1000 steps |
| data | Fashion-MNIST training split (60,000 images), random horizontal flips |
| training | {_schedule(record)} |
| hardware | CPU only ({_cpu()}, 2 cores): no GPU was available for this run, hence the small preset and the short schedule; {record['hours']:.1f} h |
| final training loss | {record['loss']:.4f} (mean of the last {config['log_every']} steps) |
| weights | EMA weights, fp16 safetensors, {size_mb:.1f} MB |
| quality | {figure} |
| command | `{_command('sdm-train-ann', run, config, f' --preset {preset}')}` then `python examples/package_embedded_model.py --run {run}` |

![64 samples, DDIM-50, seeds 0..63](sample_grid.png)
"""


def _guidance(quality: dict) -> str:
    """The threshold-guidance sweep's best scale against 1.0: at N where the benchmark confirmed it."""
    sweep = {s["scale"]: s for s in quality.get("sweep", [])}
    if 1.0 not in sweep or len(sweep) < 2:
        return ""
    best = min(sweep.values(), key=lambda s: s["fid"])
    if best["scale"] == 1.0:
        return f"No threshold scale of {sorted(sweep)} beat 1.0. "
    guided, unguided, n = best, sweep[1.0], quality["sweep_samples"]
    if "best_guided" in quality["record"]:
        guided, unguided, n = quality["record"]["best_guided"], quality["record"]["SDM TSM"], quality["num_samples"]
    gain = 1 - guided["fid"] / unguided["fid"]
    return (f"Threshold guidance: `--threshold-scale {best['scale']:g}` gave {gain:.1%} lower FID-FMNIST at "
            f"N = {n} ({guided['fid']:.2f} against {unguided['fid']:.2f}; the best of {len(sweep)} scales at "
            f"N = {quality['sweep_samples']}). ")


def _sdm_card(run: Path, shipped, params: float, size_mb: float, quality: dict | None) -> str:
    record = _run_record(run)
    config = record["config"]
    parent_dir = config.get("init_from")
    if config.get("stage") != "tsm" or not parent_dir:
        raise SDMError(f"'{run}' is a pre-spike run; the embedded SDM is the TSM stage (sdm-train --stage tsm)")
    parent = _run_record(Path(parent_dir))
    model = shipped.config
    mean_p = [round(p, 3) for p in shipped.mean_tsm_factors()]
    figure = "not measured yet"
    if quality:
        q, ann, n = quality["record"]["SDM TSM"], quality["record"]["ann"], quality["num_samples"]
        figure = (f"**FID-FMNIST {q['fid']:.2f}** at N = {n} (DDIM-50, seeds 0..{n - 1}; the embedded ANN "
                  f"{ann['fid']:.2f}, {q['fid'] / ann['fid']:.2f}x); energy {q['energy']:.3g} mJ per image "
                  f"({q['energy'] / ann['energy']:.1%} of the ANN's {ann['energy']:.3g} mJ; 0.9 pJ per accumulate, "
                  f"4.6 pJ per MAC), firing rate {q['rate']:.3f}. " + _guidance(quality) + NOT_INCEPTION)
    preset = config.get("model", {}).get("preset")
    return f"""# Embedded model: Fashion-MNIST Spiking Diffusion Model (`{preset}`, `{EMBEDDED_SDM_NAME}`)

A spiking UNet trained directly (surrogate-gradient BPTT) with this package: the Spiking Diffusion
Models recipe of pre-spike residual blocks, then the Temporal-wise Spiking Mechanism stage. Same
preset (channels, depth, attention resolution) as the embedded ANN `{EMBEDDED_NAME}`, trained for
as many steps, so `sdm-compare` sets the two routes side by side like for like.

| | |
|---|---|
| architecture | `{preset}` spiking preset: 28 x 28 x 1, T = {model.T}, {model.neuron.upper()} neurons, spiking self-attention, TSM, {params / 1e6:.2f}M parameters |
| schedule | DDPM, epsilon prediction, linear betas 1e-4..0.02 over 1000 steps |
| data | Fashion-MNIST training split (60,000 images), random horizontal flips |
| pre-spike stage | {_schedule(parent)}; final loss {parent['loss']:.4f}; {parent['hours']:.1f} h |
| TSM stage | {_schedule(record)}; final loss {record['loss']:.4f}; {record['hours']:.1f} h; learnt p (mean over layers, t = 1..{model.T}): {mean_p} |
| hardware | CPU only, 2 cores, over several sessions (packaged on {_cpu()}): no GPU was available for this run |
| weights | EMA weights, fp16 safetensors, {size_mb:.1f} MB |
| quality | {figure} |
| training records | `training/`: each stage's settings (`train_config.json`) and loss log (`log.jsonl`) |
| commands | `{_command('sdm-train', Path(parent_dir), parent['config'], f' --preset {preset} --T {model.T}')}`, then `{_command('sdm-train', run, config, f' --stage tsm --init-from {parent_dir}')}`, then `python examples/package_embedded_model.py --run {run}` |

![64 samples, DDIM-50, seeds 0..63](sample_grid.png)
"""


@command(help="Package a training run as an embedded model (ANN runs: fmnist-ddpm; spiking TSM runs: fmnist-sdm).")
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--quality", type=click.Path(exists=True, dir_okay=False), default=None,
              help="results.json of benchmarks.foundation (ANN) or benchmarks.direct_training (SDM), quoted in the card.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="[default: the embedded model's directory in the package]")
def main(run, quality, out):
    run = Path(run)
    loaded = load_model(run)
    spiking = type(loaded.model).__name__ == "SpikingUNet"
    out = Path(out) if out else EMBEDDED_MODELS[EMBEDDED_SDM_NAME if spiking else EMBEDDED_NAME]
    save_pipeline(loaded.model, loaded.scheduler_config, out, dtype=torch.float16)
    shipped = load_model(out)
    grid = sample(shipped.model, shipped.scheduler_config, 64, sampler="ddim", steps=50, seed=0)
    save_grid(grid, out / "sample_grid.png", nrow=8, scale=2)
    params = sum(p.numel() for p in shipped.model.parameters())
    size_mb = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size / 1e6
    figures = json.loads(Path(quality).read_text()) if quality else None
    card = (_sdm_card if spiking else _ann_card)(run, shipped.model, params, size_mb, figures)
    write_text(card, out / "MODEL_CARD.md")
    _keep_training_records(run, out)
    click.echo(f"packaged {run} -> {out} ({size_mb:.1f} MB, {params / 1e6:.2f}M parameters)")


if __name__ == "__main__":
    main()
