"""Settings dataclasses declare their options once: every command shows the dataclass's defaults, and a
setting's error names the flag that sets it."""

import dataclasses

import click
import pytest
from click.testing import CliRunner

from calibration import CalibrationInputs, ConversionConfig, NeuronConfig
from convert.commands import compare, finetune, sweep
from convert.commands import convert as convert_command
from convert.finetune import FinetuneSettings
from sdm.commands import evaluate, sample, train, train_ann
from sdm.commands.options import command
from sdm.diffusion.sampler import SamplingSettings
from sdm.errors import ConfigError
from sdm.models.train_ann import TrainConfig
from sdm.models.train_snn import SNNTrainConfig
from sdm.settings import default_of, option, options_of, settings_from

# command -> (settings, parameter-name prefix, fields the command sets itself) it builds from its options
USES = {
    "sdm-convert": [(ConversionConfig, "", ()), (NeuronConfig, "", ()), (CalibrationInputs, "calib_", ()),
                    (SamplingSettings, "", ()), (FinetuneSettings, "ft_", ("steps", "data", "seed"))],
    "sdm-sweep": [(ConversionConfig, "", ("coding", "T", "rule", "percentile")), (CalibrationInputs, "calib_", ()),
                  (SamplingSettings, "", ())],
    "sdm-compare": [(ConversionConfig, "", ("T",)), (NeuronConfig, "", ()), (SamplingSettings, "", ()),
                    (CalibrationInputs, "calib_", ("source", "data", "probes"))],
    "sdm-finetune": [(FinetuneSettings, "", ()), (SamplingSettings, "sample_", ())],
    "sdm-eval": [(SamplingSettings, "", ())],
    "sdm-sample": [(SamplingSettings, "", ())],
    "sdm-train": [(SNNTrainConfig, "", ())],
    "sdm-train-ann": [(TrainConfig, "", ())],
}
COMMANDS = {"sdm-convert": convert_command.main, "sdm-sweep": sweep.main, "sdm-compare": compare.main,
            "sdm-finetune": finetune.main, "sdm-eval": evaluate.main, "sdm-sample": sample.main,
            "sdm-train": train.main, "sdm-train-ann": train_ann.main}


def _cli_default(param: click.Parameter):
    value = param.default
    if type(param.type).__name__ == "CommaList":
        return tuple(param.type.convert(value, param, None)) if value is not None else ()
    return value


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_shows_the_dataclass_defaults(name):
    """Every optioned field a command builds from its options has the dataclass's default (sdm-compare's
    conversion options start from its named recipe)."""
    params = {p.name: p for p in COMMANDS[name].params}
    recipe = compare.RECIPE if name == "sdm-compare" else {}
    checked = 0
    for cls, prefix, own in USES[name]:
        for f in dataclasses.fields(cls):
            if "option" not in f.metadata or f.name in own:
                continue
            param = params[prefix + f.name]
            expected = recipe.get(f.name, default_of(f))
            if expected is dataclasses.MISSING:
                assert param.required, (name, f.name)
            else:
                assert _cli_default(param) == expected, (name, f.name)
            checked += 1
    assert checked >= 4, name


def test_sdm_sweep_lists_start_from_the_single_defaults():
    params = {p.opts[0]: p for p in sweep.main.params if p.opts}
    assert params["--percentile"].default == str(ConversionConfig.percentile)
    assert params["--neuron"].default == NeuronConfig.kind
    assert params["--coding"].default == ConversionConfig.coding


@dataclasses.dataclass(frozen=True)
class Grid:
    size: int = dataclasses.field(default=4, metadata=option("--size", "Cells per side."))
    names: tuple[str, ...] = ()

    def validate(self):
        if self.size % 2:
            raise ConfigError("size", f"must be even, got {self.size}")


@command()
@options_of(Grid, prefix="grid_", flags={"size": "--grid-size"})
def grid_command(**options):
    grid = settings_from(Grid, options, prefix="grid_")
    click.echo(f"size {grid.size}")


@command()
@click.option("--size", type=int, default=2)
def library_error(size):
    raise ConfigError("size", f"is {size}: the library says no")


def test_a_settings_error_names_the_commands_flag():
    ok = CliRunner().invoke(grid_command, ["--grid-size", "6"])
    assert ok.exit_code == 0 and ok.output.strip() == "size 6"
    bad = CliRunner().invoke(grid_command, ["--grid-size", "5"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "Error: --grid-size must be even, got 5"
    later = CliRunner().invoke(library_error, ["--size", "3"])  # raised by library code after parsing
    assert later.exit_code == 2 and later.stderr.strip() == "Error: --size is 3: the library says no"
    with pytest.raises(ConfigError, match="^size must be even, got 3$"):  # a library user reads the field's name
        Grid(size=3).validate()


def test_two_settings_filling_one_parameter_are_refused_where_the_command_is_made():
    """Without a prefix, Grid's `size` and the command's own `--size` would fill one parameter, and the
    last option given would silently set both."""
    with pytest.raises(TypeError, match="several options fill the parameter.s. size"):
        @command()
        @options_of(Grid)
        @click.option("--size", type=int, default=2)
        def clashing(**options):
            pass
