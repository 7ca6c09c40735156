"""Plain-text tables of cache and stage records, as jupyter-cache's utils print them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nbstore.records import NbCacheRecord, NbStageRecord

if TYPE_CHECKING:
    from nbstore.store.cache import NbStore

__all__ = [
    "format_table",
    "shorten_path",
    "tabulate_cache_records",
    "tabulate_project_records",
    "tabulate_stage_records",
]


def shorten_path(path: str, length: int | None) -> str:
    """Return the last `length` parts of a path (all of it when length is None)."""
    if length is None:
        return str(path)
    parts = Path(path).parts
    return str(Path(*parts[-length:])) if parts and length > 0 else str(path)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[bool]) -> str:
    """Format rows as a plain text table: numbers right-aligned, text left-aligned, dashes under headers."""
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    # Headers get two spaces of room, as the tables jupyter-cache prints (tabulate's "simple") do.
    widths = [max([len(h) + 2] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]

    def cell(value: str, i: int) -> str:
        return value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i])

    lines = ["  ".join(cell(h, i) for i, h in enumerate(headers)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(cell(v, i) for i, v in enumerate(r)).rstrip() for r in text_rows)
    return "\n".join(lines)


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def tabulate_cache_records(
    records: Sequence[NbCacheRecord], path_length: int | None = None, hashkeys: bool = False
) -> str:
    """Return a text table of cache records, newest first: ID, Origin URI, Created, Accessed[, Hashkey], Data."""
    headers = ["ID", "Origin URI", "Created", "Accessed"] + (["Hashkey"] if hashkeys else [])
    with_data = any(r.data for r in records)
    if with_data:
        headers.append("Data")
    rows = []
    for r in sorted(records, key=lambda r: r.pk, reverse=True):
        row: list[object] = [r.pk, shorten_path(r.uri, path_length), _time(r.created), _time(r.accessed)]
        if hashkeys:
            row.append(r.hashkey)
        if with_data:
            row.append(str(r.data) if r.data else "")
        rows.append(row)
    return format_table(headers, rows, [True, False, False, False] + [False] * (len(headers) - 4))


def tabulate_stage_records(
    records: Sequence[NbStageRecord], path_length: int | None = None, cache: NbStore | None = None
) -> str:
    """Return a text table of stage records, newest first: ID, URI, Created, Assets[, Cache ID]."""
    headers = ["ID", "URI", "Created", "Assets"]
    cache_ids: dict[int, int] = {}
    if cache is not None:
        keys = cache.staged_keys()
        by_key = {r.hashkey: r.pk for r in cache.list_cache_records()}
        cache_ids = {pk: by_key[k] for pk, k in keys.items() if k in by_key}
    rows = []
    for r in sorted(records, key=lambda r: r.pk, reverse=True):
        row: list[object] = [r.pk, shorten_path(r.uri, path_length), _time(r.created), len(r.assets)]
        if cache_ids:
            row.append(cache_ids.get(r.pk, ""))
        rows.append(row)
    if cache_ids:
        headers.append("Cache ID")
    return format_table(headers, rows, [True, False, False, True, True])


def tabulate_project_records(
    records: Sequence[NbStageRecord],
    path_length: int | None = None,
    cache: NbStore | None = None,
    assets: bool = False,
) -> str:
    """Return jupyter-cache 1.0's table of project records: ID, URI, Reader, Added, Status[, Assets].

    Status is "cached [pk]" when the notebook as it is now has a cache record, "failed" when its last
    run failed, "unreadable" when its file cannot be read, "-" otherwise (or when no cache is given).
    """
    headers = ["ID", "URI", "Reader", "Added", "Status"] + (["Assets"] if assets else [])
    keys: dict[int, str | None] = {}
    by_key: dict[str, int] = {}
    if cache is not None:
        keys = cache.staged_keys([r.pk for r in records])
        by_key = {r.hashkey: r.pk for r in cache.list_cache_records()}
    rows = []
    for r in records:
        status = "-"
        if cache is not None:
            key = keys.get(r.pk)
            if key in by_key:
                status = f"cached [{by_key[key]}]"
            elif r.traceback:
                status = "failed"
            elif key is None:
                status = "unreadable"
        row: list[object] = [r.pk, shorten_path(r.uri, path_length), r.reader, r.created.isoformat(" ", "minutes")]
        row.append(status)
        if assets:
            row.append(len(r.assets))
        rows.append(row)
    return format_table(headers, rows, [True, False, False, False, False, True])
