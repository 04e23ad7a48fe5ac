"""`sdm-compare`: the ANN, its conversions and a directly trained SDM side by side, on equal terms.

On the defaults: the embedded ANN, its conversions at T = 4 and 8 (made here by the best
training-free recipe) and the embedded SDM of the same size. All models sample through the shared
sampler from the same seeds and are scored by the same extractor; energy comes from each spiking
model's own activity. It converts, so it lives on the `convert/` side.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from calibration import CalibrationInputs, ConversionConfig
from convert.finetune import finetune_budget, finetuned_steps
from convert.workflow import ConversionWorkflow
from sdm.commands import options as cli
from sdm.diffusion.data import read_images
from sdm.diffusion.images import save_comparison
from sdm.diffusion.sampler import SamplingSettings, sample
from sdm.diffusion.shards import gather_shards, keyed_work_dir, sample_sharded
from sdm.errors import SDMError
from sdm.io import write_json, write_text
from sdm.metrics.extractors import make_extractor
from sdm.metrics.quality import evaluate_quality
from sdm.metrics.trajectory_energy import spiking_energy
from sdm.models.pretrained import EMBEDDED_NAME, EMBEDDED_SDM_NAME, LoadedModel, load_model
from sdm.settings import options_of, settings_from
from sdm.snn.energy import E_MAC_PJ, ann_macs

# The best training-free conversion (BENCHMARKS 5.3, 10.6): the config's defaults (weighted code, per-channel
# thresholds) with the first ResNet kept analog. The defaults of sdm-compare's conversion options; each option
# changes it.
FIRST_RESNET = ("down_blocks.0.resnets.0.*",)
RECIPE = {"analog_sites": FIRST_RESNET}
TIMED_IMAGES = 16


def _describe(model) -> str:
    config = getattr(model, "config", {})
    if type(model).__name__ == "ConvertedUNet":
        parts = [f"T={config['T']}", config["neuron"]["kind"],
                 f"{config['rule']} thresholds" + (" per channel" if config["per_channel"] else "")]
        if config.get("analog_sites"):
            parts.append(f"analog {_sites(config['analog_sites'])}")
        if config["encode_analog"] or config["encode_sites"]:
            parts.append("spike-encoded analog inputs" + (f" {_sites(config['encode_sites'])}"
                                                          if config["encode_sites"] else ""))
        return ", ".join(parts)
    if type(model).__name__ == "SpikingUNet":
        return f"T={config['T']}, {config['neuron']}, {'TSM' if config['tsm'] else 'pre-spike'}"
    return type(model).__name__


def _code(model) -> str:
    """The spike code a model runs: a conversion's config says; a directly trained SDM's binary spikes are a
    rate code; an ANN has none."""
    if type(model).__name__ == "ConvertedUNet":
        return model.conversion.coding
    return "rate" if type(model).__name__ == "SpikingUNet" else ""


def _sites(names: list[str]) -> str:
    """A few site names or patterns as they are; a longer list (a budget's choice) by its length."""
    return ", ".join(names) if len(names) <= 2 else f"({len(names)} sites, listed in the model's config.json)"


def _panel_title(model, tuned: tuple[int, float | None] | None) -> str:
    """A converted model's grid title: its T, spike-encoded analog inputs, fine-tuning and its budget."""
    return (f"SNN {model.conversion.coding} T={model.config['T']}" + (" encoded" if model.conversion.encodes else "")
            + (" FT" if tuned else "") + (f" budget {tuned[1]:g}" if tuned and tuned[1] else ""))


def _optional(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in ("", "none") else value


def _T_values(text: str) -> list[int]:
    if _optional(text) is None:
        return []
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SDMError(f"--convert-T takes comma-separated positive integers or none, got '{text}'")
    return values


def _conversions(ann: LoadedModel, T_values: list[int], config: ConversionConfig,
                 inputs: CalibrationInputs) -> list[LoadedModel]:
    """The ANN converted by `config` at each T, from one calibration (sdm-convert's, for the same config)."""
    workflow = ConversionWorkflow(ann.model, ann.scheduler_config, config, inputs, label=f"--ann '{ann.source}'")
    if not T_values:
        return []
    stats = workflow.calibrate()
    return [LoadedModel(workflow.convert(stats.retarget(T=T), source=ann.source), ann.scheduler_config, ann.path,
                        f"{ann.source} converted at T={T}") for T in T_values]


def _fine_tuning(snn_dir: str) -> tuple[int, float | None] | None:
    """(steps, energy budget) of the fine-tuning run behind `snn_dir`; None for a plain conversion."""
    steps = finetuned_steps(snn_dir)
    return None if steps is None else (steps, finetune_budget(snn_dir))


def plot_frontier(rows: list[dict], metric: str, extractor: str, path: Path) -> None:
    """Quality against energy per image, one point per row: the ANN and a directly trained SDM marked
    apart from the conversions, each conversion labelled by its T and fine-tuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdm.io import save_figure

    style = {"ANN": ("s", "black"), "SDM (direct)": ("^", "tab:green"), "converted SNN": ("o", "tab:blue")}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for row in rows:
        value = next((r["value"] for r in row["results"] if r["metric"] == metric), None)
        if value is None:
            continue
        marker, colour = style[row["label"]]
        ax.scatter(row["energy_mJ_per_image"], value, marker=marker, color=colour, s=40, zorder=3)
        name = row["label"] if row["label"] != "converted SNN" else row["panel"]
        ax.annotate(name, (row["energy_mJ_per_image"], value), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("energy per image (mJ, 45 nm: 4.6 pJ / MAC, 0.9 pJ / AC)")
    ax.set_ylabel(f"{metric.upper()} ({extractor})")
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, path, dpi=130)


def _seconds_per_image(model, scheduler_config: dict, settings: dict, seed: int) -> float:
    """Timed on a fresh draw of a few images, so that every row is timed alike, wherever its samples came from."""
    started = time.perf_counter()
    sample(model, scheduler_config, TIMED_IMAGES, seed=seed, progress=False, **settings)
    return (time.perf_counter() - started) / TIMED_IMAGES


def compare_table(rows: list[dict], metric_names: list[str]) -> str:
    """The rows of a comparison as a Markdown table, one column per metric."""
    columns = ["model", "code", "details", *metric_names, "energy / image (mJ)", "sampling s / image", "firing rate"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["label"], row.get("code", ""), row["details"], *[row["metrics"].get(m, "") for m in metric_names],
                 f"{row['energy_mJ_per_image']:.4g}", f"{row['seconds_per_image']:.3g}",
                 "" if row["firing_rate"] is None else f"{row['firing_rate']:.3f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


class _Scoring:
    """One row of the comparison per model: its samples (from the shared cache), metrics, energy per image
    and sampling time, all at the same sampling settings."""

    def __init__(self, sampling: SamplingSettings, num_samples: int, work_dir: Path, extractor, metrics, reference_images,
                 reference: str | None):
        self.sampling, self.num_samples, self.work_dir = sampling, num_samples, work_dir
        self.extractor, self.metrics, self.reference_images, self.reference = extractor, metrics, reference_images, reference
        self.settings = {"sampler": sampling.sampler, "steps": sampling.steps, "batch_size": sampling.batch_size,
                         "threshold_scale": 1.0}

    def row(self, label: str, loaded: LoadedModel, tuned, executor: str) -> dict:
        model, seed, steps = loaded.model, self.sampling.seed, self.sampling.steps
        ran = cli.use_executor(model, executor)
        paths = sample_sharded(model, loaded.scheduler_config, self.num_samples,
                               keyed_work_dir(self.work_dir, model, self.settings, seed=seed), settings=self.settings,
                               seed=seed)
        images = gather_shards(paths, self.num_samples, seed)
        results, more = evaluate_quality(images, self.extractor, metrics=self.metrics, reference=self.reference_images,
                                         reference_name=self.reference)
        energy = spiking_energy(model, loaded.scheduler_config, self.sampling.sampler, steps)
        if energy is None:  # an ANN: MACs only
            size, channels = model.config.sample_size, model.config.in_channels
            probe = torch.zeros(1, channels, size, size, device=model.device)
            macs = ann_macs(model, probe, torch.zeros(1, dtype=torch.long, device=model.device))
            energy_mj, rate = macs * E_MAC_PJ * steps / 1e9, None
        else:
            energy_mj, rate = energy["per_image"]["energy_mJ"], energy["mean_input_firing_rate"]
        details = (_describe(model) + (f", fine-tuned {tuned[0]} steps" if tuned else "")
                   + (f" under energy budget {tuned[1]:g}" if tuned and tuned[1] else "")
                   + (f", {ran} executor" if ran else ""))
        return {"label": label, "code": _code(model), "ckpt": loaded.source, "details": details, "executor": ran,
                "metrics": {r.metric: f"{r.value:.4g}" + (f" ± {r.std:.2g}" if r.std is not None else "")
                            for r in results},
                "results": [r.to_dict() for r in results], "energy_mJ_per_image": energy_mj,
                "seconds_per_image": _seconds_per_image(model, loaded.scheduler_config, self.settings, seed),
                "firing_rate": rate, "energy": energy, "notes": loaded.notes + more,
                "panel": _panel_title(model, tuned) if label == "converted SNN" else label, "images": images}


@cli.command(help="Tabulate the ANN, its conversions and a directly trained SDM: sample quality, energy per image, "
              "sampling time and firing rate, in Markdown and JSON, plus their grids side by side. The defaults compare "
              "the two embedded models and the ANN's conversions at T = 4 and 8.")
@click.option("--ann", default=EMBEDDED_NAME, show_default=True, help="The ANN checkpoint (hub id, directory; none).")
@click.option("--convert-T", "convert_T", default="4,8", show_default=True,
              help="Convert the ANN at these T (by the conversion options below); none to skip.")
@options_of(ConversionConfig, skip=("T",), defaults=RECIPE)
@options_of(CalibrationInputs, skip=("source", "data", "probes"), prefix="calib_")  # calibration on the ANN's own trajectories
@click.option("--converted", multiple=True, help="An existing converted SNN (sdm-convert's OUT/snn, or a fine-tuned "
              "OUT/finetune/snn); repeat for several.")
@click.option("--direct", default=EMBEDDED_SDM_NAME, show_default=True,
              help="A directly trained spiking UNet (an sdm-train run; none).")
@click.option("--num-samples", type=click.IntRange(min=2), default=1000, show_default=True)
@cli.sampling_options
@cli.quality_options()
@cli.executor_option
@click.option("--out", type=click.Path(file_okay=False), default="out/compare", show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Sample cache, one sub-directory per model and setting; point runs (and benchmarks) at one to "
                   "reuse their samples.  [default: OUT/work]")
@cli.device_option
def main(ann, convert_T, converted, direct, num_samples, metrics, extractor, reference,
         inception_weights, executor, out, work_dir, device, **options):
    config = settings_from(ConversionConfig, options)
    inputs = settings_from(CalibrationInputs, options, prefix="calib_")
    sampling = settings_from(SamplingSettings, options)
    sampler, steps, seed = sampling.sampler, sampling.steps, sampling.seed
    ann, direct = _optional(ann), _optional(direct)
    T_values = _T_values(convert_T)
    if T_values and ann is None:
        raise SDMError("--convert-T converts the ANN: give --ann, or pass --convert-T none")
    if ann is None and not converted and direct is None:
        raise SDMError("give at least one of --ann, --converted, --direct")
    device, out = cli.resolve_device(device), Path(out)
    work_dir = Path(work_dir) if work_dir else out / "work"
    reference_images = read_images(reference) if reference is not None else None
    feature_extractor, notes = make_extractor(extractor, weights_path=inception_weights, device=device)
    chosen = []  # (label, LoadedModel, `_fine_tuning` or None)
    if ann is not None:
        loaded_ann = load_model(ann, device=device)
        chosen.append(("ANN", loaded_ann, None))
        chosen += [("converted SNN", snn, None) for snn in _conversions(loaded_ann, T_values, config, inputs)]
    chosen += [("converted SNN", load_model(ckpt, device=device), _fine_tuning(ckpt)) for ckpt in converted]
    if direct is not None:
        chosen.append(("SDM (direct)", load_model(direct, device=device), None))
    scoring = _Scoring(sampling, num_samples, work_dir, feature_extractor, metrics, reference_images, reference)
    rows, grids = [], []
    for label, loaded, tuned in chosen:
        rows.append(scoring.row(label, loaded, tuned, executor))
        grids.append((rows[-1]["panel"], rows[-1].pop("images")[:16]))
    metric_names = list(dict.fromkeys(m for row in rows for m in row["metrics"]))
    table = compare_table(rows, metric_names)
    write_json({"num_samples": num_samples, "sampler": sampler, "steps": steps, "seeds": [seed, seed + num_samples - 1],
                "extractor": feature_extractor.description, "notes": notes, "rows": rows}, out / "compare.json")
    write_text(f"{table}\n\nN = {num_samples}, {sampler}-{steps}, seeds {seed}..{seed + num_samples - 1}; extractor: "
               f"{feature_extractor.description}. Sampling time: a timed draw of {TIMED_IMAGES} images, batch "
               f"{sampling.batch_size}.\n",
               out / "compare.md")
    save_comparison(grids, out / "comparison.png")
    if metric_names:
        plot_frontier(rows, metric_names[0], feature_extractor.name, out / "frontier.png")
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(table)


if __name__ == "__main__":
    main()
