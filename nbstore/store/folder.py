"""One store folder: its settings, its record files and the index kept in sync with them."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nbstore.errors import StoreCorruptError, StoreFormatError, StoreUnsafeError, StoreWriteError
from nbstore.indexfile import IndexState, frame, frame_snapshot_parts, load, load_by_parts, parse_lines
from nbstore.layout import FORMAT, GITATTRIBUTES, GITIGNORE, Layout, stage_name
from nbstore.records import NbCacheRecord, conflict_sides, dump_json, parse_config, parse_time
from nbstore.store.fsio import append_bytes, atomic_write, translate_os_error
from nbstore.store.locking import store_lock
from nbstore.store.safeio import (
    MAX_CONFIG_BYTES,
    MAX_INDEX_BYTES,
    MAX_RECORD_BYTES,
    dir_fd,
    open_in,
    read_at,
    read_in,
)
from nbstore.untrusted import loads_bounded

__all__ = ["DEFAULT_CACHE_LIMIT", "StoreFolder", "jupyter_cache_hint"]

log = logging.getLogger(__name__)

#: Records kept before the least recently accessed are evicted (jupyter-cache's default).
DEFAULT_CACHE_LIMIT = 1000

# Bytes appended before even a small index is rewritten (a new store compacts into a snapshot at this size).
_COMPACT_FLOOR = 256 * 1024


def jupyter_cache_hint(path: Path) -> str:
    """The message for a store path that holds a jupyter-cache folder."""
    return (
        f"{path} is a jupyter-cache folder (it has global.db), not an nbstore store: "
        f"`nbstore import-jupyter-cache {path}` imports it into an nbstore store (--cache chooses which)"
    )


class StoreFolder:
    """The files of one store folder and the index that mirrors its records (the notebook API is NbStore's)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.layout = Layout(self.path)
        self._base = self.path.parent.resolve()
        self._base_prefix = str(self._base).rstrip("/") + "/"
        self._state: IndexState | None = None
        self._index_id: tuple | None = None
        self._index_offset = 0
        self._index_head = b""
        self._memo: dict = {}
        self._config_stat: tuple | None | bool = False  # False: not checked yet

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ------------------------------------------------------------------ format and layout

    def exists(self) -> bool:
        """Return True if a store has been created at this path."""
        # lstat: a symlinked nbstore.json counts as there, so that reading it refuses it by name.
        return os.path.lexists(self.layout.config) and not os.path.isdir(self.layout.config)

    def _read_config(self) -> dict:
        try:
            raw = read_in(self.path, "nbstore.json", MAX_CONFIG_BYTES, what="settings file")
        except FileNotFoundError:
            if self.path.is_dir() and any(not _creation_leftover(p) for p in self.path.iterdir()):
                if self.exists():
                    # A writer finished creating the store between the read and the listing.
                    return self._read_config()
                if (self.path / "global.db").is_file():
                    raise StoreFormatError(jupyter_cache_hint(self.path)) from None
                raise StoreFormatError(
                    f"{self.path} is not an nbstore store (it has files but no nbstore.json); refusing to use it"
                ) from None
            return {"format": FORMAT, "cache_limit": DEFAULT_CACHE_LIMIT}
        except NotADirectoryError:
            raise StoreFormatError(f"{self.path} is a file, not a store folder") from None
        except StoreUnsafeError:
            raise
        except OSError as exc:
            raise StoreFormatError(f"cannot read {self.layout.config}: {exc.strerror}") from exc
        try:
            config, conflicted = parse_config(raw)
            fmt = config["format"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"{self.layout.config} is damaged: {exc}") from exc
        if conflicted:
            log.warning(
                "%s: unresolved git merge conflict; using the larger cache limit, %s (`nbstore verify --repair` "
                "writes it)",
                self.layout.config,
                config["cache_limit"],
            )
        if not isinstance(fmt, int) or fmt > FORMAT:
            raise StoreFormatError(
                f"{self.path} uses store format {fmt!r}; this version of nbstore reads format {FORMAT}: "
                "upgrade nbstore to use it"
            )
        return config

    def _write_config(self, config: dict) -> None:
        atomic_write(self.layout.config, dump_json(config), tmpdir=self.layout.tmp)

    def _create(self) -> None:
        """Create the folder skeleton (called under the lock)."""
        lay = self.layout
        for folder in (lay.objects, lay.cache, lay.stage, lay.tmp):
            folder.mkdir(exist_ok=True)
        if not lay.gitignore.exists():
            atomic_write(lay.gitignore, GITIGNORE.encode(), tmpdir=lay.tmp)
        if not lay.gitattributes.exists():
            atomic_write(lay.gitattributes, GITATTRIBUTES.encode(), tmpdir=lay.tmp)
        if not lay.config.exists():
            self._write_config({"format": FORMAT, "cache_limit": DEFAULT_CACHE_LIMIT})

    # ------------------------------------------------------------------ index and state

    def _fingerprint(self) -> list:
        out = []
        for folder in (self.layout.cache, self.layout.stage):
            try:
                out.append(os.stat(folder).st_mtime_ns)
            except OSError:
                out.append(0)
        return out

    def _read_index(self) -> IndexState:
        """Bring the in-memory index state up to date with the index file (reading only what is new)."""
        try:
            fd = open_in(self.path, "index")
        except FileNotFoundError:
            self._state, self._index_id, self._index_offset, self._memo = IndexState(), None, 0, {}
            return self._state
        except StoreUnsafeError as exc:
            return self._unusable_index(str(exc))
        except OSError as exc:
            raise StoreCorruptError(f"cannot read the index {self.layout.index}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if st.st_size > MAX_INDEX_BYTES:
                os.close(fd)
                fd = -1
                return self._unusable_index(
                    f"{self.layout.index} is {st.st_size} bytes, more than the {MAX_INDEX_BYTES} an index may hold"
                )
            ident = (st.st_ino, st.st_dev)
            # File systems recycle inode numbers at once (ext4 does): a rewritten index can have the old
            # one, so the first line, which holds a random id, tells whether this is still the file read.
            same = (
                self._state is not None
                and self._index_id == ident
                and st.st_size >= self._index_offset
                and os.pread(fd, len(self._index_head), 0) == self._index_head
            )
            if same and st.st_size == self._index_offset:
                return self._state
            if not same:
                self._state, self._index_offset, self._memo = IndexState(), 0, {}
                loaded = self._load_by_parts(fd, st.st_size)
                if loaded is not None:
                    self._state, self._index_offset, self._index_head = loaded
                    self._index_id = ident
                    return self._state
            size = st.st_size - self._index_offset
            if self._index_offset == 0 and size > 0:
                # A bytearray that load() empties once it holds the snapshot's text (see load).
                data = bytearray(size)
                del data[os.preadv(fd, [data], 0) :]
            else:
                data = os.pread(fd, size, self._index_offset) if size > 0 else b""
        finally:
            if fd >= 0:
                os.close(fd)
        if self._index_offset == 0:
            # A fresh read: the snapshot line (if any) gives the whole state in one parse, then the log's tail.
            self._index_head = bytes(data[: data.find(b"\n") + 1])
            self._state, end = load(data)
            del data
            self._index_id = ident
            self._index_offset = end
            return self._state
        # Only whole lines are consumed: a line still being appended is read again next time.
        end = data.rfind(b"\n") + 1
        entries, bad = parse_lines(data[:end], last_fingerprint_only=True)
        self._state.bad_lines += bad
        for entry in entries:
            self._state.apply(entry)
            name = entry.get("name")
            if name is not None:
                self._memo.pop((entry.get("kind"), name), None)
        self._index_id = ident
        self._index_offset += end
        return self._state

    @staticmethod
    def _load_by_parts(fd: int, size: int) -> tuple[IndexState, int, bytes] | None:
        """Load an index whose header names its snapshot's parts one table at a time (None: read it whole)."""
        first = os.pread(fd, min(size, 4096), 0)
        head_end = first.find(b"\n") + 1
        if not head_end or first[head_end : head_end + 1] != b"~":
            return None
        header, bad = parse_lines(first[:head_end])
        if bad or len(header) != 1 or header[0].get("op") != "header":
            return None
        loaded = load_by_parts(header[0], head_end, size, lambda offset, length: os.pread(fd, length, offset))
        return None if loaded is None else (loaded[0], loaded[1], first[:head_end])

    def _unusable_index(self, why: str) -> IndexState:
        """Treat an index that must not be read as garbled: volatile state, rebuilt from the record files."""
        log.warning("%s; ignored and rebuilt from the record files (run `nbstore verify`)", why)
        self._state, self._index_id, self._index_offset, self._memo = IndexState(), None, 0, {}
        self._state.bad_lines = 1
        return self._state

    def _check_format(self) -> None:
        """Refuse a store of an unknown format (re-reading nbstore.json only when it changed)."""
        try:
            st = os.lstat(self.layout.config)
            ident = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        except OSError:
            ident = None
        if ident != self._config_stat:
            self._read_config()
            self._config_stat = ident

    def _state_in_sync(self) -> IndexState:
        """Return index state that agrees with the sidecars, rebuilding the index if it does not."""
        self._check_format()
        state = self._read_index()
        if self._current(state):
            return state
        if not self.exists():
            self._read_config()  # raises on a folder that is not a store
            return IndexState()
        try:
            with store_lock(self.layout.lock):
                return self._sync_locked()
        except StoreWriteError:
            # A read-only store: build the state in memory and leave the files alone.
            rebuilt, _, _ = self._scan_sidecars(self._read_index())
            self._state, self._memo = rebuilt, {}
            self._index_id = None
            return rebuilt

    def _current(self, state: IndexState) -> bool:
        """True if the index state can be trusted: synced with the folders as they are, and no line lost."""
        # A garbled line may have been any entry (a put, a del): trusting the rest could hide a record.
        return state.fingerprint == self._fingerprint() and state.header is not None and not state.bad_lines

    def _sync_locked(self) -> IndexState:
        state = self._read_index()
        if self._current(state):
            return state
        return self.rebuild_index()

    def _scan_sidecars(self, old: IndexState) -> tuple[IndexState, list[tuple[Path, str]], dict[Path, dict]]:
        """Build index state from the sidecars; also return the unreadable ones and those read from a git conflict."""
        state = IndexState()
        state.header = {"op": "header", "format": FORMAT}
        problems: list[tuple[Path, str]] = []
        conflicted: dict[Path, dict] = {}
        for kind, folder in (("cache", self.layout.cache), ("stage", self.layout.stage)):
            table = state.cache if kind == "cache" else state.stage
            try:
                dfd = dir_fd(self.path, kind)
            except FileNotFoundError:
                dfd = None
            except StoreUnsafeError as exc:
                problems.append((folder, str(exc)))
                dfd = None
            try:
                names = sorted(os.listdir(dfd)) if dfd is not None else []
                for fname in names:
                    if not fname.endswith(".json") or fname.startswith("."):
                        continue
                    path = folder / fname
                    data = None
                    try:
                        data = read_at(dfd, fname, MAX_RECORD_BYTES, path=path, what="record file")
                        rec = loads_bounded(data)
                        self._check_sidecar(kind, rec, fname[:-5])
                    except (OSError, ValueError, KeyError, TypeError) as exc:
                        unsafe = isinstance(exc, StoreUnsafeError)
                        rec = self._conflict_choice(kind, data, fname[:-5]) if data is not None and not unsafe else None
                        if rec is None:
                            problems.append((path, f"unreadable {kind} record: {exc}"))
                            continue
                        conflicted[path] = rec
                    table[fname[:-5]] = rec
            finally:
                if dfd is not None:
                    os.close(dfd)
            state.high_water[kind] = max([old.high_water.get(kind, 0)] + [r["pk"] for r in table.values()])
        for key in state.cache:
            if key in old.touched:
                state.touched[key] = old.touched[key]
        for name in state.stage:
            if name in old.tracebacks:
                state.tracebacks[name] = old.tracebacks[name]
            if name in old.hashes:
                state.hashes[name] = old.hashes[name]
        return state, problems, conflicted

    @classmethod
    def _conflict_choice(cls, kind: str, data: bytes, name: str) -> dict | None:
        """Pick one side of a sidecar in git conflict: the sound record created first (alike in every clone)."""
        sides = conflict_sides(data)
        sound = []
        for side in sides or ():
            try:
                rec = loads_bounded(side)
                cls._check_sidecar(kind, rec, name)
            except (ValueError, KeyError, TypeError):
                continue
            sound.append(rec)
        return min(sound, key=lambda rec: (rec["created"], dump_json(rec)), default=None)

    @staticmethod
    def _check_sidecar(kind: str, rec: Any, name: str) -> None:
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
        if kind == "cache":
            NbCacheRecord.from_sidecar(rec)
            if rec["hashkey"] != name:
                raise ValueError(f"hashkey {rec['hashkey']!r} does not match the file name")
        else:
            pk = rec["pk"]
            if not isinstance(pk, int) or isinstance(pk, bool) or pk < 1:
                raise ValueError(f"bad pk {pk!r}")
            if not isinstance(rec["uri"], str) or stage_name(rec["uri"]) != name:
                raise ValueError("uri does not match the file name")
            if not isinstance(rec.get("reader", ""), str):
                raise ValueError("reader is not a name")
            parse_time(rec["created"])

    def _resolve_collisions(self, state: IndexState) -> list[tuple[str, int, int]]:
        """Give every record a distinct pk: on a clash the earliest created keeps it (deterministic)."""
        changes = []
        for kind, table in (("cache", state.cache), ("stage", state.stage)):
            by_pk: dict[int, list[str]] = {}
            for name, rec in table.items():
                by_pk.setdefault(rec["pk"], []).append(name)
            top = max((rec["pk"] for rec in table.values()), default=0)
            for pk in sorted(by_pk):
                names = by_pk[pk]
                if len(names) < 2:
                    continue
                names.sort(key=lambda n: (table[n]["created"], n))
                for name in names[1:]:
                    top += 1
                    table[name] = dict(table[name], pk=top)
                    changes.append((f"{kind}/{name}.json", pk, top))
            state.high_water[kind] = max(state.high_water[kind], top)
        state.forget_pks()
        return changes

    def rebuild_index(self) -> IndexState:
        """Rebuild the index from the sidecars (caller holds the lock); renumber clashing pks."""
        old = self._read_index()
        state, problems, conflicted = self._scan_sidecars(old)
        for path, reason in problems:
            log.warning("%s: %s (skipped; run `nbstore verify`)", path, reason)
        for path, rec in conflicted.items():
            log.warning(
                "%s: unresolved git merge conflict; using the side created first, pk %d "
                "(`nbstore verify --repair` writes it)",
                path,
                rec["pk"],
            )
        changes = self._resolve_collisions(state)
        if changes:
            self._begin()
        for relname, old_pk, new_pk in changes:
            kind, fname = relname.split("/")
            table = state.cache if kind == "cache" else state.stage
            log.warning("pk %d of %s clashed with another record; renumbered to %d", old_pk, relname, new_pk)
            folder = self.layout.cache if kind == "cache" else self.layout.stage
            atomic_write(folder / fname, dump_json(table[fname[:-5]]), tmpdir=self.layout.tmp)
        self._write_index(state)
        return self._state

    def _write_index(self, state: IndexState, *, same_records: bool = False) -> None:
        """Replace the index with a compact one: a header, a snapshot of state, a sync line (caller holds the lock).

        same_records: state is the one already loaded (a compaction), so the records handed out stay valid.
        """
        state.bad_lines = 0
        snapshot, parts = frame_snapshot_parts(state)
        tail = frame({"op": "sync", "fp": self._fingerprint()})
        header = frame(
            {
                "op": "header",
                "format": FORMAT,
                "id": secrets.token_hex(8),
                "base": len(snapshot) + len(tail),
                "parts": parts,
            }
        )
        data = header + snapshot + tail
        atomic_write(self.layout.index, data, tmpdir=self.layout.tmp, durable=False)
        # What was just written is the state in hand: keep it rather than read the file back.
        state.header = json.loads(header[9:])
        state.fingerprint = json.loads(tail[9:])["fp"]
        try:
            st = os.stat(self.layout.index)
            self._index_id = (st.st_ino, st.st_dev)
        except OSError:
            self._index_id = None
        self._state, self._index_offset, self._index_head = state, len(data), header
        if not same_records:
            self._memo = {}

    def _begin(self) -> None:
        """Mark the index stale before a sidecar changes (caller holds the lock).

        Folder mtimes alone cannot show a change made in the same clock tick as the last sync (coarse or
        1-2 s timestamps): a writer killed between changing a sidecar and appending its entry would leave
        an index that still looks current, and the next writer would hand out the same pk again.
        """
        append_bytes(self.layout.index, frame({"op": "begin", "fp": None}))

    def _append(self, *entries: dict) -> None:
        """Append entries to the index with the current fingerprint (caller holds the lock)."""
        data = b"".join(frame(e) for e in entries) + frame({"op": "sync", "fp": self._fingerprint()})
        append_bytes(self.layout.index, data)
        self._read_index()

    def _ensure(self) -> None:
        """Create the store on its first write (checking first that the folder is not something else)."""
        if self.exists():
            self._check_format()  # objects are written before the lock: never into a store of unknown format
            return
        self._read_config()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise translate_os_error(exc, "create the store folder", self.path) from exc
        with store_lock(self.layout.lock):
            if not self.exists():
                self._create()

    @contextmanager
    def _writing(self) -> Iterator[IndexState]:
        """Hold the lock with the store created and its index in sync, for one short write."""
        self._ensure()
        self._read_config()
        with store_lock(self.layout.lock):
            state = self._sync_locked()
            yield state
            self._compact_if_bloated()

    def _compact_if_bloated(self) -> None:
        """Rewrite the index once what was appended since the last rewrite outgrows it (caller holds the lock, in sync).

        Each rewrite costs the size of the state and comes only after half as many bytes were appended, so
        compaction is amortised O(1) per write at any store size, and a fresh reader replays at most that half.
        """
        state = self._state
        if state is None or self._index_id is None:
            return
        base = state.header.get("base") if state.header else None
        base = base if type(base) is int and base >= 0 else 0
        if self._index_offset > base + base // 2 + _COMPACT_FLOOR:
            self._write_index(state, same_records=True)


def _creation_leftover(path: Path) -> bool:
    """True for what a store holds without nbstore.json: while a writer creates it, or after a git checkout."""
    # A checkout of a branch without the store removes its tracked files and leaves the ignored, volatile ones.
    if path.name in {"lock", "tmp", "claims", "quarantine", "stat", ".gitignore", ".gitattributes"}:
        return True
    if path.name == "index" and path.is_file() and not path.is_symlink():
        try:
            with open(path, "rb") as f:
                return b'"op":"header"' in f.readline(200)
        except OSError:
            return False
    if path.name in {"objects", "cache", "stage"} and path.is_dir() and not path.is_symlink():
        try:
            with os.scandir(path) as entries:
                return next(entries, None) is None
        except FileNotFoundError:
            return True
    return False
