"""Resumable training state (weights, EMA, optimizer, step) in safetensors + JSON, never a pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sdm.errors import SDMError, reason
from sdm.io import atomic_dir, write_json

STATE_FILE = "state.json"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    slots: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


def save_training_state(
    directory: str | os.PathLike,
    *,
    step: int,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict | None = None,
) -> None:
    """Replace `directory` with the state after `step` optimiser steps, atomically."""
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        write_json({"step": step, "optimizer": opt_meta, **(extra or {})}, tmp / STATE_FILE)


def saved_step(directory: str | os.PathLike) -> int:
    """The step of the checkpoint in `directory`, 0 where there is none; a damaged `state.json` is an
    `SDMError` naming the directory (remove it to start afresh)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return 0
    try:
        step = json.loads(path.read_text())["step"]
        if not isinstance(step, int):
            raise ValueError("no step count")
        return step
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SDMError(f"could not resume from '{directory}' ({STATE_FILE}: {reason(err, 200)}); remove it to start "
                       "afresh") from None


def load_training_state(
    directory: str | os.PathLike, *, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict:
    """Load what `save_training_state` wrote into the given objects; returns the JSON state.

    A checkpoint that is missing a file, truncated or damaged (a killed copy, a full disk), or that
    belongs to another model, is an `SDMError` naming the directory and the file: remove it to start
    afresh.
    """
    directory = Path(directory)
    device = str(next(model.parameters()).device)
    current = directory / STATE_FILE
    try:
        state = json.loads(current.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step count")
        for target, name in ((model, "model.safetensors"), (ema, "ema.safetensors")):
            current = directory / name
            target.load_state_dict(load_file(current, device=device))
        current = directory / "optimizer.safetensors"
        _restore_optimizer(optimizer, load_file(current, device=device), state["optimizer"])
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
        # ValueError covers JSONDecodeError and UnicodeDecodeError (a truncated or garbled state.json)
        raise SDMError(f"could not resume from '{directory}' ({current.name}: {reason(err, 200)}); remove it to start "
                       "afresh") from None
    return state
