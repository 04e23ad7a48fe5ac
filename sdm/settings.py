"""Settings dataclasses that declare their own command-line options.

A field says once how the command line sets it, `field(default=..., metadata=option("--flag", ...))`,
and every command that takes these settings builds its options from the dataclass (`options_of`) and
the dataclass back from the parsed options (`settings_from`). The default, the flag and the help are
then written in one place, and each command shows the same option with the same default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import click

from sdm.errors import ConfigError, SDMError


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


def option(flag: str, help: str = "", **click_kwargs) -> dict:
    """Field metadata: the field is set by `flag` (click.option's keyword arguments pass through:
    `type`, `is_flag`, ...). A flag written `--a/--b` is a boolean switch."""
    return {"option": {"flag": flag, "help": help, **click_kwargs}}


def nested() -> dict:
    """Field metadata for a field that is itself a settings dataclass: its options join the command's."""
    return {"nested": True}


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def options_of(cls, *, skip: Iterable[str] = (), prefix: str = "", flags: dict[str, str] | None = None,
               defaults: dict[str, Any] | None = None) -> Callable:
    """A decorator adding a click option for every optioned field of `cls` (nested settings too).

    `skip`: fields the command sets otherwise; `prefix`: prepended to the parameter names, where two
    settings of one command share a field name; `flags`: a command's own spelling of some flags;
    `defaults`: a command's own defaults for some fields (a named recipe, not a second copy).
    """
    flags, defaults, skip = flags or {}, defaults or {}, set(skip)

    def decorate(func: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            if f.metadata.get("nested"):
                func = options_of(type(default_of(f)), skip=skip, prefix=prefix, flags=flags, defaults=defaults)(func)
                continue
            if "option" not in f.metadata:
                continue
            spec = dict(f.metadata["option"])
            flag = flags.get(f.name, spec.pop("flag"))
            default = defaults.get(f.name, default_of(f))
            if isinstance(default, tuple):
                default = ",".join(map(str, default)) if default else None
            shown = not (default is None or default is False or default is dataclasses.MISSING)
            kwargs = {"default": None if default is dataclasses.MISSING else default, "show_default": shown, **spec}
            if default is dataclasses.MISSING:
                kwargs["required"] = True
            func = click.option(flag, prefix + f.name, **kwargs)(func)
        return func

    return decorate


def settings_from(cls, params: dict, *, prefix: str = "", **given):
    """`cls` built from a command's parsed options (removed from `params`), plus `given` values for the
    fields the command sets itself. Nested settings are built the same way. Lists become tuples."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.metadata.get("nested"):
            values[f.name] = settings_from(type(default_of(f)), params, prefix=prefix)
        elif "option" in f.metadata and prefix + f.name in params:
            value = params.pop(prefix + f.name)
            if value is None and isinstance(default_of(f), tuple):  # an empty list option
                value = default_of(f)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise SDMError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
    try:
        settings = cls(**values)
        if hasattr(settings, "validate"):
            settings.validate()
    except ConfigError as err:
        # The flag that set the field, or, for a value the command passed on, its own flag of that name.
        context = click.get_current_context(silent=True)
        params = context.command.params if context is not None else []
        flag = _flag_of(prefix + err.field, params) or flag_for(err.field, params)
        raise SDMError(f"{flag} {err.problem}") from None
    return settings


def _flag_of(name: str, params: list[click.Parameter]) -> str | None:
    return next((p.opts[0] for p in params if p.name == name and p.opts), None)


def flag_for(field: str, params: list[click.Parameter]) -> str:
    """How a command with `params` lets a user set `field`: its flag, else the field's own name. For
    errors that library code raises about a setting (`ConfigError`) once a command has parsed its options."""
    suffixed = [p.opts[0] for p in params if p.name.endswith("_" + field) and p.opts]
    return _flag_of(field, params) or (suffixed[0] if len(suffixed) == 1 else field)
