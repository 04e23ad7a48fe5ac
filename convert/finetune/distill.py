"""What fine-tuning distils: the teacher's pair pool and the objective.

The pool holds (x_t, t, teacher eps) triples, from the teacher's own DDIM paths (data-free), from the
student's own DDIM paths labelled by the teacher (data-free: the inputs the SNN meets when it samples,
where its errors have compounded), or from real images noised at random t. A teacher path's eps comes
with the path, so that pool costs one teacher pass per pair; the others cost one teacher pass per pair
to label, and the student's paths one student pass per pair besides. The objective is the MSE to the teacher's eps, plus, with a feature weight, the relative
error of every spiking site's input against the ANN's value there (`FeatureTargets`), which gives
each layer its own signal instead of the one that reaches it through the rest of the network, plus
the energy term of `convert.finetune.energy_objective`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from calibration.inputs import LATE_T, SOURCES, TRAJECTORY_STEPS, noised_pairs
from sdm.diffusion.sampler import trajectory
from sdm.diffusion.shards import weights_fingerprint
from sdm.diffusion.snr import min_snr_weights
from sdm.io import atomic_file
from sdm.snn.modes import keeping_counts

PAIR_SOURCES = (*SOURCES, "student")  # the teacher's or the student's trajectories, or real images noised
PAIR_SEED = 1 << 21       # trajectory seeds: disjoint from sampling seeds (0..) and probe seeds (1 << 20)
POOL_FILE = "pairs.safetensors"
POOL_TENSORS = ("x", "t", "eps")  # a pool file's tensors: inputs, timesteps, the teacher's eps
PAIR_REUSE = 4            # draws per pool pair over a run: the default pool is the run's draws / this
MAX_POOL = 51_200         # a default pool never outgrows this many pairs (0.3 GB at 28 x 28, 1.2 GB at 32 x 32 x 3)
TEACHER_BATCH = 64


def pool_size(steps: int, batch_size: int, reuse: float = PAIR_REUSE) -> int:
    """The default pool for a run of `steps` batches: each pair drawn about `reuse` times, in whole
    trajectories, at least one batch."""
    draws = math.ceil(steps * batch_size / reuse)
    return max(batch_size, min(MAX_POOL, TRAJECTORY_STEPS * math.ceil(draws / TRAJECTORY_STEPS)))


def pool_evaluations(source: str, pairs: int) -> tuple[int, int]:
    """(teacher, student) evaluations, of up to `TEACHER_BATCH` inputs each, that making a pool of `pairs`
    takes: the progress total."""
    path_steps = math.ceil(math.ceil(pairs / TRAJECTORY_STEPS) / TEACHER_BATCH) * TRAJECTORY_STEPS
    labels = math.ceil(pairs / TEACHER_BATCH)
    return {"trajectory": (path_steps, 0), "data": (labels, 0), "student": (labels, path_steps)}[source]


def pool_inputs(source: str, pairs: int) -> tuple[int, int]:
    """(teacher, student) inputs evaluated to make a pool of `pairs`: what a timed run's plan prices (a
    small pool's paths share batches of fewer than `TEACHER_BATCH`)."""
    path_inputs = math.ceil(pairs / TRAJECTORY_STEPS) * TRAJECTORY_STEPS
    return {"trajectory": (path_inputs, 0), "data": (pairs, 0), "student": (pairs, path_inputs)}[source]


@torch.no_grad()
def teacher_pairs(teacher: nn.Module, scheduler_config: dict, source: str, pairs: int, seed: int,
                  images: torch.Tensor | None = None, bar=None,
                  student: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, teacher eps): `pairs` inputs with the teacher's noise prediction on each, from `source`
    (`images` for data, `student`, in the executor it should sample with, for its paths); `bar` advances
    once per evaluation (`pool_evaluations` in all)."""
    if source == "data":
        x, t = noised_pairs(images, scheduler_config, pairs, seed)
        return x, t, _labelled(teacher, x, t, bar)
    walker = teacher if source == "trajectory" else student
    count, first = math.ceil(pairs / TRAJECTORY_STEPS), PAIR_SEED + seed * 100_000
    paths = [trajectory(walker, scheduler_config, range(first + start, first + min(start + TEACHER_BATCH, count)),
                        steps=TRAJECTORY_STEPS, bar=bar)
             for start in range(0, count, TEACHER_BATCH)]
    x, t, eps = (torch.cat(parts)[:pairs] for parts in zip(*paths, strict=True))
    return (x, t, eps) if source == "trajectory" else (x, t, _labelled(teacher, x, t, bar))


def _labelled(teacher: nn.Module, x: torch.Tensor, t: torch.Tensor, bar=None) -> torch.Tensor:
    """The teacher's eps at each (x, t), in batches of `TEACHER_BATCH`, on the CPU."""
    device = next(teacher.parameters()).device
    eps = []
    for i in range(0, len(x), TEACHER_BATCH):
        eps.append(teacher(x[i : i + TEACHER_BATCH].to(device), t[i : i + TEACHER_BATCH].to(device),
                           return_dict=False)[0].float().cpu())
        if bar is not None:
            bar.update(1)
    return torch.cat(eps)


def pool_key(teacher: nn.Module, student: nn.Module | None, source: str, pairs: int, seed: int,
             data: str | None) -> dict:
    """What decides a pool's pairs: the teacher's weights (and the student's, whose paths it may walk),
    the source and its data, the size and the seed."""
    return {"teacher": weights_fingerprint(teacher), "student": weights_fingerprint(student) if source == "student" else None,
            "source": source, "data": data if source == "data" else None, "pairs": pairs, "seed": seed,
            "trajectory_steps": TRAJECTORY_STEPS}


def _encoded(key: dict) -> str:
    """A pool key as its file's metadata holds it (the same key always the same string)."""
    return json.dumps(key, sort_keys=True)


def stored_pairs(path: Path, key: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The pair pool stored at `path` under `key`, so a resumed run trains on the same pairs; None where
    none is there, its write was cut short, or it was drawn under another key (a pool is a function of
    what its key holds). The metadata is read first, so a pool under another key is never loaded."""
    try:
        with safe_open(path, framework="pt") as stored:
            if (stored.metadata() or {}).get("key") != _encoded(key):
                return None
            return tuple(stored.get_tensor(name) for name in POOL_TENSORS)
    except (OSError, ValueError, RuntimeError, SafetensorError):  # none there, or a write cut short
        return None


def store_pairs(path: Path, key: dict, pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """Write a pair pool under its key, atomically: an interrupted write leaves no pool behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        save_file({name: tensor.contiguous() for name, tensor in zip(POOL_TENSORS, pairs, strict=True)}, tmp,
                  metadata={"key": _encoded(key)})


def pair_weights(t: torch.Tensor, late_share: float) -> torch.Tensor:
    """Sampling weights over the pool that give pairs at t < 100 `late_share` of every batch (when there
    are any), the rest spread uniformly."""
    late = t < LATE_T
    if not late.any() or late.all() or late_share == 0:
        return torch.ones(len(t))
    return torch.where(late, late_share / late.sum(), (1 - late_share) / (~late).sum()).float()


@contextmanager
def site_inputs(model: nn.Module, sites: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, the dict it yields maps each of `sites` of a `ConvertedUNet` to the input its
    activation received in the latest forward pass."""
    seen: dict[str, torch.Tensor] = {}
    activations = model.sites()

    def hook(name):
        return lambda module, args: seen.__setitem__(name, args[0])

    handles = [activations[name].register_forward_pre_hook(hook(name)) for name in sites]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class FeatureTargets:
    """The ANN's input at every spiking site of the student, from its analog twin (the unconverted
    graph with the weights the student started from), and the student's relative error against it."""

    def __init__(self, student):
        self.twin = student.analog_twin()
        self.sites = student.spiking_sites()

    def loss(self, student_inputs: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean over sites of ||student input - ANN input||^2 / ||ANN input||^2 at (x, t)."""
        with torch.no_grad(), site_inputs(self.twin, self.sites) as targets:
            self.twin(x, t, return_dict=False)
        errors = [F.mse_loss(student_inputs[s].float(), targets[s].float())
                  / targets[s].float().pow(2).mean().clamp(min=1e-12) for s in self.sites]
        return torch.stack(errors).mean()


def distillation_objective(pool, settings, device: str, energy, budget, features: FeatureTargets | None,
                           scheduler_config: dict, world: int = 1):
    """loss(student, step, generator): MSE to the teacher's eps on a weighted draw of pool pairs (this
    process's share of the batch; each pair's error weighted by `min_snr_weights` under `settings.snr_gamma`),
    plus `settings.feature_weight` times the sites' relative feature error, plus a weight times the spikes'
    share of the SNN / ANN energy ratio (`SpikeEnergy`): `energy_penalty`, or under an energy budget the
    weight `budget` adapts. The logged `mse` is the unweighted one."""
    x, t, eps = pool
    weights = pair_weights(t, settings.late_share)
    loss_weights = min_snr_weights(t, scheduler_config, settings.snr_gamma)
    draw = settings.batch_size // world

    def objective(student, step, generator):
        snn = getattr(student, "module", student)  # under several processes, the data-parallel wrapper's
        idx = torch.multinomial(weights, draw, replacement=True, generator=generator)
        xb, tb = x[idx].to(device), t[idx].to(device)
        sites = features.sites if features is not None else []
        with keeping_counts(snn) as neurons, site_inputs(snn, sites) as inputs:
            pred = student(xb, tb, return_dict=False)[0]
            spikes = energy.ratio(neurons, len(idx))
            counts = [c for n in neurons for c in n.counts]
        rate = sum(c.sum() for c in counts) / (snn.T * sum(c.numel() for c in counts))
        errors = (pred.float() - eps[idx].to(device)).square().flatten(1).mean(1)
        mse = errors.mean()
        loss = (loss_weights[idx].to(device) * errors).mean()
        logged = {"mse": mse.item()}
        if features is not None:  # made only for a positive feature weight
            feature = features.loss(inputs, xb, tb)
            loss = loss + settings.feature_weight * feature
            logged["feature_error"] = feature.item()
        ratio = energy.fixed_ratio + spikes.detach()
        weight = budget.update(step, float(ratio), mse.item())
        if weight:
            loss = loss + weight * spikes
        return loss, {**logged, "firing_rate": rate.item(), "energy_ratio": float(ratio), "energy_weight": weight}

    return objective
