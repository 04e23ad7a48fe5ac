"""Fine-tuning defaults on a development set of DDPMs: one change at a time, FID against wall-clock minutes.

    python -m benchmarks.finetune_defaults --model runs/dev/relu-mnist=../shared/data/mnist_10k.npz \
        --model runs/dev/silu-fmnist-cpu --model runs/dev/silu-mnist-deep=../shared/data/mnist_10k.npz \
        --candidates defaults,fp32,lr-third,reuse-1 --minutes 4 --num-samples 500

Each model (made by `examples/dev_models.sh`, never the embedded model alone) is converted the way a new
user converts it, `sdm-convert`'s defaults at `--T`, in the candidate's code, and fine-tuned for
`--minutes` of wall time (`sdm-finetune --minutes`: the pool, the plan and the steps all count), or for
the steps a candidate names, with `sdm-finetune`'s defaults changed as `CANDIDATES` says, nothing else. Judged by the FID of the
Fashion-MNIST classifier's features (DDIM-50, seeds 0..N-1) against each model's reference images, as
a ratio to the model's own ANN, beside energy per image. Finished runs and sample shards are reused
on a rerun; a run cut short starts again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.common import plot_fid_curves, provenance, sample_metric, write_table
from calibration import ConversionConfig
from convert.finetune import FinetuneSettings, finetune, finetuned_steps
from convert.model import ConvertedUNet
from convert.workflow import ConversionWorkflow
from sdm.commands.options import command
from sdm.diffusion.data import read_images
from sdm.io import write_json
from sdm.metrics.extractors import FMNISTExtractor
from sdm.models.pretrained import load_model
from sdm.settings import CommaList

DEFAULT_CODE = ConversionConfig.coding
CANDIDATES = {  # (spike code, FinetuneSettings fields changed from today's defaults)
    "defaults": (DEFAULT_CODE, {}),
    "fp32": (DEFAULT_CODE, {"precision": "fp32"}),
    "lr-third": (DEFAULT_CODE, {"lr": 1e-4, "threshold_lr": 1e-3}),
    "reuse-1": (DEFAULT_CODE, {"pair_reuse": 1.0}),
    "late-0": (DEFAULT_CODE, {"late_share": 0.0}),
    "batch-16": (DEFAULT_CODE, {"batch_size": 16}),
    "student-paths": (DEFAULT_CODE, {"source": "student"}),
    "norms-only": (DEFAULT_CODE, {"train": "norms"}),
    "rate-defaults": ("rate", {}),
    # The run (400 steps of 16: a pool of 1,600 pairs, 32 trajectories), then with the earlier
    # defaults' 12,800-pair pool, then with all the earlier defaults: steps, not minutes.
    "short": (DEFAULT_CODE, {"steps": 400, "batch_size": 16}),
    "short-pool": (DEFAULT_CODE, {"steps": 400, "batch_size": 16, "pairs": 12_800}),
    "short-old": (DEFAULT_CODE, {"steps": 400, "batch_size": 16, "pairs": 12_800, "lr": 1e-4, "threshold_lr": 1e-3,
                                 "precision": "fp32"}),
    # The short run on the student's own paths (labelled by the teacher): steps, not minutes, so that the
    # comparison with `short` holds on cores shared with other work.
    "student-short": (DEFAULT_CODE, {"steps": 400, "batch_size": 16, "source": "student"}),
    "short-fixed-thresholds": (DEFAULT_CODE, {"steps": 400, "batch_size": 16, "threshold_lr": 0.0}),
}


def candidate(text: str) -> str:
    """A candidate's name, or NAME@M to run it for M minutes instead of `--minutes` (the targets' longer runs)."""
    name, _, minutes = text.partition("@")
    if name not in CANDIDATES or (minutes and not float(minutes) > 0):
        raise ValueError(text)
    return text


def _parsed(spec: str, minutes: float) -> tuple[str, float]:
    """(candidate name, minutes) of a `candidate` spec."""
    name, _, own = spec.partition("@")
    return name, float(own) if own else minutes


class _Model:
    """One development DDPM: its ANN, reference images, scoring and conversion, cached under `work`."""

    def __init__(self, spec: str, T: int, num_samples: int, out: Path):
        ckpt, _, reference = spec.partition("=")
        self.loaded = load_model(ckpt)
        self.name = Path(ckpt).name or ckpt.replace(":", "_")
        self.reference = read_images(reference) if reference else None
        self.T, self.num_samples, self.dir = T, num_samples, out / self.name
        ann, schedule = self.loaded.model, self.loaded.scheduler_config
        self.workflow = ConversionWorkflow(ann, schedule, ConversionConfig(T=T), progress=False)
        self.ann_fid, self.ann_images = self.score(ann)
        self.stats = None

    def score(self, model) -> tuple[float, object]:
        result, images, _ = sample_metric(model, self.loaded.scheduler_config, self.num_samples, self.dir / "work",
                                          extractor=FMNISTExtractor(), reference=self.reference)
        return result.value, images

    def converted(self, code: str) -> Path:
        """`sdm-convert`'s defaults at T in `code`, saved (calibrated once for both codes)."""
        directory = self.dir / f"converted-{code}"
        if not (directory / "config.json").is_file():
            schedule = self.loaded.scheduler_config
            if self.stats is None:
                self.stats = self.workflow.calibrate()
            snn = self.workflow.convert(self.stats.retarget(coding=code), source=self.loaded.source)
            snn.save_pretrained(directory, scheduler_config=schedule)
        return directory

    def judge(self, snn: ConvertedUNet) -> dict:
        snn.set_executor("rate")
        fid, images = self.score(snn)
        judged = self.workflow.judge(snn, denoising_steps=50)
        fidelity, energy = judged["fidelity"], judged["energy"]
        return {"FID": f"{fid:.3f}", "ratio to ANN FID": f"{fid / self.ann_fid:.2f}",
                "sample MSE to ANN": f"{seedwise_mse(images, self.ann_images):.5f}",
                "eps cosine (t < 100)": f"{fidelity['eps_cosine']:.4f} ({fidelity['eps_cosine_t_lt_100']:.4f})",
                "energy / image (mJ)": f"{energy['per_image']['energy_mJ']:.3g}",
                "ratio to ANN energy": f"{energy['energy_ratio_snn_to_ann']:.3f}", "_fid": fid}


def seedwise_mse(images: np.ndarray, ann_images: np.ndarray) -> float:
    """Mean over seeds of the pixel MSE (in [0, 1]) between an SNN's sample and the ANN's sample of the same
    seed: how far sampling carries the SNN from the ANN's path, with no feature extractor in between."""
    difference = images.astype(np.float32) / 255 - ann_images.astype(np.float32) / 255
    return float(np.mean(difference ** 2))


def _finetuned(model: _Model, spec: str, minutes: float) -> tuple[Path, float]:
    """The candidate's fine-tuned SNN directory and its wall minutes, run once: for `minutes` (or its own
    `@M`), or for the steps the candidate names."""
    name, minutes = _parsed(spec, minutes)
    code, overrides = CANDIDATES[name]
    timed = "steps" not in overrides
    run = model.dir / (f"{name}-{minutes:g}min" if timed else name)
    timing = run / "minutes.json"
    if not timing.is_file():
        shutil.rmtree(run, ignore_errors=True)
        settings = FinetuneSettings(minutes=minutes if timed else None, save_every=10**9, **overrides)
        started = time.perf_counter()
        finetune(model.converted(code), model.loaded.model, model.loaded.scheduler_config, run, settings,
                 teacher_source=model.loaded.source)
        write_json({"minutes": (time.perf_counter() - started) / 60}, timing)
    return run / "snn", json.loads(timing.read_text())["minutes"]


def _model_rows(model: _Model, candidates: list[str], minutes: float, out: Path) -> list[dict]:
    rows = [{"model": model.name, "candidate": "ANN", "code": "", "steps": "", "minutes": "", "FID": f"{model.ann_fid:.3f}",
             "ratio to ANN FID": "1.00", "sample MSE to ANN": "", "eps cosine (t < 100)": "", "energy / image (mJ)": "", "ratio to ANN energy": "1"}]
    curves: dict[str, list[tuple[float, float]]] = {}
    for code in dict.fromkeys(CANDIDATES[_parsed(c, minutes)[0]][0] for c in candidates):
        judged = model.judge(ConvertedUNet.from_pretrained(model.converted(code)))
        rows.append({"model": model.name, "candidate": "converted", "code": code, "steps": 0, "minutes": "0", **judged})
    start = {row["code"]: row["_fid"] for row in rows[1:]}
    for name in candidates:
        snn_dir, spent = _finetuned(model, name, minutes)
        judged = model.judge(ConvertedUNet.from_pretrained(snn_dir))
        code = CANDIDATES[_parsed(name, minutes)[0]][0]
        rows.append({"model": model.name, "candidate": name, "code": code, "steps": finetuned_steps(snn_dir),
                     "minutes": f"{spent:.1f}", **judged})
        curves[name] = [(0.0, start[code]), (spent, judged["_fid"])]
    plot_fid_curves(curves, model.ann_fid, out / f"{model.name}.png", xlabel="wall-clock minutes of fine-tuning",
                    title=f"{model.name}: FID against time (N = {model.num_samples})", target=1.1)
    return rows


@command(help="Fine-tuning defaults, one change at a time, on several DDPMs: FID against wall-clock minutes.")
@click.option("--model", "models", multiple=True, required=True, help="CKPT or CKPT=REFERENCE_IMAGES; repeat.")
@click.option("--candidates", type=CommaList(candidate), default="defaults,fp32,lr-third,reuse-1", show_default=True,
              help=f"Of {', '.join(CANDIDATES)}; NAME@M runs one for M minutes instead of --minutes.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True)
@click.option("--T", "T", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/finetune_defaults", show_default=True)
def main(models, candidates, minutes, T, num_samples, out):
    out = Path(out)
    meta = provenance(__spec__.name)
    note = (f"T = {T}, `sdm-convert`'s defaults, `sdm-finetune --minutes {minutes:g}` (or the candidate's steps) with "
            f"one change each; DDIM-50, seeds 0..{num_samples - 1}; FID of the Fashion-MNIST classifier's features "
            "against each model's reference images (not comparable with Inception FID, nor across data sets: "
            "compare the ratios to each model's ANN). Sample MSE to ANN: the mean pixel MSE between each SNN sample and the "
            "ANN's sample of the same seed.")
    rows = []
    for spec in models:
        model = _Model(spec, T, num_samples, out)
        model_rows = [{k: v for k, v in row.items() if not k.startswith("_")}
                      for row in _model_rows(model, candidates, minutes, out)]
        described = {n: CANDIDATES[_parsed(n, minutes)[0]] for n in candidates}
        write_table(model_rows, model.dir, meta, note, candidates=described, minutes=minutes)
        rows += model_rows
        text = write_table(rows, out, meta, note, candidates=described, minutes=minutes)
    click.echo(text)


if __name__ == "__main__":
    main()
