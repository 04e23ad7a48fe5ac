"""`sdm-sweep`: calibration sweeps from the CLI, one cell per (T, rule, neuron), resumable.

Calibration runs once (its statistics do not depend on T or the rule); each cell converts, measures
eps fidelity on the held-out probes and, with --fid N, a sample metric. Finished cells are files
under OUT/cells/ and are skipped when the command is rerun.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import click

from calibration import (
    RULES,
    SOURCES,
    CalibrationStats,
    calibrate,
    calibration_pairs,
    prepare,
    probe_pairs,
    require_ann,
)
from calibration.stats import model_fingerprint
from convert.model import NeuronConfig
from convert.report import eps_fidelity
from convert.workflow import convert
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
from sdm.io import write_json, write_text
from sdm.neurons import NEURONS
from sdm.pretrained import load_model
from sdm.temporal import ANALOG_MODES

COLUMNS = ["T", "rule", "percentile", "neuron", "eps_cosine", "eps_cosine_t_lt_100", "eps_rel_mse", "firing_rate",
           "sample_metric", "sample_value"]


def cells(Ts, rules, percentiles, neurons) -> list[dict]:
    """Every (T, rule[, percentile], neuron), the percentile expanded only for the percentile rule."""
    rule_params = [(r, p) for r in rules for p in (percentiles if r == "percentile" else [None])]
    return [{"T": T, "rule": r, "percentile": p, "neuron": n}
            for T, (r, p), n in itertools.product(Ts, rule_params, neurons)]


def cell_name(cell: dict) -> str:
    rule = f"percentile{cell['percentile']}" if cell["rule"] == "percentile" else cell["rule"]
    return f"T{cell['T']}_{rule}_{cell['neuron']}"


def _plot(rows: list[dict], path: Path, metric: str, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdm.io import atomic_file

    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list] = {}
    for row in rows:
        if row.get(metric) is None:
            continue
        name = (f"{row['rule']} {row['percentile']}" if row["rule"] == "percentile" else row["rule"]) + f", {row['neuron']}"
        lines.setdefault(name, []).append((row["T"], row[metric]))
    for name, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("T (spiking steps)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


@command(help="Sweep T x threshold rule x neuron: eps fidelity per cell (and a sample metric with --fid N); writes "
              "OUT/sweep.csv, OUT/sweep.md and OUT/sweep.png, and skips finished cells when rerun.")
@ckpt_options
@click.option("--T", "Ts", type=CommaList(int), default="2,4,8,16", show_default=True)
@click.option("--calib", "rules", type=CommaList(str, RULES), default="max,percentile,mse", show_default=True)
@click.option("--percentile", "percentiles", type=CommaList(float), default="99.9", show_default=True)
@click.option("--neuron", "neurons", type=CommaList(str, tuple(NEURONS)), default="if", show_default=True)
@click.option("--analog", type=click.Choice(ANALOG_MODES), default="window", show_default=True)
@click.option("--encode-analog", is_flag=True, help="Spike-encode the analog inputs of synaptic layers too.")
@click.option("--calib-source", type=click.Choice(SOURCES), default="trajectory", show_default=True)
@click.option("--data", default=None, help="Images for --calib-source data.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--probes", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--fid", "fid_samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also sample N images per cell and score them (FID, or FID-FMNIST offline).")
@click.option("--extractor", type=click.Choice(["auto", "inception", "fmnist"]), default="auto", show_default=True)
@click.option("--reference", default=None, help="Real images for Inception FID.")
@sampling_options
@executor_option
@click.option("--out", type=click.Path(file_okay=False), default="out/sweep", show_default=True)
@device_option
def main(ckpt, allow_pickle, Ts, rules, percentiles, neurons, analog, encode_analog, calib_source, data, calib_samples, probes,
         fid_samples, extractor, reference, sampler, steps, seed, batch_size, executor, out, device):
    if any(T < 1 for T in Ts):
        raise SDMError(f"--T values must be at least 1, got {Ts}")
    if any(not 0 < p <= 100 for p in percentiles):
        raise SDMError(f"--percentile values must lie in (0, 100], got {percentiles}")
    if calib_source == "data" and data is None:
        raise SDMError("--calib-source data needs --data PATH")
    device, out = resolve_device(device), Path(out)
    loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
    ann = loaded.model
    require_ann(ann, f"'{loaded.source}'")
    stats_path = out / "calibration_stats.json"
    if stats_path.is_file():
        stats = CalibrationStats.load(stats_path, model_fingerprint(dict(ann.config)))
    else:
        images = load_dataset(data, ann.config.sample_size, ann.config.in_channels) if calib_source == "data" else None
        pairs = calibration_pairs(ann, loaded.scheduler_config, calib_samples, source=calib_source, data=images, seed=seed)
        stats = calibrate(prepare(ann, encode_analog=encode_analog), pairs, batch_size=batch_size).stats({"source": calib_source,
                                                                            "samples": calib_samples, "seed": seed})
        stats.save(stats_path)
    probe_set = probe_pairs(ann, loaded.scheduler_config, probes)
    feature_extractor = reference_images = None
    if fid_samples:
        from sdm.commands.evaluate import read_images
        from sdm.metrics.extractors import make_extractor

        feature_extractor, notes = make_extractor(extractor, device=device)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        reference_images = read_images(reference) if reference else None
    rows = []
    todo = cells(Ts, rules, percentiles, neurons)
    for i, cell in enumerate(todo, 1):
        path = out / "cells" / f"{cell_name(cell)}.json"
        if path.is_file() and (not fid_samples or json.loads(path.read_text()).get("sample_value") is not None):
            rows.append(json.loads(path.read_text()))
            click.echo(f"[{i}/{len(todo)}] {cell_name(cell)}: done earlier, skipped", err=True)
            continue
        snn = convert(ann, stats, T=cell["T"], rule=cell["rule"], percentile=cell["percentile"] or 99.9,
                      neuron=NeuronConfig(kind=cell["neuron"]), analog_mode=analog, encode_analog=encode_analog)
        row = {**cell, "executor": use_executor(snn, executor), **{k: v for k, v in eps_fidelity(ann, snn, probe_set, batch_size=batch_size).items()
                          if k in COLUMNS}}
        if fid_samples:
            from sdm.metrics.quality import evaluate_quality
            from sdm.shards import gather_shards, sample_sharded

            settings = {"sampler": sampler, "steps": steps, "batch_size": batch_size, "threshold_scale": 1.0}
            shard_paths = sample_sharded(snn, loaded.scheduler_config, fid_samples, out / "work" / cell_name(cell),
                                         settings=settings, seed=seed)
            result = evaluate_quality(gather_shards(shard_paths, fid_samples, seed), feature_extractor,
                                      metrics=("fid",), reference=reference_images, reference_name=reference)[0][0]
            row.update(sample_metric=result.metric, sample_value=round(result.value, 4))
        write_json(row, path)
        rows.append(row)
        click.echo(f"[{i}/{len(todo)}] {cell_name(cell)}: eps cosine {row['eps_cosine']:.4f}", err=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(buffer.getvalue(), out / "sweep.csv")
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in COLUMNS) + " |\n"
                   for row in rows)
    write_text(f"{header}{body}\nckpt: {loaded.source}; calibration: {stats.source}; probes: {probes} spread over t "
               f"plus {probes // 2} at t < 100; analog mode: {analog}"
               f"{'; analog inputs of synaptic layers spike-encoded' if encode_analog else ''}.\n", out / "sweep.md")
    _plot(rows, out / "sweep.png", "eps_cosine", "eps cosine (SNN vs ANN)")
    if fid_samples:
        _plot(rows, out / "sweep_fid.png", "sample_value", rows[0].get("sample_metric", "FID"))
    click.echo(f"{len(rows)} cells -> {out}/sweep.md, {out}/sweep.csv, {out}/sweep.png")


if __name__ == "__main__":
    main()
