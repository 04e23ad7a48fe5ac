"""Calibration: activation statistics at every activation call site, and threshold rules.

Mirrors PyTorch FX quantization: `prepare` inserts observers, `calibrate` feeds inputs, and
`convert.convert` (in the `convert` package) consumes the statistics.
"""

from calibration.inputs import SOURCES, calibration_pairs, probe_pairs, spread_subset
from calibration.prepare import (
    CalibrationStats,
    ObservedModel,
    Thresholds,
    calibrate,
    load_stats,
    prepare,
    require_ann,
)
from calibration.rules import RULES

__all__ = [
    "RULES", "SOURCES", "CalibrationStats", "ObservedModel", "Thresholds", "calibrate", "calibration_pairs",
    "load_stats", "prepare", "probe_pairs", "require_ann", "spread_subset",
]
