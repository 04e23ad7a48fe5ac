"""Calibration statistics and the thresholds computed from them, and their JSON files.

Statistics record the `ConversionConfig` given at `prepare()`, so a file on disk says what
conversion it was made for; `retarget` points the same statistics at another T, rule or neuron
(what a sweep does), and refuses what they were not observed for.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from calibration.config import ConversionConfig
from calibration.graph import is_encoder_site
from calibration.rules import site_thresholds
from sdm.errors import ConfigError, SDMError
from sdm.io import write_json

STATS_KIND = "calibration-stats"


@dataclass
class Thresholds:
    """Per-site thresholds of one conversion (its config says for which T, rule and neuron)."""

    fingerprint: str
    config: ConversionConfig
    sites: dict[str, dict]


@dataclass
class CalibrationStats:
    """What observers saw at each activation call site, where the inputs came from, and the
    conversion they were gathered for."""

    fingerprint: str
    sites: dict[str, dict]
    config: ConversionConfig = field(default_factory=ConversionConfig)
    source: dict = field(default_factory=dict)

    @property
    def encoders_observed(self) -> bool:
        return any(is_encoder_site(name) for name in self.sites)

    @property
    def per_channel_observed(self) -> bool:
        return all("channels" in s for s in self.sites.values() if s.get("count"))

    def retarget(self, **changes) -> CalibrationStats:
        """The same statistics, recorded for the conversion `config.replace(**changes)`."""
        return self.for_config(self.config.replace(**changes))

    def for_config(self, config: ConversionConfig) -> CalibrationStats:
        """The same statistics, recorded for `config`. T, the rule, the neuron or the readout may differ
        from what they were gathered for; per-channel thresholds and encoders need statistics observed so."""
        config.validate()
        if config.per_channel and not self.per_channel_observed:
            raise ConfigError("per_channel", "needs per-channel statistics: calibrate with per-channel observers")
        if config.encodes and not self.encoders_observed:
            raise ConfigError("encode_analog", "needs statistics of the spike-encoder sites: calibrate with "
                              "encoders (encode_analog at prepare)")
        return CalibrationStats(self.fingerprint, self.sites, config, self.source)

    def thresholds(self) -> Thresholds:
        """Every site's thresholds by the config's rule, for the levels of its code and its neuron."""
        c = self.config
        params = {"levels": c.code.levels, "percentile": c.percentile, "v_init": c.neuron.v_init, "per_channel": c.per_channel,
                  "signed": c.neuron.signed}
        sites = {name: site_thresholds({"name": name, **s}, c.rule, **params) for name, s in self.sites.items()}
        return Thresholds(self.fingerprint, c, sites)

    def save(self, path: str | os.PathLike) -> None:
        write_json({"kind": STATS_KIND, "architecture_fingerprint": self.fingerprint, "config": self.config.to_dict(),
                    "source": self.source, "sites": self.sites}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, fingerprint: str | None = None) -> CalibrationStats:
        """A statistics file; `fingerprint`: the architecture it must have been made for."""
        path = Path(path)
        if not path.is_file():
            raise SDMError(f"calibration statistics file '{path}' not found")
        try:
            data = json.loads(path.read_text())
            kind = data.get("kind") if isinstance(data, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SDMError(f"could not read calibration statistics file '{path}' ({err}); recalibrate") from None
        if kind != STATS_KIND:
            raise SDMError(f"'{path}' is not a calibration statistics file (it says kind={kind!r})")
        recorded = data.get("architecture_fingerprint", data.get("model_fingerprint"))  # earlier files: model_
        if fingerprint is not None and recorded != fingerprint:
            raise SDMError(f"'{path}' was made for another model architecture; recalibrate on this model")
        try:
            config = ConversionConfig.from_dict(data.get("config", {}))
            return cls(str(recorded), dict(data["sites"]), config, data.get("source", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise SDMError(f"calibration statistics file '{path}' is incomplete ({type(err).__name__}: {err}); "
                           "recalibrate") from None
