"""`sdm-sweep`: calibration sweeps from the CLI, one cell per (spike code, T, rule, neuron), resumable.

Calibration runs once (its statistics do not depend on T or the rule); each cell converts, measures
eps fidelity on the held-out probes and, with --fid N, a sample metric. Finished cells are files
under OUT/cells/ and are skipped when the command is rerun.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from pathlib import Path

import click

from calibration import RULES, CalibrationInputs, ConversionConfig, NeuronConfig, load_stats
from convert.conversion import convert
from convert.workflow import ConversionWorkflow
from sdm.commands import options as cli
from sdm.diffusion.data import read_images
from sdm.diffusion.sampler import SamplingSettings
from sdm.errors import SDMError
from sdm.io import write_json, write_text
from sdm.models.pretrained import load_model
from sdm.settings import CommaList, options_of, settings_from
from sdm.snn.coding import CODINGS
from sdm.snn.neurons import NEURONS

CELL_FIELDS = ("coding", "T", "rule", "percentile", "neuron")  # what the cells vary; the rest is the sweep's conversion
COLUMNS = ["coding", "T", "rule", "percentile", "neuron", "eps_cosine", "eps_cosine_t_lt_100", "eps_rel_mse", "firing_rate",
           "sample_metric", "sample_value"]


def cells(codings, Ts, rules, percentiles, neurons) -> list[dict]:
    """Every (code, T, rule[, percentile], neuron), the percentile expanded only for the percentile rule,
    and the weighted code with IF neurons only (it has no leaky form)."""
    rule_params = [(r, p) for r in rules for p in (percentiles if r == "percentile" else [None])]
    return [{"coding": c, "T": T, "rule": r, "percentile": p, "neuron": n}
            for c, T, (r, p), n in itertools.product(codings, Ts, rule_params, neurons) if c == "rate" or n == "if"]


def _cell_config(base: ConversionConfig, cell: dict) -> ConversionConfig:
    """The sweep's conversion with the cell's code, T, rule, percentile and neuron."""
    return base.replace(coding=cell["coding"], T=cell["T"], rule=cell["rule"],
                        percentile=cell["percentile"] or base.percentile,
                        neuron=dataclasses.replace(base.neuron, kind=cell["neuron"]))


def _finished(path: Path, fid_samples: int) -> dict | None:
    """The row of a cell finished by an earlier run (with its sample metric when one is asked for);
    None when it is missing or unreadable (a file cut short is computed again)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(row, dict) or (fid_samples and row.get("sample_value") is None):
        return None
    return row


def cell_name(cell: dict) -> str:
    """`T4_mse_if` for the rate code (the names of sweeps before the weighted code), `weighted_T4_mse_if`."""
    rule = f"percentile{cell['percentile']}" if cell["rule"] == "percentile" else cell["rule"]
    code = "" if cell.get("coding", "rate") == "rate" else f"{cell['coding']}_"
    return f"{code}T{cell['T']}_{rule}_{cell['neuron']}"


def _plot(rows: list[dict], path: Path, metric: str, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdm.io import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list] = {}
    for row in rows:
        if row.get(metric) is None:
            continue
        name = (f"{row.get('coding', 'rate')}, " + (f"{row['rule']} {row['percentile']}" if row["rule"] == "percentile"
                                                    else row["rule"]) + f", {row['neuron']}")
        lines.setdefault(name, []).append((row["T"], row[metric]))
    for name, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("T (spiking steps)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


@cli.command(help="Sweep spike code x T x threshold rule x neuron: eps fidelity per cell (and a sample metric with --fid N); writes "
              "OUT/sweep.csv, OUT/sweep.md and OUT/sweep.png, and skips finished cells when rerun.")
@cli.ckpt_options
@click.option("--coding", "codings", type=CommaList(str, CODINGS), default=ConversionConfig.coding, show_default=True,
              help="Spike codes (rate, weighted; the weighted code with --neuron if only).")
@click.option("--T", "Ts", type=CommaList(int), default="2,4,8,16", show_default=True)
@click.option("--calib", "rules", type=CommaList(str, RULES), default="max,percentile,mse", show_default=True)
@click.option("--percentile", "percentiles", type=CommaList(float), default=str(ConversionConfig.percentile),
              show_default=True)
@click.option("--neuron", "neurons", type=CommaList(str, tuple(NEURONS)), default=NeuronConfig.kind, show_default=True)
@options_of(ConversionConfig, skip=CELL_FIELDS)
@options_of(CalibrationInputs, prefix="calib_")
@click.option("--fid", "fid_samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also sample N images per cell and score them (FID, or FID-FMNIST offline).")
@cli.quality_options(metrics=False)
@cli.sampling_options
@cli.executor_option
@click.option("--out", type=click.Path(file_okay=False), default="out/sweep", show_default=True)
@cli.device_option
def main(ckpt, allow_pickle, codings, Ts, rules, percentiles, neurons, fid_samples, executor, out, device, **options):
    if any(T < 1 for T in Ts):
        raise SDMError(f"--T values must be at least 1, got {Ts}")
    if any(not 0 < p <= 100 for p in percentiles):
        raise SDMError(f"--percentile values must lie in (0, 100], got {percentiles}")
    todo = cells(codings, Ts, rules, percentiles, neurons)
    if not todo:
        raise SDMError("--coding weighted runs IF neurons only: add --neuron if or --coding rate")
    base = settings_from(ConversionConfig, options)
    for cell in todo:  # every cell checked before any work
        _cell_config(base, cell).validate()
    inputs = settings_from(CalibrationInputs, options, prefix="calib_")
    sampling = settings_from(SamplingSettings, options)
    device, out = cli.resolve_device(device), Path(out)
    loaded = load_model(ckpt, device=device, allow_pickle=allow_pickle)
    workflow = ConversionWorkflow(loaded.model, loaded.scheduler_config, base, inputs, label=f"'{loaded.source}'")
    stats = _statistics(workflow, out)
    scorer = _Scorer(options, device, sampling, fid_samples) if fid_samples else None
    rows = []
    for i, cell in enumerate(todo, 1):
        path = out / "cells" / f"{cell_name(cell)}.json"
        row = _finished(path, fid_samples)
        if row is not None:
            click.echo(f"[{i}/{len(todo)}] {cell_name(cell)}: done earlier, skipped", err=True)
        else:
            row = _cell_row(workflow, stats.for_config(_cell_config(base, cell)), cell, executor, scorer,
                            out / "work" / cell_name(cell))
            write_json(row, path)
            click.echo(f"[{i}/{len(todo)}] {cell_name(cell)}: eps cosine {row['eps_cosine']:.4f}", err=True)
        rows.append(row)
    _write_tables(rows, out, f"ckpt: {loaded.source}; calibration: {stats.source}; probes: {inputs.probes} spread over "
                  f"t plus {inputs.probes // 2} at t < 100; analog mode: {base.analog_mode}"
                  f"{'; analog inputs of synaptic layers spike-encoded' if base.encodes else ''}.")
    click.echo(f"{len(rows)} cells -> {out}/sweep.md, {out}/sweep.csv, {out}/sweep.png")


def _cell_row(workflow: ConversionWorkflow, stats, cell: dict, executor: str, scorer, work_dir: Path) -> dict:
    """One cell converted and measured: eps fidelity on the probes, and the sample metric with a scorer."""
    snn = convert(workflow.ann, stats)
    ran = cli.use_executor(snn, executor)
    fidelity = workflow.fidelity(snn)
    row = {**cell, "executor": ran, **{k: v for k, v in fidelity.items() if k in COLUMNS}}
    if scorer is not None:
        row.update(scorer.score(snn, workflow.scheduler_config, work_dir))
    return row


def _statistics(workflow: ConversionWorkflow, out: Path):
    """The sweep's one calibration: saved in `out` on the first run, read back (and checked to belong to
    this sweep's conversion) on a rerun."""
    stats_path = out / "calibration_stats.json"
    if not stats_path.is_file():
        stats = workflow.calibrate()
        stats.save(stats_path)
        return stats
    stats = load_stats(stats_path, workflow.ann)
    differ = [name for name in workflow.config.differences(stats.config) if name not in CELL_FIELDS]
    if differ:
        raise SDMError(f"--out '{out}' holds a sweep of another conversion ({', '.join(differ)} differ); "
                       "choose another --out")
    return stats


class _Scorer:
    """A sample metric of each cell (`--fid N`): N samples drawn in resumable shards, scored against the
    reference images."""

    def __init__(self, options: dict, device: str, sampling: SamplingSettings, num_samples: int):
        from sdm.metrics.extractors import make_extractor

        self.extractor, notes = make_extractor(options["extractor"], weights_path=options["inception_weights"],
                                               device=device)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        self.reference_name = options["reference"]
        self.reference = read_images(self.reference_name) if self.reference_name else None
        self.sampling, self.num_samples = sampling, num_samples

    def score(self, snn, scheduler_config: dict, work_dir: Path) -> dict:
        from sdm.diffusion.shards import gather_shards, sample_sharded
        from sdm.metrics.quality import evaluate_quality

        sampling = self.sampling
        settings = {"sampler": sampling.sampler, "steps": sampling.steps, "batch_size": sampling.batch_size,
                    "threshold_scale": 1.0}
        paths = sample_sharded(snn, scheduler_config, self.num_samples, work_dir, settings=settings, seed=sampling.seed)
        result = evaluate_quality(gather_shards(paths, self.num_samples, sampling.seed), self.extractor,
                                  metrics=("fid",), reference=self.reference, reference_name=self.reference_name)[0][0]
        return {"sample_metric": result.metric, "sample_value": round(result.value, 4)}


def _write_tables(rows: list[dict], out: Path, note: str) -> None:
    """sweep.csv, sweep.md (with `note`) and the plots."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(buffer.getvalue(), out / "sweep.csv")
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in COLUMNS) + " |\n"
                   for row in rows)
    write_text(f"{header}{body}\n{note}\n", out / "sweep.md")
    _plot(rows, out / "sweep.png", "eps_cosine", "eps cosine (SNN vs ANN)")
    if "sample_value" in rows[0]:
        _plot(rows, out / "sweep_fid.png", "sample_value", rows[0].get("sample_metric", "FID"))


if __name__ == "__main__":
    main()
