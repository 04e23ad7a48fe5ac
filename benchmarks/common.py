"""What every benchmark records beside its numbers: the command, the machine and the date."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone

import torch


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def provenance(module: str) -> dict:
    """`module` is the benchmark's `__spec__.name`: the command is recorded as `python -m module ...`."""
    command = f"python -m {module} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return {"command": command, "machine": machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def sample_metric(model, scheduler_config: dict, num_samples: int, work_dir, *, steps: int = 50, seed: int = 0,
                  batch_size: int = 250, threshold_scale: float = 1.0, extractor=None, reference=None):
    """FID-FMNIST (or whatever `extractor` gives) of `num_samples` DDIM samples, drawn in resumable shards
    under `work_dir`'s sub-directory for this model and setting (shared with `sdm-compare --work-dir`),
    against `reference` images (default: the extractor's own reference statistics)."""
    import time

    from sdm.diffusion.shards import gather_shards, keyed_work_dir, sample_sharded
    from sdm.metrics.extractors import FMNISTExtractor
    from sdm.metrics.quality import evaluate_quality

    settings = {"sampler": "ddim", "steps": steps, "batch_size": batch_size, "threshold_scale": threshold_scale}
    started = time.perf_counter()
    work_dir = keyed_work_dir(work_dir, model, settings, seed=seed)
    paths = sample_sharded(model, scheduler_config, num_samples, work_dir, settings=settings, seed=seed)
    seconds = time.perf_counter() - started
    images = gather_shards(paths, num_samples, seed)
    result = evaluate_quality(images, extractor or FMNISTExtractor(), metrics=("fid",), reference=reference)[0][0]
    return result, images, seconds


def write_table(rows: list[dict], out, meta: dict, note: str, **extra) -> str:
    """`out/results.json` and `out/table.md` (the table, a note, the command, machine and date)."""
    from pathlib import Path

    from sdm.io import write_json, write_text

    out = Path(out)
    write_json({**meta, **extra, "rows": rows}, out / "results.json")
    text = f"{markdown_table(rows, list(rows[0]))}\n\n{note} `{meta['command']}` on {meta['machine']}, {meta['date']}\n"
    write_text(text, out / "table.md")
    return text


def plot_fid_curves(curves: dict[str, list[tuple[float, float]]], ann_fid: float, path, *, xlabel: str, title: str,
                    target: float) -> None:
    """FID-FMNIST (log scale) against `xlabel`, one line per curve, with the ANN's FID and `target` x it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    from sdm.io import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.5))
    tab20 = plt.get_cmap("tab20").colors
    colours = tab20[:14] + tab20[16:]  # 18 distinct colours, without the greys of the ANN lines
    for i, (name, points) in enumerate(curves.items()):
        ax.plot([x for x, _ in points], [f for _, f in points], marker="o", label=name, color=colours[i % len(colours)])
    ax.axhline(ann_fid, color="gray", linestyle="--", label="ANN")
    ax.axhline(target * ann_fid, color="gray", linestyle=":", label=f"{target:g} x ANN")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("FID-FMNIST")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the plot, never over a curve
    save_figure(fig, path)
