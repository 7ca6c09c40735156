"""Import a jupyter-cache 1.0 folder (global.db + executed/<hashkey>/) into an nbstore store, reading it only.

The source is untrusted input like a store folder: the database is opened read-only (an SQLite ``mode=ro``
URI, ``query_only``), only regular files under ``executed/<hashkey>/`` are read, never through a link, each
one bounded in size; a record that cannot be imported is skipped with the reason, never half imported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbstore.errors import NbStoreError, StoreFormatError

if TYPE_CHECKING:
    from nbstore.store.cache import NbStore

__all__ = ["ImportReport", "ImportedItem", "import_jupyter_cache", "is_jupyter_cache"]

DB_NAME = "global.db"

# jupyter-cache names a cached notebook's folder by the MD5 hex digest of its hashed form.
_HASHKEY = re.compile(r"[0-9a-f]{32}")

#: Largest file (notebook or artifact) read from the source.
MAX_FILE_BYTES = 1 << 30

#: Deepest folder nesting read under an artifacts folder.
MAX_DEPTH = 32


@dataclass(frozen=True)
class ImportedItem:
    """One record of the source: what it was ('cache' or 'project'), its pk there, and what became of it."""

    kind: str
    source_pk: int
    uri: str
    imported: bool
    pk: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class ImportReport:
    """What import_jupyter_cache did, record by record."""

    source: str
    items: tuple[ImportedItem, ...] = ()

    @property
    def imported(self) -> list[ImportedItem]:
        """Return the records that were imported."""
        return [i for i in self.items if i.imported]

    @property
    def skipped(self) -> list[ImportedItem]:
        """Return the records that were not imported (each with its reason)."""
        return [i for i in self.items if not i.imported]


def is_jupyter_cache(path: str | os.PathLike[str]) -> bool:
    """Return True if path looks like a jupyter-cache folder (it holds global.db and no nbstore.json)."""
    folder = Path(path)
    return (folder / DB_NAME).is_file() and not (folder / "nbstore.json").exists()


def _connect(folder: Path) -> sqlite3.Connection:
    db = folder / DB_NAME
    try:
        st = os.lstat(db)
    except FileNotFoundError:
        raise StoreFormatError(f"{folder} is not a jupyter-cache folder: it has no {DB_NAME}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StoreFormatError(f"{db} is not a regular file (a link or a folder): refusing to read it")
    try:
        conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True)
        conn.execute("PRAGMA query_only = ON")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreFormatError(f"{db} is not a jupyter-cache database: {exc}") from exc
    if "nbcache" not in tables:
        conn.close()
        raise StoreFormatError(f"{db} is not a jupyter-cache database (it has no nbcache table)")
    conn.row_factory = sqlite3.Row
    return conn


def _rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[dict]:
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    wanted = [c for c in columns if c in present]
    if not wanted:
        return []
    query = f"SELECT {', '.join(wanted)} FROM {table} ORDER BY pk"
    try:
        return [dict(row) for row in conn.execute(query)]
    except sqlite3.DatabaseError as exc:
        raise StoreFormatError(f"cannot read the {table} table of the jupyter-cache database: {exc}") from exc


def _time(value: Any) -> dt.datetime | None:
    """jupyter-cache's times: SQLAlchemy writes naive UTC datetimes as ISO-like text."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    # nbstore's records hold naive UTC times too.
    return parsed if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default


def _read_regular(path: Path) -> bytes:
    """Read a regular file that is no link, at most MAX_FILE_BYTES (OSError / ValueError say why not)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ValueError(f"{path.name} is larger than {MAX_FILE_BYTES} bytes")
        chunks, left = [], MAX_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise ValueError(f"{path.name} grew past {MAX_FILE_BYTES} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _plain_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _artifacts(folder: Path) -> dict[str, bytes]:
    """Read every regular file under folder (no links followed; ValueError names what is refused)."""
    out: dict[str, bytes] = {}
    if not os.path.lexists(folder):
        return out
    if not _plain_folder(folder):
        raise ValueError("its artifacts folder is a link or not a folder")
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        if len(rel_root.parts) > MAX_DEPTH:
            raise ValueError(f"its artifacts nest deeper than {MAX_DEPTH} folders")
        for name in dirs:
            if not _plain_folder(Path(root, name)):
                raise ValueError(f"artifact {(rel_root / name).as_posix()} is a link")
        for name in sorted(files):
            rel = (rel_root / name).as_posix()
            if os.path.islink(os.path.join(root, name)):
                raise ValueError(f"artifact {rel} is a link")
            try:
                out[rel] = _read_regular(Path(root, name))
            except OSError as exc:
                raise ValueError(f"artifact {rel} cannot be read: {exc.strerror or exc}") from exc
    return out


class _Blob:
    """A read-once handle on bytes already read (NbArtifacts-like iteration wants handles)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data


class _Artifacts:
    """The (relative path, handle) pairs cache_notebook_bundle iterates over."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self._blobs = blobs

    def __iter__(self):
        return iter((Path(rel), _Blob(data)) for rel, data in sorted(self._blobs.items()))


def _import_cache_row(store: NbStore, folder: Path, row: dict, seen: dict[str, int]) -> ImportedItem:
    from nbstore import notebooks
    from nbstore.bundles import NbBundleIn
    from nbstore.errors import RecordNotFoundError
    from nbstore.hashing import notebook_key

    pk, uri = int(row.get("pk") or 0), str(row.get("uri") or "")
    hashkey = row.get("hashkey")

    def skip(reason: str) -> ImportedItem:
        return ImportedItem("cache", pk, uri, False, reason=reason)

    if not isinstance(hashkey, str) or not _HASHKEY.fullmatch(hashkey):
        return skip(f"its hashkey {hashkey!r} is not jupyter-cache's 32 hex digits")
    base = folder / "executed" / hashkey
    if not _plain_folder(folder / "executed") or not _plain_folder(base):
        return skip(f"executed/{hashkey}/ is missing (or is a link)")
    try:
        nb = notebooks.parse_notebook(_read_regular(base / "base.ipynb"), source=f"executed/{hashkey}/base.ipynb")
        blobs = _artifacts(base / "artifacts")
    except FileNotFoundError:
        return skip(f"executed/{hashkey}/base.ipynb is missing")
    except (OSError, ValueError, NbStoreError) as exc:
        return skip(f"executed/{hashkey}: {exc}")
    key = notebook_key(nb)
    if key in seen:
        return skip(f"same code as jupyter-cache ID {seen[key]}")
    try:
        existing = store.match_cache_key(key)
    except RecordNotFoundError:
        existing = None
    if existing is not None:
        seen[key] = pk
        return skip(f"already cached in the store (ID {existing.pk})")
    data = _json(row.get("data"), {})
    created = _time(row.get("created"))
    bundle = NbBundleIn(notebooks.to_node(nb), uri, _Artifacts(blobs), data if isinstance(data, dict) else {})
    try:
        record = store.cache_notebook_bundle(
            bundle,
            check_validity=False,
            description=str(row.get("description") or ""),
            key=key,
            created=created,
            accessed=_time(row.get("accessed")) or created,
        )
    except NbStoreError as exc:
        return skip(str(exc))
    seen[key] = pk
    return ImportedItem("cache", pk, uri, True, record.pk)


def _import_project_row(store: NbStore, row: dict) -> ImportedItem:
    pk, uri = int(row.get("pk") or 0), str(row.get("uri") or "")

    def skip(reason: str) -> ImportedItem:
        return ImportedItem("project", pk, uri, False, reason=reason)

    if not uri:
        return skip("it has no notebook path")
    path = Path(uri)
    if not path.is_file():
        return skip("its notebook file is missing")
    read_data = _json(row.get("read_data"), {}) or {}
    reader = read_data.get("name") if isinstance(read_data, dict) else None
    assets = _json(row.get("assets"), []) or []
    if not isinstance(assets, list) or not all(isinstance(a, str) for a in assets):
        return skip("its assets are not a list of paths")
    from nbstore.errors import RecordNotFoundError

    try:
        existing = store.get_staged_record(path)
    except RecordNotFoundError:
        existing = None
    except NbStoreError as exc:
        return skip(str(exc))
    if existing is not None:
        return skip(f"already staged in the store (ID {existing.pk})")
    try:
        kwargs = {"reader": reader} if reader and reader != "nbformat" else {}
        record = store.stage_notebook_file(path, assets, **kwargs)
        traceback = row.get("traceback")
        if isinstance(traceback, str) and traceback:
            store.set_staged_traceback(record.pk, traceback)
    except (NbStoreError, OSError, TypeError) as exc:
        return skip(str(exc))
    return ImportedItem("project", pk, uri, True, record.pk)


def import_jupyter_cache(store: NbStore, source: str | os.PathLike[str]) -> ImportReport:
    """Import the cached notebooks (artifacts, data, times) and project records of a jupyter-cache folder."""
    folder = Path(source).absolute()
    if not _plain_folder(folder):
        raise StoreFormatError(f"{folder} is not a folder (or is a link)")
    if folder.resolve() == store.path.resolve():
        raise StoreFormatError(f"{folder} is the store itself: import into another folder")
    conn = _connect(folder)
    try:
        cache_rows = _rows(conn, "nbcache", ["pk", "hashkey", "uri", "description", "data", "created", "accessed"])
        project_rows = _rows(conn, "nbproject", ["pk", "uri", "read_data", "assets", "created", "traceback"])
    finally:
        conn.close()
    items: list[ImportedItem] = []
    seen: dict[str, int] = {}
    for row in cache_rows:
        items.append(_import_cache_row(store, folder, row, seen))
    for row in project_rows:
        items.append(_import_project_row(store, row))
    return ImportReport(str(folder), tuple(items))
