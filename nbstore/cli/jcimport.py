"""`nbstore import-jupyter-cache PATH`: move a jupyter-cache folder's records into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nbstore.cli import render
from nbstore.cli.app import CommandError, JsonOption, _message, _store, app
from nbstore.cli.fastparse import LightCommand
from nbstore.errors import NbStoreError


@app.command("import-jupyter-cache", cls=LightCommand)
def import_jupyter_cache(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(metavar="PATH", help="The jupyter-cache folder (it holds global.db); only read.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Import a jupyter-cache folder's cached notebooks and project records into the store.

    Each record is listed as imported or skipped (with the reason); the folder itself is never written.
    """
    from nbstore.jupyter_cache_import import import_jupyter_cache as run_import

    store = _store(ctx, existing=False)
    try:
        report = run_import(store, source)
    except NbStoreError as exc:
        raise CommandError(_message(exc)) from exc
    rows = [
        {
            "kind": item.kind,
            "source_pk": item.source_pk,
            "uri": item.uri,
            "imported": item.imported,
            "pk": item.pk,
            "reason": item.reason,
        }
        for item in report.items
    ]
    if as_json:
        render.print_json({"source": report.source, "items": rows})
    else:
        for item in report.items:
            what = "cached notebook" if item.kind == "cache" else "project notebook"
            where = render.display_path(item.uri) or "(no path)"
            if item.imported:
                typer.echo(f"imported  {what} {item.source_pk} as ID {item.pk}  {where}")
            else:
                typer.echo(f"skipped   {what} {item.source_pk}  {where}: {item.reason}")
        cached = sum(1 for i in report.imported if i.kind == "cache")
        staged = sum(1 for i in report.imported if i.kind == "project")
        render.print_note(
            f"Imported {cached} cached and {staged} project notebooks from {render.display_path(report.source)} "
            f"into {render.display_path(store.path)}; skipped {len(report.skipped)}",
            stderr=False,
        )
