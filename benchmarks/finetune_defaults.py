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
on a rerun (`--tables` rescores finished runs at another N without touching their tables); a run cut short
starts again. Per model, under `--out` (or `--tables`): `MODEL/table.md`, FID against minutes
in `MODEL.png`, and `MODEL-samples.png`, the same seeds drawn by the ANN, each conversion and every timed
run of `GRID_MINUTES` or more.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
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
from sdm.diffusion.images import save_comparison
from sdm.io import write_json
from sdm.metrics.bootstrap import paired_bootstrap
from sdm.metrics.extractors import FMNISTExtractor
from sdm.metrics.quality import fid_reference, reference_features
from sdm.models.pretrained import load_model
from sdm.settings import CommaList

DEFAULT_CODE = ConversionConfig.coding
DENOISING_STEPS = 50  # DDIM steps of the samples that score every run, and of its energy per image
GRID_MINUTES = 10.0   # runs this long get a panel in a model's sample grid: the ones the targets read
GRID_SEEDS = 16       # seeds per panel of that grid (a 4 x 4 grid, the same seeds in the same cells)
# Earlier defaults are written out, so that a rerun repeats a candidate whatever the defaults become.
# The learning rates before BENCHMARKS.md 11.12 (a third of today's): every candidate measured against
# those defaults keeps them; the rows named `defaults` in the tables written before 11.12 are `lr-3e-4`.
RATES_BEFORE_11_12 = {"lr": 3e-4, "threshold_lr": 3e-3}
# The plain eps loss of the defaults before BENCHMARKS.md 11.6 (a quarter of each batch from t < 100, every
# pair weighted 1), at the learning rates of then.
EPS_LOSS = {"late_share": 0.25, "snr_gamma": 0.0, **RATES_BEFORE_11_12}
# Three times the earlier rates (BENCHMARKS.md 11.10-11.12), today's defaults: the deep model fits half the
# others' steps in the same minutes, and larger steps help it most.
LR_TRIPLE = {"lr": 9e-4, "threshold_lr": 9e-3}
CANDIDATES = {  # (spike code, FinetuneSettings fields changed from today's defaults)
    "defaults": (DEFAULT_CODE, {}),
    "rate-defaults": ("rate", {}),
    "lr-3e-4": (DEFAULT_CODE, RATES_BEFORE_11_12),
    "rate-lr-3e-4": ("rate", RATES_BEFORE_11_12),
    "eps-loss": (DEFAULT_CODE, EPS_LOSS),
    "rate-eps-loss": ("rate", EPS_LOSS),
    "fp32": (DEFAULT_CODE, {**EPS_LOSS, "precision": "fp32"}),
    "lr-third": (DEFAULT_CODE, {**EPS_LOSS, "lr": 1e-4, "threshold_lr": 1e-3}),
    "reuse-1": (DEFAULT_CODE, {**EPS_LOSS, "pair_reuse": 1.0}),
    "late-0": (DEFAULT_CODE, {**EPS_LOSS, "late_share": 0.0}),
    "min-snr": (DEFAULT_CODE, {**EPS_LOSS, "snr_gamma": 5.0}),
    "batch-16": (DEFAULT_CODE, {**EPS_LOSS, "batch_size": 16}),
    "snr-2": (DEFAULT_CODE, {"snr_gamma": 2.0, **RATES_BEFORE_11_12}),
    "lr-triple": (DEFAULT_CODE, LR_TRIPLE),
    "rate-lr-triple": ("rate", LR_TRIPLE),
    "student-paths": (DEFAULT_CODE, {**EPS_LOSS, "source": "student"}),
    "norms-only": (DEFAULT_CODE, {**EPS_LOSS, "train": "norms"}),
    # The run (400 steps of 16: a pool of 1,600 pairs, 32 trajectories), then with the earlier
    # defaults' 12,800-pair pool, then with all the earlier defaults: steps, not minutes.
    "short": (DEFAULT_CODE, {**EPS_LOSS, "steps": 400, "batch_size": 16}),
    "short-pool": (DEFAULT_CODE, {**EPS_LOSS, "steps": 400, "batch_size": 16, "pairs": 12_800}),
    "short-old": (DEFAULT_CODE, {**EPS_LOSS, "steps": 400, "batch_size": 16, "pairs": 12_800, "lr": 1e-4,
                                 "threshold_lr": 1e-3, "precision": "fp32"}),
    # The short run on the student's own paths (labelled by the teacher): steps, not minutes, so that the
    # comparison with `short` holds on cores shared with other work.
    "student-short": (DEFAULT_CODE, {**EPS_LOSS, "steps": 400, "batch_size": 16, "source": "student"}),
    "short-fixed-thresholds": (DEFAULT_CODE, {**EPS_LOSS, "steps": 400, "batch_size": 16, "threshold_lr": 0.0}),
}


@dataclass(frozen=True)
class Run:
    """One candidate run, as `--candidates` names it: NAME, NAME@M (M minutes instead of `--minutes`: the
    targets' longer runs; @0: the conversion's row alone, no fine-tuning) or NAME:R[@M] (`sdm-convert
    --energy-budget R`: the sites chosen under the energy ratio R, then fine-tuned under it)."""

    spec: str
    name: str
    minutes: float
    budget: float | None = None

    @classmethod
    def parse(cls, spec: str, minutes: float) -> Run:
        head, _, own = spec.partition("@")
        name, _, budget = head.partition(":")
        if name not in CANDIDATES or (own and not float(own) >= 0) or (budget and not float(budget) > 0):
            raise ValueError(spec)
        return cls(spec, name, float(own) if own else minutes, float(budget) if budget else None)

    @property
    def code(self) -> str:
        return CANDIDATES[self.name][0]

    @property
    def timed(self) -> bool:
        return "steps" not in CANDIDATES[self.name][1]

    @property
    def fine_tunes(self) -> bool:
        return not (self.timed and self.minutes == 0)

    def settings(self) -> FinetuneSettings:
        overrides = dict(CANDIDATES[self.name][1], energy_budget=self.budget)
        return FinetuneSettings(minutes=self.minutes if self.timed else None, save_every=10**9, **overrides)

    @property
    def directory(self) -> str:
        label = self.name if self.budget is None else f"{self.name}-budget{self.budget:g}"
        return f"{label}-{self.minutes:g}min" if self.timed else label


def candidate(text: str) -> str:
    """A `Run` spec, checked (its minutes are only read later)."""
    Run.parse(text, 1.0)
    return text


class _Model:
    """One development DDPM: its ANN, reference images, scoring and conversion, cached under `work`."""

    def __init__(self, spec: str, T: int, num_samples: int, out: Path):
        ckpt, _, reference = spec.partition("=")
        self.loaded = load_model(ckpt)
        self.name = Path(ckpt).absolute().name  # as the rows show it: a path's or hub id's last part (`.` too)
        self.file_name = self.name.replace(":", "-")  # its directory and plot: some file systems refuse a colon
        self.reference = read_images(reference) if reference else None
        self.T, self.num_samples, self.dir = T, num_samples, out / self.file_name
        ann, schedule = self.loaded.model, self.loaded.scheduler_config
        self.workflow = ConversionWorkflow(ann, schedule, ConversionConfig(T=T), progress=False)
        self.ann_fid, self.ann_images = self.score(ann)
        self.stats = {}

    def score(self, model) -> tuple[float, object]:
        result, images, _ = sample_metric(model, self.loaded.scheduler_config, self.num_samples, self.dir / "work",
                                          extractor=FMNISTExtractor(), reference=self.reference)
        return result.value, images

    def converted(self, code: str, budget: float | None = None) -> Path:
        """`sdm-convert`'s defaults at T in `code` (calibrated once for both codes), or, under `budget`, its
        conversion with `--energy-budget`: the sites chosen to meet it. Saved, and reused."""
        directory = self.dir / (f"converted-{code}" if budget is None else f"converted-{code}-budget{budget:g}")
        if not (directory / "config.json").is_file():
            stats = self._calibrated(encoders=budget is not None).retarget(coding=code)
            if budget is not None:
                stats, _ = self.workflow.within_budget(stats, budget, denoising_steps=DENOISING_STEPS)
            snn = self.workflow.convert(stats, source=self.loaded.source)
            snn.save_pretrained(directory, scheduler_config=self.loaded.scheduler_config)
        return directory

    def _calibrated(self, *, encoders: bool):
        """The ANN's calibration, once (with every analog input observed, for a site choice under a budget)."""
        if encoders not in self.stats:
            self.stats[encoders] = self.workflow.calibrate(encoders=encoders)
        return self.stats[encoders]

    def judge(self, snn: ConvertedUNet) -> dict:
        snn.set_executor("rate")
        fid, images = self.score(snn)
        judged = self.workflow.judge(snn, denoising_steps=DENOISING_STEPS)
        fidelity, energy = judged["fidelity"], judged["energy"]
        return {"FID": f"{fid:.3f}", "ratio to ANN FID": f"{fid / self.ann_fid:.2f}",
                "sample MSE to ANN": f"{seedwise_mse(images, self.ann_images):.5f}",
                "eps cosine (t < 100)": f"{fidelity['eps_cosine']:.4f} ({fidelity['eps_cosine_t_lt_100']:.4f})",
                "energy / image (mJ)": f"{energy['per_image']['energy_mJ']:.3g}",
                "ratio to ANN energy": f"{energy['energy_ratio_snn_to_ann']:.3f}", "_fid": fid, "_images": images}


def seedwise_mse(images: np.ndarray, ann_images: np.ndarray) -> float:
    """Mean over seeds of the pixel MSE (in [0, 1]) between an SNN's sample and the ANN's sample of the same
    seed: how far sampling carries the SNN from the ANN's path, with no feature extractor in between."""
    difference = images.astype(np.float32) / 255 - ann_images.astype(np.float32) / 255
    return float(np.mean(difference ** 2))


def _finetuned(model: _Model, run: Run) -> tuple[Path, float]:
    """The run's fine-tuned SNN directory and its wall minutes, fine-tuned once."""
    directory = model.dir / run.directory
    timing = directory / "minutes.json"
    if not timing.is_file():
        shutil.rmtree(directory, ignore_errors=True)
        started = time.perf_counter()
        finetune(model.converted(run.code, run.budget), model.loaded.model, model.loaded.scheduler_config, directory,
                 run.settings(), teacher_source=model.loaded.source)
        write_json({"minutes": (time.perf_counter() - started) / 60}, timing)
    return directory / "snn", json.loads(timing.read_text())["minutes"]


def _model_rows(model: _Model, runs: list[Run], tables: Path) -> list[dict]:
    rows = [{"model": model.name, "candidate": "ANN", "code": "", "steps": "", "minutes": "", "FID": f"{model.ann_fid:.3f}",
             "ratio to ANN FID": "1.00", "sample MSE to ANN": "", "eps cosine (t < 100)": "", "energy / image (mJ)": "", "ratio to ANN energy": "1"}]
    curves: dict[str, list[tuple[float, float]]] = {}
    panels = [("ANN", model.ann_images)]
    start = {}
    for code, budget in dict.fromkeys((run.code, run.budget) for run in runs):
        judged = model.judge(ConvertedUNet.from_pretrained(model.converted(code, budget)))
        label = "converted" if budget is None else f"converted, budget {budget:g}"
        rows.append({"model": model.name, "candidate": label, "code": code, "steps": 0, "minutes": "0", **judged})
        start[code, budget] = judged["_fid"]
        panels.append((f"{label}, {code}", judged["_images"]))
    for run in (run for run in runs if run.fine_tunes):
        snn_dir, spent = _finetuned(model, run)
        judged = model.judge(ConvertedUNet.from_pretrained(snn_dir))
        rows.append({"model": model.name, "candidate": run.spec, "code": run.code, "steps": finetuned_steps(snn_dir),
                     "minutes": f"{spent:.1f}", **judged})
        curves[run.spec] = [(0.0, start[run.code, run.budget]), (spent, judged["_fid"])]
        if run.timed and run.minutes >= GRID_MINUTES:
            panels.append((run.spec, judged["_images"]))
    plot_fid_curves(curves, model.ann_fid, tables / f"{model.file_name}.png", xlabel="wall-clock minutes of fine-tuning",
                    title=f"{model.name}: FID against time (N = {model.num_samples})", target=1.1)
    save_comparison([(label, images[:GRID_SEEDS]) for label, images in panels], tables / f"{model.file_name}-samples.png")
    return rows


def paired_difference(model: _Model, rows: list[dict], a: str, b: str) -> str:
    """Two runs' FID difference with a paired bootstrap over the seeds they share (`sdm.metrics.bootstrap`),
    against the reference their FIDs use: how much of the gap another seed set would keep."""
    images = {row["candidate"]: row["_images"] for row in rows if row["candidate"] in (a, b)}
    extractor = FMNISTExtractor()
    features = [extractor.features(images[spec])[0] for spec in (a, b)]
    reference = reference_features(extractor, model.reference) if model.reference is not None else None
    mu, sigma, _ = fid_reference(extractor, reference)
    summary, _ = paired_bootstrap(*features, mu, sigma)
    return f"Paired bootstrap over the seeds: {summary.describe(a, b)}."


@command(help="Fine-tuning defaults, one change at a time, on several DDPMs: FID against wall-clock minutes.")
@click.option("--model", "models", multiple=True, required=True, help="CKPT or CKPT=REFERENCE_IMAGES; repeat.")
@click.option("--candidates", type=CommaList(candidate), default="defaults,fp32,lr-third,reuse-1", show_default=True,
              help=f"Of {', '.join(CANDIDATES)}; NAME@M runs one for M minutes instead of --minutes; NAME:R converts and fine-tunes under the energy budget R.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True)
@click.option("--T", "T", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--num-samples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--out", type=click.Path(), default="benchmarks/results/finetune_defaults", show_default=True,
              help="Where the runs, sample shards, tables and plots go.")
@click.option("--tables", type=click.Path(), default=None,
              help="Where the tables and plots go instead (the runs and shards stay under --out): a rescoring of "
                   "some runs at another --num-samples, reusing the runs and the shards drawn so far.")
@click.option("--paired", type=CommaList(candidate), default=None,
              help="A,B: two of --candidates whose FID difference each model's table states with a paired "
                   "bootstrap over the seeds.")
def main(models, candidates, minutes, T, num_samples, out, tables, paired):
    out = Path(out)
    tables = Path(tables) if tables else out
    meta = provenance(__spec__.name)
    note = (f"T = {T}, `sdm-convert`'s defaults, `sdm-finetune --minutes {minutes:g}` (or the candidate's steps) with "
            f"one change each; DDIM-50, seeds 0..{num_samples - 1}; FID of the Fashion-MNIST classifier's features "
            "against each model's reference images (not comparable with Inception FID, nor across data sets: "
            "compare the ratios to each model's ANN). Sample MSE to ANN: the mean pixel MSE between each SNN sample and the "
            "ANN's sample of the same seed.")
    rows, runs = [], [Run.parse(spec, minutes) for spec in candidates]
    if paired and (len(paired) != 2 or not set(paired) <= {run.spec for run in runs if run.fine_tunes}):
        raise click.BadParameter(f"{','.join(paired)}: name two fine-tuned runs of --candidates", param_hint="--paired")
    for spec in models:
        model = _Model(spec, T, num_samples, out)
        full_rows = _model_rows(model, runs, tables)
        model_rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in full_rows]
        described = {run.spec: CANDIDATES[run.name] for run in runs}
        model_note = f"{note} {paired_difference(model, full_rows, *paired)}" if paired else note
        write_table(model_rows, tables / model.file_name, meta, model_note, candidates=described, minutes=minutes)
        rows += model_rows
        text = write_table(rows, tables, meta, note, candidates=described, minutes=minutes)
    click.echo(text)


if __name__ == "__main__":
    main()
