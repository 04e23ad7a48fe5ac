"""UNet2DModel architectures the trainers build, all of the `google/ddpm-cifar10-32` family.

SiLU, GroupNorm and an attention level at the second resolution: the ops conversion must handle.
"""

from __future__ import annotations

from sdm.errors import SDMError

_DDPM_COMMON = dict(
    act_fn="silu",
    attention_head_dim=None,
    center_input_sample=False,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    norm_eps=1e-6,
    time_embedding_type="positional",
)


def _grey28(blocks: tuple, layers_per_block: int, norm_num_groups: int, attention: bool = True) -> dict:
    middle = "Attn" if attention else ""
    return dict(
        _DDPM_COMMON, add_attention=attention, sample_size=28, in_channels=1, out_channels=1, block_out_channels=blocks,
        down_block_types=("DownBlock2D", f"{middle}DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", f"{middle}UpBlock2D", "UpBlock2D"),
        layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
    )


PRESETS: dict[str, dict] = {
    # Exactly the configuration of google/ddpm-cifar10-32 (35.7M parameters).
    "cifar10-32": dict(
        _DDPM_COMMON,
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
    ),
    # 28 x 28 grey images (Fashion-MNIST, MNIST): three levels 28/14/7, attention at 14 x 14.
    "fmnist-small": _grey28(blocks=(32, 64, 64), layers_per_block=1, norm_num_groups=16),
    # Half as wide: the CPU-sized ANN baseline beside the CPU-sized directly trained SDM.
    "fmnist-cpu": _grey28(blocks=(16, 32, 32), layers_per_block=1, norm_num_groups=4),
    # Deeper (two ResNets per level), 1.5x the CPU preset's width, no attention at all (the mid-block's
    # neither): a development DDPM that differs from the others in depth, width and attention.
    "grey28-deep": _grey28(blocks=(24, 48, 48), layers_per_block=2, norm_num_groups=8, attention=False),
    # Same family, four times wider: for a GPU run.
    "fmnist-medium": _grey28(blocks=(64, 128, 128), layers_per_block=2, norm_num_groups=32),
    # Seconds on a CPU: for tests.
    "tiny": dict(
        _DDPM_COMMON,
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    ),
}


def preset_config(name: str, **overrides) -> dict:
    """The UNet2DModel keyword arguments of preset `name`, with `overrides` applied."""
    if name not in PRESETS:
        raise SDMError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    config = dict(PRESETS[name])
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def build_unet(name: str, **overrides):
    from diffusers import UNet2DModel

    return UNet2DModel(**preset_config(name, **overrides))
