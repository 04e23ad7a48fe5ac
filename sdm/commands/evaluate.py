"""`sdm-eval`: FID, KID and IS of a model or of saved samples, energy of spiking models.

Sampling is sharded and resumable, and runs on several processes when started with
`accelerate launch -m sdm.commands.evaluate ...` (or torchrun): each rank draws its own seed range.
"""

from __future__ import annotations

import time

import click
import numpy as np

from sdm.cli import (
    CommaList,
    ckpt_options,
    command,
    device_option,
    executor_option,
    resolve_device,
    sampling_options,
    use_executor,
)
from sdm.data import load_dataset
from sdm.errors import SDMError
from sdm.io import write_json
from sdm.metrics.extractors import EXTRACTORS, make_extractor
from sdm.metrics.quality import METRICS, evaluate_quality


def read_images(source: str) -> np.ndarray:
    """uint8 N x H x W x C images from a .npz, an image folder or a data set name (test split)."""
    return load_dataset(source, None, None, split="test").permute(0, 2, 3, 1).numpy()


def spiking_energy(model, scheduler_config: dict, sampler: str, steps: int, threshold_scale: float = 1.0,
                   probes: int = 4) -> dict | None:
    """Energy per denoising step and image, measured along real (guided) sampling trajectories."""
    from sdm.energy import energy_report
    from sdm.neurons import scaled_thresholds, spiking_neurons
    from sdm.sampler import trajectory

    if not spiking_neurons(model):
        return None
    with scaled_thresholds(model, threshold_scale):
        x, t, _ = trajectory(model, scheduler_config, range(probes), sampler=sampler, steps=min(steps, 8))
        device = next(model.parameters()).device
        return energy_report(model, x.to(device), t.to(device), denoising_steps=steps)


@command(help="Sample quality (FID, KID, IS) of a model or of saved samples, always labelled with the extractor "
              "that made it; energy and activity of spiking models.")
@click.option("--samples", default=None, help="A .npz (array 'images') or an image folder, instead of sampling.")
@ckpt_options
@click.option("--num-samples", type=click.IntRange(min=2), default=50_000, show_default=True)
@sampling_options
@click.option("--threshold-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Threshold guidance for spiking models.")
@click.option("--metrics", type=CommaList(str, METRICS), default="fid,kid,is", show_default=True)
@click.option("--extractor", type=click.Choice(EXTRACTORS), default="auto", show_default=True,
              help="auto: Inception when its weights are reachable, else the Fashion-MNIST classifier.")
@click.option("--reference", default=None,
              help="Real images: a .npz, an image folder or fashion-mnist | mnist | cifar10 (test split).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
              help="Local Inception-v3 weights (.pth state dict or .safetensors) for offline Inception metrics.")
@executor_option
@click.option("--kid-subset-size", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False), default="sdm_eval_work", show_default=True,
              help="Where sample shards go; a rerun skips the shards already there.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@device_option
def main(samples, ckpt, allow_pickle, num_samples, sampler, steps, seed, batch_size, threshold_scale, metrics,
         extractor, reference, inception_weights, executor, kid_subset_size, work_dir, shard_size, out, device):
    from accelerate import PartialState

    if samples is not None and ckpt is not None:
        raise SDMError("pass either --samples or --ckpt, not both")
    device = resolve_device(device)
    state = PartialState(cpu=device == "cpu")  # ranks from `accelerate launch` or torchrun (gloo on CPUs)
    device = str(state.device) if state.num_processes > 1 else device
    reference_images = read_images(reference) if reference is not None else None
    report: dict = {"metrics": metrics}
    if samples is not None:
        images = read_images(samples)
        report["samples"] = samples
    else:
        from sdm.pretrained import load_model
        from sdm.shards import gather_shards, sample_sharded

        loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
        ran = use_executor(loaded.model, executor)
        settings = {"sampler": sampler, "steps": steps, "batch_size": batch_size, "threshold_scale": threshold_scale}
        started = time.perf_counter()
        paths = sample_sharded(loaded.model, loaded.scheduler_config, num_samples, work_dir, settings=settings,
                               seed=seed, shard_size=shard_size, rank=state.process_index, world=state.num_processes,
                               progress=state.is_main_process)
        state.wait_for_everyone()
        if not state.is_main_process:
            return
        images = gather_shards(paths, num_samples, seed)
        report.update(ckpt=loaded.source, model=type(loaded.model).__name__, executor=ran, **settings, seeds=[seed, seed + num_samples - 1],
                      sampling_seconds_this_run=round(time.perf_counter() - started, 2), processes=state.num_processes,
                      notes=loaded.notes)
        energy = spiking_energy(loaded.model, loaded.scheduler_config, sampler, steps, threshold_scale)
        if energy is not None:
            report["energy"] = energy
    feature_extractor, notes = make_extractor(extractor, weights_path=inception_weights, device=device)
    results, more = evaluate_quality(images, feature_extractor, metrics=metrics, reference=reference_images,
                                     reference_name=reference, kid_subset_size=kid_subset_size)
    report["results"] = [r.to_dict() for r in results]
    report["notes"] = report.get("notes", []) + notes + more
    for note in notes + more:
        click.echo(f"note: {note}", err=True)
    for result in results:
        click.echo(result.label())
    if "energy" in report:
        e = report["energy"]
        click.echo(f"energy: {e['per_image']['energy_mJ']:.4g} mJ per image ({e['denoising_steps']} steps; ANN "
                   f"{e['ann']['energy_mJ_per_image']:.4g} mJ); input firing rate {e['mean_input_firing_rate']:.3f}")
    if out is not None:
        write_json(report, out)


if __name__ == "__main__":
    main()
