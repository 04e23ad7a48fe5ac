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
from sdm.snn.coding import SpikeCode

E_AC_PJ = 0.9
E_MAC_PJ = 4.6

# The same 45 nm table (Horowitz, "Computing's energy problem", ISSCC 2014) for integer arithmetic:
# an 8 x 8-bit multiply costs 0.2 pJ, a 32-bit integer add 0.1 pJ (FP32: 3.7 + 0.9 = 4.6 pJ, above).
E_INT8_MULT_PJ = 0.2
E_INT32_ADD_PJ = 0.1
WEIGHT_BITS = 8


# The SNN in the quantised ANN's arithmetic: a spike adds an 8-bit weight into a 32-bit sum (one
# 32-bit integer add), and an analog input is an 8-bit value in an integer MAC.
ANALOG_INPUT_BITS = 8


def activation_bits(levels: int) -> int:
    """Bits of an activation quantised to `levels` signed levels (2L + 1 for L levels per side)."""
    return math.ceil(math.log2(levels))


def int_mac_pj(activation_bits: int, weight_bits: int = WEIGHT_BITS) -> float:
    """An integer MAC of a b-bit activation and a w-bit weight into a 32-bit accumulator: an array
    multiplier's energy grows with the product of its widths (0.2 pJ at 8 x 8), plus the 32-bit add."""
    return E_INT8_MULT_PJ * activation_bits * weight_bits / 64 + E_INT32_ADD_PJ


@dataclass(frozen=True)
class SNNSpend:
    """What an SNN computes per denoising step, priced by either arithmetic (`quantised_ann_reference`)."""

    macs: float                # analog-input MACs
    accumulates: float         # spike accumulates and window accumulations
    spike_accumulates: float   # the spikes' share of them
    spiking_dense_ops: float   # every synapse fed by spikes at every step (firing rate 1)
    T: int

    def pj(self, integer: bool) -> float:
        if integer:
            return self.accumulates * E_INT32_ADD_PJ + self.macs * int_mac_pj(ANALOG_INPUT_BITS)
        return self.accumulates * E_AC_PJ + self.macs * E_MAC_PJ

    def break_even(self, target_pj: float, integer: bool) -> float | None:
        """The mean firing rate at which the SNN spends `target_pj` (None where its fixed part exceeds it)."""
        ac = E_INT32_ADD_PJ if integer else E_AC_PJ
        fixed = self.pj(integer) - self.spike_accumulates * ac
        rate = (target_pj - fixed) / (self.spiking_dense_ops * ac) if self.spiking_dense_ops else math.nan
        return rate if rate > 0 else None


def quantised_ann_reference(ann_macs: float, levels: int, spend: SNNSpend) -> dict:
    """The second reference: the same ANN with activations quantised to the SNN's `levels` signed levels
    (2T + 1 in the rate code, 2^(T+1) - 1 in the weighted code) and 8-bit weights, in integer MACs.

    Beside it the SNN in two arithmetics, each labelled: FP32 (the paper's convention, the headline:
    mixed against this integer reference, which makes an SNN look 9-24x worse than it is) and the
    same integer arithmetic (a spike's accumulate a 32-bit integer add, 0.1 pJ; an analog input an
    8-bit integer MAC). `break_even_*` is the mean firing rate at which the SNN would spend what the
    quantised ANN does; `_no_analog` leaves the SNN's analog part out (spike ACs against MACs alone).
    """
    bits = activation_bits(levels)
    mac_pj = int_mac_pj(bits)
    step_pj = ann_macs * mac_pj
    return {"activation_bits": bits, "weight_bits": WEIGHT_BITS, "levels": levels, "pJ_per_mac": mac_pj,
            "energy_uJ_per_step": step_pj / 1e6,
            "break_even_firing_rate_fp32": spend.break_even(step_pj, integer=False),
            "break_even_firing_rate_integer": spend.break_even(step_pj, integer=True),
            "break_even_firing_rate_no_analog_fp32": mac_pj / (spend.T * E_AC_PJ),
            "break_even_firing_rate_no_analog_integer": mac_pj / (spend.T * E_INT32_ADD_PJ),
            "snn_integer_energy_uJ_per_step": spend.pj(integer=True) / 1e6,
            "energy_ratio_snn_fp32_to_quantised_ann": spend.pj(integer=False) / step_pj if step_pj else math.nan,
            "energy_ratio_snn_integer_to_quantised_ann": spend.pj(integer=True) / step_pj if step_pj else math.nan,
            "source": "45 nm integer arithmetic (Horowitz, ISSCC 2014): 8x8-bit multiply 0.2 pJ scaled by "
                      "bit widths, 32-bit add 0.1 pJ; the SNN in integer arithmetic: 0.1 pJ per accumulate, "
                      f"{int_mac_pj(ANALOG_INPUT_BITS):.2g} pJ per MAC of an {ANALOG_INPUT_BITS}-bit analog input"}


# Roles of a layer in the accounting. MAC roles read analog values; 'spiking' layers read spikes;
# 'accumulation' is the addition of each step's analog value into a window sum (one AC per value and step).
MAC_ROLES = ("input", "analog", "timestep", "attention")
ROLES = (*MAC_ROLES, "spiking", "accumulation", "nonsynaptic")


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
    macs_per_step: float | None = None  # the layer's MACs in one spiking step: what the ANN of the same
                                        # graph computes (None: dense_ops / T, a layer run at every step)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown layer role {self.role!r}; use one of {ROLES}")

    @property
    def spiking_input(self) -> bool:
        return self.role == "spiking"

    @property
    def accumulates(self) -> float:
        if self.role == "accumulation":
            return self.dense_ops
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


def synaptic_ops(x: torch.Tensor, outputs: int, fan_in: int, batch: int, spiking: bool) -> tuple[float, float]:
    """(operations, operations per spiking step) per image of a synaptic layer that reads `x` (the T
    steps folded into its batch of `batch` images) and writes `outputs` values of `fan_in` synapses each.
    A spiking input is counted at every step; an analog one only at the steps whose values differ
    (`distinct_steps`: a constant input computes once). The one count behind every energy figure."""
    ops = outputs * fan_in / batch
    steps = max(x.shape[0] // batch, 1)
    per_step = ops / steps
    if not spiking:
        ops *= distinct_steps(x, batch) / steps
    return ops, per_step


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
            ops, per_step = synaptic_ops(x, output.numel(), module.weight[0].numel(), batch, role(name) == "spiking")
            entry = totals.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            entry[3] += per_step
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
    return [LayerActivity(name, role(name), ops, nonzero / count if count else 0.0, per_step)
            for name, (ops, nonzero, count, per_step) in totals.items()]


def ann_macs(model: nn.Module, sample: torch.Tensor, timestep: torch.Tensor) -> float:
    """MACs of one forward pass per image (torch's FLOP counter / 2).

    torch's counter knows the attention kernels of GPUs but not the CPU's, so the ANN's attention
    products (the Q K^T and A V matrix products a spiking network's accounting counts) would go
    uncounted on a CPU; the CPU kernel is given the same formula."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def attention(query_shape, key_shape, value_shape, *_, out_shape=None, **__):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention})
    with torch.no_grad(), counter:
        model(sample, timestep)
    return counter.get_total_flops() / 2 / sample.shape[0]


COUNTING = ("spike accumulates: one per synapse a spike reaches; MACs: one per synapse at every spiking step where a "
            "layer's analog input changes, so a layer fed the same input at every step (input image, window-mode analog "
            "output, timestep path) counts once per window; a layer run once per window on its accumulated input "
            "counts its MACs once, and the accumulation T - 1 accumulates per input value")


def _same_graph_macs(layers: list[LayerActivity], T: int) -> float:
    """The MACs per step of the ANN of the same graph: each synaptic layer's MACs in one spiking step."""
    return sum(layer.dense_ops / T if layer.macs_per_step is None else layer.macs_per_step
               for layer in layers if layer.role not in ("nonsynaptic", "accumulation"))


def _per_image(layers: list[LayerActivity], acs: float, macs: float, step_pj: float, denoising_steps: int) -> dict:
    """A step's operations, by kind, over the `denoising_steps` of one image."""
    by_role = {role: sum(layer.macs for layer in layers if layer.role == role) for role in MAC_ROLES}
    window = sum(layer.accumulates for layer in layers if layer.role == "accumulation")
    return {"accumulates": acs * denoising_steps, "macs": macs * denoising_steps,
            "window_accumulation_acs": window * denoising_steps,
            "input_layer_macs": by_role["input"] * denoising_steps,
            "other_analog_macs": (macs - by_role["input"]) * denoising_steps,
            "timestep_path_macs": by_role["timestep"] * denoising_steps,
            "attention_macs": by_role["attention"] * denoising_steps,
            "energy_mJ": step_pj * denoising_steps / 1e9}


def energy_report(model: nn.Module, sample: torch.Tensor, timestep: torch.Tensor, *, denoising_steps: int,
                  ann: nn.Module | None = None, ann_macs_per_step: float | None = None) -> dict:
    """Per-layer activity and energy per denoising step and per image, beside the ANN's MACs.

    `model` must offer `layer_activity(sample, timestep) -> list[LayerActivity]` (spiking models do).
    The ANN's MACs per step are `ann_macs_per_step` (what `ann_macs` counted on these inputs, for a
    caller that reports many SNNs of one ANN), else `ann` measured with the FLOP counter; without
    either, the spiking model's layers give the ANN of the same graph: each one's MACs in one step.
    """
    if not hasattr(model, "layer_activity"):
        raise SDMError(f"{type(model).__name__} is not a spiking model; energy accounting needs spikes")
    layers = model.layer_activity(sample, timestep)
    T = int(model.config.T)
    acs = sum(layer.accumulates for layer in layers)
    macs = sum(layer.macs for layer in layers)
    step_pj = acs * E_AC_PJ + macs * E_MAC_PJ
    if ann_macs_per_step is None and ann is not None:
        ann_macs_per_step = ann_macs(ann, sample, timestep)
    reference_macs = ann_macs_per_step if ann_macs_per_step is not None else _same_graph_macs(layers, T)
    spiking_layers = [layer for layer in layers if layer.spiking_input]
    spike_acs = sum(layer.accumulates for layer in spiking_layers)
    spike_pj = spike_acs * E_AC_PJ
    spend = SNNSpend(macs, acs, spike_acs, sum(layer.dense_ops for layer in spiking_layers), T)
    code = SpikeCode(getattr(model.config, "coding", "rate"), T)
    quantised = quantised_ann_reference(reference_macs, 2 * code.levels + 1, spend)
    nonsynaptic: dict[str, float] = {}
    for layer in layers:
        if layer.role == "nonsynaptic":
            nonsynaptic[layer.name] = nonsynaptic.get(layer.name, 0.0) + layer.dense_ops * denoising_steps
    return {
        "T": T,
        "coding": code.name,
        "code": code.describe(),
        "denoising_steps": denoising_steps,
        "counting": COUNTING,
        "per_denoising_step": {"accumulates": acs, "macs": macs, "energy_uJ": step_pj / 1e6},
        "per_image": _per_image(layers, acs, macs, step_pj, denoising_steps),
        "analog_nonsynaptic_flops_per_image": nonsynaptic,
        "ann": {"macs_per_step": reference_macs, "energy_uJ_per_step": reference_macs * E_MAC_PJ / 1e6,
                "energy_mJ_per_image": reference_macs * E_MAC_PJ * denoising_steps / 1e9,
                "source": "FLOP counter on the ANN" if ann_macs_per_step is not None else "the SNN's layers, one spiking step each"},
        "energy_ratio_snn_to_ann": step_pj / (reference_macs * E_MAC_PJ) if reference_macs else math.nan,
        "spike_energy_ratio_to_ann": spike_pj / (reference_macs * E_MAC_PJ) if reference_macs else math.nan,
        "quantised_ann": {**quantised, "energy_mJ_per_image": quantised["energy_uJ_per_step"] * denoising_steps / 1e3,
                          "snn_integer_energy_mJ_per_image": quantised["snn_integer_energy_uJ_per_step"]
                          * denoising_steps / 1e3},
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
        kind = {"spiking": "spikes", "accumulation": "analog, summed over the window"}.get(
            layer["role"], f"analog ({layer['role']})")
        rate = f"{layer['input_rate']:.3f}" if layer["role"] == "spiking" else ""
        lines.append(f"| {layer['name']} | {kind} | {rate} | {layer['accumulates']:.3g} | {layer['macs']:.3g} | "
                     f"{layer['energy_pJ'] / 1e3:.3g} |")
    step, image, ann = report["per_denoising_step"], report["per_image"], report["ann"]
    lines += ["", f"Code: {report['code']}.", f"Per denoising step (T = {report['T']}): {step['accumulates']:.3g} ACs, {step['macs']:.3g} MACs, "
              f"{step['energy_uJ']:.3g} uJ; ANN: {ann['macs_per_step']:.3g} MACs, {ann['energy_uJ_per_step']:.3g} uJ.",
              f"Per image ({report['denoising_steps']} denoising steps): {image['energy_mJ']:.3g} mJ "
              f"(ANN {ann['energy_mJ_per_image']:.3g} mJ, ratio {report['energy_ratio_snn_to_ann']:.3f}): "
              f"{image['input_layer_macs']:.3g} input-layer MACs, {image['other_analog_macs']:.3g} other analog-input "
              f"MACs, {image['accumulates']:.3g} accumulates ({image['window_accumulation_acs']:.3g} of them window "
              "accumulations of analog inputs).",
              _quantised_line(report),
              "Analog non-synaptic ops per image (FLOPs, not in the energy): "
              + (", ".join(f"{k} {v:.3g}" for k, v in report["analog_nonsynaptic_flops_per_image"].items()) or "none")
              + ".",
              f"Counting: {report['counting']}.",
              f"Energy: {report['constants']['E_AC_pJ']} pJ per AC, {report['constants']['E_MAC_pJ']} pJ per MAC."]
    return "\n".join(lines)


def _quantised_line(report: dict) -> str:
    q = report["quantised_ann"]

    def even(rate: float | None) -> str:
        return f"{rate:.3f}" if rate is not None else "none (its analog MACs and accumulations alone exceed it)"

    return (f"Second reference, not the paper's convention: the ANN with {q['levels']}-level "
            f"({q['activation_bits']}-bit) activations and {q['weight_bits']}-bit weights in integer MACs "
            f"({q['pJ_per_mac']:.3g} pJ each) spends {q['energy_mJ_per_image']:.3g} mJ per image. The SNN in the "
            f"same integer arithmetic (0.1 pJ per accumulate) spends {q['snn_integer_energy_mJ_per_image']:.3g} mJ "
            f"(SNN / it: {q['energy_ratio_snn_integer_to_quantised_ann']:.2f}; break-even firing rate "
            f"{even(q['break_even_firing_rate_integer'])}, spike ACs against its MACs alone "
            f"{q['break_even_firing_rate_no_analog_integer']:.3f}); in FP32 against it (mixed arithmetic): "
            f"{q['energy_ratio_snn_fp32_to_quantised_ann']:.2f}, break-even {even(q['break_even_firing_rate_fp32'])} "
            f"({q['break_even_firing_rate_no_analog_fp32']:.3f}).")
