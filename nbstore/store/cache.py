"""NbStore: the cache and staging area, kept as plain files (objects, JSON sidecars, an index)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from nbstore import notebooks
from nbstore.bundles import NbArtifacts, NbBundleIn, NbBundleOut, StoredArtifacts, check_inside
from nbstore.errors import (
    CachingError,
    NbStoreError,
    NotebookNotFoundError,
    NotebookReadError,
    RecordNotFoundError,
    StoreBusyError,
    StoreCorruptError,
    StoreFormatError,
    StoreWriteError,
)
from nbstore.hashing import KEY_RULE, notebook_key, object_id
from nbstore.indexfile import IndexState, frame, parse_lines
from nbstore.layout import FORMAT, GITATTRIBUTES, GITIGNORE, Layout, stage_name
from nbstore.records import (
    NbCacheRecord,
    NbStageRecord,
    conflict_sides,
    dump_json,
    format_time,
    now,
    parse_config,
    parse_time,
)
from nbstore.store.fsio import append_bytes, atomic_write, translate_os_error
from nbstore.store.locking import store_lock
from nbstore.store.maintenance import DEFAULT_MIN_TEMP_AGE, GcReport, VerifyReport, gc, verify
from nbstore.store.objects import has_object, put_object, read_object

__all__ = ["DEFAULT_CACHE_LIMIT", "NbStore", "get_cache"]

log = logging.getLogger(__name__)

#: Records kept before the least recently accessed are evicted (jupyter-cache's default).
DEFAULT_CACHE_LIMIT = 1000

# A file hashed less than this long after its last modification may change again within the
# same timestamp tick, so its hash is not trusted on the next look (git's "racy clean" rule).
_RACY_NS = 100_000_000

# Rewrite the index once superseded lines outnumber live entries by this much.
_COMPACT_SLACK = 2000


def _read_notebook_file(path: Path) -> dict:
    """Read and check a notebook file, translating OS errors into nbstore errors."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotebookNotFoundError(f"notebook not found: {path}") from exc
    except IsADirectoryError as exc:
        raise NotebookReadError(f"{path}: is a folder, not a notebook file") from exc
    except OSError as exc:
        raise NotebookReadError(f"{path}: cannot read: {exc.strerror}") from exc
    return notebooks.parse_notebook(data, source=str(path))


def _plain(nb: Any, *, source: str) -> dict:
    """Return a plain, JSON-safe, structurally checked dict copy of a notebook object."""
    try:
        plain = json.loads(json.dumps(nb))
    except (TypeError, ValueError) as exc:
        raise NotebookReadError(f"{source}: not a notebook: not JSON-serialisable ({exc})") from exc
    notebooks.check_structure(plain, source=source)
    return plain


class NbStore:
    """A notebook cache and staging area in one folder of plain files."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.layout = Layout(self.path)
        self._base = self.path.parent.resolve()
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
        return self.layout.config.is_file()

    def _read_config(self) -> dict:
        try:
            raw = self.layout.config.read_bytes()
        except FileNotFoundError:
            if self.path.is_dir() and any(not _creation_leftover(p) for p in self.path.iterdir()):
                if self.layout.config.is_file():
                    # A writer finished creating the store between the read and the listing.
                    return self._read_config()
                raise StoreFormatError(
                    f"{self.path} is not an nbstore store (it has files but no nbstore.json); refusing to use it"
                ) from None
            return {"format": FORMAT, "cache_limit": DEFAULT_CACHE_LIMIT}
        except NotADirectoryError:
            raise StoreFormatError(f"{self.path} is a file, not a store folder") from None
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
            fd = os.open(self.layout.index, os.O_RDONLY)
        except FileNotFoundError:
            self._state, self._index_id, self._index_offset, self._memo = IndexState(), None, 0, {}
            return self._state
        except OSError as exc:
            raise StoreCorruptError(f"cannot read the index {self.layout.index}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
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
            size = st.st_size - self._index_offset
            data = os.pread(fd, size, self._index_offset) if size > 0 else b""
        finally:
            os.close(fd)
        if self._index_offset == 0:
            self._index_head = data[: data.find(b"\n") + 1]
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

    def _check_format(self) -> None:
        """Refuse a store of an unknown format (re-reading nbstore.json only when it changed)."""
        try:
            st = os.stat(self.layout.config)
            ident = (st.st_ino, st.st_size, st.st_mtime_ns)
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
        """Build index state from the sidecars alone; also return those that could not be read, and the
        records chosen for sidecars that git left in conflict."""
        state = IndexState()
        state.header = {"op": "header", "format": FORMAT}
        problems: list[tuple[Path, str]] = []
        conflicted: dict[Path, dict] = {}
        for kind, folder in (("cache", self.layout.cache), ("stage", self.layout.stage)):
            table = state.cache if kind == "cache" else state.stage
            try:
                names = sorted(os.listdir(folder))
            except FileNotFoundError:
                names = []
            for fname in names:
                if not fname.endswith(".json") or fname.startswith("."):
                    continue
                path = folder / fname
                data = None
                try:
                    data = path.read_bytes()
                    rec = json.loads(data)
                    self._check_sidecar(kind, rec, fname[:-5])
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    rec = self._conflict_choice(kind, data, fname[:-5]) if data is not None else None
                    if rec is None:
                        problems.append((path, f"unreadable {kind} record: {exc}"))
                        continue
                    conflicted[path] = rec
                table[fname[:-5]] = rec
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
                rec = json.loads(side)
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

    def _write_index(self, state: IndexState) -> None:
        """Replace the index with a compact one holding state (caller holds the lock)."""
        parts = [frame({"op": "header", "format": FORMAT, "id": secrets.token_hex(8)})]
        for kind in ("cache", "stage"):
            parts.append(frame({"op": "hw", "kind": kind, "pk": state.high_water[kind]}))
        for name in sorted(state.cache):
            parts.append(frame({"op": "put", "kind": "cache", "name": name, "rec": state.cache[name]}))
        for name in sorted(state.stage):
            parts.append(frame({"op": "put", "kind": "stage", "name": name, "rec": state.stage[name]}))
        for name in sorted(state.touched):
            parts.append(frame({"op": "touch", "kind": "cache", "name": name, "t": state.touched[name]}))
        for name in sorted(state.tracebacks):
            parts.append(frame({"op": "traceback", "kind": "stage", "name": name, "text": state.tracebacks[name]}))
        for name in sorted(state.hashes):
            parts.append(frame({"op": "hash", "kind": "stage", "name": name, "stat": state.hashes[name]}))
        parts.append(frame({"op": "sync", "fp": self._fingerprint()}))
        atomic_write(self.layout.index, b"".join(parts), tmpdir=self.layout.tmp, durable=False)
        self._state, self._index_id, self._index_offset, self._memo = None, None, 0, {}
        self._read_index()

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
        """Rewrite the index once superseded lines far outnumber live entries (caller holds the lock, in sync)."""
        state = self._state
        if state is None:
            return
        live = len(state.cache) + len(state.stage) + len(state.touched) + len(state.hashes)
        if self._index_offset > 200 * (live + _COMPACT_SLACK):
            self._write_index(state)

    # ------------------------------------------------------------------ maintenance

    def verify(self, *, repair: bool = False, min_temp_age: float = DEFAULT_MIN_TEMP_AGE) -> VerifyReport:
        """Re-hash every object and check every record and the index; repair=True fixes what it safely can."""
        return verify(self, repair=repair, min_temp_age=min_temp_age)

    def gc(self, *, dry_run: bool = False, min_temp_age: float = DEFAULT_MIN_TEMP_AGE) -> GcReport:
        """Remove objects no record refers to and temp files older than min_temp_age seconds."""
        return gc(self, dry_run=dry_run, min_temp_age=min_temp_age)

    # ------------------------------------------------------------------ records

    def _cache_record(self, state: IndexState, key: str) -> NbCacheRecord:
        memo = self._memo.get(("cache", key))
        if memo is None:
            touched = state.touched.get(key)
            memo = NbCacheRecord.from_sidecar(state.cache[key], accessed=parse_time(touched) if touched else None)
            self._memo[("cache", key)] = memo
        return memo

    def _abs_uri(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self._base / path

    def _stored_uri(self, path: Path) -> str:
        try:
            return path.relative_to(self._base).as_posix()
        except ValueError:
            return str(path)

    def _stage_record(self, state: IndexState, name: str) -> NbStageRecord:
        memo = self._memo.get(("stage", name))
        if memo is None:
            rec = state.stage[name]
            uri = self._abs_uri(rec["uri"])
            memo = NbStageRecord(
                pk=rec["pk"],
                uri=str(uri),
                created=parse_time(rec["created"]),
                assets=tuple(str(uri.parent / a) for a in rec.get("assets", [])),
                traceback=state.tracebacks.get(name, ""),
            )
            self._memo[("stage", name)] = memo
        return memo

    # ------------------------------------------------------------------ cache: reading

    def list_cache_records(self) -> list[NbCacheRecord]:
        """Return a snapshot of every cache record, by pk."""
        state = self._state_in_sync()
        return sorted((self._cache_record(state, k) for k in state.cache), key=lambda r: r.pk)

    def _key_of_pk(self, state: IndexState, pk: int) -> str:
        for key, rec in state.cache.items():
            if rec["pk"] == pk:
                return key
        raise RecordNotFoundError(f"Cache record not found for pk: {pk}")

    def get_cache_record(self, pk: int) -> NbCacheRecord:
        """Return the cache record with this pk (KeyError if there is none)."""
        state = self._state_in_sync()
        return self._cache_record(state, self._key_of_pk(state, int(pk)))

    def _open_object(self, oid: str):
        import io

        return io.BytesIO(read_object(self.layout, oid))

    def _touch(self, key: str) -> None:
        """Record an access time (volatile: kept in the index, never in committed files)."""
        try:
            with store_lock(self.layout.lock, timeout=5):
                if key in self._sync_locked().cache:
                    self._append({"op": "touch", "kind": "cache", "name": key, "t": format_time(now())})
                    # Reads append too: without this a store that is only read (docs builds) grows without end.
                    self._compact_if_bloated()
        except (StoreWriteError, StoreBusyError, OSError):
            pass  # a read-only or busy store still serves reads

    def _cached_notebook(self, pk: int) -> tuple[NbCacheRecord, dict]:
        """Return cache record pk and its notebook as a fresh plain dict, recording the access."""
        state = self._state_in_sync()
        key = self._key_of_pk(state, int(pk))
        record = self._cache_record(state, key)
        try:
            nb = json.loads(read_object(self.layout, record.notebook))
        except StoreCorruptError as exc:
            raise StoreCorruptError(f"cache record {pk}: {exc}") from exc
        except ValueError as exc:
            raise StoreCorruptError(f"cache record {pk}: notebook object is not JSON: {exc}") from exc
        self._touch(key)
        state = self._read_index()  # the touch appended an access time: hand out the record with it
        record = self._cache_record(state, key) if key in state.cache else record
        return record, nb

    def get_cache_bundle(self, pk: int) -> NbBundleOut:
        """Return the cached notebook with this pk, its record and its artifacts."""
        record, nb = self._cached_notebook(pk)
        return NbBundleOut(notebooks.to_node(nb), record, StoredArtifacts(record.artifacts, self._open_object))

    @contextmanager
    def cache_artefacts_temppath(self, pk: int) -> Iterator[Path]:
        """Yield a temporary folder holding the artifacts of cache record pk (removed afterwards)."""
        bundle_record = self.get_cache_record(pk)
        artifacts = StoredArtifacts(bundle_record.artifacts, self._open_object)
        with tempfile.TemporaryDirectory(prefix="nbstore-artifacts-") as folder:
            artifacts.write_to(folder)
            yield Path(folder)

    def match_cache_key(self, key: str) -> NbCacheRecord:
        """Return the cache record with this hashkey (KeyError naming the hashkey if none)."""
        state = self._state_in_sync()
        if key not in state.cache:
            raise RecordNotFoundError(f"Cache record not found for NB with hashkey: {key}")
        return self._cache_record(state, key)

    def match_cache_notebook(self, nb: Any) -> NbCacheRecord:
        """Return the cache record whose key matches this notebook (KeyError naming the hashkey if none)."""
        if not isinstance(nb, dict):
            raise NotebookReadError(f"not a notebook: got {type(nb).__name__}")
        notebooks.check_structure(nb, source="notebook")
        return self.match_cache_key(notebook_key(nb))

    def match_cache_file(self, path: str | os.PathLike[str]) -> NbCacheRecord:
        """Return the cache record matching the notebook file at path."""
        return self.match_cache_key(notebook_key(_read_notebook_file(Path(path))))

    def merge_match_into_notebook(
        self,
        nb: Any,
        nb_meta: Iterable[str] | None = ("kernelspec", "language_info", "widgets"),
        cell_meta: Iterable[str] | None = None,
    ) -> tuple[int, Any]:
        """Return (pk, notebook) with the matching cached outputs merged into a copy of nb."""
        plain = notebooks.to_v4(_plain(nb, source="notebook"))
        record = self.match_cache_key(notebook_key(plain))
        _, cached = self._cached_notebook(record.pk)
        # Both dicts are fresh copies made here: merging in place spares two deep copies of large outputs.
        merged = notebooks.merge_outputs(plain, cached, nb_meta=nb_meta, cell_meta=cell_meta, owned=True)
        return record.pk, notebooks.to_node(merged)

    def merge_match_into_file(
        self,
        path: str | os.PathLike[str],
        nb_meta: Iterable[str] | None = ("kernelspec", "language_info", "widgets"),
        cell_meta: Iterable[str] | None = None,
    ) -> tuple[int, Any]:
        """Return (pk, notebook) for the notebook file at path with its cached outputs merged in."""
        nb = _read_notebook_file(Path(path))
        return self.merge_match_into_notebook(nb, nb_meta=nb_meta, cell_meta=cell_meta)

    def diff_nbnode_with_cache(self, pk: int, nb: Any, uri: str = "", as_str: bool = False, **kwargs: Any) -> Any:
        """Return nbdime's diff of cache record pk against nb (text when as_str; needs nbstore-cache[diff])."""
        try:
            from nbdime.diffing.notebooks import diff_notebooks
            from nbdime.prettyprint import PrettyPrintConfig, pretty_print_diff
        except ImportError as exc:
            raise NbStoreError("diffing needs nbdime: pip install 'nbstore-cache[diff]'") from exc
        cached = self.get_cache_bundle(pk).nb
        other = notebooks.to_node(notebooks.strip_notebook(notebooks.to_v4(_plain(nb, source=str(uri) or "notebook"))))
        for name in list(other.metadata):
            if name not in ("kernelspec", "language_info", "widgets"):
                other.metadata.pop(name)
        cached_meta = {k: v for k, v in cached.metadata.items() if k in ("kernelspec", "language_info", "widgets")}
        cached = notebooks.to_node(dict(cached, metadata=cached_meta))
        diff = diff_notebooks(cached, other)
        if not as_str:
            return diff
        import io

        stream = io.StringIO()
        stream.write(f"nbdiff\n--- cached pk={pk}\n+++ other: {uri}\n")
        kwargs.setdefault("use_color", False)
        pretty_print_diff(cached, diff, "nb", PrettyPrintConfig(out=stream, **kwargs))
        return stream.getvalue()

    def diff_nbfile_with_cache(self, pk: int, path: str | os.PathLike[str], as_str: bool = False, **kwargs: Any) -> Any:
        """Return nbdime's diff of cache record pk against the notebook file at path."""
        nb = _read_notebook_file(Path(path))
        return self.diff_nbnode_with_cache(pk, nb, uri=str(path), as_str=as_str, **kwargs)

    # ------------------------------------------------------------------ cache: writing

    def cache_notebook_file(
        self,
        path: str | os.PathLike[str],
        uri: str | None = None,
        artifacts: Iterable[str | os.PathLike[str]] = (),
        data: dict | None = None,
        check_validity: bool = True,
        overwrite: bool = False,
    ) -> NbCacheRecord:
        """Cache the executed notebook file at path, with artifacts given by path inside its folder."""
        path = Path(path)
        nb = _read_notebook_file(path)
        arts = NbArtifacts(list(artifacts), in_folder=path.absolute().parent)
        bundle = NbBundleIn(nb, uri if uri is not None else str(path), arts, data or {})
        # The notebook was just parsed from the file: it is already a plain, checked dict that nobody else holds.
        return self._cache_plain(
            bundle, nb, check_validity=check_validity, overwrite=overwrite, description="", key=None
        )

    def cache_notebook_bundle(
        self,
        bundle: NbBundleIn,
        check_validity: bool = True,
        overwrite: bool = False,
        description: str = "",
        *,
        key: str | None = None,
    ) -> NbCacheRecord:
        """Cache a bundle (under `key` if given: the executor passes the pre-run key); CachingError if present."""
        nb = _plain(bundle.nb, source=str(bundle.uri or "") or "notebook")
        return self._cache_plain(
            bundle, nb, check_validity=check_validity, overwrite=overwrite, description=description, key=key
        )

    def _cache_plain(
        self,
        bundle: NbBundleIn,
        nb: dict,
        *,
        check_validity: bool,
        overwrite: bool,
        description: str,
        key: str | None,
    ) -> NbCacheRecord:
        """Cache bundle, whose notebook nb is a plain checked dict owned by this call (it may be changed)."""
        uri = str(bundle.uri or "")
        nb = notebooks.to_v4(nb)
        if check_validity:
            notebooks.check_validity(nb, uri=uri)
        data = bundle.data or {}
        try:
            json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise CachingError(f"data for {uri or 'the notebook'} is not JSON-serialisable: {exc}") from exc
        if not isinstance(data, dict):
            raise CachingError(f"data must be a dict, not {type(data).__name__}")
        key = key or notebook_key(nb)
        nb_bytes = notebooks.dump_notebook(notebooks.strip_notebook(nb))
        art_blobs: dict[str, bytes] = {}
        if bundle.artifacts is not None:
            for rel, handle in bundle.artifacts:
                art_blobs[rel.as_posix()] = handle.read()
        _require_utf8([uri, description, data, sorted(art_blobs)], f"the URI, artifact names or data of {uri!r}")
        # Objects are written before the lock: they are idempotent and may be large.
        self._ensure()
        objects = {name: object_id(blob) for name, blob in art_blobs.items()}
        nb_oid = object_id(nb_bytes)
        blobs = {nb_oid: nb_bytes, **{objects[n]: b for n, b in art_blobs.items()}}
        for oid, blob in blobs.items():
            put_object(self.layout, blob, oid=oid)
        with self._writing() as state:
            if key in state.cache and not overwrite:
                raise CachingError("Notebook already exists in cache and overwrite=False.")
            # gc or an eviction may have removed a shared object since it was written above.
            for oid, blob in blobs.items():
                if not has_object(self.layout, oid, len(blob)):
                    put_object(self.layout, blob, oid=oid)
            created = now()
            record = NbCacheRecord(
                pk=state.high_water["cache"] + 1,
                hashkey=key,
                uri=uri,
                created=created,
                accessed=created,
                description=description,
                data=json.loads(json.dumps(data)),
                notebook=nb_oid,
                artifacts=objects,
                key_rule=KEY_RULE,
            )
            sidecar = record.to_sidecar()
            self._begin()
            atomic_write(self.layout.cache_sidecar(key), dump_json(sidecar), tmpdir=self.layout.tmp)
            self._append({"op": "put", "kind": "cache", "name": key, "rec": sidecar})
            self._evict(self._state, self._read_config().get("cache_limit", DEFAULT_CACHE_LIMIT), keep=key)
        return record

    def _in_repository(self) -> bool:
        """True if the store lies in a git work tree (a branch there may add a record using any object)."""
        return any((folder / ".git").exists() for folder in (self.path, *self.path.parents))

    def _delete_cache_records(self, state: IndexState, keys: list[str]) -> None:
        """Remove cache records and the objects no remaining record refers to (caller holds the lock).

        In a git work tree the objects are left for gc: git would delete an object that this branch no
        longer uses even where a merged branch added a record that uses it.
        """
        if not keys:
            return
        dropped = set()
        self._begin()
        for key in keys:
            rec = state.cache[key]
            dropped.add(rec["notebook"])
            dropped.update(rec.get("artifacts", {}).values())
            with suppress(FileNotFoundError):
                os.unlink(self.layout.cache_sidecar(key))
        self._append(*({"op": "del", "kind": "cache", "name": k} for k in keys))
        if self._in_repository():
            return  # objects wait for gc: another branch may add a record that uses one of them
        live = set()
        for rec in self._state.cache.values():
            live.add(rec["notebook"])
            live.update(rec.get("artifacts", {}).values())
        for oid in dropped - live:
            with suppress(FileNotFoundError):
                os.unlink(self.layout.object_path(oid))

    def _evict(self, state: IndexState, limit: int, keep: str | None = None) -> None:
        excess = len(state.cache) - int(limit)
        if excess <= 0:
            return

        def last_access(key: str) -> tuple:
            return (state.touched.get(key) or state.cache[key]["created"], state.cache[key]["pk"])

        order = sorted((k for k in state.cache if k != keep), key=last_access)
        self._delete_cache_records(state, order[:excess])

    def remove_cache(self, pk: int) -> None:
        """Remove cache record pk (KeyError if there is none) and the objects only it used."""
        with self._writing() as state:
            self._delete_cache_records(state, [self._key_of_pk(state, int(pk))])

    def clear_cache(self) -> None:
        """Remove every record, object and setting, leaving an empty store with default settings."""
        self._ensure()
        with store_lock(self.layout.lock):
            lay = self.layout
            for folder in (lay.cache, lay.stage, lay.objects, lay.quarantine, lay.tmp):
                if folder.exists():
                    shutil.rmtree(folder, onerror=_force_remove)
            for path in (lay.index, lay.config):
                with suppress(FileNotFoundError):
                    os.unlink(path)
            self._state, self._index_id, self._index_offset, self._memo = None, None, 0, {}
            self._create()
            self._sync_locked()

    def get_cache_limit(self) -> int:
        """Return the number of records kept before the least recently accessed are evicted."""
        return int(self._read_config().get("cache_limit", DEFAULT_CACHE_LIMIT))

    def change_cache_limit(self, size: int) -> None:
        """Set (and persist) the cache limit, evicting least recently accessed records beyond it."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"cache limit must be a positive integer, not {size!r}")
        with self._writing() as state:
            config = self._read_config()
            config["cache_limit"] = size
            self._write_config(config)
            self._evict(state, size)

    # ------------------------------------------------------------------ staging

    def _stage_key(self, pk_or_uri: int | str | os.PathLike[str], state: IndexState) -> str:
        if isinstance(pk_or_uri, int) and not isinstance(pk_or_uri, bool):
            for name, rec in state.stage.items():
                if rec["pk"] == pk_or_uri:
                    return name
            raise RecordNotFoundError(f"Staged record not found for pk: {pk_or_uri}")
        text = os.fspath(pk_or_uri)
        if isinstance(text, str) and text.isdigit() and not Path(text).exists():
            return self._stage_key(int(text), state)
        name = stage_name(self._stored_uri(Path(text).resolve()))
        if name not in state.stage:
            raise RecordNotFoundError(f"Staged record not found for URI: {text}")
        return name

    def stage_notebook_file(
        self, path: str | os.PathLike[str], assets: Iterable[str | os.PathLike[str]] = ()
    ) -> NbStageRecord:
        """Stage a notebook file for execution (staging it again updates its assets, keeps its pk)."""
        nb_path = Path(path).resolve()
        if not nb_path.is_file():
            if nb_path.exists():
                raise NotebookReadError(f"{path}: is not a file")
            raise NotebookNotFoundError(f"notebook not found: {path}")
        nb = _read_notebook_file(nb_path)
        rel_assets = sorted({check_inside(Path(a), nb_path.parent, what="asset").as_posix() for a in assets})
        stored = self._stored_uri(nb_path)
        _require_utf8([stored, rel_assets], f"the path or assets of {str(path)!r}")
        name = stage_name(stored)
        hash_entry = self._hash_entry(nb_path, notebook_key(nb))
        with self._writing() as state:
            old = state.stage.get(name)
            if old is not None and old.get("assets", []) == rel_assets:
                if hash_entry:
                    self._append({"op": "hash", "kind": "stage", "name": name, "stat": hash_entry})
                return self._stage_record(self._state, name)
            rec = {
                "assets": rel_assets,
                "created": old["created"] if old else format_time(now()),
                "pk": old["pk"] if old else state.high_water["stage"] + 1,
                "uri": stored,
            }
            self._begin()
            atomic_write(self.layout.stage_sidecar(name), dump_json(rec), tmpdir=self.layout.tmp)
            entries: list[dict] = [{"op": "put", "kind": "stage", "name": name, "rec": rec}]
            if hash_entry:
                entries.append({"op": "hash", "kind": "stage", "name": name, "stat": hash_entry})
            self._append(*entries)
            return self._stage_record(self._state, name)

    @staticmethod
    def _hash_entry(path: Path, key: str, st: os.stat_result | None = None) -> list | None:
        try:
            st = st or os.stat(path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, key, time.time_ns()]

    def list_staged_records(self) -> list[NbStageRecord]:
        """Return a snapshot of every stage record, by pk."""
        state = self._state_in_sync()
        return sorted((self._stage_record(state, n) for n in state.stage), key=lambda r: r.pk)

    def get_staged_record(self, pk_or_uri: int | str | os.PathLike[str]) -> NbStageRecord:
        """Return the stage record with this pk or notebook path (KeyError if there is none)."""
        state = self._state_in_sync()
        return self._stage_record(state, self._stage_key(pk_or_uri, state))

    def get_staged_notebook(self, pk_or_uri: int | str | os.PathLike[str]) -> NbBundleIn:
        """Read the staged notebook from its file and return it as a bundle (with its assets)."""
        record = self.get_staged_record(pk_or_uri)
        nb = notebooks.to_v4(_read_notebook_file(Path(record.uri)))
        folder = Path(record.uri).parent
        assets = NbArtifacts(record.assets, in_folder=folder, check_existence=False)
        return NbBundleIn(notebooks.to_node(nb), record.uri, assets)

    def staged_keys(self, pks: Iterable[int] | None = None) -> dict[int, str | None]:
        """Return {stage pk: key of its file now, or None if unreadable}, re-hashing only changed files."""
        state = self._state_in_sync()
        out: dict[int, str | None] = {}
        fresh: list[dict] = []
        wanted = None if pks is None else set(pks)
        for name, rec in state.stage.items():
            if wanted is not None and rec["pk"] not in wanted:
                continue
            path = self._abs_uri(rec["uri"])
            try:
                st = os.stat(path)
            except OSError:
                out[rec["pk"]] = None
                continue
            cached = state.hashes.get(name)
            if (
                cached
                and cached[:4] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
                and cached[5] - st.st_mtime_ns > _RACY_NS
            ):
                out[rec["pk"]] = cached[4]
                continue
            try:
                key = notebook_key(_read_notebook_file(path))
            except NbStoreError:
                out[rec["pk"]] = None
                continue
            out[rec["pk"]] = key
            entry = self._hash_entry(path, key, st)
            if entry != cached:
                fresh.append({"op": "hash", "kind": "stage", "name": name, "stat": entry})
        if fresh:
            with suppress(StoreWriteError, StoreBusyError, OSError), store_lock(self.layout.lock, timeout=5):
                self._sync_locked()
                self._append(*fresh)
                self._compact_if_bloated()
        return out

    def get_cache_record_of_staged(self, pk_or_uri: int | str | os.PathLike[str]) -> NbCacheRecord | None:
        """Return the cache record matching the staged notebook as it is now, or None."""
        record = self.get_staged_record(pk_or_uri)
        key = self.staged_keys([record.pk]).get(record.pk)
        state = self._state_in_sync()
        return self._cache_record(state, key) if key in state.cache else None

    def list_staged_unexecuted(self) -> list[NbStageRecord]:
        """Return the stage records whose notebook, as it is now, has no match in the cache."""
        keys = self.staged_keys()
        state = self._state_in_sync()
        return [r for r in self.list_staged_records() if keys.get(r.pk) not in state.cache]

    def discard_staged_notebook(self, pk_or_uri: int | str | os.PathLike[str]) -> None:
        """Remove a notebook from the staging area (KeyError if it is not staged)."""
        with self._writing() as state:
            name = self._stage_key(pk_or_uri, state)
            self._begin()
            with suppress(FileNotFoundError):
                os.unlink(self.layout.stage_sidecar(name))
            self._append({"op": "del", "kind": "stage", "name": name})

    def set_staged_traceback(self, pk_or_uri: int | str | os.PathLike[str], traceback: str) -> None:
        """Record (or with '' clear) the traceback of a staged notebook's last run."""
        with self._writing() as state:
            name = self._stage_key(pk_or_uri, state)
            if state.tracebacks.get(name, "") != traceback:
                self._append({"op": "traceback", "kind": "stage", "name": name, "text": traceback})


def _require_utf8(values: Any, what: str) -> None:
    """Refuse text that UTF-8 cannot encode (a file name in another encoding) before anything is written."""
    try:
        json.dumps(values, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CachingError(
            f"{what} hold text that is not valid UTF-8 ({exc.object[exc.start : exc.end]!r}; a file name in "
            "another encoding?): records are UTF-8 JSON, so rename the file"
        ) from None


def _creation_leftover(path: Path) -> bool:
    """True for what a store holds without nbstore.json: while a writer creates it, or after a git checkout."""
    # A checkout of a branch without the store removes its tracked files and leaves the ignored, volatile ones.
    if path.name in {"lock", "tmp", "claims", "quarantine", ".gitignore", ".gitattributes"}:
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


def _force_remove(func: Any, path: str, _exc: Any) -> None:
    # Objects are read-only; make them writable so that clear_cache can remove them everywhere.
    os.chmod(path, 0o700)
    func(path)


def get_cache(path: str | os.PathLike[str] = ".nbstore") -> NbStore:
    """Return the store at path (created on its first write)."""
    return NbStore(path)
