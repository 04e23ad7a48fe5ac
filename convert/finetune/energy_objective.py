"""Energy as a fine-tuning objective: spikes priced by the synapses they reach, and a budget.

A spike costs one accumulate per synapse it reaches, so a spike of a site that feeds a wide 3x3
convolution at full resolution costs far more than one feeding a narrow layer: a penalty on the mean
spike count prices them alike. `SpikeEnergy` prices each site's spike count by its fan-out
(`convert.accounting.spike_costs`) at 0.9 pJ per accumulate, relative to the ANN's energy per denoising
step: the term is the spikes' share of the SNN / ANN energy ratio, the share fine-tuning can move.
The rest (analog MACs, window accumulations) does not depend on the spikes and is measured once.

`BudgetController` turns an energy budget (a ratio to the ANN's energy) into the penalty's weight by
dual ascent: the weight rises while the measured ratio is over its target (2 % under the budget) and
falls, to zero, while it is under, in steps scaled by the distillation loss so that the two terms stay
commensurate.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from convert.accounting import spike_costs
from sdm.errors import SDMError
from sdm.io import write_json
from sdm.snn.energy import E_AC_PJ, E_MAC_PJ, energy_report

BUDGET_FILE = "energy_budget.json"
DUAL_STEP = 0.05  # weight change per step, in units of the loss, per unit of relative excess over the target
# Dual ascent settles on its target from above, and the EMA weights lag the last steps: the target sits
# this far under the budget, so that the result meets it (a 2,000-step run aimed at 0.6 ended at 0.6015).
BUDGET_MARGIN = 0.02


class SpikeEnergy:
    """The spikes' share of the SNN / ANN energy ratio, differentiable in the spike counts."""

    def __init__(self, snn, ann, sample: torch.Tensor, timestep: torch.Tensor):
        costs, neurons = spike_costs(snn), snn.neurons()
        # Keyed by the neuron itself, and every spiking site named (0 where its spikes reach no synapse),
        # so that counts from a neuron this was not built for are an error, not free spikes.
        self.cost = {neurons[site]: costs.get(site, 0.0) for site in snn.spiking_sites()}
        report = energy_report(snn, sample, timestep, denoising_steps=1, ann=ann)
        self.ann_pj = report["ann"]["macs_per_step"] * E_MAC_PJ
        self.fixed_ratio = report["energy_ratio_snn_to_ann"] - report["spike_energy_ratio_to_ann"]

    def ratio(self, neurons, images: int) -> torch.Tensor:
        """From the counts the rate form kept (`sdm.snn.neurons.keeping_counts`) for `images` images."""
        spiked = [n for n in neurons if n.counts]
        unknown = [n for n in spiked if n not in self.cost]
        if unknown:
            raise SDMError(f"{len(unknown)} neuron(s) spiked that the energy term was not built for (a site re-created "
                           "or switched to spiking after it): build SpikeEnergy for the model as it is now")
        acs = sum(self.cost[n] * c.sum() for n in spiked for c in n.counts)
        return acs * E_AC_PJ / (images * self.ann_pj)


class BudgetController:
    """The energy penalty's weight: fixed (no budget), or adapted by dual ascent to meet `budget`.

    Its state is saved beside each checkpoint (`save`), so a resumed run continues with the weight
    it had; a state from another step than the checkpoint's is refused."""

    def __init__(self, weight: float, budget: float | None, out: Path):
        self.weight, self.budget, self.path, self.step = float(weight), budget, Path(out) / BUDGET_FILE, 0
        self.resumed = False

    def update(self, step: int, ratio: float, loss: float) -> float:
        """The weight for this step, after seeing its measured ratio (averaged over processes)."""
        if self.budget is None:
            return self.weight
        if not self.resumed:
            self._resume(step)
        if dist.is_available() and dist.is_initialized():
            measured = torch.tensor([ratio], dtype=torch.float64)
            dist.all_reduce(measured)
            ratio = float(measured) / dist.get_world_size()
        target = self.budget * (1.0 - BUDGET_MARGIN)
        self.weight = max(0.0, self.weight + DUAL_STEP * loss * (ratio / target - 1.0))
        self.step = step + 1
        return self.weight

    def _resume(self, step: int) -> None:
        self.resumed = True
        if step == 0:
            return
        if not self.path.is_file():
            raise SDMError(f"'{self.path}' is missing: the run cannot resume its energy-budget weight; start it again")
        try:
            state = json.loads(self.path.read_text())
            recorded, weight = int(state["step"]), float(state["weight"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise SDMError(f"'{self.path}' is unreadable ({type(err).__name__}): the run cannot resume its "
                           "energy-budget weight; start it again") from None
        if recorded != step:
            raise SDMError(f"'{self.path}' holds the weight of step {recorded}, the checkpoint is at step {step}; "
                           "start the run again")
        self.weight, self.step = weight, step

    def save(self) -> None:
        if self.budget is None:
            return
        write_json({"step": self.step, "weight": self.weight, "budget": self.budget}, self.path)
