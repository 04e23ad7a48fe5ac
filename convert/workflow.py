"""convert: the last step of the prepare -> calibrate -> convert workflow."""

from __future__ import annotations

from torch import nn

from calibration import CalibrationStats, ObservedModel, Thresholds
from calibration.stats import model_fingerprint
from convert.model import ConvertedUNet, NeuronConfig
from sdm.errors import SDMError


def convert(
    model: ObservedModel | nn.Module,
    stats: CalibrationStats | Thresholds | None = None,
    *,
    T: int = 4,
    rule: str = "mse",
    percentile: float = 99.9,
    per_channel: bool = False,
    neuron: NeuronConfig | None = None,
    analog_mode: str = "window",
    encode_analog: bool = False,
    activation: str = "function",
    readout: str = "analog",
    analog_sites: tuple[str, ...] = (),
    encode_sites: tuple[str, ...] = (),
) -> ConvertedUNet:
    """Build the spiking network of a calibrated model.

    `model` is either the `ObservedModel` that calibration ran through (its statistics are used), or
    the float model together with `stats` loaded from disk (statistics, or thresholds already computed).
    `readout='analog'` keeps the activation that feeds the output layer analog (the output layer then
    reads real values, as a directly trained SDM's decoder reads its membrane); `analog_sites` are
    shell patterns of further sites to keep analog; `activation='neuron'` replaces smooth activations
    by the neurons' own transfer (see `sdm.temporal.SpikingActivation`); `encode_sites` spike-encodes
    only the analog inputs whose encoder sites match these shell patterns (`encode_analog`: all).
    """
    neuron = neuron or NeuronConfig()
    if isinstance(model, ObservedModel):
        if stats is None:
            stats = model.stats()
        float_model = model.model[0]
    else:
        float_model = model
        if stats is None:
            raise SDMError("convert() needs calibration statistics: pass an ObservedModel or stats=")
    if not hasattr(float_model, "config"):
        raise SDMError(f"{type(float_model).__name__} is not a diffusers-style model with a config")
    if isinstance(float_model, ConvertedUNet):
        raise SDMError("the model is already a spiking ConvertedUNet; convert its ANN instead")
    if stats.fingerprint != model_fingerprint(dict(float_model.config)):
        raise SDMError("the calibration file was made for another model architecture; recalibrate on this model")
    if isinstance(stats, CalibrationStats):
        thresholds = stats.thresholds(rule, T=T, percentile=percentile, v_init=neuron.v_init,
                                      per_channel=per_channel, signed=neuron.signed)
    else:
        thresholds = stats
    source = {"rule": thresholds.rule, **thresholds.params, "calibration": getattr(stats, "source", {})}
    sites = thresholds.sites
    encode_analog = list(encode_sites) or encode_analog
    if not encode_analog:  # statistics gathered for encoders as well serve a conversion without them
        sites = {name: th for name, th in sites.items() if ":input" not in name}
    return ConvertedUNet(dict(float_model.config), T, neuron, sites, unet=float_model, source=source,
                         analog_mode=analog_mode, encode_analog=encode_analog, activation=activation,
                         readout=readout, analog_sites=analog_sites)
