"""Calibration: the first steps of prepare -> calibrate -> convert -> finetune.

Mirrors PyTorch FX quantization: `prepare(model, ConversionConfig(...))` captures the graph and inserts
observers, `calibrate` feeds inputs, and `convert.convert` (in the `convert` package) builds the
spiking network the recorded config describes from the statistics.
"""

from calibration.config import ConversionConfig, NeuronConfig
from calibration.inputs import SOURCES, CalibrationInputs, calibration_pairs, probe_pairs, spread_subset
from calibration.prepare import ObservedModel, calibrate, load_stats, prepare, require_ann
from calibration.rules import RULES
from calibration.statistics import CalibrationStats, Thresholds

__all__ = [
    "RULES", "SOURCES", "CalibrationInputs", "CalibrationStats", "ConversionConfig", "NeuronConfig", "ObservedModel",
    "Thresholds", "calibrate", "calibration_pairs", "load_stats", "prepare", "probe_pairs", "require_ann",
    "spread_subset",
]
