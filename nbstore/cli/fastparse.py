"""Command classes that convert plain parameter values themselves, so that fast commands stay fast.

Typer versions that coerce every value through pydantic import it (about 80 ms, a third of `nbstore status`)
the first time any non-flag value is converted, even a default or the help flag's None. Flags, strings and
paths need no such machinery: these classes convert them directly and leave everything else (integers with
bounds, a missing required argument, any type not listed here) to Typer, which then reports errors as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["LightCommand", "LightGroup"]

_NOT_HANDLED = object()


def _convert(annotation: Any, value: Any) -> Any:
    """Return value converted for annotation, or _NOT_HANDLED when Typer must do it."""
    if annotation is bool and (value is None or isinstance(value, bool)):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation is Path and (value is None or isinstance(value, (str, Path))):
        return None if value is None else Path(value)
    if annotation in (list[str], list[Path]) and (value is None or isinstance(value, (list, tuple))):
        item = str if annotation == list[str] else Path
        if all(isinstance(v, (str, Path)) for v in value or ()):
            return [item(v) for v in value or ()]
    return _NOT_HANDLED


def _process(param: Any, ctx: Any, value: Any, typer_process: Any) -> Any:
    """Convert, check and call back like Typer does, for the simple types; otherwise let Typer do it."""
    descriptor = getattr(param, "type_descriptor", None)
    converted = _convert(getattr(descriptor, "annotation", None), value)
    if converted is _NOT_HANDLED or (param.required and param.value_is_missing(converted)):
        return typer_process(ctx, value)
    if param.callback is not None:
        converted = param.callback(ctx, param, converted)
    return converted


#: What help shows for an option value without a metavar of its own (Typer would show `<int range>`, `<float>`).
_PLAIN_METAVARS = {int: "N", float: "SECONDS", str: "TEXT", Path: "PATH"}


def _plain_metavar(param: Any) -> str | None:
    descriptor = getattr(param, "type_descriptor", None)
    return _PLAIN_METAVARS.get(getattr(descriptor, "annotation", None))


# Instances of Typer's classes are switched to these in place, so they must add no attributes (and no mixin:
# a second base changes the object layout and makes the switch impossible).
class _LightOption(TyperOption):
    def process_value(self, ctx: Any, value: Any) -> Any:
        return _process(self, ctx, value, super().process_value)

    def display_type_rich(self, ctx: Any) -> str | None:
        # A person reads `--workers N`, not Click's `--workers <int range>`.
        return self.metavar or _plain_metavar(self) or super().display_type_rich(ctx)


class _LightArgument(TyperArgument):
    def process_value(self, ctx: Any, value: Any) -> Any:
        return _process(self, ctx, value, super().process_value)

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name column already says `NB...`; Typer would add `<list[Path]>`

    def _rich_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        # `NB...` for a required argument, `[N]` for an optional one (Typer writes `{NB}...`).
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


# Only Typer versions that coerce at run time (get_runtime_param) pay for pydantic; older ones are left alone.
_SWAP = {TyperOption: _LightOption, TyperArgument: _LightArgument} if hasattr(TyperOption, "get_runtime_param") else {}


def _lighten(params: list) -> list:
    for param in params:
        light = _SWAP.get(type(param))
        if light is not None:
            param.__class__ = light
    return params


class LightCommand(TyperCommand):
    """A Typer command whose flag, string and path parameters are converted without pydantic."""

    def get_params(self, ctx: Any) -> list:
        return _lighten(super().get_params(ctx))


class LightGroup(TyperGroup):
    """A Typer group whose flag, string and path parameters are converted without pydantic."""

    def get_params(self, ctx: Any) -> list:
        return _lighten(super().get_params(ctx))
