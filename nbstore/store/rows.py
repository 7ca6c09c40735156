"""Plain rows straight from the index state, for listings of thousands of notebooks (no record objects)."""

from __future__ import annotations

import json
import os
import zlib

from nbstore.errors import RecordNotFoundError, StoreUnsafeError
from nbstore.records import format_time, parse_time
from nbstore.store.cache import RELATIVE_URI, NbStore, notebook_file_key
from nbstore.store.safeio import open_in
from nbstore.untrusted import loads_bounded

__all__ = ["StatusRow", "cache_rows", "canonical_time", "match_file_pk", "match_pk", "status_rows"]

# How far from the end of the index its last line is looked for (a sync line is about 80 bytes).
_TAIL = 512


def canonical_time(text: str) -> str:
    """Return a record time as format_time writes it (naive UTC, microseconds), parsing only when it is not."""
    if len(text) == 26 and text[10] == "T" and text[19] == ".":
        return text
    return format_time(parse_time(text))


def _accessed(created: str, touched: str | None) -> str:
    """The later of creation and last access, as NbCacheRecord.accessed is (canonical ISO text sorts as time)."""
    if not touched:
        return created
    touched = canonical_time(touched)
    return touched if touched > created else created


def cache_rows(store: NbStore) -> list[dict]:
    """Return one plain dict per cache record, by pk: pk, hashkey, uri, created, accessed, artifacts (a count), data."""
    state = store._state_in_sync()
    touched = state.touched
    rows = []
    for key, rec in state.cache.items():
        created = canonical_time(rec["created"])
        data = rec.get("data")
        rows.append(
            {
                "pk": rec["pk"],
                "hashkey": key,
                "uri": store._abs_cache_uri(rec["uri"]) if rec.get(RELATIVE_URI) is True else str(rec.get("uri") or ""),
                "created": created,
                "accessed": _accessed(created, touched.get(key)),
                "artifacts": len(rec.get("artifacts") or ()),
                "data": data if isinstance(data, dict) else {},
            }
        )
    rows.sort(key=lambda r: r["pk"])
    return rows


class StatusRow:
    """One staged notebook's status, read like a dict (row["status"]); a slotted object is a fifth of a dict's size."""

    __slots__ = ("pk", "status", "cache_pk", "seconds", "reason", "_uri", "_base", "_last_run", "_created")
    FIELDS = ("pk", "uri", "status", "cache_pk", "last_run", "seconds", "reason")

    def __init__(self, pk, uri, status, cache_pk, last_run, seconds, reason, *, base=None, created=None) -> None:
        # base and created: the uri as stored (relative to base) and the record's creation time, kept as the
        # index holds them and turned into the absolute path and ISO text when read (no copies per row).
        self.pk, self.status, self.cache_pk, self.seconds, self.reason = pk, status, cache_pk, seconds, reason
        self._uri, self._base, self._last_run, self._created = uri, base, last_run, created

    @property
    def uri(self) -> str:
        """The notebook's absolute path."""
        if self._base is None or os.path.isabs(self._uri):
            return self._uri
        return os.path.join(self._base, self._uri)

    @property
    def last_run(self) -> str | None:
        """When its cache record was created (ISO 8601 UTC with a Z), or None."""
        return self._last_run if self._created is None else canonical_time(self._created) + "Z"

    def __getitem__(self, name: str):
        try:
            return getattr(self, name)
        except (AttributeError, TypeError):
            raise KeyError(name) from None

    def get(self, name: str, default=None):
        """Return the field name, or default if there is no such field."""
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self) -> dict:
        """Return the row as a plain dict (what --json prints)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatusRow) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StatusRow({self.to_dict()!r})"


def status_rows(store: NbStore) -> list[StatusRow]:
    """Return every staged notebook's status row, by pk: pk, uri, status, cache_pk, last_run (ISO, Z), seconds, reason.

    The reason says why a notebook is outdated (what changed since its last record) or errored.
    """
    infos = store.staged_key_infos(cached_inputs=False)
    reasons = store.outdated_reasons(infos)
    state = store._state_in_sync()
    cache = state.cache
    tracebacks = state.tracebacks
    base = str(store._base)
    rows = []
    for name, rec in state.stage.items():
        pk = rec["pk"]
        # Popped: the key infos go as the rows come, so that both are never held whole at once.
        info = infos.pop(pk, None)
        key = info.key if info is not None else None
        match = cache.get(key) if key else None
        if match is not None and not store._sidecar_has_objects(match):
            match = None  # a record whose objects are gone is no hit: the notebook is outdated
        seconds = None
        reason = reasons.get(pk, "")
        if key is None:
            if info is not None and info.broken == "dependency":
                status, reason = "errored", info.error
            else:
                status = "missing file" if not os.path.exists(store._abs_uri(rec["uri"])) else "unreadable"
        elif match is not None:
            status = "up to date"
            data = match.get("data")
            seconds = data.get("execution_seconds") if isinstance(data, dict) else None
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                seconds = None
        else:
            status = "failed" if tracebacks.get(name) else "outdated"
        rows.append(
            StatusRow(
                pk,
                rec["uri"],
                status,
                match["pk"] if match is not None else None,
                None,
                seconds,
                reason,
                base=base,
                created=match["created"] if match is not None else None,
            )
        )
    rows.sort(key=lambda r: r.pk)
    return rows


def _index_is_current(store: NbStore) -> bool:
    """True if the index's last line is a whole sync line naming the folders as they are now.

    A writer appends that line only with the index in sync with the record files, so the record file a key
    names then holds exactly what the index does (pk clashes included: a rebuild resolves them first).
    """
    try:
        fd = open_in(store.path, "index")
    except (OSError, StoreUnsafeError):
        return False
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, min(size, _TAIL), max(0, size - _TAIL))
    finally:
        os.close(fd)
    if not tail.endswith(b"\n"):
        return False
    line = tail[:-1].rpartition(b"\n")[2]
    if len(line) < 10 or line[8:9] != b" ":
        return False
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return False
        entry = loads_bounded(body)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("op") == "sync" and entry.get("fp") == store._fingerprint()


def match_pk(store: NbStore, key: str) -> int:
    """Return the pk of the cache record with this key, reading only its record file when the index is current."""
    store._check_format()
    if store._state is None and _index_is_current(store):
        try:
            fd = open_in(store.path, f"cache/{key}.json")
        except FileNotFoundError:
            raise RecordNotFoundError(f"Cache record not found for NB with hashkey: {key}") from None
        except (OSError, StoreUnsafeError):
            fd = None  # the full path reports it
        if fd is not None:
            try:
                # A record file is a few hundred bytes; a larger one is read the slow way, with its checks.
                data = os.read(fd, 1 << 20)
            finally:
                os.close(fd)
            try:
                rec = loads_bounded(data)
                store._check_sidecar("cache", rec, key)
            except (ValueError, KeyError, TypeError):
                pass  # damaged or in a git conflict: the full path decides
            else:
                if store._sidecar_has_objects(rec):
                    return rec["pk"]
    return store.match_cache_key(key).pk


def match_file_pk(store: NbStore, path: str | os.PathLike[str]) -> int:
    """Return the pk of the cache record matching the notebook file at path (as NbStore.match_cache_file)."""
    if os.fspath(path).endswith(".ipynb") and not _declared_at_staging(store, path):
        # An .ipynb file is read as JSON whatever it was staged with: its key needs no index (None: it
        # declares dependencies, which the full path resolves).
        key = notebook_file_key(path)
        if key is not None:
            return match_pk(store, key)
    return store.match_cache_file(path).pk


def _declared_at_staging(store: NbStore, path: str | os.PathLike[str]) -> bool:
    """True unless the stage record file of path (if any) surely declares no dependencies or variables."""
    from pathlib import Path

    from nbstore.layout import stage_name

    name = stage_name(store._stored_uri(Path(path).resolve()))
    try:
        fd = os.open(store.layout.stage_sidecar(name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        rec = json.loads(data)
    except ValueError:
        return True
    return not isinstance(rec, dict) or bool(rec.get("depends") or rec.get("env"))
