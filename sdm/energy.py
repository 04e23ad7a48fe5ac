"""Energy and activity of spiking models (the accounting of Spiking Diffusion Models).

A synaptic layer fed by spikes performs accumulates (AC, 0.9 pJ each, 45 nm): one per synapse that a
spike reaches, i.e. its dense operation count times the fraction of its inputs that spiked. A layer
fed by analog values performs multiply-accumulates (MAC, 4.6 pJ each). The ANN it is compared with
performs MACs only. Norms, softmax and element-wise ops are left out, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sdm.errors import SDMError

E_AC_PJ = 0.9
E_MAC_PJ = 4.6


@dataclass
class LayerActivity:
    """One synaptic layer over one forward pass (a denoising step), per image."""

    name: str
    spiking_input: bool
    dense_ops: float        # operations if every synapse were used, summed over the T steps
    input_rate: float       # fraction of non-zero inputs (the firing rate for spike inputs)

    @property
    def accumulates(self) -> float:
        return self.dense_ops * self.input_rate if self.spiking_input else 0.0

    @property
    def macs(self) -> float:
        return 0.0 if self.spiking_input else self.dense_ops

    @property
    def energy_pj(self) -> float:
        return self.accumulates * E_AC_PJ + self.macs * E_MAC_PJ


def record_synaptic_layers(modules: dict[str, nn.Module], run: Callable[[], object], batch: int,
                           spiking: Callable[[str], bool]) -> list[LayerActivity]:
    """Run `run()` with hooks on conv/linear `modules` and account their inputs and operations.

    `spiking(name)` says whether a layer's input is a spike train; `batch` is the number of images.
    """
    totals: dict[str, list[float]] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            fan_in = module.weight[0].numel()
            entry = totals.setdefault(name, [0.0, 0.0, 0.0])
            entry[0] += output.numel() * fan_in / batch
            entry[1] += float((x != 0).sum())
            entry[2] += x.numel()
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return [LayerActivity(name, spiking(name), ops, nonzero / count if count else 0.0)
            for name, (ops, nonzero, count) in totals.items()]


def ann_macs(model: nn.Module, sample: torch.Tensor, timestep: torch.Tensor) -> float:
    """MACs of one forward pass per image (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(sample, timestep)
    return counter.get_total_flops() / 2 / sample.shape[0]


def energy_report(model: nn.Module, sample: torch.Tensor, timestep: torch.Tensor, *, denoising_steps: int,
                  ann: nn.Module | None = None) -> dict:
    """Per-layer activity and energy per denoising step and per image, beside the ANN's MACs.

    `model` must offer `layer_activity(sample, timestep) -> list[LayerActivity]` (spiking models do).
    `ann`, when given, is measured with the FLOP counter; otherwise the spiking model's own dense
    operations divided by T stand in for the ANN of the same architecture.
    """
    if not hasattr(model, "layer_activity"):
        raise SDMError(f"{type(model).__name__} is not a spiking model; energy accounting needs spikes")
    layers = model.layer_activity(sample, timestep)
    T = int(model.config.T)
    acs = sum(layer.accumulates for layer in layers)
    macs = sum(layer.macs for layer in layers)
    step_pj = acs * E_AC_PJ + macs * E_MAC_PJ
    reference_macs = ann_macs(ann, sample, timestep) if ann is not None else sum(layer.dense_ops for layer in layers) / T
    spiking_layers = [layer for layer in layers if layer.spiking_input]
    return {
        "T": T,
        "denoising_steps": denoising_steps,
        "per_denoising_step": {"accumulates": acs, "macs": macs, "energy_uJ": step_pj / 1e6},
        "per_image": {"accumulates": acs * denoising_steps, "macs": macs * denoising_steps,
                      "energy_mJ": step_pj * denoising_steps / 1e9},
        "ann": {"macs_per_step": reference_macs, "energy_uJ_per_step": reference_macs * E_MAC_PJ / 1e6,
                "energy_mJ_per_image": reference_macs * E_MAC_PJ * denoising_steps / 1e9,
                "source": "FLOP counter on the ANN" if ann is not None else "dense operations of the SNN / T"},
        "energy_ratio_snn_to_ann": step_pj / (reference_macs * E_MAC_PJ) if reference_macs else math.nan,
        "mean_input_firing_rate": (sum(layer.input_rate * layer.dense_ops for layer in spiking_layers)
                                   / max(sum(layer.dense_ops for layer in spiking_layers), 1e-12)),
        "constants": {"E_AC_pJ": E_AC_PJ, "E_MAC_pJ": E_MAC_PJ},
        "layers": [{**asdict(layer), "accumulates": layer.accumulates, "macs": layer.macs,
                    "energy_pJ": layer.energy_pj} for layer in layers],
    }


def energy_markdown(report: dict) -> str:
    """The per-layer table and totals of `energy_report`, for people."""
    lines = ["| layer | input | firing rate | ACs | MACs | energy (nJ) |", "|---|---|---|---|---|---|"]
    for layer in report["layers"]:
        kind = "spikes" if layer["spiking_input"] else "analog"
        rate = f"{layer['input_rate']:.3f}" if layer["spiking_input"] else ""
        lines.append(f"| {layer['name']} | {kind} | {rate} | {layer['accumulates']:.3g} | {layer['macs']:.3g} | "
                     f"{layer['energy_pJ'] / 1e3:.3g} |")
    step, image, ann = report["per_denoising_step"], report["per_image"], report["ann"]
    lines += ["", f"Per denoising step (T = {report['T']}): {step['accumulates']:.3g} ACs, {step['macs']:.3g} MACs, "
              f"{step['energy_uJ']:.3g} uJ; ANN: {ann['macs_per_step']:.3g} MACs, {ann['energy_uJ_per_step']:.3g} uJ.",
              f"Per image ({report['denoising_steps']} denoising steps): {image['energy_mJ']:.3g} mJ "
              f"(ANN {ann['energy_mJ_per_image']:.3g} mJ, ratio {report['energy_ratio_snn_to_ann']:.3f}).",
              f"Energy: {report['constants']['E_AC_pJ']} pJ per AC, {report['constants']['E_MAC_pJ']} pJ per MAC."]
    return "\n".join(lines)
