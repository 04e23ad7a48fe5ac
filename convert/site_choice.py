"""Which sites spike and which analog inputs are spike-encoded, chosen to meet an energy budget.

A conversion decides two things per site that trade energy for error. An activation kept analog
(`analog_sites`) makes the layers it feeds multiply (4.6 pJ per MAC) instead of accumulate its spikes
(0.9 pJ per spike and synapse); an analog input of a synaptic layer (a shortcut, a sampler, an
attention projection) multiplies once per window, or, spike-encoded (`encode_sites`), accumulates.
What each site is worth differs by orders of magnitude between sites and models (`sdm-convert
--sensitivity`), so every candidate change is measured on the converted network itself: its energy
per image (`sdm.snn.energy.energy_report`) and its eps error against the ANN on the probes, weighed
over t as fine-tuning weighs its loss.

Over the budget, changes that save energy are taken in order of energy saved per unit of error
added, until the budget is met; with energy to spare, changes that cut error are taken in order of
error removed per unit of energy, while the budget holds. Each single change is measured once from
the starting network and each accepted combination again, so the cost is one conversion per site
and one per change taken. The spikes themselves are left to fine-tuning under the same budget
(`convert.finetune.energy_objective`), which prices them by the synapses they reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

import calibration.graph as unet_graph
from calibration import CalibrationStats, ConversionConfig, Thresholds
from convert.conversion import convert
from convert.report import eps_fidelity
from sdm.diffusion.snr import min_snr_weights
from sdm.errors import SDMError
from sdm.snn.energy import ann_macs, energy_report

# Each change: what it does to a site, and whether it saves energy (taken over the budget) or cuts error.
SAVING = {"encode": "spike-encode the analog input", "spike": "let the activation kept analog spike"}
IMPROVING = {"analog": "keep the activation analog", "unencode": "keep the input analog (window-accumulated)"}


@dataclass(frozen=True)
class Measure:
    energy_ratio: float  # SNN / ANN energy per image
    error: float         # eps relative MSE over the probes spread over t, each weighted by Min-SNR-gamma

    @classmethod
    def of(cls, ann, snn, probes, weights, spread, denoising_steps: int, batch_size: int,
           ann_macs: float) -> Measure:
        fidelity = eps_fidelity(ann, snn, probes, batch_size=batch_size, weights=weights)
        report = energy_report(snn, *spread, denoising_steps=denoising_steps, ann_macs_per_step=ann_macs)
        return cls(float(report["energy_ratio_snn_to_ann"]), float(fidelity["eps_rel_mse_weighted"]))


@dataclass
class SiteChoice:
    """What the choice started from, what it changed, and the conversion it ended with."""

    budget: float
    config: ConversionConfig
    start: Measure
    end: Measure
    changes: list[dict] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.end.energy_ratio <= self.budget

    def record(self) -> dict:
        return {"budget": self.budget, "met": self.met,
                "start": vars(self.start), "end": vars(self.end), "changes": self.changes,
                "encode_sites": list(self.config.encode_sites), "analog_sites": list(self.config.analog_sites),
                "measured_on": "the probes: eps relative error against the ANN on those spread over t, each "
                               "weighted by Min-SNR-gamma; energy per image on the spread subset; fine-tuning "
                               "under the same budget then prices the spikes"}


class _Conversions:
    """Converts the ANN for a set of encoded inputs and analog activations, and measures it. The
    thresholds, which do not depend on which sites spike, are computed once (and the ANN's graph is
    exported once: `calibration.graph.capture` keeps it)."""

    def __init__(self, ann, stats: CalibrationStats, probes, spread, scheduler_config: dict, denoising_steps: int,
                 batch_size: int):
        self.ann, self.config, self.thresholds = ann, stats.config, stats.thresholds()
        weights = min_snr_weights(probes[1], scheduler_config)
        self.measure_args = (probes, weights, spread, denoising_steps, batch_size, ann_macs(ann, *spread))
        captured = unet_graph.capture(ann)
        sites = unet_graph.conversion_sites(captured, encode_analog=True)
        self.encoders = [s.name for s in sites if s.is_encoder]
        self.activations = [s.name for s in sites if not s.is_encoder]
        readout = unet_graph.readout_sites(captured, sites) if self.config.readout == "analog" else []
        self.movable = [name for name in self.activations if name not in readout]

    def config_of(self, encoded: frozenset, analog: frozenset) -> ConversionConfig:
        return self.config.replace(encode_analog=False, encode_sites=tuple(n for n in self.encoders if n in encoded),
                                   analog_sites=tuple(n for n in self.activations if n in analog))

    def measure(self, encoded: frozenset, analog: frozenset) -> Measure:
        thresholds = Thresholds(self.thresholds.fingerprint, self.config_of(encoded, analog), self.thresholds.sites)
        snn = convert(self.ann, thresholds)
        return Measure.of(self.ann, snn, *self.measure_args)


def _apply(kind: str, site: str, encoded: frozenset, analog: frozenset) -> tuple[frozenset, frozenset]:
    if kind == "encode":
        return encoded | {site}, analog
    if kind == "unencode":
        return encoded - {site}, analog
    if kind == "spike":
        return encoded, analog - {site}
    return encoded, analog | {site}


@torch.no_grad()
def choose_sites(ann, stats: CalibrationStats, budget: float, probes, spread, *, scheduler_config: dict,
                 denoising_steps: int, batch_size: int = 32, progress: bool = True) -> SiteChoice:
    """The conversion of `stats` (observed with every encoder site) whose site lists best meet `budget`,
    a ratio to the ANN's energy per image; starts from the sites that `stats.config` names. Errors are
    weighed over t as fine-tuning weighs its loss (`sdm.diffusion.snr`): what a sample shows is decided
    at high noise, where a plain eps error gives the pairs about 1 % of its weight."""
    if not budget > 0:
        raise SDMError(f"the energy budget must be a positive ratio to the ANN's energy, got {budget}")
    if not stats.encoders_observed:
        raise SDMError("choosing sites under an energy budget needs statistics of every analog input: calibrate "
                       "with encoders (encode_analog at prepare)")
    config = stats.config
    conversions = _Conversions(ann, stats, probes, spread, scheduler_config, denoising_steps, batch_size)
    encoded = frozenset(conversions.encoders if config.encode_analog else
                        unet_graph.match_sites(list(config.encode_sites), conversions.encoders, "encode_sites"))
    analog = frozenset(unet_graph.match_sites(list(config.analog_sites), conversions.activations))
    with tqdm(total=1, desc="choosing sites", unit="conversion", disable=not progress) as bar:
        search = GreedySearch(conversions.measure, conversions.encoders, conversions.movable, bar)
        encoded, analog = search.run(encoded, analog, budget)
    return SiteChoice(budget, conversions.config_of(encoded, analog), search.start, search.current, search.changes)


class GreedySearch:
    """The two greedy passes over site changes, given `measure(encoded, analog) -> Measure`."""

    def __init__(self, measure, encoders: list[str], movable: list[str], bar=None):
        self._measure, self.encoders, self.movable, self.bar = measure, encoders, movable, bar
        self.changes: list[dict] = []

    def measure(self, encoded: frozenset, analog: frozenset) -> Measure:
        if self.bar is not None:
            self.bar.update()
        return self._measure(encoded, analog)

    def run(self, encoded: frozenset, analog: frozenset, budget: float) -> tuple[frozenset, frozenset]:
        self.state = encoded, analog
        self.start = self.current = self.measure(*self.state)
        if self.current.energy_ratio > budget:  # save energy, cheapest error first
            base = self.current
            saving = [c for c in self._singles(SAVING) if c[2].energy_ratio < base.energy_ratio]
            saving.sort(key=lambda c: -(base.energy_ratio - c[2].energy_ratio) / max(c[2].error - base.error, 1e-9))
            self._expect(len(saving))
            for kind, site, single in saving:
                if self.current.energy_ratio <= budget:
                    break
                self._take(kind, site, self._measure_from(base, kind, site, single))
        if self.current.energy_ratio <= budget:  # spend what is left of the budget where it removes most error
            base = self.current
            improving = [c for c in self._singles(IMPROVING) if c[2].error < base.error]
            improving.sort(key=lambda c: -(base.error - c[2].error) / max(c[2].energy_ratio - base.energy_ratio, 1e-9))
            self._expect(len(improving))
            for kind, site, single in improving:
                if single.energy_ratio - base.energy_ratio > budget - self.current.energy_ratio:
                    continue  # alone it already costs more than what is left
                if not self._spikes(*_apply(kind, site, *self.state)):
                    continue
                measure = self._measure_from(base, kind, site, single)
                if measure.energy_ratio <= budget and measure.error < self.current.error:
                    self._take(kind, site, measure)
        if self.bar is not None:  # the passes stop early: what was expected and not needed is dropped
            self.bar.total = self.bar.n
            self.bar.refresh()
        return self.state

    def _measure_from(self, base: Measure, kind: str, site: str, single: Measure) -> Measure:
        """The sites after this change, measured; while nothing has changed since the pass began (its
        first change), that is the change measured alone."""
        return single if self.current is base else self.measure(*_apply(kind, site, *self.state))

    def _expect(self, conversions: int) -> None:
        """At most this many more conversions (the progress bar's total)."""
        if self.bar is not None:
            self.bar.total += conversions
            self.bar.refresh()

    def _singles(self, kinds: dict) -> list[tuple[str, str, Measure]]:
        """Every change of these kinds from the current sites, each measured alone."""
        encoded, analog = self.state
        candidates = ([("encode", n) for n in self.encoders if n not in encoded]
                      + [("spike", n) for n in self.movable if n in analog]
                      + [("unencode", n) for n in self.encoders if n in encoded]
                      + [("analog", n) for n in self.movable if n not in analog])
        candidates = [(kind, site) for kind, site in candidates
                      if kind in kinds and self._spikes(*_apply(kind, site, *self.state))]
        self._expect(len(candidates))
        return [(kind, site, self.measure(*_apply(kind, site, *self.state))) for kind, site in candidates]

    def _spikes(self, encoded: frozenset, analog: frozenset) -> bool:
        """Whether any activation still spikes (a conversion that keeps them all analog converts nothing)."""
        return not self.movable or not analog.issuperset(self.movable)

    def _take(self, kind: str, site: str, measure: Measure) -> None:
        self.state = _apply(kind, site, *self.state)
        self.current = measure
        self.changes.append({"change": SAVING.get(kind) or IMPROVING[kind], "site": site,
                             "energy_ratio": round(measure.energy_ratio, 5), "error": round(measure.error, 6)})
