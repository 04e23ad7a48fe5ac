"""`sdm-compare`: the ANN, a converted SNN and a directly trained SDM side by side, on equal terms.

All models sample through the shared sampler from the same seeds and are scored by the same
extractor; energy comes from each spiking model's own activity.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from sdm.cli import (
    CommaList,
    command,
    device_option,
    executor_option,
    resolve_device,
    sampling_options,
    use_executor,
)
from sdm.commands.evaluate import read_images, spiking_energy
from sdm.energy import E_MAC_PJ, ann_macs
from sdm.errors import SDMError
from sdm.images import save_comparison
from sdm.io import write_json, write_text
from sdm.metrics.extractors import EXTRACTORS, make_extractor
from sdm.metrics.quality import METRICS, evaluate_quality
from sdm.pretrained import load_model
from sdm.shards import gather_shards, sample_sharded


def _describe(model) -> str:
    config = getattr(model, "config", {})
    if type(model).__name__ == "ConvertedUNet":
        source = getattr(model, "source", {})
        encoded = ", spike-encoded analog inputs" if config.get("encode_analog") else ""
        return f"T={config['T']}, {config['neuron']['kind']}, {source.get('rule', '?')} thresholds{encoded}"
    if type(model).__name__ == "SpikingUNet":
        return f"T={config['T']}, {config['neuron']}, {'TSM' if config['tsm'] else 'pre-spike'}"
    return type(model).__name__


def _panel_title(model) -> str:
    """A converted model's grid title: its T, and whether its analog inputs are spike-encoded."""
    return f"SNN T={model.config['T']}" + (" encoded" if model.config.get("encode_analog") else "")


def _markdown(rows: list[dict], metric_names: list[str]) -> str:
    columns = ["model", "details", *metric_names, "energy / image (mJ)", "sampling s / image", "firing rate"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["label"], row["details"], *[row["metrics"].get(m, "") for m in metric_names],
                 f"{row['energy_mJ_per_image']:.4g}", f"{row['seconds_per_image']:.3g}",
                 "" if row["firing_rate"] is None else f"{row['firing_rate']:.3f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


@command(help="Tabulate an ANN, a converted SNN and a directly trained SDM (any of them): sample quality, energy "
              "per image, sampling time and firing rate, in Markdown and JSON, plus their grids side by side.")
@click.option("--ann", default=None, help="The ANN checkpoint (hub id or directory).")
@click.option("--converted", multiple=True, help="A converted SNN (sdm-convert's OUT/snn); repeat for several.")
@click.option("--direct", default=None, help="A directly trained spiking UNet (an sdm-train run).")
@click.option("--num-samples", type=click.IntRange(min=2), default=1000, show_default=True)
@sampling_options
@click.option("--metrics", type=CommaList(str, METRICS), default="fid,kid,is", show_default=True)
@click.option("--extractor", type=click.Choice(EXTRACTORS), default="auto", show_default=True)
@click.option("--reference", default=None, help="Real images for FID/KID (a .npz, folder or data set name).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None)
@executor_option
@click.option("--out", type=click.Path(file_okay=False), default="out/compare", show_default=True)
@device_option
def main(ann, converted, direct, num_samples, sampler, steps, seed, batch_size, metrics, extractor, reference,
         inception_weights, executor, out, device):
    chosen = ([("ann", "ANN", ann)] if ann else []) + [
        (f"converted_{i}", "converted SNN", ckpt) for i, ckpt in enumerate(converted)] + (
        [("direct", "SDM (direct)", direct)] if direct else [])
    if not chosen:
        raise SDMError("give at least one of --ann, --converted, --direct")
    device, out = resolve_device(device), Path(out)
    reference_images = read_images(reference) if reference is not None else None
    feature_extractor, notes = make_extractor(extractor, weights_path=inception_weights, device=device)
    rows, grids = [], []
    for key, label, ckpt in chosen:
        loaded = load_model(ckpt, device=device)
        model = loaded.model
        ran = use_executor(model, executor)
        settings = {"sampler": sampler, "steps": steps, "batch_size": batch_size, "threshold_scale": 1.0}
        started = time.perf_counter()
        paths = sample_sharded(model, loaded.scheduler_config, num_samples, out / "work" / key, settings=settings,
                               seed=seed)
        seconds = time.perf_counter() - started
        images = gather_shards(paths, num_samples, seed)
        results, more = evaluate_quality(images, feature_extractor, metrics=metrics, reference=reference_images,
                                         reference_name=reference)
        energy = spiking_energy(model, loaded.scheduler_config, sampler, steps)
        if energy is None:  # an ANN: MACs only
            size, channels = model.config.sample_size, model.config.in_channels
            probe = torch.zeros(1, channels, size, size, device=device)
            macs = ann_macs(model, probe, torch.zeros(1, dtype=torch.long, device=device))
            energy_mj, rate = macs * E_MAC_PJ * steps / 1e9, None
        else:
            energy_mj, rate = energy["per_image"]["energy_mJ"], energy["mean_input_firing_rate"]
        details = _describe(model) + (f", {ran} executor" if ran else "")
        rows.append({"label": label, "ckpt": loaded.source, "details": details, "executor": ran,
                     "metrics": {r.metric: f"{r.value:.4g}" + (f" ± {r.std:.2g}" if r.std is not None else "")
                                 for r in results},
                     "results": [r.to_dict() for r in results], "energy_mJ_per_image": energy_mj,
                     "seconds_per_image": seconds / num_samples if seconds > 1e-3 else float("nan"),
                     "firing_rate": rate, "energy": energy, "notes": loaded.notes + more})
        grids.append((label if key in ("ann", "direct") else _panel_title(model), images[:16]))
    metric_names = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    table = _markdown(rows, metric_names)
    write_json({"num_samples": num_samples, "sampler": sampler, "steps": steps, "seeds": [seed, seed + num_samples - 1],
                "extractor": feature_extractor.description, "notes": notes, "rows": rows}, out / "compare.json")
    write_text(f"{table}\n\nN = {num_samples}, {sampler}-{steps}, seeds {seed}..{seed + num_samples - 1}; extractor: "
               f"{feature_extractor.description}. Sampling time counts only samples drawn in this run.\n",
               out / "compare.md")
    save_comparison(grids, out / "comparison.png")
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(table)


if __name__ == "__main__":
    main()
