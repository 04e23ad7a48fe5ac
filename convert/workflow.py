"""ConversionWorkflow: prepare -> calibrate -> (choose sites) -> convert -> judge, for one ANN.

Every command and benchmark that converts a DDPM goes through this one object, so what they do the
same way cannot drift apart: calibration takes its own inputs, batch and seed (`CalibrationInputs`,
recorded in the statistics), never the sampling flags; the held-out probes that judge a conversion
are drawn once and put on the ANN's device once; and a converted SNN is judged by the same fidelity,
energy and profile figures everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from calibration import (
    CalibrationInputs,
    CalibrationStats,
    ConversionConfig,
    calibrate,
    prepare,
    probe_pairs,
    require_ann,
    spread_subset,
)
from convert.accounting import compute_profile
from convert.conversion import convert
from convert.model import ConvertedUNet
from convert.report import eps_fidelity
from convert.site_choice import SiteChoice, choose_sites
from sdm.snn.energy import energy_report

JUDGE_BATCH = 64   # probe pairs per forward pass while judging: a memory bound only, the figures do not depend on it


@dataclass(frozen=True)
class Probes:
    """Held-out pairs that judge a conversion, on the ANN's device: `pairs` (x_t, t, spread) for the
    fidelity figures, `spread` (x_t, t), a few of them over all t, for the energy figures."""

    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    spread: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def of(cls, ann: nn.Module, scheduler_config: dict, count: int = CalibrationInputs.probes) -> Probes:
        """`count` probes from the ANN's own trajectories (a seed range calibration never uses)."""
        device = next(ann.parameters()).device
        pairs = tuple(v.to(device) for v in probe_pairs(ann, scheduler_config, count))
        return cls(pairs, spread_subset(pairs))


def judge(ann: nn.Module, snn: ConvertedUNet, probes: Probes, *, denoising_steps: int, profile: bool = False,
          batch_size: int = JUDGE_BATCH) -> dict:
    """How far `snn` is from `ann` and what it spends, in its own executor: `fidelity` (eps against the
    ANN's on the probes, firing rate), `energy` (per image at `denoising_steps`, against the ANN) and,
    with `profile`, the compute profile."""
    judged = {"fidelity": eps_fidelity(ann, snn, probes.pairs, batch_size=batch_size),
              "energy": energy_report(snn, *probes.spread, denoising_steps=denoising_steps, ann=ann)}
    if profile:
        judged["profile"] = compute_profile(snn)
    return judged


class ConversionWorkflow:
    """One ANN, the conversion asked of it (`config`, given once) and the inputs that calibrate it."""

    def __init__(self, ann: nn.Module, scheduler_config: dict, config: ConversionConfig,
                 inputs: CalibrationInputs | None = None, *, progress: bool = True, label: str = "the model"):
        """`inputs`: the default calibration inputs when None; `label` names the ANN in errors (a checkpoint, a flag)."""
        require_ann(ann, label)
        inputs = inputs or CalibrationInputs()
        config.validate()
        inputs.validate()
        self.ann, self.scheduler_config, self.config, self.inputs = ann, scheduler_config, config, inputs
        self.progress = progress

    @cached_property
    def probes(self) -> Probes:
        return Probes.of(self.ann, self.scheduler_config, self.inputs.probes)

    def calibrate(self, *, encoders: bool = False) -> CalibrationStats:
        """Statistics of the ANN on the calibration inputs, for `config`; with `encoders`, of every analog
        input of a synaptic layer too (what choosing sites under an energy budget needs)."""
        observed = prepare(self.ann, self.config.replace(encode_analog=True) if encoders else self.config)
        pairs = self.inputs.pairs(self.ann, self.scheduler_config)
        calibrate(observed, pairs, batch_size=self.inputs.batch_size, progress=self.progress)
        return observed.stats(self.inputs.record()).for_config(self.config)

    def within_budget(self, stats: CalibrationStats, budget: float, *,
                      denoising_steps: int) -> tuple[CalibrationStats, SiteChoice]:
        """Which activations spike and which analog inputs are spike-encoded to meet `budget` (a ratio to the
        ANN's energy per image), judged on the probes: `stats` (calibrated with `encoders`, so that any analog
        input may be chosen) retargeted to that choice, and the choice itself."""
        choice = choose_sites(self.ann, stats, budget, self.probes.pairs, self.probes.spread,
                              scheduler_config=self.scheduler_config, denoising_steps=denoising_steps,
                              batch_size=JUDGE_BATCH, progress=self.progress)
        return stats.for_config(choice.config), choice

    def convert(self, stats: CalibrationStats, *, source: str = "") -> ConvertedUNet:
        """The SNN that `stats` describe; `source` records the ANN's checkpoint for later commands."""
        snn = convert(self.ann, stats)
        if source:
            snn.source["ckpt"] = source
        return snn

    def fidelity(self, snn: ConvertedUNet) -> dict:
        """`snn`'s eps against the ANN's on the probes, and its firing rate there."""
        return eps_fidelity(self.ann, snn, self.probes.pairs, batch_size=JUDGE_BATCH)

    def judge(self, snn: ConvertedUNet, *, denoising_steps: int, profile: bool = False) -> dict:
        return judge(self.ann, snn, self.probes, denoising_steps=denoising_steps, profile=profile)
