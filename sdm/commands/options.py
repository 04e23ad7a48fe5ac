"""Click plumbing shared by every command: one-line errors and common options."""

from __future__ import annotations

import sys

import click

from sdm.errors import ConfigError, SDMError
from sdm.settings import CommaList, flag_for, options_of


class Command(click.Command):
    """A click command whose failures are one line on stderr, never a traceback or a usage dump, and whose
    options each fill their own parameter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = [p.name for p in self.params]
        shared = sorted({n for n in names if names.count(n) > 1})
        if shared:  # click would let the last of them overwrite the others' values, silently
            raise TypeError(f"command {self.name}: several options fill the parameter(s) {', '.join(shared)}; "
                            "give one of the settings a prefix (options_of(..., prefix=...))")

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ConfigError as err:  # a setting's own words: the flag that sets it
            click.echo(f"Error: {flag_for(err.field, self.params)} {err.problem}", err=True)
            sys.exit(2)
        except SDMError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)
        except OSError as err:  # a disk that is full, read-only or gone: the path and the cause, no traceback
            where = f" '{err.filename}'" if err.filename else ""
            click.echo(f"Error: could not write or read{where}: {err.strerror or err}; free space, fix the "
                       "permissions or choose another path", err=True)
            sys.exit(2)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()} (see --help)", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def command(**kwargs):
    """`click.command` with this package's error handling."""
    return click.command(cls=Command, **kwargs)


def resolve_device(device: str | None) -> str:
    """'auto' picks CUDA when present; an explicit 'cuda' without a GPU is a user error."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SDMError("--device cuda was asked for but no CUDA GPU is visible; pass --device cpu")
    return device


device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (CUDA when available).",
)


EXECUTOR_CHOICES = ("auto", "rate", "steps")

executor_option = click.option(
    "--executor", type=click.Choice(EXECUTOR_CHOICES), default="auto", show_default=True,
    help="How converted SNNs run. rate: the exact rate form of a window-mode graph (same outputs and spike "
         "counts, T times fewer operations); steps: simulate every spiking step; auto: rate wherever it is exact.",
)


def use_executor(model, executor: str) -> str | None:
    """Set a converted SNN's executor (`auto` keeps its own default, the exact rate form where it exists);
    returns the one that will run, None for models without executors."""
    if not hasattr(model, "set_executor"):
        return None
    if executor != "auto":
        model.set_executor(executor)
    return model.executor


allow_pickle_option = click.option(
    "--allow-pickle", is_flag=True,
    help="Allow loading pickle (.bin) weights. Only for files you trust: unpickling can run code.",
)

resume_option = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")

threshold_scale_option = click.option(
    "--threshold-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
    help="Threshold guidance for spiking models: every threshold times this while sampling.",
)


def ckpt_options(func):
    """--ckpt (default: the embedded model) and --allow-pickle."""
    func = allow_pickle_option(func)
    return click.option(
        "--ckpt", default=None, metavar="HUB_ID_OR_DIR",
        help="Hub id, pipeline or model directory, or embedded:fmnist-ddpm / embedded:fmnist-sdm [default: the embedded "
             "Fashion-MNIST DDPM].",
    )(func)


def sampling_options(func):
    """--sampler, --steps, --seed, --batch-size: the shared sampler's knobs (`SamplingSettings`)."""
    from sdm.diffusion.sampler import SamplingSettings

    return options_of(SamplingSettings)(func)


def training_options(func):
    """The options of `sdm.diffusion.training.TrainSettings`, plus --resume and --device."""
    from sdm.diffusion.train_settings import TrainSettings

    func = device_option(func)
    func = resume_option(func)
    return options_of(TrainSettings)(func)


def quality_options(metrics: bool = True):
    """--metrics (unless `metrics` is False), --extractor, --reference and --inception-weights: how sample
    quality is scored, the same in every command that scores."""
    from sdm.metrics.extractors import EXTRACTORS
    from sdm.metrics.quality import METRICS

    decorators = [
        click.option("--extractor", type=click.Choice(EXTRACTORS), default="auto", show_default=True,
                     help="auto: Inception when its weights are reachable, else the Fashion-MNIST classifier."),
        click.option("--reference", default=None,
                     help="Real images: a .npz, an image folder or fashion-mnist | mnist | cifar10 (test split)."),
        click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
                     help="Local Inception-v3 weights (.pth state dict or .safetensors) for offline Inception metrics."),
    ]
    if metrics:
        decorators.insert(0, click.option("--metrics", type=CommaList(str, METRICS), default="fid,kid,is",
                                          show_default=True))

    def decorate(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return decorate
