"""`sdm-eval`: FID, KID and IS of a model or of saved samples, energy of spiking models.

Sampling is sharded and resumable, and runs on several processes when started with
`accelerate launch -m sdm.commands.evaluate ...` (or torchrun): each rank draws its own seed range.
"""

from __future__ import annotations

import time

import click

from sdm.commands import options as cli
from sdm.diffusion.data import read_images
from sdm.diffusion.shards import SHARD_SIZE
from sdm.errors import SDMError
from sdm.io import write_json
from sdm.metrics.extractors import make_extractor
from sdm.metrics.quality import evaluate_quality
from sdm.metrics.trajectory_energy import spiking_energy


@cli.command(help="Sample quality (FID, KID, IS) of a model or of saved samples, always labelled with the extractor "
              "that made it; energy and activity of spiking models.")
@click.option("--samples", default=None, help="A .npz (array 'images') or an image folder, instead of sampling.")
@cli.ckpt_options
@click.option("--num-samples", type=click.IntRange(min=2), default=50_000, show_default=True)
@cli.sampling_options
@cli.threshold_scale_option
@cli.quality_options()
@cli.executor_option
@click.option("--kid-subset-size", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False), default="sdm_eval_work", show_default=True,
              help="Where sample shards go; a rerun skips the shards already there.")
@click.option("--shard-size", type=click.IntRange(min=1), default=SHARD_SIZE, show_default=True,
              help="Images per shard (the sample cache of sdm-compare and the benchmarks uses the same).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@cli.device_option
def main(samples, ckpt, allow_pickle, num_samples, sampler, steps, seed, batch_size, threshold_scale, metrics,
         extractor, reference, inception_weights, executor, kid_subset_size, work_dir, shard_size, out, device):
    from accelerate import PartialState

    if samples is not None and ckpt is not None:
        raise SDMError("pass either --samples or --ckpt, not both")
    device = cli.resolve_device(device)
    state = PartialState(cpu=device == "cpu")  # ranks from `accelerate launch` or torchrun (gloo on CPUs)
    device = str(state.device) if state.num_processes > 1 else device
    reference_images = read_images(reference) if reference is not None else None
    report: dict = {"metrics": metrics}
    if samples is not None:
        images = read_images(samples)
        report["samples"] = samples
    else:
        from sdm.diffusion.shards import gather_shards, sample_sharded
        from sdm.models.pretrained import load_model

        loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
        ran = cli.use_executor(loaded.model, executor)
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
