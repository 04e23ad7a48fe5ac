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


# Roles of a layer in the accounting. MAC roles read analog values; 'spiking' layers read spikes.
MAC_ROLES = ("input", "analog", "timestep", "attention")
ROLES = (*MAC_ROLES, "spiking", "nonsynaptic")


@dataclass
class LayerActivity:
    """One layer over one forward pass (a denoising step), per image.

    `dense_ops` counts what the layer computes over the T spiking steps: for a synaptic layer fed by
    spikes, every synapse at every step (scaled by the firing rate into accumulates); for one fed by
    analog values, its MACs at every step where its input changes. A layer whose input is the same at
    every step (the repeated input image, a window-mode analog op's output, the timestep path)
    computes once per window, not T times. 'nonsynaptic' entries are the analog element-wise ops a
    chip would still compute (norms, softmax, activations of means): FLOPs, reported, not in the energy.
    """

    name: str
    role: str               # one of ROLES
    dense_ops: float
    input_rate: float       # fraction of non-zero inputs (the firing rate for spike inputs)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown layer role {self.role!r}; use one of {ROLES}")

    @property
    def spiking_input(self) -> bool:
        return self.role == "spiking"

    @property
    def accumulates(self) -> float:
        return self.dense_ops * self.input_rate if self.spiking_input else 0.0

    @property
    def macs(self) -> float:
        return self.dense_ops if self.role in MAC_ROLES else 0.0

    @property
    def energy_pj(self) -> float:
        return self.accumulates * E_AC_PJ + self.macs * E_MAC_PJ


def distinct_steps(x: torch.Tensor, batch: int) -> int:
    """How many of the T steps folded into `x`'s batch ([T*B, ...]) must be computed: 1 when every
    step carries the same values (a constant input computes once), T otherwise."""
    steps = x.shape[0] // batch if batch and x.dim() and x.shape[0] % batch == 0 else 1
    if steps <= 1:
        return 1
    x = x.reshape(steps, -1)
    return 1 if bool((x == x[:1]).all()) else steps


def record_synaptic_layers(modules: dict[str, nn.Module], run: Callable[[], object], batch: int,
                           role: Callable[[str], str]) -> list[LayerActivity]:
    """Run `run()` with hooks on conv/linear `modules` and account their inputs and operations.

    `role(name)` is a layer's role ('spiking' for spike inputs); `batch` is the number of images.
    Analog layers whose input repeats over the folded steps are counted once (`distinct_steps`).
    """
    totals: dict[str, list[float]] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            fan_in = module.weight[0].numel()
            ops = output.numel() * fan_in / batch
            if role(name) != "spiking":
                ops *= distinct_steps(x, batch) / max(x.shape[0] // batch, 1)
            entry = totals.setdefault(name, [0.0, 0.0, 0.0])
            entry[0] += ops
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
    return [LayerActivity(name, role(name), ops, nonzero / count if count else 0.0)
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
    synaptic = [layer for layer in layers if layer.role != "nonsynaptic"]
    reference_macs = (ann_macs(ann, sample, timestep) if ann is not None
                      else sum(layer.dense_ops for layer in synaptic) / T)
    spiking_layers = [layer for layer in layers if layer.spiking_input]
    by_role = {role: sum(layer.macs for layer in layers if layer.role == role) for role in MAC_ROLES}
    nonsynaptic: dict[str, float] = {}
    for layer in layers:
        if layer.role == "nonsynaptic":
            nonsynaptic[layer.name] = nonsynaptic.get(layer.name, 0.0) + layer.dense_ops * denoising_steps

    def per_image(value: float) -> float:
        return value * denoising_steps

    return {
        "T": T,
        "denoising_steps": denoising_steps,
        "counting": "spike accumulates: one per synapse a spike reaches; MACs: one per synapse at every spiking "
                    "step where a layer's analog input changes, so a layer fed the same input at every step "
                    "(input image, window-mode analog output, timestep path) counts once per window",
        "per_denoising_step": {"accumulates": acs, "macs": macs, "energy_uJ": step_pj / 1e6},
        "per_image": {"accumulates": per_image(acs), "macs": per_image(macs),
                      "input_layer_macs": per_image(by_role["input"]),
                      "other_analog_macs": per_image(macs - by_role["input"]),
                      "timestep_path_macs": per_image(by_role["timestep"]),
                      "attention_macs": per_image(by_role["attention"]),
                      "energy_mJ": step_pj * denoising_steps / 1e9},
        "analog_nonsynaptic_flops_per_image": nonsynaptic,
        "ann": {"macs_per_step": reference_macs, "energy_uJ_per_step": reference_macs * E_MAC_PJ / 1e6,
                "energy_mJ_per_image": reference_macs * E_MAC_PJ * denoising_steps / 1e9,
                "source": "FLOP counter on the ANN" if ann is not None else "dense operations of the SNN / T"},
        "energy_ratio_snn_to_ann": step_pj / (reference_macs * E_MAC_PJ) if reference_macs else math.nan,
        "mean_input_firing_rate": (sum(layer.input_rate * layer.dense_ops for layer in spiking_layers)
                                   / max(sum(layer.dense_ops for layer in spiking_layers), 1e-12)),
        "constants": {"E_AC_pJ": E_AC_PJ, "E_MAC_pJ": E_MAC_PJ},
        "layers": [{**asdict(layer), "accumulates": layer.accumulates, "macs": layer.macs,
                    "energy_pJ": layer.energy_pj} for layer in layers if layer.role != "nonsynaptic"],
    }


def energy_markdown(report: dict) -> str:
    """The per-layer table and totals of `energy_report`, for people."""
    lines = ["| layer | input | firing rate | ACs | MACs | energy (nJ) |", "|---|---|---|---|---|---|"]
    for layer in report["layers"]:
        if layer["role"] == "nonsynaptic":
            continue
        kind = "spikes" if layer["role"] == "spiking" else f"analog ({layer['role']})"
        rate = f"{layer['input_rate']:.3f}" if layer["role"] == "spiking" else ""
        lines.append(f"| {layer['name']} | {kind} | {rate} | {layer['accumulates']:.3g} | {layer['macs']:.3g} | "
                     f"{layer['energy_pJ'] / 1e3:.3g} |")
    step, image, ann = report["per_denoising_step"], report["per_image"], report["ann"]
    lines += ["", f"Per denoising step (T = {report['T']}): {step['accumulates']:.3g} ACs, {step['macs']:.3g} MACs, "
              f"{step['energy_uJ']:.3g} uJ; ANN: {ann['macs_per_step']:.3g} MACs, {ann['energy_uJ_per_step']:.3g} uJ.",
              f"Per image ({report['denoising_steps']} denoising steps): {image['energy_mJ']:.3g} mJ "
              f"(ANN {ann['energy_mJ_per_image']:.3g} mJ, ratio {report['energy_ratio_snn_to_ann']:.3f}): "
              f"{image['input_layer_macs']:.3g} input-layer MACs, {image['other_analog_macs']:.3g} other analog-input "
              f"MACs, {image['accumulates']:.3g} spike accumulates.",
              "Analog non-synaptic ops per image (FLOPs, not in the energy): "
              + (", ".join(f"{k} {v:.3g}" for k, v in report["analog_nonsynaptic_flops_per_image"].items()) or "none")
              + ".",
              f"Counting: {report['counting']}.",
              f"Energy: {report['constants']['E_AC_pJ']} pJ per AC, {report['constants']['E_MAC_pJ']} pJ per MAC."]
    return "\n".join(lines)
