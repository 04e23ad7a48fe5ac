"""Calibration statistics and thresholds as JSON files, tied to the model they were measured on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sdm.errors import SDMError
from sdm.io import write_json


def model_fingerprint(model_config: dict) -> str:
    """A short hash of the architecture (not the weights): files for another architecture are refused."""
    keys = {k: v for k, v in dict(model_config).items() if not k.startswith("_")}
    blob = json.dumps(keys, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_sites(found: list[str], expected: list[str], what: str) -> None:
    """Refuse statistics or thresholds whose call sites are not this model's."""
    missing, unknown = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unknown:
        example = (missing or unknown)[0]
        raise SDMError(
            f"{what} belong to another model: {len(missing)} of this model's activation sites are missing and "
            f"{len(unknown)} are unknown (e.g. '{example}'); recalibrate on this model"
        )


def save(kind: str, payload: dict, fingerprint: str, path: str | os.PathLike) -> None:
    write_json({"kind": kind, "model_fingerprint": fingerprint, **payload}, path)


def load(kind: str, path: str | os.PathLike, fingerprint: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SDMError(f"{kind} file '{path}' not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SDMError(f"could not read {kind} file '{path}' ({err})") from None
    if data.get("kind") != kind:
        raise SDMError(f"'{path}' is not a {kind} file (it says kind={data.get('kind')!r})")
    if fingerprint is not None and data.get("model_fingerprint") != fingerprint:
        raise SDMError(f"'{path}' was made for another model architecture; recalibrate on this model")
    return data
