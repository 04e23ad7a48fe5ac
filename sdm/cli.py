"""Click plumbing shared by every command: one-line errors and common options."""

from __future__ import annotations

import sys

import click

from sdm.errors import SDMError


class Command(click.Command):
    """A click command whose failures are one line on stderr, never a traceback or a usage dump."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SDMError as err:
            click.echo(f"Error: {err}", err=True)
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


def ckpt_options(func):
    """--ckpt (default: the embedded model) and --allow-pickle."""
    func = click.option(
        "--allow-pickle", is_flag=True,
        help="Allow loading pickle (.bin) weights. Only for files you trust: unpickling can run code.",
    )(func)
    return click.option(
        "--ckpt", default=None, metavar="HUB_ID_OR_DIR",
        help="Hub id, pipeline or model directory, or embedded:fmnist-ddpm / embedded:fmnist-sdm [default: the embedded "
             "Fashion-MNIST DDPM].",
    )(func)


def sampling_options(func):
    """--sampler, --steps, --seed, --batch-size: the shared sampler's knobs."""
    from sdm.sampler import SAMPLERS

    for decorator in reversed([
        click.option("--sampler", type=click.Choice(SAMPLERS), default="ddim", show_default=True),
        click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Denoising steps."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Image i uses seed SEED + i."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
    ]):
        func = decorator(func)
    return func


class CommaList(click.ParamType):
    """`a,b,c` -> a list, each item cast and (optionally) checked against choices."""

    name = "list"

    def __init__(self, cast=str, choices=None):
        self.cast, self.choices = cast, choices

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = []
        for raw in str(value).split(","):
            raw = raw.strip()
            try:
                item = self.cast(raw)
            except ValueError:
                self.fail(f"'{raw}' is not a valid {self.cast.__name__}", param, ctx)
            if self.choices is not None and item not in self.choices:
                self.fail(f"'{raw}' is not one of {', '.join(map(str, self.choices))}", param, ctx)
            items.append(item)
        if not items or any(i == "" for i in items):
            self.fail("give at least one value", param, ctx)
        return items


def training_options(func):
    """--data, --out and the optimisation settings of `sdm.training.TrainSettings`, plus --resume."""
    for decorator in reversed([
        click.option("--data", required=True, help="A .npz archive, an image folder, or fashion-mnist | mnist | cifar10."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (a pipeline directory)."),
        click.option("--steps", type=click.IntRange(min=1), default=10_000, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Global batch (split over processes)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True),
        click.option("--warmup", type=click.IntRange(min=0), default=500, show_default=True,
                     help="Linear LR warm-up steps."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True),
        click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True),
        click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flips."),
        click.option("--fit", type=click.Choice(["auto", "pad", "resize"]), default="auto", show_default=True,
                     help="How images meet the model's size."),
        click.option("--save-every", type=click.IntRange(min=1), default=1000, show_default=True),
        click.option("--sample-every", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Write a 4x4 sample grid every N steps (0: never)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                     help="Autocast: auto is bf16 on GPUs and fp32 on CPUs; bf16 on a CPU with bf16 units is faster."),
        device_option,
    ]):
        func = decorator(func)
    return func
