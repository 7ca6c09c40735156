"""The light command classes give commands the same values Typer would, and leave errors to Typer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.testing import CliRunner

from nbstore.cli.fastparse import LightCommand, LightGroup


def _app(seen: dict, cls) -> typer.Typer:
    app = typer.Typer(cls=LightGroup if cls is LightCommand else None)

    @app.callback()
    def root(cache: Annotated[Path, typer.Option("--cache", envvar="X_CACHE")] = Path(".default")) -> None:
        seen["cache"] = cache

    @app.command(cls=cls)
    def run(
        names: Annotated[list[Path], typer.Argument()],
        tag: Annotated[list[str], typer.Option("--tag")] = [],  # noqa: B006 - Typer reads it, never mutates it
        out: Annotated[Path | None, typer.Option("--out")] = None,
        label: Annotated[str, typer.Option("--label")] = "x",
        flag: Annotated[bool, typer.Option("--flag")] = False,
        count: Annotated[int, typer.Option("--count", min=1)] = 1,
    ) -> None:
        seen.update(names=names, tag=tag, out=out, label=label, flag=flag, count=count)

    @app.command(cls=cls)
    def other(items: Annotated[list[str] | None, typer.Argument()] = None) -> None:
        seen["items"] = items

    return app


def test_light_and_typer_conversions_agree():
    """Paths, lists, strings, flags, ints and defaults come out equal with and without the light classes."""
    cases = [
        ["run", "a.ipynb", "b/c.ipynb", "--tag", "t1", "--tag", "t2", "--out", "o.ipynb", "--label", "L", "--flag"],
        ["run", "a.ipynb", "--count", "3"],
        ["--cache", "elsewhere", "run", "x"],
        ["other"],
        ["other", "1", "two"],
    ]
    for args in cases:
        results = []
        for cls in (LightCommand, None):
            seen: dict = {}
            result = CliRunner().invoke(_app(seen, cls), args, env={"X_CACHE": None})
            assert result.exit_code == 0, (args, cls, result.stderr)
            results.append({k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in seen.items()})
        assert results[0] == results[1], args
    seen = {}
    CliRunner().invoke(_app(seen, LightCommand), ["run", "a"], env={"X_CACHE": "from-env"})
    assert seen["cache"] == Path("from-env") and seen["names"] == [Path("a")]


def test_errors_are_still_typers():
    """A missing required argument and an out-of-range int are usage errors (exit 2), as with Typer alone."""
    for args in (["run"], ["run", "a", "--count", "0"], ["run", "a", "--count", "x"]):
        result = CliRunner().invoke(_app({}, LightCommand), args)
        assert result.exit_code == 2, (args, result.stderr)


def test_light_classes_replace_typers_parameters():
    """A LightCommand's options and arguments are the light classes once the command parses its arguments."""
    from typer.core import TyperArgument, TyperOption
    from typer.main import get_command

    command = get_command(_app({}, LightCommand)).commands["run"]
    ctx = command.make_context("run", ["a"])
    kinds = {p.name: type(p) for p in command.get_params(ctx)}
    assert kinds["names"] is not TyperArgument and issubclass(kinds["names"], TyperArgument)
    assert kinds["label"] is not TyperOption and issubclass(kinds["label"], TyperOption)
