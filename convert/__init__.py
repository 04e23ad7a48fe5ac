"""Conversion: pretrained diffusers UNets -> spiking networks (the top of the package stack).

    from calibration import prepare, calibrate, calibration_pairs
    from convert import convert

    observed = prepare(unet)
    calibrate(observed, calibration_pairs(unet, scheduler_config, 256))
    snn = convert(observed, T=4, rule="mse")      # a ConvertedUNet: call it like the UNet
"""

from convert.model import ConvertedUNet, NeuronConfig
from convert.passes import UnsupportedOpError
from convert.workflow import convert

__all__ = ["ConvertedUNet", "NeuronConfig", "UnsupportedOpError", "convert"]
