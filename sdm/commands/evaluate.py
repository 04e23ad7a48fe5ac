"""`sdm-eval`: sample quality of a model, or of samples already on disk."""

from __future__ import annotations

import time

import click

from sdm.cli import ckpt_options, command, device_option, resolve_device, sampling_options
from sdm.data import load_dataset
from sdm.errors import SDMError
from sdm.io import write_json
from sdm.metrics.fid import fid_fmnist, fid_inception


def _uint8_nhwc(source: str):
    return load_dataset(source, None, None, split="test").permute(0, 2, 3, 1).numpy()


@command(help="FID of a model's samples (or of a .npz / image folder of samples), labelled with its extractor.")
@click.option("--samples", default=None, help="A .npz (array 'images') or an image folder, instead of sampling.")
@ckpt_options
@click.option("--num-samples", type=click.IntRange(min=2), default=10_000, show_default=True)
@sampling_options
@click.option("--metric", type=click.Choice(["auto", "fid-fmnist", "fid-inception"]), default="auto", show_default=True,
              help="auto: Inception FID when --reference is given and its weights are reachable, else FID-FMNIST.")
@click.option("--reference", default=None,
              help="Real images for Inception FID: a .npz, an image folder or fashion-mnist | mnist | cifar10 (test split).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
              help="Local Inception-v3 weights (.pth state dict or .safetensors) for offline Inception FID.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the results as JSON here.")
@device_option
def main(samples, ckpt, allow_pickle, num_samples, sampler, steps, seed, batch_size, metric, reference,
         inception_weights, out, device):
    device = resolve_device(device)
    if metric == "fid-inception" and reference is None:
        raise SDMError("--metric fid-inception needs --reference (real images to compare against)")
    if samples is not None and ckpt is not None:
        raise SDMError("pass either --samples or --ckpt, not both")
    reference_images = _uint8_nhwc(reference) if reference is not None else None
    report: dict = {}
    if samples is not None:
        images = _uint8_nhwc(samples)
        report["samples"] = samples
    else:
        from sdm.pretrained import load_model
        from sdm.sampler import sample

        loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
        started = time.perf_counter()
        images = sample(loaded.model, loaded.scheduler_config, num_samples, sampler=sampler, steps=steps, seed=seed,
                        batch_size=batch_size)
        report.update(ckpt=loaded.source, sampler=sampler, steps=steps, seeds=[seed, seed + num_samples - 1],
                      sampling_seconds=round(time.perf_counter() - started, 2), notes=loaded.notes)
    results = []
    if metric in ("auto", "fid-inception") and reference_images is not None:
        try:
            results.append(fid_inception(images, reference_images, reference_name=reference,
                                         weights_path=inception_weights, device=device))
        except SDMError as err:
            if metric == "fid-inception":
                raise
            click.echo(f"note: {err}; reporting FID-FMNIST instead", err=True)
    if not results:
        results.append(fid_fmnist(images, device=device))
    report["results"] = [r.to_dict() for r in results]
    for result in results:
        click.echo(result.label())
    if out is not None:
        write_json(report, out)


if __name__ == "__main__":
    main()
