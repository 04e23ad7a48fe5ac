"""convert: the third step of prepare -> calibrate -> convert -> finetune."""

from __future__ import annotations

from torch import nn

from calibration import CalibrationStats, ConversionConfig, ObservedModel, Thresholds
from calibration.graph import architecture_fingerprint, is_encoder_site
from convert.model import ConvertedUNet
from sdm.errors import SDMError


def convert(model: ObservedModel | nn.Module, stats: CalibrationStats | Thresholds | None = None, *,
            config: ConversionConfig | None = None) -> ConvertedUNet:
    """Build the spiking network of a calibrated model, as the config given at `prepare()` describes.

    `model` is either the `ObservedModel` that calibration ran through (its statistics are used), or
    the float model together with `stats` loaded from disk (statistics, or thresholds already computed).
    The configuration is the one the statistics record; `config`, when given, must equal it (as with
    PyTorch FX's convert): to convert the same statistics at another T or rule, `stats.retarget(T=8)`.
    """
    if isinstance(model, ObservedModel):
        stats = model.stats() if stats is None else stats
        float_model = model.model[0]
    else:
        float_model = model
        if stats is None:
            raise SDMError("convert() needs calibration statistics: pass an ObservedModel or stats=")
    if not hasattr(float_model, "config"):
        raise SDMError(f"{type(float_model).__name__} is not a diffusers-style model with a config")
    if isinstance(float_model, ConvertedUNet):
        raise SDMError("the model is already a spiking ConvertedUNet; convert its ANN instead")
    if stats.fingerprint != architecture_fingerprint(dict(float_model.config)):
        raise SDMError("the calibration file was made for another model architecture; recalibrate on this model")
    if config is not None and config != stats.config:
        differ = ", ".join(f"{name}={getattr(config, name)!r} (recorded: {getattr(stats.config, name)!r})"
                           for name in config.differences(stats.config))
        raise SDMError(f"convert() was given a config that disagrees with the one given at prepare(): {differ}; "
                       "convert the recorded one, or retarget the statistics (stats.retarget(...))")
    thresholds = stats.thresholds() if isinstance(stats, CalibrationStats) else stats
    source = {"calibration": getattr(stats, "source", {})}
    sites = thresholds.sites
    if not thresholds.config.encodes:  # statistics gathered for encoders as well serve a conversion without them
        sites = {name: th for name, th in sites.items() if not is_encoder_site(name)}
    return ConvertedUNet(dict(float_model.config), thresholds.config, sites, unet=float_model, source=source)
