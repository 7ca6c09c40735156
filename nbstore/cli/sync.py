"""`nbstore push` and `nbstore pull`: share the store through a remote one named by an fsspec URL."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nbstore.cli import render
from nbstore.cli.app import _count, _store, app
from nbstore.cli.fastparse import LightCommand

__all__ = ["pull", "push"]

UrlArgument = Annotated[
    str, typer.Argument(metavar="URL", help="The remote store: file:///path, s3://bucket/prefix, or any fsspec URL.")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", "-n", help="Only say what would be copied.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _run(ctx: typer.Context, direction: str, url: str, *, dry_run: bool, prune: bool, as_json: bool) -> None:
    # fsspec (and boto for s3://) load only here: the commands people run most never pay for them.
    from nbstore import remote

    store = _store(ctx, existing=direction == "push")
    action = remote.push_remote if direction == "push" else remote.pull_remote
    con = render.console(stderr=True)
    progress: Any = None
    if con.is_terminal and not dry_run:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn(f"{direction}ing {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=con,
            transient=True,
        )
    task = None

    def on_progress(phase: str, done: int, total: int) -> None:
        nonlocal task
        if progress is None:
            return
        if task is None:
            task = progress.add_task(phase, total=total)
        progress.update(task, description=phase, completed=done, total=total)

    if progress is not None:
        with progress:
            report = action(store, url, dry_run=dry_run, prune=prune, on_progress=on_progress)
    else:
        report = action(store, url, dry_run=dry_run, prune=prune)
    if as_json:
        render.print_json(report.to_dict())
    else:
        verb = {"push": ("Pushed", "Would push"), "pull": ("Pulled", "Would pull")}[direction][dry_run]
        if dry_run:
            for key in report.records:
                typer.echo(f"{key}  {report.uris.get(key, '')}")
            for key in report.pruned:
                typer.echo(f"{key}  (would be removed {'from the remote' if direction == 'push' else 'here'})")
        side = "to" if direction == "push" else "from"
        line = (
            f"{verb} {_count(len(report.records), 'record')} ({_count(report.objects, 'object')}, "
            f"{render.format_bytes(report.bytes)}) {side} {url}"
        )
        if report.pruned:
            line += f"; {'would remove' if dry_run else 'removed'} {_count(len(report.pruned), 'record')}"
        render.print_note(line, stderr=False)
        for problem in report.problems:
            render.print_error(problem)
    if report.problems:
        raise typer.Exit(1)


@app.command("push", cls=LightCommand)
def push(
    ctx: typer.Context,
    url: UrlArgument,
    dry_run: DryRunOption = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove the remote's records this store lacks (not while others push).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy to a remote store the cached notebooks it lacks (objects first, then records).

    Credentials come from fsspec's own configuration (for s3:// the usual AWS settings). The exit status
    is 1 if something was refused.
    """
    _run(ctx, "push", url, dry_run=dry_run, prune=prune, as_json=as_json)


@app.command("pull", cls=LightCommand)
def pull(
    ctx: typer.Context,
    url: UrlArgument,
    dry_run: DryRunOption = False,
    prune: Annotated[bool, typer.Option("--prune", help="Also remove cached notebooks the remote lacks.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy from a remote store the cached notebooks this store lacks, checking every object's hash.

    Records are merged by key as a git merge of two stores is: for a key on both sides the record created
    first is kept. The exit status is 1 if something was refused (an object whose bytes do not match its hash).
    """
    _run(ctx, "pull", url, dry_run=dry_run, prune=prune, as_json=as_json)
