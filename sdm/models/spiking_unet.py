"""The directly trained spiking UNet of Spiking Diffusion Models (Cao et al., IEEE TAI 2024).

Every tensor inside is a sequence [T, B, C, H, W]. The noisy image is presented at every step to an
encoding convolution; pre-spike residual blocks (neuron -> convolution -> normalisation, the time
embedding added to the membrane input of the second neuron) carry an analog residual stream; down-
and up-sampling and optional spiking self-attention act on spikes; the output layer integrates its
synaptic current without firing and its T-step membrane, divided by T, is the noise prediction.

The output layer reads either the last neurons' spikes (`readout="spikes"`) or, as the authors'
reference implementation does, the analog residual stream itself (`readout="analog"`: GroupNorm,
SiLU, averaged over the T steps, then one convolution: MACs once per pass). Spikes at T = 4 carry a
few levels per channel, too few to hand the noisy input on to the prediction at large t, where the
noise prediction is nearly the input itself; the analog readout removes that bottleneck.

With `tsm=True` every convolution gets the Temporal-wise Spiking Mechanism: its synaptic current at
step t is multiplied by a learnable p_t, initialised to 1.0 (so a TSM model with all p_t = 1 is its
pre-spike parent). `from_prespike` builds one from a trained pre-spike checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from safetensors import SafetensorError
from torch import nn

from sdm.errors import ConfigError, SDMError, reason
from sdm.snn.energy import LayerActivity, record_synaptic_layers
from sdm.snn.modes import counting
from sdm.snn.neurons import NEURONS, SpikingNeuron, reset_neurons
from sdm.snn.temporal import READOUTS, fold, unfold

LEGACY_READOUTS = {"spike": "spikes"}  # the name an earlier release saved
SPIKING_PRESETS: dict[str, dict] = {
    "tiny": dict(sample_size=16, in_channels=1, out_channels=1, base_channels=8, channel_mults=(1, 2),
                 attention_levels=(1,), res_blocks=1, norm_groups=4),
    "fmnist-small": dict(sample_size=28, in_channels=1, out_channels=1, base_channels=32, channel_mults=(1, 2, 2),
                         attention_levels=(), res_blocks=1, norm_groups=8),
    # Half as wide: a CPU-sized direct-training run (about 0.6 s per step of 32 images at T = 4 on 2 cores).
    "fmnist-cpu": dict(sample_size=28, in_channels=1, out_channels=1, base_channels=16, channel_mults=(1, 2, 2),
                       attention_levels=(), res_blocks=1, norm_groups=4),
    "fmnist-medium": dict(sample_size=28, in_channels=1, out_channels=1, base_channels=64, channel_mults=(1, 2, 2),
                          attention_levels=(1,), res_blocks=2, norm_groups=16),
    "cifar10-32": dict(sample_size=32, in_channels=3, out_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2),
                       attention_levels=(1,), res_blocks=2, norm_groups=32),
}


class SynapticConv(nn.Module):
    """A convolution applied at every step (steps folded into the batch), with optional TSM factors."""

    def __init__(self, cin: int, cout: int, kernel: int, T: int, tsm: bool, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.T = T
        self.tsm = nn.Parameter(torch.ones(T)) if tsm else None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        current = unfold(self.conv(fold(x_seq)), x_seq.shape[0])
        if self.tsm is not None:
            # In the current's dtype: an fp32 p would promote a bf16-autocast current, and with it every
            # neuron downstream, to fp32 (TSM steps 1.4x slower than pre-spike ones).
            current = current * self.tsm.to(current.dtype).view(-1, *([1] * (current.dim() - 1)))
        return current


class SeqGroupNorm(nn.GroupNorm):
    """GroupNorm of each step's map."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return unfold(super().forward(fold(x_seq)), x_seq.shape[0])


def _neuron(config) -> SpikingNeuron:
    kwargs = dict(surrogate=config.surrogate, alpha=config.alpha, reset=config.reset)
    if config.neuron == "lif":
        kwargs["tau"] = config.tau
    return NEURONS[config.neuron](config.threshold, **kwargs)


class SpikingResBlock(nn.Module):
    """Pre-spike residual block: x + norm(conv(spike(norm(conv(spike(x))) + temb)))."""

    def __init__(self, cin: int, cout: int, temb_dim: int, config, dropout: float):
        super().__init__()
        self.spike1, self.spike2 = _neuron(config), _neuron(config)
        self.conv1 = SynapticConv(cin, cout, 3, config.T, config.tsm)
        self.norm1 = SeqGroupNorm(config.norm_groups, cout)
        self.time = nn.Linear(temb_dim, cout)
        self.conv2 = SynapticConv(cout, cout, 3, config.T, config.tsm)
        self.norm2 = SeqGroupNorm(config.norm_groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = SynapticConv(cin, cout, 1, config.T, config.tsm) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        spikes = self.spike1(x)
        h = self.norm1(self.conv1(spikes)) + self.time(temb)[None, :, :, None, None]
        h = self.norm2(self.conv2(self.dropout(self.spike2(h))))
        return (x if self.shortcut is None else self.shortcut(spikes)) + h


class SpikingSelfAttention(nn.Module):
    """Spiking self-attention (Spikformer-style): spike Q, K, V, no softmax; (K V^T)^T Q, normalised, fires."""

    def __init__(self, channels: int, config, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.spike_in, self.spike_q, self.spike_k, self.spike_v = (_neuron(config) for _ in range(4))
        self.spike_out = _neuron(config)
        self.q, self.k, self.v, self.proj = (SynapticConv(channels, channels, 1, config.T, config.tsm) for _ in range(4))
        self.norm_q, self.norm_k, self.norm_v, self.norm_attn, self.norm_out = (
            SeqGroupNorm(config.norm_groups, channels) for _ in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        s = self.spike_in(x)
        q, k, v = (spike(norm(conv(s))).reshape(T, B, self.heads, C // self.heads, H * W)
                   for spike, norm, conv in ((self.spike_q, self.norm_q, self.q), (self.spike_k, self.norm_k, self.k),
                                             (self.spike_v, self.norm_v, self.v)))
        context = k @ v.transpose(-1, -2)                       # [T, B, h, d, d]: spike coincidence counts
        attended = context.transpose(-1, -2) @ q                # [T, B, h, d, N], linear in N
        out = self.spike_out(self.norm_attn(attended.reshape(T, B, C, H, W)))
        return x + self.norm_out(self.proj(out))


class SpikingDown(nn.Module):
    def __init__(self, channels: int, config):
        super().__init__()
        self.spike = _neuron(config)
        self.conv = SynapticConv(channels, channels, 3, config.T, config.tsm, stride=2)
        self.norm = SeqGroupNorm(config.norm_groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.spike(x)))


class SpikingUp(nn.Module):
    def __init__(self, channels: int, config):
        super().__init__()
        self.spike = _neuron(config)
        self.conv = SynapticConv(channels, channels, 3, config.T, config.tsm)
        self.norm = SeqGroupNorm(config.norm_groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self.spike(x)
        up = unfold(F.interpolate(fold(spikes), scale_factor=2.0, mode="nearest"), x.shape[0])
        return self.norm(self.conv(up))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class SpikingUNet(ModelMixin, ConfigMixin):
    """Multi-step spiking UNet with UNet2DModel's call signature."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 28,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple = (1, 2, 2),
        attention_levels: tuple = (),
        res_blocks: int = 1,
        T: int = 4,
        neuron: str = "lif",
        tau: float = 2.0,
        threshold: float = 1.0,
        reset: str = "value",
        surrogate: str = "atan",
        alpha: float = 2.0,
        norm_groups: int = 8,
        tsm: bool = False,
        dropout: float = 0.0,
        readout: str = "spikes",
    ):
        super().__init__()
        if T < 1:
            raise ConfigError("T", f"must be at least 1, got {T}")
        if neuron not in NEURONS:
            raise SDMError(f"unknown neuron '{neuron}': choose one of {', '.join(NEURONS)}")
        readout = LEGACY_READOUTS.get(readout, readout)
        if readout not in READOUTS:
            raise SDMError(f"unknown readout '{readout}': choose one of {', '.join(READOUTS)}")
        cfg = self.config
        down_factor = 2 ** (len(channel_mults) - 1)
        if sample_size % down_factor:
            raise SDMError(f"sample_size {sample_size} must be divisible by {down_factor} for {len(channel_mults)} levels")
        temb_dim = base_channels * 4
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.encode = SynapticConv(in_channels, base_channels, 3, T, tsm)
        widths = [base_channels * m for m in channel_mults]
        self.down, skips = self._down_path(widths, base_channels, res_blocks, attention_levels, temb_dim, dropout)
        ch = widths[-1]
        self.mid = nn.ModuleList([SpikingResBlock(ch, ch, temb_dim, cfg, dropout), SpikingSelfAttention(ch, cfg),
                                  SpikingResBlock(ch, ch, temb_dim, cfg, dropout)])
        self.up = self._up_path(widths, skips, res_blocks, attention_levels, temb_dim, dropout)
        ch = widths[0]
        if readout == "analog":
            self.out_norm = SeqGroupNorm(norm_groups, ch)
            self.decode = nn.Conv2d(ch, out_channels, 3, padding=1)
        else:
            self.out_spike = _neuron(cfg)
            self.decode = SynapticConv(ch, out_channels, 3, T, tsm)

    def _down_path(self, widths: list[int], ch: int, res_blocks: int, attention_levels: tuple, temb_dim: int,
                   dropout: float) -> tuple[nn.ModuleList, list[int]]:
        """The encoder's levels, and the channels of every skip connection they leave for the decoder."""
        cfg, down, skips = self.config, nn.ModuleList(), [ch]
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(SpikingResBlock(ch, width, temb_dim, cfg, dropout))
                ch = width
                if level in attention_levels:
                    blocks.append(SpikingSelfAttention(ch, cfg))
                skips.append(ch)
            stage = nn.ModuleDict({"blocks": blocks})
            if level < len(widths) - 1:
                stage["downsample"] = SpikingDown(ch, cfg)
                skips.append(ch)
            down.append(stage)
        return down, skips

    def _up_path(self, widths: list[int], skips: list[int], res_blocks: int, attention_levels: tuple, temb_dim: int,
                 dropout: float) -> nn.ModuleList:
        """The decoder's levels, each block reading one skip connection (taken from the end of `skips`)."""
        cfg, up, ch = self.config, nn.ModuleList(), widths[-1]
        for level, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(res_blocks + 1):
                blocks.append(SpikingResBlock(ch + skips.pop(), width, temb_dim, cfg, dropout))
                ch = width
                if level in attention_levels:
                    blocks.append(SpikingSelfAttention(ch, cfg))
            stage = nn.ModuleDict({"blocks": blocks})
            if level > 0:
                stage["upsample"] = SpikingUp(ch, cfg)
            up.append(stage)
        return up

    def _blocks(self, blocks: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor, skips: list | None = None,
                collect: list | None = None) -> torch.Tensor:
        for block in blocks:
            if isinstance(block, SpikingResBlock):
                if skips is not None:
                    h = torch.cat([h, skips.pop()], dim=2)
                h = block(h, temb)
                if collect is not None:
                    collect.append(h)
            else:
                h = block(h)
                if collect is not None:
                    collect[-1] = h
        return h

    def forward(self, sample: torch.Tensor, timestep, class_labels=None, return_dict: bool = True):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        reset_neurons(self)
        T, B = self.config.T, sample.shape[0]
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.dim() == 0:
            timestep = timestep.expand(B)
        temb = self.time_mlp(timestep_embedding(timestep, self.config.base_channels).to(sample.dtype))
        h = self.encode(sample.unsqueeze(0).expand(T, *sample.shape))
        skips = [h]
        for stage in self.down:
            h = self._blocks(stage["blocks"], h, temb, collect=skips)
            if "downsample" in stage:
                h = stage["downsample"](h)
                skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for stage in self.up:
            h = self._blocks(stage["blocks"], h, temb, skips=skips)
            if "upsample" in stage:
                h = stage["upsample"](h)
        if self.config.readout == "analog":  # the convolution is linear: averaging first computes it once
            out = self.decode(F.silu(self.out_norm(h)).mean(0))
        else:
            out = self.decode(self.out_spike(h)).mean(0)  # the non-firing output layer's membrane over T
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def layer_activity(self, sample: torch.Tensor, timestep: torch.Tensor) -> list[LayerActivity]:
        """Per-layer activity of one forward pass, for `sdm.snn.energy.energy_report`.

        Every convolution but the encoder (and an analog readout) receives spikes; the time-embedding MLP
        and projections are analog (once per pass); the attention products multiply spike maps.
        """
        synaptic = {name: m for name, m in self.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        attention = {name: m for name, m in self.named_modules() if isinstance(m, SpikingSelfAttention)}
        products: dict[str, list[float]] = {}

        def count(name):
            def hook(module, inputs, output):
                T, B, C, H, W = inputs[0].shape
                d = C // module.heads
                products[name] = [2 * T * C * d * H * W, counts.rate([module.spike_q, module.spike_k, module.spike_v])]
            return hook

        handles = [m.register_forward_hook(count(name)) for name, m in attention.items()]
        neurons = [n for m in attention.values() for n in (m.spike_q, m.spike_k, m.spike_v)]
        try:
            with counting(neurons) as counts:
                layers = record_synaptic_layers(
                    synaptic, lambda: self(sample, timestep), sample.shape[0],
                    role=lambda name: ("timestep" if isinstance(synaptic[name], nn.Linear)
                                       else "input" if name.startswith("encode.")
                                       else "analog" if name == "decode" else "spiking"))
        finally:
            for h in handles:
                h.remove()
        return layers + [LayerActivity(f"{name} (Q K V products)", "spiking", ops, rate)
                         for name, (ops, rate) in products.items()]

    def tsm_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if name.endswith(".tsm")}

    def mean_tsm_factors(self) -> list[float]:
        """The learnt p_t averaged over layers, t = 1..T (all 1.0 before the TSM stage; [] without TSM)."""
        factors = [p.detach() for p in self.tsm_parameters().values()]
        return [sum(float(p[t]) for p in factors) / len(factors) for t in range(self.config.T)] if factors else []

    @classmethod
    def from_prespike(cls, directory: str | Path) -> tuple[SpikingUNet, list[str]]:
        """A TSM model initialised from a pre-spike checkpoint; returns it and its new parameter names."""
        try:
            parent = cls.from_pretrained(directory)
        except (OSError, ValueError, KeyError, SafetensorError) as err:  # missing, truncated or foreign files
            raise ConfigError("init_from", f"'{directory}' holds no readable spiking UNet ({type(err).__name__}: "
                              f"{reason(err, 120)}); pass a pre-spike run") from None
        if parent.config.tsm:
            raise ConfigError("init_from", f"'{directory}' already has TSM factors: it must be a pre-spike checkpoint")
        child = cls.from_config({**dict(parent.config), "tsm": True})
        missing, unexpected = child.load_state_dict(parent.state_dict(), strict=False)
        new = sorted(child.tsm_parameters())
        if unexpected or sorted(missing) != new:
            raise SDMError(f"'{directory}' does not match the TSM model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return child, new
