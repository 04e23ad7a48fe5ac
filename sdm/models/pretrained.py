"""Find, load and save diffusion checkpoints: hub ids, pipeline directories and bare model directories.

A checkpoint is what `--ckpt` names. Three layouts are understood:

* a pipeline directory (what `DDPMPipeline.save_pretrained` writes): `unet/` + `scheduler/`;
* a bare model directory: `config.json` + weights, optionally `scheduler_config.json`
  (without it the DDPM linear schedule is assumed, and `LoadedModel.notes` says so);
* a Hugging Face hub id holding either layout (downloaded to the hub cache).

Two models ship in the package and load offline by name: the Fashion-MNIST DDPM
(`embedded:fmnist-ddpm`, the default of every command) and a spiking UNet of the same size trained
directly (`embedded:fmnist-sdm`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdm.diffusion.pipeline import DDPM_LINEAR_SCHEDULE
from sdm.errors import SDMError, reason

EMBEDDED_MODELS = {f"embedded:{name}": Path(__file__).parent.parent / "assets" / name for name in ("fmnist-ddpm", "fmnist-sdm")}
EMBEDDED_NAME = "embedded:fmnist-ddpm"
EMBEDDED_MODEL = EMBEDDED_MODELS[EMBEDDED_NAME]
EMBEDDED_SDM_NAME = "embedded:fmnist-sdm"

SAFE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
PICKLE_WEIGHTS = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    scheduler_config: dict
    path: Path
    source: str
    notes: list[str] = field(default_factory=list)


def model_classes() -> dict[str, type]:
    """Model classes a checkpoint's `config.json` may name, by `_class_name`.

    Packages that build other models (conversion, for one) add theirs through the
    `sdm.models` entry-point group, so this foundation never imports them.
    """
    from importlib.metadata import entry_points

    from diffusers import UNet2DModel

    from sdm.models.spiking_unet import SpikingUNet

    classes = {"UNet2DModel": UNet2DModel, "SpikingUNet": SpikingUNet}
    for ep in entry_points(group="sdm.models"):
        classes[ep.name] = ep.load()
    return classes


def resolve_checkpoint(ckpt: str | os.PathLike | None, allow_pickle: bool = False) -> Path:
    """The local directory behind `ckpt` (None: the default embedded model; `embedded:NAME`: a shipped one)."""
    text = EMBEDDED_NAME if ckpt is None else str(ckpt)
    if text.startswith("embedded:"):
        if text not in EMBEDDED_MODELS:
            raise SDMError(f"there is no embedded model '{text}': choose {' or '.join(EMBEDDED_MODELS)}")
        if not (EMBEDDED_MODELS[text] / "unet").is_dir():
            raise SDMError(f"the embedded model '{text}' is not in this installation ({EMBEDDED_MODELS[text]} has no "
                           "unet/); reinstall the package or pass a model directory")
        return EMBEDDED_MODELS[text]
    path = Path(os.path.expanduser(text))
    if path.exists():
        if not path.is_dir():
            raise SDMError(f"checkpoint '{text}' is a file; pass the model directory that holds config.json")
        return path
    if _looks_like_path(text):
        raise SDMError(f"checkpoint '{text}' not found: pass an existing model directory or a hub id")
    return _download(text, allow_pickle)


def _looks_like_path(text: str) -> bool:
    """Hub ids are `org/name`; anything else that does not exist is a mistyped path."""
    return text.startswith((".", "/", "~")) or text.count("/") != 1


def _download(repo_id: str, allow_pickle: bool) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors"] + (["*.bin"] if allow_pickle else [])
    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns))
    except Exception as err:  # the hub client raises many types (HTTP, offline, validation, OS)
        raise SDMError(
            f"could not fetch '{repo_id}' from the Hugging Face hub ({type(err).__name__}: {reason(err)}); "
            "check the id and the network, or pass a local model directory with --ckpt"
        ) from None


def _replace_hint(path: Path) -> str:
    """How to get an undamaged copy of the checkpoint file `path`."""
    if any(path.is_relative_to(where) for where in EMBEDDED_MODELS.values()):
        return "reinstall the package"
    cached = next((p for p in path.parents if p.name.startswith("models--")), None)
    if cached is not None:
        return f"delete '{cached}' from the hub cache to download it afresh"
    return "save or copy the model again"


def _damaged(path: Path, err: Exception | str) -> SDMError:
    return SDMError(f"could not read '{path}' ({reason(err)}); the checkpoint is damaged: {_replace_hint(path)}")


def _read_json(path: Path) -> dict:
    """A checkpoint's JSON file (config.json, scheduler_config.json) as a dict; a truncated, garbled or
    non-object file is an `SDMError` naming it."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise SDMError(f"could not read '{path}' ({err.strerror or err})") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise _damaged(path, f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"a JSON {type(data).__name__}, not an object")
    return data


def _check_safetensors(model_dir: Path) -> None:
    """Open the single-file safetensors weights' header, so that a truncated or garbled file is named as
    such (diffusers would report only that it could not load them)."""
    from safetensors import SafetensorError, safe_open

    weights = model_dir / SAFE_WEIGHTS[0]
    if not weights.is_file():
        return
    try:
        with safe_open(weights, framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as err:
        raise _damaged(weights, err) from None


def locate(path: Path) -> tuple[Path, Path | None]:
    """(model directory, scheduler directory or None) of a pipeline or bare model directory."""
    if (path / "unet" / "config.json").is_file():
        scheduler = path / "scheduler"
        return path / "unet", scheduler if (scheduler / "scheduler_config.json").is_file() else None
    if (path / "config.json").is_file():
        return path, path if (path / "scheduler_config.json").is_file() else None
    raise SDMError(
        f"'{path}' is not a model directory: expected config.json (bare model) or unet/config.json (pipeline)"
    )


def load_model(
    ckpt: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", allow_pickle: bool = False
) -> LoadedModel:
    """Load the model and scheduler config behind `ckpt`, in float32, in eval mode."""
    path = resolve_checkpoint(ckpt, allow_pickle)
    model_dir, scheduler_dir = locate(path)
    config = _read_json(model_dir / "config.json")
    classes = model_classes()
    name = config.get("_class_name")
    if name not in classes:
        raise SDMError(
            f"'{model_dir}' holds a {name or 'model without _class_name'}, not a diffusion model this toolkit "
            f"runs ({', '.join(classes)})"
        )
    if not any((model_dir / f).is_file() for f in SAFE_WEIGHTS):
        if any((model_dir / f).is_file() for f in PICKLE_WEIGHTS):
            if not allow_pickle:
                raise SDMError(
                    f"'{model_dir}' holds only pickle weights (.bin), which can run code when loaded; pass "
                    "--allow-pickle if you trust them, or convert them to safetensors"
                )
        else:
            raise SDMError(f"'{model_dir}' has a config.json but no weights (diffusion_pytorch_model.safetensors)")
    if not allow_pickle or not any((model_dir / f).is_file() for f in PICKLE_WEIGHTS):
        _check_safetensors(model_dir)
    try:
        model = classes[name].from_pretrained(model_dir, use_safetensors=not allow_pickle, torch_dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise SDMError(f"could not load the {name} in '{model_dir}' ({reason(err, 200)})") from None
    notes = []
    if scheduler_dir is None:
        scheduler_config = dict(DDPM_LINEAR_SCHEDULE)
        notes.append(
            f"no scheduler config in '{path}': assumed the DDPM linear schedule (betas 1e-4..0.02, 1000 steps)"
        )
    else:
        scheduler_config = _read_json(scheduler_dir / "scheduler_config.json")
    source = next((name for name, where in EMBEDDED_MODELS.items() if path == where), str(ckpt))
    return LoadedModel(model.to(device).eval(), scheduler_config, path, source, notes)
