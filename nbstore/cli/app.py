"""The commands of `nbstore`: each one a thin layer over NbStore (tables for people, --json for scripts)."""

from __future__ import annotations

import gc as garbage_collector
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from nbstore import __version__
from nbstore.cli import render
from nbstore.cli.fastparse import LightCommand, LightGroup
from nbstore.errors import (
    CachingError,
    ExecutorNotFoundError,
    NbStoreError,
    NbValidityError,
    NotebookNotFoundError,
    NotebookReadError,
    ReaderNotFoundError,
    RecordNotFoundError,
)
from nbstore.records import NbCacheRecord
from nbstore.store.cache import NbStore
from nbstore.store.rows import cache_rows, match_file_pk, status_rows

__all__ = ["CommandError", "app"]

#: The executor `nbstore execute` uses unless --executor names another.
DEFAULT_EXECUTOR = "local-parallel"


class CommandError(Exception):
    """A command failed: its message is printed as one 'Error:' line and the process exits with code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code


class _Run:
    """Per-invocation settings the error handler needs after the context is gone."""

    verbose = False


def _message(exc: BaseException) -> str:
    # KeyError-derived errors quote their str(); the first argument is the readable message.
    if isinstance(exc, NbStoreError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _report(exc: BaseException) -> int:
    """Print one error line for exc (with the traceback under --verbose) and return the exit status."""
    if _Run.verbose and not isinstance(exc, (typer.TyperException, typer.Abort, CommandError)):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if type(exc).__name__ == "NoArgsIsHelpError":
        # A missing subcommand: show the help (as `--help` would), and still call it a wrong invocation.
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
        return 2
    if isinstance(exc, typer.TyperException):
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        code = getattr(exc, "exit_code", 1)
        if code == 2 and ctx is not None:
            message = f"{message} (see '{ctx.command_path} --help')"
        render.print_error(message)
        return code
    if isinstance(exc, typer.Abort):
        render.print_error("aborted: nothing was changed")
        return 1
    if isinstance(exc, CommandError):
        render.print_error(exc.message)
        return exc.code
    if isinstance(exc, (ExecutorNotFoundError, ReaderNotFoundError)):
        render.print_error(_message(exc))
        return 2
    if isinstance(exc, (NbStoreError, OSError)):
        render.print_error(_message(exc))
        return 1
    hint = "" if _Run.verbose else " (run with --verbose for the traceback)"
    render.print_error(f"unexpected {type(exc).__name__}: {exc}{hint}")
    return 1


class _LogHandler(logging.Handler):
    """Send the store's log messages to stderr as plain lines (stdout stays clean for results)."""

    def emit(self, record: logging.LogRecord) -> None:
        label = record.levelname.capitalize()
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        render.print_note(f"{label}: {record.getMessage()}", style=style, one_line=True)


class NbstoreGroup(LightGroup):
    """The root command: turns every failure into one 'Error:' line and an exit status (1 work, 2 usage)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _Run.verbose = False
        logger = logging.getLogger("nbstore")
        handler, old_level, old_propagate = _LogHandler(), logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except Exception as exc:
            code = _report(exc)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=NbstoreGroup,
    name="nbstore",
    help="Keep executed Jupyter notebooks so that unchanged notebooks never run again.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: Typer's Rich help imports rich.markdown and markdown-it, which doubled `nbstore --help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
cache_app = typer.Typer(
    cls=LightGroup, help="Executed notebooks kept in the store.", no_args_is_help=True, rich_markup_mode=None
)
stage_app = typer.Typer(
    cls=LightGroup, help="Notebooks staged for execution.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(cache_app, name="cache")
app.add_typer(stage_app, name="stage")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"nbstore {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    cache: Annotated[
        Path,
        typer.Option(
            "--cache",
            "-c",
            envvar="NBSTORE_CACHE",
            show_envvar=True,
            metavar="PATH",
            help="The store folder (created on the first write).",
        ),
    ] = Path(".nbstore"),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the store's log and the traceback of an error.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Keep executed Jupyter notebooks so that unchanged notebooks never run again."""
    _Run.verbose = verbose
    if verbose:
        logging.getLogger("nbstore").setLevel(logging.DEBUG)
    ctx.obj = cache


# ---------------------------------------------------------------------------- helpers


def _store(ctx: typer.Context, *, existing: bool) -> NbStore:
    """Return the store; a read-only command (existing=True) fails if there is none, creating nothing."""
    path = ctx.find_root().obj
    store = NbStore(path)
    if existing and not store.exists():
        if (store.path / "global.db").is_file():
            from nbstore.store.folder import jupyter_cache_hint

            raise CommandError(jupyter_cache_hint(store.path))
        if store.path.exists() and not store.path.is_dir():
            raise CommandError(f"{render.display_path(store.path)} is a file, not a store folder")
        raise CommandError(
            f"there is no store at {render.display_path(store.path)} "
            "(`nbstore stage add` or `nbstore cache add` creates one; --cache or NBSTORE_CACHE chooses another)"
        )
    return store


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a short listing command.

    Listings allocate no reference cycles, and with the index state of 10,000 notebooks in memory each of the
    collector's passes walks all of it: they take about half the time of building a large table.
    """
    was = garbage_collector.isenabled()
    garbage_collector.disable()
    try:
        yield
    finally:
        if was:
            garbage_collector.enable()


def _stage_ref(text: str) -> int | str:
    """Return a stage reference: an integer ID, or a path (a number that names an existing file is a path)."""
    if text.isdigit() and not Path(text).exists():
        pk = int(text)
        if pk < 1:
            raise typer.BadParameter(f"{text!r} is not a valid ID (IDs start at 1)")
        return pk
    return text


def _not_staged(ref: int | str) -> CommandError:
    if isinstance(ref, int):
        return CommandError(f"no staged notebook has ID {ref} (see `nbstore stage list`)")
    return CommandError(f"{ref} is not staged (stage it with `nbstore stage add {ref}`)")


def _prefixed(path: Path, exc: NbStoreError) -> str:
    message = _message(exc)
    return message if str(path) in message else f"{path}: {message}"


def _key_rows(store: NbStore) -> tuple[list, dict[int, Any], dict[str, NbCacheRecord]]:
    """Return the stage records, the current KeyInfo of each, and the cache records by key (no kernel, no nbformat)."""
    records = store.list_staged_records()
    infos = store.staged_key_infos()
    by_key = {r.hashkey: r for r in store.list_cache_records()}
    return records, infos, by_key


def _cache_rows(store: NbStore) -> tuple[list, dict[int, str | None], dict[str, NbCacheRecord]]:
    """Return the stage records, the current key of each, and the cache records by key (no kernel, no nbformat)."""
    records, infos, by_key = _key_rows(store)
    return records, {pk: info.key for pk, info in infos.items()}, by_key


def _staged_status(record: Any, key: str | None, match: NbCacheRecord | None, info: Any = None) -> str:
    if key is None:
        if info is not None and info.broken == "dependency":
            return "errored"
        return "missing file" if not os.path.exists(record.uri) else "unreadable"
    if match is not None:
        return "up to date"
    return "failed" if record.traceback else "outdated"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _abs(paths: Sequence[Path]) -> list[Path]:
    # Paths typed on the command line are relative to the current folder, not to the notebook's.
    return [p.absolute() for p in paths]


# ---------------------------------------------------------------------------- cache


@cache_app.command("add", cls=LightCommand)
def cache_add(
    ctx: typer.Context,
    notebooks: Annotated[list[Path], typer.Argument(metavar="NB", help="Executed notebook files.")],
    artifact: Annotated[
        list[Path],
        typer.Option("--artifact", "-a", metavar="PATH", help="A file the run wrote, inside the notebook's folder."),
    ] = [],  # noqa: B006 - Typer reads the default, never mutates it
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Cache even if execution counts are not 1, 2, 3...")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a cached notebook with the same key.")
    ] = False,
) -> None:
    """Add executed notebooks to the cache."""
    store = _store(ctx, existing=False)
    failed = 0
    for nb in notebooks:
        try:
            record = store.cache_notebook_file(
                nb,
                uri=str(nb.absolute()),
                artifacts=_abs(artifact),
                check_validity=not no_validate,
                overwrite=overwrite,
            )
        except NbValidityError as exc:
            failed += 1
            render.print_error(f"{_prefixed(nb, exc)} (--no-validate caches it anyway)")
        except CachingError as exc:
            failed += 1
            if "already exists" in _message(exc):
                pk = store.match_cache_file(nb).pk
                render.print_error(f"{nb}: already cached as ID {pk} (--overwrite replaces it)")
            else:
                render.print_error(_prefixed(nb, exc))
        except (NotebookNotFoundError, NotebookReadError) as exc:
            failed += 1
            render.print_error(_prefixed(nb, exc))
        else:
            extra = f" with {_count(len(record.artifacts), 'artifact')}" if record.artifacts else ""
            render.print_note(f"Cached {nb} as ID {record.pk}{extra}", stderr=False)
    if failed:
        raise typer.Exit(1)


@cache_app.command("list", cls=LightCommand)
def cache_list(
    ctx: typer.Context,
    latest_only: Annotated[bool, typer.Option("--latest-only", help="Only the newest record of each origin.")] = False,
    hashkeys: Annotated[bool, typer.Option("--hashkeys", help="Show each record's key.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the cached notebooks."""
    with _no_gc():
        _cache_list(ctx, latest_only=latest_only, hashkeys=hashkeys, as_json=as_json)


def _cache_list(ctx: typer.Context, *, latest_only: bool, hashkeys: bool, as_json: bool) -> None:
    store = _store(ctx, existing=True)
    if not as_json:
        # The table needs no record objects: plain rows from the index state are several times faster.
        rows = cache_rows(store)
        if latest_only:
            latest: dict[str, dict] = {}
            for row in rows:
                if row["uri"] not in latest or (row["created"], row["pk"]) > (
                    latest[row["uri"]]["created"],
                    latest[row["uri"]]["pk"],
                ):
                    latest[row["uri"]] = row
            rows = sorted(latest.values(), key=lambda r: r["pk"])
        if not rows:
            render.print_note("The cache is empty.")
        else:
            render.show(render.cache_rows_table(rows, hashkeys=hashkeys))
        return
    records = store.list_cache_records()
    if latest_only:
        newest: dict[str, NbCacheRecord] = {}
        for r in records:
            if r.uri not in newest or (r.created, r.pk) > (newest[r.uri].created, newest[r.uri].pk):
                newest[r.uri] = r
        records = sorted(newest.values(), key=lambda r: r.pk)
    if as_json:
        render.print_json([render.cache_record_json(r) for r in records])
    elif not records:
        render.print_note("The cache is empty.")
    else:
        render.show(render.cache_table(records, hashkeys=hashkeys))


CacheId = Annotated[int, typer.Argument(metavar="ID", min=1, help="A cache ID (see `nbstore cache list`).")]


def _cache_record(store: NbStore, pk: int) -> NbCacheRecord:
    try:
        return store.get_cache_record(pk)
    except RecordNotFoundError:
        raise CommandError(f"no cached notebook has ID {pk} (see `nbstore cache list`)") from None


@cache_app.command("show", cls=LightCommand)
def cache_show(ctx: typer.Context, pk: CacheId, as_json: JsonOption = False) -> None:
    """Show one cache record."""
    record = _cache_record(_store(ctx, existing=True), pk)
    if as_json:
        render.print_json(render.cache_record_json(record))
        return
    pairs = [
        ("ID", record.pk),
        ("Origin", render.display_path(record.uri)),
        ("Hashkey", record.hashkey),
        ("Key rule", record.key_rule),
        ("Created", render.local_time(record.created)),
        ("Accessed", render.local_time(record.accessed)),
        ("Description", record.description),
        ("Data", render.format_data(record.data)),
        ("Notebook object", record.notebook),
        ("Artifacts", sorted(record.artifacts)),
    ]
    if render.key_input_lines(record.inputs):
        pairs.append(("Key inputs", render.key_input_lines(record.inputs)))
    render.show(render.detail_table(pairs))


@cache_app.command("remove", cls=LightCommand)
def cache_remove(
    ctx: typer.Context,
    pks: Annotated[list[int] | None, typer.Argument(metavar="ID", min=1, help="Cache IDs to remove.")] = None,
    remove_all: Annotated[bool, typer.Option("--all", help="Remove every cached notebook.")] = False,
) -> None:
    """Remove cached notebooks and the objects only they use."""
    if bool(pks) == remove_all:
        raise typer.BadParameter("give cache IDs or --all (not both)")
    store = _store(ctx, existing=True)
    if remove_all:
        pks = [r.pk for r in store.list_cache_records()]
    failed = 0
    for pk in pks or []:
        try:
            store.remove_cache(pk)
        except RecordNotFoundError:
            failed += 1
            render.print_error(f"no cached notebook has ID {pk}")
        else:
            render.print_note(f"Removed cache ID {pk}", stderr=False)
    if remove_all and not pks:
        render.print_note("The cache is already empty.")
    if failed:
        raise typer.Exit(1)


@cache_app.command("diff", cls=LightCommand)
def cache_diff(
    ctx: typer.Context,
    pk: CacheId,
    notebook: Annotated[Path, typer.Argument(metavar="NB", help="A notebook file to compare with the record.")],
) -> None:
    """Diff a notebook against a cached one.

    Prints nbdime's diff (needs nbstore-cache[diff]). The exit status is 0 if they
    are the same, 1 if they differ, 2 on trouble (as diff's).
    """
    try:
        store = _store(ctx, existing=True)
        _cache_record(store, pk)
        if not store.diff_nbfile_with_cache(pk, notebook):
            render.print_note(f"{notebook} does not differ from cache ID {pk}")
            return
        color = render.console().is_terminal and not os.environ.get("NO_COLOR")
        text = store.diff_nbfile_with_cache(pk, notebook, as_str=True, use_color=color)
    except CommandError as exc:
        raise CommandError(exc.message, code=2) from exc
    except (NbStoreError, OSError, ImportError) as exc:
        # 1 means "they differ" here, so every failure to compare is trouble (2), as for diff(1).
        message = _prefixed(notebook, exc) if isinstance(exc, NbStoreError) else _message(exc)
        raise CommandError(message, code=2) from exc
    # The diff shows cached cell text: colour only as Rich parsed it, every other control character escaped.
    if color:
        render.console().print(render.traceback_text(text.removesuffix("\n")), soft_wrap=True)
    else:
        text = render.safe_text(text, one_line=False)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    raise typer.Exit(1)


@cache_app.command("cat-artifact", cls=LightCommand)
def cache_cat_artifact(
    ctx: typer.Context,
    pk: CacheId,
    artifact: Annotated[str, typer.Argument(metavar="PATH", help="The artifact's path relative to the notebook.")],
) -> None:
    """Write one artifact of a cached notebook to stdout."""
    store = _store(ctx, existing=True)
    record = _cache_record(store, pk)
    name = Path(artifact).as_posix()
    if name not in record.artifacts:
        have = ", ".join(sorted(record.artifacts)) or "none"
        raise CommandError(f"cache ID {pk} has no artifact {name} (it has: {have})")
    data = store.get_cache_bundle(pk).artifacts.read(name)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@cache_app.command("limit", cls=LightCommand)
def cache_limit(
    ctx: typer.Context,
    size: Annotated[
        int | None, typer.Argument(metavar="N", min=1, help="The new limit (omit it to print the current one).")
    ] = None,
) -> None:
    """Print or set how many notebooks the cache keeps.

    Past the limit, the least recently used go first.
    """
    if size is None:
        typer.echo(_store(ctx, existing=True).get_cache_limit())
        return
    store = _store(ctx, existing=False)
    before = len(store.list_cache_records()) if store.exists() else 0
    store.change_cache_limit(size)
    evicted = before - len(store.list_cache_records())
    tail = f"; evicted {evicted} least recently used" if evicted else ""
    render.print_note(f"Cache limit set to {size}{tail}", stderr=False)


# ---------------------------------------------------------------------------- stage


@stage_app.command("add", cls=LightCommand)
def stage_add(
    ctx: typer.Context,
    notebooks: Annotated[
        list[Path],
        typer.Argument(
            metavar="NB", help="Notebook files, folders (every .ipynb below) or quoted globs ('docs/**/*.ipynb')."
        ),
    ],
    asset: Annotated[
        list[Path],
        typer.Option(
            "--asset", metavar="PATH", help="A file or folder the notebook reads, inside its folder (repeatable)."
        ),
    ] = [],  # noqa: B006 - Typer reads the default, never mutates it
    depends: Annotated[
        list[str],
        typer.Option(
            "--depends",
            metavar="GLOB",
            help="Files whose content enters the key, relative to the notebook's folder (repeatable).",
        ),
    ] = [],  # noqa: B006
    env: Annotated[
        list[str],
        typer.Option(
            "--env", metavar="VAR", help="An environment variable (or @kernel) whose value enters the key (repeatable)."
        ),
    ] = [],  # noqa: B006
    reader: Annotated[
        str,
        typer.Option(
            "--reader",
            metavar="NAME",
            help="How to read the files: nbformat (.ipynb), jupytext (MyST Markdown, py:percent, ...), or another "
            "registered reader.",
        ),
    ] = "nbformat",
) -> None:
    """Stage notebooks for execution.

    A folder stages every notebook below it (not in hidden folders, checkpoints or
    the store). Staging a notebook again updates its assets, reader and declarations and keeps its ID.
    """
    from nbstore.cli.paths import expand_notebooks
    from nbstore.readers import check_reader

    check_reader(reader)
    store = _store(ctx, existing=False)
    failed = 0
    found: list[Path] = []
    for arg, names in expand_notebooks(notebooks, store=store.path, any_file=reader != "nbformat"):
        if not names:
            failed += 1
            render.print_error(f"{arg}: no notebook (.ipynb) {'below it' if arg.is_dir() else 'matches it'}")
        found.extend(names)
    for nb in found:
        try:
            record = store.stage_notebook_file(nb, assets=_abs(asset), reader=reader, depends=depends, env=env)
        except (NotebookNotFoundError, NotebookReadError, CachingError) as exc:
            failed += 1
            render.print_error(_prefixed(nb, exc))
        else:
            # The record's name (a symlink's target), so that stage add and status name a notebook alike.
            render.print_note(f"Staged {render.display_path(record.uri)} as ID {record.pk}", stderr=False)
    if failed:
        raise typer.Exit(1)


def _stage_rows(store: NbStore) -> list[dict]:
    records, keys, by_key = _cache_rows(store)
    rows = []
    for r in records:
        key = keys.get(r.pk)
        match = by_key.get(key) if key else None
        rows.append(
            {
                "pk": r.pk,
                "uri": r.uri,
                "created": render.iso_time(r.created),
                "assets": list(r.assets),
                "cache_pk": match.pk if match else None,
                "failed": bool(r.traceback),
            }
        )
    return rows


@stage_app.command("list", cls=LightCommand)
def stage_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the staged notebooks.

    Shows each one's cache ID and whether its last run failed.
    """
    rows = _stage_rows(_store(ctx, existing=True))
    if as_json:
        render.print_json(rows)
    elif not rows:
        render.print_note("Nothing is staged.")
    else:
        render.show(render.stage_table(rows))


StageRef = Annotated[str, typer.Argument(metavar="ID|PATH", help="A stage ID or the notebook's path.")]


@stage_app.command("show", cls=LightCommand)
def stage_show(ctx: typer.Context, target: StageRef, as_json: JsonOption = False) -> None:
    """Show one staged notebook.

    Includes the traceback of its last run when that run failed.
    """
    store = _store(ctx, existing=True)
    ref = _stage_ref(target)
    try:
        record = store.get_staged_record(ref)
    except RecordNotFoundError:
        raise _not_staged(ref) from None
    info = store.staged_key_infos([record.pk])[record.pk]
    key = info.key
    match = None
    if key is not None:
        try:
            match = store.match_cache_key(key)
        except RecordNotFoundError:
            match = None
    status = _staged_status(record, key, match, info)
    reason = info.error if key is None else store.outdated_reasons({record.pk: info}).get(record.pk, "")
    inputs = info.inputs if info.rule != 1 and info.inputs else {}
    doc = dict(
        render.stage_record_json(record),
        hashkey=key,
        key_rule=info.rule if key else None,
        status=status,
        reason=reason,
        cache_pk=match.pk if match else None,
        inputs={"files": inputs.get("files", {}), "env": inputs.get("env", {})},
    )
    if as_json:
        render.print_json(doc)
        return
    pairs = [
        ("ID", record.pk),
        ("Notebook", render.display_path(record.uri)),
        ("Status", render.status_text(status)),
        *([("Reason", reason)] if reason else []),
        ("Cache ID", match.pk if match else ""),
        ("Hashkey", key or ""),
        ("Key rule", info.rule if key else ""),
        ("Staged", render.local_time(record.created)),
        ("Assets", [render.display_path(a) for a in record.assets]),
        ("Reader", record.reader),
    ]
    if record.depends or record.env:
        declared = [*(f"depends {d}" for d in record.depends), *(f"env {e}" for e in record.env)]
        pairs.append(("Declared", declared))
    if render.key_input_lines(inputs):
        pairs.append(("Key inputs", render.key_input_lines(inputs)))
    render.show(render.detail_table(pairs))
    if record.traceback:
        render.print_note("\nTraceback of the last run:", style="bold red", stderr=False)
        render.console().print(render.traceback_text(record.traceback), soft_wrap=True)


@stage_app.command("remove", cls=LightCommand)
def stage_remove(
    ctx: typer.Context,
    targets: Annotated[list[str] | None, typer.Argument(metavar="ID|PATH", help="Stage IDs or paths.")] = None,
    remove_all: Annotated[bool, typer.Option("--all", help="Unstage every notebook.")] = False,
) -> None:
    """Unstage notebooks (their cached results stay in the cache)."""
    if bool(targets) == remove_all:
        raise typer.BadParameter("give stage IDs or paths, or --all (not both)")
    refs = [_stage_ref(t) for t in targets or []]
    store = _store(ctx, existing=True)
    if remove_all:
        refs = [r.pk for r in store.list_staged_records()]
        if not refs:
            render.print_note("Nothing is staged.")
    failed = 0
    for ref in refs:
        try:
            store.discard_staged_notebook(ref)
        except RecordNotFoundError:
            failed += 1
            render.print_error(_not_staged(ref).message)
        else:
            render.print_note(f"Unstaged {ref if isinstance(ref, str) else f'ID {ref}'}", stderr=False)
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- status, match, merge


@app.command(cls=LightCommand)
def status(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Exit with status 1 unless every staged notebook is up to date (for CI).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show whether each staged notebook is up to date.

    Each is up to date, outdated, failed or missing, with its cache ID and last run.
    """
    with _no_gc():
        _status(ctx, check=check, as_json=as_json)


def _status(ctx: typer.Context, *, check: bool, as_json: bool) -> None:
    # Plain rows from the index state: building a record object and a datetime per row costs more than the rest.
    rows = status_rows(_store(ctx, existing=True))
    if as_json:
        render.print_json([row.to_dict() for row in rows])
    elif not rows:
        render.print_note("Nothing is staged (`nbstore stage add NB...` stages notebooks).")
    else:
        render.show(render.status_table(rows))
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        order = ("up to date", "outdated", "failed", "errored", "missing file", "unreadable")
        render.print_note(", ".join(f"{counts[s]} {s}" for s in order if s in counts), stderr=False)
    stale = [row for row in rows if row["status"] != "up to date"]
    if check and stale:
        named = ", ".join(f"{render.display_path(row['uri'])} ({row['status']})" for row in stale)
        verb = "is" if len(stale) == 1 else "are"
        raise CommandError(f"{_count(len(stale), 'staged notebook')} {verb} not up to date: {named}")


@app.command(cls=LightCommand)
def match(
    ctx: typer.Context,
    notebooks: Annotated[list[Path], typer.Argument(metavar="NB", help="Notebook files.")],
    as_json: JsonOption = False,
) -> None:
    """Print the cache ID matching each notebook.

    The exit status is 1 if any notebook has no match.
    """
    store = _store(ctx, existing=True)
    found: dict[str, int | None] = {}
    for nb in notebooks:
        try:
            found[str(nb)] = match_file_pk(store, nb)
        except RecordNotFoundError:
            found[str(nb)] = None
            render.print_error(f"{nb}: no cached notebook matches it")
        except (NotebookNotFoundError, NotebookReadError) as exc:
            found[str(nb)] = None
            render.print_error(_prefixed(nb, exc))
        else:
            if not as_json:
                typer.echo(f"{found[str(nb)]}\t{nb}")
    if as_json:
        render.print_json(found)
    if None in found.values():
        raise typer.Exit(1)


@app.command(cls=LightCommand)
def merge(
    ctx: typer.Context,
    notebook: Annotated[Path, typer.Argument(metavar="NB", help="The notebook file.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="OUT", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write a notebook with its cached outputs merged in."""
    store = _store(ctx, existing=True)
    try:
        pk, merged = store.merge_match_into_dict(notebook)
    except RecordNotFoundError:
        raise CommandError(f"{notebook}: no cached notebook matches it (run `nbstore execute` first)") from None
    except ValueError as exc:
        raise CommandError(_prefixed(notebook, exc) if isinstance(exc, NbStoreError) else f"{notebook}: {exc}") from exc
    from nbstore.notebooks import jupyter_text

    text = render.safe_json_text(jupyter_text(merged)) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror}") from exc
    render.print_note(f"Wrote {output} (outputs of cache ID {pk})")


# ---------------------------------------------------------------------------- execute


@app.command(cls=LightCommand)
def execute(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None,
        typer.Argument(metavar="ID|PATH", help="Staged notebooks to consider (default: every staged one)."),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            "-e",
            metavar="NAME",
            help="local-parallel, local-serial, temp-parallel, temp-serial, or another registered executor.",
        ),
    ] = (DEFAULT_EXECUTOR),
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="Kernels at once (parallel executors).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", help="Seconds a cell may run (0 or less: no limit).")
    ] = 30,
    allow_errors: Annotated[
        bool, typer.Option("--allow-errors", help="Cache notebooks even if a cell raises.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Run notebooks even if they are up to date.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the staged notebooks that are outdated and cache the results."""
    from nbstore.executors import list_executors, load_executor

    names = sorted(getattr(ep, "name", ep) for ep in list_executors())
    if executor not in names:
        raise CommandError(f"unknown executor {executor!r} (available: {', '.join(names)})", code=2)
    refs = [_stage_ref(t) for t in targets or []]
    store = _store(ctx, existing=True)
    staged = store.list_staged_records()
    pks = None
    if refs:
        pks = []
        for ref in refs:
            try:
                pks.append(store.get_staged_record(ref).pk)
            except RecordNotFoundError:
                raise _not_staged(ref) from None
    if not staged:
        render.print_note("Nothing is staged (`nbstore stage add NB...` stages notebooks).")
        if as_json:
            render.print_json({"succeeded": [], "excepted": [], "errored": [], "up_to_date": 0, "outcomes": []})
        return
    try:
        runner = load_executor(executor, cache=store, logger=_executor_logger())
    except ExecutorNotFoundError as exc:
        raise CommandError(_message(exc), code=2) from exc
    from nbstore.cli.progress import ExecutionProgress

    seen = _SeenEvents()
    try:
        with ExecutionProgress(render.console(stderr=True)) as progress:
            result = runner.run_and_cache(
                filter_pks=pks,
                timeout=timeout if timeout > 0 else None,
                allow_errors=allow_errors,
                force=force,
                workers=workers,
                on_event=seen.forward(progress.on_event),
            )
    except KeyboardInterrupt:
        _report_interrupt(store, seen, as_json=as_json)
        raise typer.Exit(130) from None
    rows = [
        {
            "pk": o.pk,
            "uri": o.uri,
            "status": o.status,
            "seconds": o.seconds,
            "cache_pk": o.cache_pk,
            "reason": o.reason or "",
        }
        for o in result.outcomes
    ]
    skipped = len(set(pks) if pks is not None else staged) - len(rows)
    if as_json:
        render.print_json(
            {
                "succeeded": list(result["succeeded"]),
                "excepted": list(result["excepted"]),
                "errored": list(result["errored"]),
                "up_to_date": skipped,
                "outcomes": rows,
            }
        )
    elif rows:
        render.show(render.execute_table(rows))
        counts = [f"{len(result[s])} {s}" for s in ("succeeded", "excepted", "errored") if result[s]]
        if skipped:
            counts.append(f"{skipped} already up to date")
        render.print_note(", ".join(counts), stderr=False)
    else:
        render.print_note("Nothing to run: every selected notebook is up to date (--force runs them anyway).")
    if result["excepted"] or result["errored"]:
        raise typer.Exit(1)


class _SeenEvents:
    """What an execution reported so far: the notebooks started, and the outcome of those that ended."""

    def __init__(self) -> None:
        self.started: dict[int, str] = {}
        self.ended: dict[int, Any] = {}
        self.total = 0

    def forward(self, then: Any) -> Any:
        def on_event(event: Any) -> None:
            self.total = event.total
            if event.kind == "start":
                self.started[event.pk] = event.uri
            elif event.kind == "end":
                self.ended[event.pk] = event
            then(event)

        return on_event


def _report_interrupt(store: NbStore, seen: _SeenEvents, *, as_json: bool) -> None:
    """Say what Ctrl-C stopped and what had finished (it is cached): one line, then the summary table."""
    running = {pk: uri for pk, uri in seen.started.items() if pk not in seen.ended}
    rows = []
    for pk in sorted({*seen.started, *seen.ended}):
        event = seen.ended.get(pk)
        if event is None:
            rows.append({"pk": pk, "uri": running[pk], "status": "interrupted", "seconds": None, "cache_pk": None})
            rows[-1]["reason"] = "stopped by Ctrl-C"
            continue
        cache_pk = None
        if event.status == "succeeded":
            try:
                record = store.get_cache_record_of_staged(pk)
            except NbStoreError:
                record = None
            cache_pk = record.pk if record is not None else None
        rows.append(
            {
                "pk": pk,
                "uri": event.uri,
                "status": event.status,
                "seconds": event.seconds,
                "cache_pk": cache_pk,
                "reason": event.reason or "",
            }
        )
    finished = len(seen.ended)
    not_started = max(0, seen.total - len(seen.started))
    names = ", ".join(render.display_path(uri) for uri in running.values()) or "nothing was running"
    render.print_error(
        f"interrupted: stopped {names}; {finished} finished (their results are kept)"
        + (f", {not_started} not started" if not_started else "")
    )
    if as_json:
        render.print_json({"interrupted": True, "outcomes": rows, "not_started": not_started})
    elif rows:
        render.show(render.execute_table(rows))


class _ShownByProgress(logging.Filter):
    """Drop the executor's per-notebook log lines: the progress display already shows each outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _Run.verbose or record.levelno >= logging.WARNING and not str(record.msg).startswith("Execution ")


def _executor_logger() -> logging.Logger:
    logger = logging.getLogger("nbstore.cli.execute")
    if not any(isinstance(f, _ShownByProgress) for f in logger.filters):
        logger.addFilter(_ShownByProgress())
    return logger


# ---------------------------------------------------------------------------- maintenance


@app.command(cls=LightCommand)
def clear(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove every cached and staged notebook and reset the settings."""
    store = _store(ctx, existing=True)
    if not yes:
        sys.stderr.write(f"Remove every cached and staged notebook in {render.display_path(store.path)}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        if not answer.endswith("\n") or not sys.stdin.isatty():
            sys.stderr.write("\n")  # a terminal echoes the Enter key; a pipe or EOF does not
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("not confirmed: nothing was removed (--yes skips the question)")
    store.clear_cache()
    render.print_note(f"Cleared {render.display_path(store.path)}", stderr=False)


@app.command(cls=LightCommand)
def verify(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed (quarantining bad files).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check every object and record against its hash.

    The exit status is 1 if the store is damaged.
    """
    store = _store(ctx, existing=True)
    report = store.verify(repair=repair)
    problems = [{"kind": p.kind, "path": p.path, "detail": p.detail, "repaired": p.repaired} for p in report.problems]
    if as_json:
        render.print_json(
            {
                "ok": report.ok,
                "objects_checked": report.objects_checked,
                "records_checked": report.records_checked,
                "problems": problems,
            }
        )
    else:
        if problems:
            render.show(render.problems_table(problems))
        verdict = "OK" if report.ok else "DAMAGED"
        render.print_note(
            f"{verdict}: checked {_count(report.objects_checked, 'object')} and "
            f"{_count(report.records_checked, 'record')}; "
            f"{_count(len(problems), 'problem')}, {sum(p['repaired'] for p in problems)} repaired",
            style="green" if report.ok else "bold red",
            stderr=False,
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command(cls=LightCommand)
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove objects no record uses and stale temporary files."""
    from nbstore.tempdirs import remove_dead_runtime_dirs

    store = _store(ctx, existing=True)
    report = store.gc(dry_run=dry_run)
    # Kernel connection folders that killed runs left in the temp folder (outside the store).
    runtime_dirs = remove_dead_runtime_dirs(dry_run=dry_run)
    if as_json:
        render.print_json(
            {
                "dry_run": report.dry_run,
                "removed": list(report.removed),
                "bytes_freed": report.bytes_freed,
                "runtime_dirs": runtime_dirs,
            }
        )
        return
    verb = "Would remove" if report.dry_run else "Removed"
    for path in [*report.removed, *runtime_dirs]:
        typer.echo(f"{verb} {render.safe_text(str(path))}")
    render.print_note(
        f"{verb} {_count(len(report.removed), 'file')}, {render.format_bytes(report.bytes_freed)}", stderr=False
    )


@app.command("compat-path", cls=LightCommand)
def compat_path_command() -> None:
    """Print the folder to put first on PYTHONPATH so that `import jupyter_cache` uses nbstore.

    For tools that import jupyter-cache by name (Quarto, MyST-NB): PYTHONPATH="$(nbstore compat-path)".
    """
    from nbstore import compat_path

    typer.echo(compat_path())


# Commands kept in modules of their own register themselves on `app` when imported.
from nbstore.cli import jcimport as _jcimport  # noqa: E402,F401
from nbstore.cli import sync as _sync  # noqa: E402,F401
