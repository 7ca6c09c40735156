"""What the command line shows: Rich consoles and tables for people, plain dicts for --json."""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nbstore.records import NbCacheRecord, NbStageRecord

__all__ = [
    "Grid",
    "STATUS_STYLES",
    "key_input_lines",
    "cache_record_json",
    "cache_rows_table",
    "cache_table",
    "console",
    "detail_table",
    "display_path",
    "execute_table",
    "format_bytes",
    "format_data",
    "format_seconds",
    "iso_time",
    "local_time",
    "print_error",
    "print_json",
    "print_note",
    "show",
    "problems_table",
    "safe_ansi_text",
    "safe_json_text",
    "safe_text",
    "stage_record_json",
    "stage_table",
    "status_text",
    "status_table",
    "traceback_text",
]

#: How each notebook state is coloured wherever it appears.
STATUS_STYLES = {
    "up to date": "green",
    "succeeded": "green",
    "outdated": "yellow",
    "failed": "red",
    "excepted": "red",
    "errored": "red",
    "missing file": "magenta",
    "unreadable": "magenta",
    "interrupted": "yellow",
}


# What a terminal may act on rather than show: C0 and C1 controls, DEL, line separators and bidi overrides.
_UNSAFE_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_MULTI_LINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Outside strings JSON holds none of these; inside one, a \u escape is the same text.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SGR = re.compile("(\x1b\\[[0-9;]*m)")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escaped(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def safe_text(text: str, *, one_line: bool = True) -> str:
    """Return store-derived text fit for a terminal: control characters shown escaped (newlines too if one_line)."""
    if text.isprintable():
        return text  # the common case, at C speed
    return (_UNSAFE_ONE_LINE if one_line else _UNSAFE_MULTI_LINE).sub(_escaped, text)


def safe_json_text(text: str) -> str:
    """Return JSON text with the C1 controls and separators json.dumps leaves raw written as \\u escapes."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def console(*, stderr: bool = False) -> Console:
    """Return a console on stdout or stderr: colour only on a terminal, NO_COLOR honoured, no wrap when piped."""
    con = Console(stderr=stderr, highlight=False)
    # A table piped into grep or a CI log must not be wrapped at 80 columns.
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con.width = 1000
    return con


def show(renderable: Any) -> None:
    """Print a table on stdout: as Rich draws it on a terminal, without trailing blanks when piped."""
    con = console()
    if isinstance(renderable, Grid):
        if con.color_system is None:
            # Piped or NO_COLOR: the plain text is all there is to print, and one write is far faster.
            # Written in chunks as the lines are made: one string of 100,000 lines would be tens of MB more.
            write, chunk = sys.stdout.write, []
            for line in renderable.iter_plain_lines():
                chunk.append(line)
                if len(chunk) == 1000:
                    write("\n".join(chunk) + "\n")
                    chunk.clear()
            if chunk:
                write("\n".join(chunk) + "\n")
            sys.stdout.flush()
        else:
            con.print(Text("\n").join(renderable.lines()), soft_wrap=True)
        return
    if con.is_terminal:
        con.print(renderable)
        return
    with con.capture() as captured:
        con.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def print_json(doc: Any) -> None:
    """Write one JSON document (and nothing else) to stdout."""
    sys.stdout.write(safe_json_text(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    """Print one red 'Error: ...' line on stderr (never wrapped)."""
    console(stderr=True).print(Text.assemble(("Error: ", "bold red"), (safe_text(message), "red")), soft_wrap=True)


def print_note(message: str, *, style: str = "", stderr: bool = True, one_line: bool = False) -> None:
    """Print a plain note (stderr by default: stdout is for results), control characters escaped."""
    console(stderr=stderr).print(Text(safe_text(message, one_line=one_line), style=style), soft_wrap=True)


def iso_time(value: datetime | None) -> str | None:
    """Return a naive-UTC record time as ISO 8601 with a Z (what --json prints)."""
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


def local_time(value: datetime | str | None) -> str:
    """Return a naive-UTC record time (or its iso_time text) in the local time zone, to the second."""
    if not value:
        return ""
    if isinstance(value, str):
        text = value.removesuffix("Z")
        if len(text) >= 19 and text[10] == "T" and text[13] == ":" and text[19:20] in ("", "."):
            # Listings call this for every row: look the zone's offset up once per UTC hour, not per row.
            offset = _utc_offset(text[:13])
            if not offset:
                return f"{text[:10]} {text[11:19]}"
            return (datetime.fromisoformat(text[:19]) + offset).strftime("%Y-%m-%d %H:%M:%S")
        value = datetime.fromisoformat(text)
    return value.replace(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@functools.lru_cache(maxsize=4096)
def _utc_offset(hour: str) -> timedelta:
    """The local zone's offset from UTC during one UTC hour ('YYYY-MM-DDTHH'; zones change offset on the hour)."""
    return datetime.fromisoformat(hour + ":00").replace(tzinfo=timezone.utc).astimezone().utcoffset() or timedelta()


def format_seconds(value: Any) -> str:
    """Return seconds as '0.42 s' (empty for a missing value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return f"{value:.2f} s"


def format_data(data: dict) -> str:
    """Return a record's data for a table: JSON, with seconds shown as seconds ('0.63 s', not 0.6286610199)."""
    if not data:
        return ""
    parts = []
    for key, value in data.items():
        if key.endswith("_seconds") and format_seconds(value):
            parts.append(f"{json.dumps(key, ensure_ascii=False)}: {format_seconds(value)}")
        else:
            parts.append(f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}")
    return "{" + ", ".join(parts) + "}"


def display_path(path: str | os.PathLike[str]) -> str:
    """Return a path relative to the current folder when it lies inside it (shorter to read)."""
    text = os.fspath(path)
    if not text:
        return ""
    # String prefixes, not pathlib: a table of a thousand notebooks calls this a thousand times.
    cwd = os.getcwd()
    prefix = cwd if cwd.endswith(os.sep) else cwd + os.sep
    return text[len(prefix) :].replace(os.sep, "/") if text.startswith(prefix) else text


def cache_record_json(record: NbCacheRecord) -> dict:
    """Return every field of a cache record as JSON-ready values."""
    return {
        "pk": record.pk,
        "hashkey": record.hashkey,
        "key_rule": record.key_rule,
        "uri": record.uri,
        "created": iso_time(record.created),
        "accessed": iso_time(record.accessed),
        "description": record.description,
        "data": record.data,
        "notebook": record.notebook,
        "artifacts": dict(sorted(record.artifacts.items())),
        "inputs": record.inputs,
    }


def key_input_lines(inputs: dict) -> list[str]:
    """Return one line per file ('path  sha256:...') and variable ('NAME  sha256:...' or 'NAME  unset') of a key."""
    files, env = inputs.get("files") or {}, inputs.get("env") or {}
    lines = [f"{path}  sha256:{str(sha)[:16]}" for path, sha in sorted(files.items())]
    for name, value in sorted(env.items()):
        lines.append(f"{name}  " + ("unset" if value is None else f"sha256:{str(value)[:16]}"))
    return lines


def stage_record_json(record: NbStageRecord) -> dict:
    """Return every field of a stage record as JSON-ready values."""
    return {
        "pk": record.pk,
        "uri": record.uri,
        "created": iso_time(record.created),
        "assets": list(record.assets),
        "traceback": record.traceback,
        "depends": list(record.depends),
        "env": list(record.env),
        "reader": record.reader,
    }


#: Rows past which a status table makes its cells as it draws them (LazyGrid) rather than holding them.
LAZY_ROWS = 20_000


class Grid:
    """An aligned table (bold header, rule, rows) laid out directly: Rich's Table takes ~0.1 s per 300 rows."""

    #: Space between columns (what Rich's SIMPLE_HEAD box with one cell of padding gives).
    GAP = "   "

    def __init__(self, *columns: str, numeric: Sequence[str] = ()) -> None:
        self.columns = list(columns)
        self.numeric = [name in numeric for name in columns]
        # One tuple of texts per row and one shared tuple of styles per distinct styling: a table of
        # 100,000 notebooks held as a (text, style) pair per cell took 70 MB (Rich Text per cell, far more).
        self.rows: list[tuple[str, ...]] = []
        self.styles: list[tuple[str, ...]] = []
        self._style_memo: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add_row(self, *cells: str | Text | tuple[str, str]) -> None:
        """Add one row of plain, styled (single-style Text) or (text, style) cells."""
        texts = []
        styles = []
        for c in cells:
            if type(c) is tuple:
                text, style = c
            elif isinstance(c, Text):
                text, style = c.plain, str(c.style)
            else:
                text, style = str(c), ""
            # Every cell is one line of text, much of it from the store: never a control character raw.
            texts.append(safe_text(text))
            styles.append(style)
        key = tuple(styles)
        self.rows.append(tuple(texts))
        self.styles.append(self._style_memo.setdefault(key, key))

    def _widths(self) -> list[int]:
        widths = []
        for i, head in enumerate(self.columns):
            column = [row[i] for row in self.rows]
            column.append(head)
            # One ASCII check per column instead of one width lookup per cell.
            widths.append(max(map(len, column)) if "".join(column).isascii() else max(map(_cell_len, column)))
        return widths

    def _padded(self, widths: list[int], row: Sequence[str]) -> list[str]:
        cells = []
        for i, text in enumerate(row):
            pad = " " * (widths[i] - _cell_len(text))
            cells.append(pad + text if self.numeric[i] else text + pad)
        return cells

    def iter_plain_lines(self) -> Iterator[str]:
        """Yield the header, the rule and one line per row as plain text (no trailing blanks), one at a time."""
        widths = self._widths()
        gap = self.GAP
        yield gap.join(self._padded(widths, self.columns)).rstrip()
        yield "─" * (sum(widths) + len(gap) * (len(widths) - 1))
        for row in self.rows:
            yield gap.join(self._padded(widths, row)).rstrip()

    def plain_lines(self) -> list[str]:
        """Return the header, the rule and one line per row as plain text (no trailing blanks)."""
        return list(self.iter_plain_lines())

    def lines(self) -> list[Text]:
        """Return the header, the rule and one line per row as styled Rich text."""
        widths = self._widths()
        plain_styles = ("",) * len(self.columns)
        out = []
        for n, (row, row_styles) in enumerate(
            zip([tuple(self.columns), *self.rows], [plain_styles, *self.styles], strict=True)
        ):
            line = Text(style="" if n else "bold")
            for i, (cell, style) in enumerate(zip(self._padded(widths, row), row_styles, strict=True)):
                if i:
                    line.append(self.GAP)
                line.append(cell, style=style or None)
            line.rstrip()
            out.append(line)
        rule = Text("─" * (sum(widths) + len(self.GAP) * (len(widths) - 1)))
        return [out[0], rule, *out[1:]]


class LazyGrid(Grid):
    """A Grid whose cells are made from its rows when drawn (twice: widths, then lines), never all held at once.

    For tables of tens of thousands of rows, where holding every cell's text costs more memory than the rows.
    """

    def __init__(self, *columns: str, numeric: Sequence[str] = (), source: Sequence[Any], cells: Any) -> None:
        super().__init__(*columns, numeric=numeric)
        self._source = source
        self._cells = cells  # row -> tuple of (text, style) per column

    def _made(self) -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
        for item in self._source:
            cells = self._cells(item)
            yield tuple(safe_text(text) for text, _style in cells), tuple(style for _text, style in cells)

    def _widths(self) -> list[int]:
        widths = [_cell_len(head) for head in self.columns]
        for texts, _styles in self._made():
            for i, text in enumerate(texts):
                n = len(text) if text.isascii() else _cell_len(text)
                if n > widths[i]:
                    widths[i] = n
        return widths

    def iter_plain_lines(self) -> Iterator[str]:
        """Yield the header, the rule and one line per row as plain text, making each row's cells as it goes."""
        widths = self._widths()
        gap = self.GAP
        yield gap.join(self._padded(widths, self.columns)).rstrip()
        yield "─" * (sum(widths) + len(gap) * (len(widths) - 1))
        for texts, _styles in self._made():
            yield gap.join(self._padded(widths, texts)).rstrip()

    def lines(self) -> list[Text]:
        """Return the header, the rule and one line per row as styled Rich text."""
        eager = Grid(*self.columns)
        eager.numeric = self.numeric
        for texts, styles in self._made():
            eager.add_row(*zip(texts, styles, strict=True))
        return eager.lines()


def _cell_len(text: str) -> int:
    """Return the terminal width of text (Rich's rule for wide characters, skipped for plain ASCII)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _table(*columns: str, numeric: Sequence[str] = ()) -> Grid:
    return Grid(*columns, numeric=numeric)


def _status(text: str) -> Text:
    return Text(text, style=STATUS_STYLES.get(text, ""))


def cache_table(records: Iterable[NbCacheRecord], *, hashkeys: bool = False) -> Grid:
    """Return the table of cache records: ID, Origin, Created, Accessed[, Hashkey], Artifacts, Data."""
    rows = [
        {
            "pk": r.pk,
            "hashkey": r.hashkey,
            "uri": r.uri,
            "created": r.created,
            "accessed": r.accessed,
            "artifacts": len(r.artifacts),
            "data": r.data,
        }
        for r in records
    ]
    return cache_rows_table(rows, hashkeys=hashkeys)


def cache_rows_table(rows: Iterable[dict], *, hashkeys: bool = False) -> Grid:
    """Return the table of cache records from plain rows (nbstore.store.rows.cache_rows; times datetime or ISO)."""
    rows = list(rows)
    with_data = any(r["data"] for r in rows)
    columns = ["ID", "Origin", "Created", "Accessed"] + (["Hashkey"] if hashkeys else []) + ["Artifacts"]
    table = _table(*columns, *(["Data"] if with_data else []), numeric=("ID", "Artifacts"))
    for r in rows:
        row = [str(r["pk"]), display_path(r["uri"]), local_time(r["created"]), local_time(r["accessed"])]
        if hashkeys:
            row.append(r["hashkey"])
        row.append(str(r["artifacts"]))
        if with_data:
            row.append(format_data(r["data"]))
        table.add_row(*row)
    return table


def stage_table(rows: Iterable[dict]) -> Grid:
    """Return the table of staged notebooks (rows as stage list --json gives them)."""
    table = _table("ID", "Notebook", "Staged", "Assets", "Cache ID", "Last run", numeric=("ID", "Assets", "Cache ID"))
    for row in rows:
        last = "failed" if row["failed"] else ""
        table.add_row(
            str(row["pk"]),
            display_path(row["uri"]),
            local_time(row["created"]),
            str(len(row["assets"])),
            "" if row["cache_pk"] is None else str(row["cache_pk"]),
            _status(last),
        )
    return table


_STATUS_FIELDS = ("pk", "uri", "status", "cache_pk", "last_run", "seconds")
_status_fields = operator.attrgetter(*_STATUS_FIELDS, "reason")


def status_table(rows: Iterable[dict]) -> Grid:
    """Return the status table: every staged notebook with its state, cache ID and last run."""
    rows = list(rows)
    # The reason column (why outdated, why errored) appears only when some notebook has one.
    reasons = any(row.get("reason") for row in rows)
    columns = ("ID", "Notebook", "Status", "Cache ID", "Last run", "Took", *(("Reason",) if reasons else ()))
    numeric = ("ID", "Cache ID", "Took")

    def cells(row: Any) -> tuple[tuple[str, str], ...]:
        if isinstance(row, dict):
            pk, uri, status, cache_pk, last_run, seconds = (row[k] for k in _STATUS_FIELDS)
            reason = row.get("reason")
        else:
            # A status row object: one attribute fetch for all fields (a table of 10,000 rows makes 70,000).
            pk, uri, status, cache_pk, last_run, seconds, reason = _status_fields(row)
        return (
            (str(pk), ""),
            (display_path(uri), ""),
            (status, STATUS_STYLES.get(status, "")),
            ("" if cache_pk is None else str(cache_pk), ""),
            (local_time(last_run), ""),
            (format_seconds(seconds), ""),
            *(((reason or "", ""),) if reasons else ()),
        )

    if len(rows) > LAZY_ROWS:
        return LazyGrid(*columns, numeric=numeric, source=rows, cells=cells)
    table = _table(*columns, numeric=numeric)
    for row in rows:
        table.add_row(*cells(row))
    return table


def execute_table(rows: Iterable[dict]) -> Grid:
    """Return the summary table of an execution: one row per notebook the executor considered."""
    table = _table("ID", "Notebook", "Status", "Took", "Cache ID", "Reason", numeric=("ID", "Took", "Cache ID"))
    for row in rows:
        table.add_row(
            str(row["pk"]),
            display_path(row["uri"]),
            _status(row["status"]),
            format_seconds(row["seconds"]),
            "" if row["cache_pk"] is None else str(row["cache_pk"]),
            row["reason"],
        )
    return table


def detail_table(pairs: Iterable[tuple[str, Any]]) -> Table:
    """Return a two-column 'field  value' grid; a list value is shown one escaped item per line."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        if isinstance(value, Text):
            cell = value
        elif isinstance(value, (list, tuple)):
            # Each item is one-line store text; only the separators nbstore adds may break the line.
            cell = Text("\n".join(safe_text(str(item)) for item in value) if value else "none")
        else:
            cell = Text(safe_text(str(value)))
        grid.add_row(name, cell)
    return grid


def status_text(status: str) -> Text:
    """Return a notebook state coloured as everywhere else."""
    return _status(status)


def safe_ansi_text(text: str) -> str:
    """Return multi-line store text keeping only its colour (SGR) sequences; every other control is escaped."""
    parts = _SGR.split(text)
    # Odd parts are the colour sequences the split kept; nothing else reaches the terminal unescaped.
    return "".join(part if i % 2 else safe_text(part, one_line=False) for i, part in enumerate(parts))


def traceback_text(text: str) -> Text:
    """Return a recorded traceback as Rich text: its colours parsed, every other control character escaped."""
    return Text.from_ansi(safe_ansi_text(text))


def problems_table(problems: Iterable[dict]) -> Grid:
    """Return the table of problems `nbstore verify` found."""
    table = _table("Kind", "Path", "Detail", "Repaired")
    for p in problems:
        repaired = Text("yes", style="green") if p["repaired"] else Text("no", style="red")
        table.add_row(p["kind"], p["path"], p["detail"], repaired)
    return table


def format_bytes(size: int) -> str:
    """Return a byte count for people (1023 B, 4.0 KiB, 2.5 MiB...)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
