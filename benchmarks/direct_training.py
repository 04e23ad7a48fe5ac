"""The paper's two mechanisms at the embedded ANN's size: TSM against an equal-steps pre-spike control,
and a threshold-guidance sweep on the TSM model, beside the ANN.

    python -m benchmarks.direct_training --control runs/fmnist-sdm-control --tsm runs/fmnist-sdm-tsm \
        --num-samples 2000 --sweep-samples 500 --ann-fid 3.09

Every model samples DDIM-50 from seeds 0..N-1. The sweep runs at `--sweep-samples` (seeds
0..n-1); its best scale is then measured again at `--num-samples`, reusing the sweep's samples
(the shards of a work directory are resumable), so the headline gain is an N-sample figure.
Both comparisons (TSM against the control, the best scale against 1.0) carry a paired bootstrap over
the seeds: how likely another seed set of the same size would show the same order.

Both spiking runs are measured with their weights rounded to fp16, as the package ships them: the
sampler is chaotic enough that fp16 rounding changes most images of a seed (19 of 255 grey levels on
average), so figures of the fp32 run would not be the embedded model's. Sampling time is not reported
here (shards may come from earlier sessions); `sdm-compare` times it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import click

from benchmarks.common import provenance, sample_metric, write_table
from sdm.commands.options import command
from sdm.diffusion.images import save_comparison
from sdm.diffusion.training import read_run_config, steps_trained
from sdm.io import save_figure
from sdm.models.pretrained import EMBEDDED_NAME, load_model
from sdm.settings import CommaList
from sdm.snn.energy import E_MAC_PJ, ann_macs

DEFAULT_SCALES = "0.9,0.95,0.96,0.97,0.98,0.99,1.0,1.01,1.02,1.03,1.04,1.05,1.1"
CONTROL, TSM = "SDM pre-spike (control)", "SDM TSM"


@dataclass
class _Findings:
    """What the tables, the sample grid and the paired bootstraps are built from, in measuring order."""

    rows: list = field(default_factory=list)
    grids: list = field(default_factory=list)
    record: dict = field(default_factory=dict)
    drawn: dict = field(default_factory=dict)  # samples at N, for the paired bootstrap
    pairs: list = field(default_factory=list)


def _as_shipped(loaded):
    """The run's weights as the fp16 package holds them (read back as fp32, like `load_model` does)."""
    import torch

    with torch.no_grad():
        for tensor in loaded.model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.float16))
    return loaded


def _energy(model, scheduler_config, steps, scale):
    import torch

    from sdm.metrics.trajectory_energy import spiking_energy

    report = spiking_energy(model, scheduler_config, "ddim", steps, scale)
    if report is not None:
        return report["per_image"]["energy_mJ"], report["mean_input_firing_rate"]
    size, channels = model.config.sample_size, model.config.in_channels
    macs = ann_macs(model, torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long))
    return macs * E_MAC_PJ * steps / 1e9, None


def _paired(pairs, drawn, resamples):
    """Each pair's paired bootstrap, extracting every model's features once (the TSM is in both pairs)."""
    from sdm.metrics.bootstrap import paired_bootstrap
    from sdm.metrics.extractors import FMNISTExtractor
    from sdm.metrics.fmnist_extractor import load_reference

    extractor = FMNISTExtractor()
    mu, sigma, _ = load_reference()
    features = {name: extractor.features(drawn[name])[0] for name in {name for pair in pairs for name in pair}}
    return [(a, b, paired_bootstrap(features[a], features[b], mu, sigma, resamples=resamples)[0]) for a, b in pairs]


def plot_sweep(points: list[tuple[float, float]], n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([s for s, _ in points], [f for _, f in points], marker="o")
    ax.axvline(1.0, color="gray", linestyle=":")
    ax.set_xlabel("threshold scale at sampling time")
    ax.set_ylabel(f"FID-FMNIST (N = {n})")
    ax.set_title("Threshold guidance on the TSM model")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _measure(loaded, n, scale=1.0, *, work, steps):
    """A model's figures at `n` samples and one threshold scale, and its samples for grids and bootstraps."""
    result, images, _ = sample_metric(loaded.model, loaded.scheduler_config, n, work, steps=steps,
                                      threshold_scale=scale)
    energy, rate = _energy(loaded.model, loaded.scheduler_config, steps, scale)
    return {"fid": result.value, "energy": energy, "rate": rate}, images


def _parameters(loaded):
    return sum(p.numel() for p in loaded.model.parameters())


def _row(name, run, params, m, n):
    return {"model": name, "parameters": f"{params / 1e6:.2f}M", "training steps": run, "N": n,
            "FID-FMNIST": f"{m['fid']:.3f}", "energy / image (mJ)": f"{m['energy']:.4g}",
            "firing rate": "" if m["rate"] is None else f"{m['rate']:.3f}"}


def _measure_ann(found, ann, ann_fid, measure, steps, n):
    """The ANN's row; `--ann-fid` reuses its FID instead of sampling (no grid); energy is still counted."""
    teacher = load_model(ann)
    if ann_fid is None:
        m, images = measure(teacher, n)
        found.grids.append(("ANN", images[:16]))
    else:
        energy, _ = _energy(teacher.model, teacher.scheduler_config, steps, 1.0)
        m = {"fid": ann_fid, "energy": energy, "rate": None}
    ann_steps = steps_trained(teacher.path) if read_run_config(teacher.path) else "its model card's"
    found.rows.append(_row(f"ANN (`{teacher.source}`)", ann_steps, _parameters(teacher), m, n))
    found.record["ann"] = m


def _measure_sdm_runs(found, control, tsm, measure, n):
    """The control and the TSM run, unguided at N, as the package ships them; paired to test TSM's gain."""
    for name, run in ((CONTROL, control), (TSM, tsm)):
        loaded = _as_shipped(load_model(run))
        m, images = measure(loaded, n)
        found.rows.append(_row(name, steps_trained(run), _parameters(loaded), m, n))
        found.drawn[name] = images
        found.grids.append((name.replace(" (control)", ""), images[:16]))
        found.record[name] = m
    found.pairs.append((TSM, CONTROL))


def _sweep(loaded, scales, measure, n, path):
    """Each threshold scale at the sweep's (smaller) N, plotted; its first samples are kept for the grid."""
    sweep, first_images = [], {}
    for scale in scales:
        m, images = measure(loaded, n, scale)
        sweep.append({"scale": scale, **m})
        first_images[scale] = images[:16]  # seeds 0..15, whatever N
    plot_sweep([(s["scale"], s["fid"]) for s in sweep], n, path)
    return sweep, first_images


def _take_best(found, sweep, first_images, loaded, tsm, measure, n, confirm):
    """The sweep's best scale, unless 1.0, joins the grid and (with `confirm`) is measured again at N against
    the unguided TSM, so the headline gain is an N-sample figure; returns the note's remark if unconfirmed."""
    scale = min(sweep, key=lambda s: s["fid"])["scale"]
    if scale == 1.0:
        return ""
    found.grids.append((f"TSM x{scale:g}", first_images[scale]))
    if not confirm:
        return f"; the sweep's best scale, {scale:g}, was not measured at N = {n} (--no-confirm-best)"
    guided = f"{TSM} x{scale:g}"
    m, found.drawn[guided] = measure(loaded, n, scale)
    found.pairs.append((guided, TSM))
    found.rows.append(_row(f"{TSM}, threshold scale {scale:g} (best of the sweep)", steps_trained(tsm),
                           _parameters(loaded), m, n))
    found.record["best_guided"] = {"scale": scale, **m}
    return ""


def _write_sweep_table(sweep, out, meta, n, steps):
    """The sweep's table; each change is against the unguided scale 1.0, if it was swept."""
    unguided = next((s for s in sweep if s["scale"] == 1.0), None)
    rows = [{"threshold scale": f"{s['scale']:g}", "FID-FMNIST": f"{s['fid']:.3f}",
             "change": "" if unguided is None else f"{(s['fid'] - unguided['fid']) / unguided['fid']:+.1%}",
             "energy / image (mJ)": f"{s['energy']:.4g}", "firing rate": f"{s['rate']:.3f}"} for s in sweep]
    note = (f"Threshold guidance on the TSM model, N = {n}, DDIM-{steps}, seeds 0..{n - 1}; FID-FMNIST is "
            "not comparable with Inception FID.")
    return write_table(rows, out, meta, note, num_samples=n, steps=steps)


def _write_headline_table(found, sweep, factors, unconfirmed, out, meta, *, num_samples, sweep_samples, steps,
                          resamples):
    """The headline table, its note giving each comparison's paired bootstrap; results.json adds the sweep."""
    paired = _paired(found.pairs, found.drawn, resamples)
    note = (f"N = {num_samples}, DDIM-{steps}, seeds 0..{num_samples - 1}; learnt TSM factors p (mean over "
            f"layers, t = 1..T): {factors}{unconfirmed}; FID-FMNIST is not comparable with Inception FID. "
            "Paired bootstrap: " + "; ".join(d.describe(a, b) for a, b, d in paired) + ".")
    return write_table(found.rows, out, meta, note, num_samples=num_samples, steps=steps, record=found.record,
                       sweep=sweep, sweep_samples=sweep_samples, tsm_factors=factors,
                       paired_bootstrap={f"{a} - {b}": asdict(d) for a, b, d in paired})


@command(help="TSM against an equal-steps pre-spike control, and a threshold-guidance sweep, beside the ANN.")
@click.option("--ann", default=EMBEDDED_NAME, show_default=True)
@click.option("--ann-fid", type=float, default=None, help="Reuse the ANN's FID-FMNIST at these seeds and N.")
@click.option("--control", required=True, type=click.Path(exists=True, file_okay=False),
              help="The pre-spike run continued for as many steps as the TSM stage added.")
@click.option("--tsm", required=True, type=click.Path(exists=True, file_okay=False), help="The TSM run.")
@click.option("--scales", type=CommaList(float), default=DEFAULT_SCALES, show_default=True,
              help="Threshold-guidance scales swept on the TSM model.")
@click.option("--num-samples", type=click.IntRange(min=2), default=2000, show_default=True)
@click.option("--sweep-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--confirm-best/--no-confirm-best", default=True, show_default=True,
              help="Measure the sweep's best scale again at --num-samples; without it, it stands at --sweep-samples.")
@click.option("--resamples", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Paired bootstrap resamples of the seeds behind each comparison.")
@click.option("--out", type=click.Path(), default="benchmarks/results/direct_training", show_default=True)
def main(ann, ann_fid, control, tsm, scales, num_samples, sweep_samples, steps, confirm_best, resamples, out):
    out = Path(out)
    meta = provenance(__spec__.name)
    measure = partial(_measure, work=out / "work", steps=steps)
    found = _Findings()
    _measure_ann(found, ann, ann_fid, measure, steps, num_samples)
    _measure_sdm_runs(found, control, tsm, measure, num_samples)
    tsm_model = _as_shipped(load_model(tsm))
    sweep, first_images = _sweep(tsm_model, scales, measure, sweep_samples, out / "guidance.png")
    unconfirmed = _take_best(found, sweep, first_images, tsm_model, tsm, measure, num_samples, confirm_best)
    save_comparison(found.grids, out / "samples.png")
    sweep_text = _write_sweep_table(sweep, out / "sweep", meta, sweep_samples, steps)
    factors = [round(p, 4) for p in tsm_model.model.mean_tsm_factors()]
    text = _write_headline_table(found, sweep, factors, unconfirmed, out, meta, num_samples=num_samples,
                                 sweep_samples=sweep_samples, steps=steps, resamples=resamples)
    click.echo(f"{text}\n{sweep_text}")


if __name__ == "__main__":
    main()
