"""Conversion: pretrained diffusers UNets -> spiking networks (the top of the package stack).

    from calibration import ConversionConfig, calibrate, calibration_pairs, prepare
    from convert import convert

    observed = prepare(unet, ConversionConfig(T=4, rule="mse"))   # the configuration, given once
    calibrate(observed, calibration_pairs(unet, scheduler_config, 256))
    snn = convert(observed)                       # a ConvertedUNet: call it like the UNet
    snn8 = convert(unet, observed.stats().retarget(T=8))   # the same statistics at another T

Then `convert.finetune` distils the ANN into it (`sdm-finetune`).
"""

from convert.conversion import convert
from convert.model import ConvertedUNet
from convert.passes import UnsupportedOpError

__all__ = ["ConvertedUNet", "UnsupportedOpError", "convert"]
