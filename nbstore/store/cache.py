"""NbStore: the cache and staging area, kept as plain files (objects, JSON sidecars, an index)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from nbstore import notebooks
from nbstore.bundles import NbArtifacts, NbBundleIn, NbBundleOut, StoredArtifacts, check_inside, files_below
from nbstore.errors import (
    ArtifactPathError,
    CachingError,
    DependencyError,
    NbStoreError,
    NotebookNotFoundError,
    NotebookReadError,
    RecordNotFoundError,
    StoreBusyError,
    StoreCorruptError,
    StoreUnsafeError,
    StoreWriteError,
)
from nbstore.hashing import (
    DEFAULT_KERNEL,
    KEY_RULE,
    KEY_RULE_DEPENDS,
    KeyInfo,
    KeyInputs,
    NotebookFacts,
    compose_key,
    key_record,
    notebook_facts,
    object_id,
)
from nbstore.indexfile import IndexState
from nbstore.layout import stage_name
from nbstore.project import ProjectAPI
from nbstore.records import DEFAULT_READER, NbCacheRecord, NbStageRecord, dump_json, format_time, now, parse_time
from nbstore.store.depends import DepCache, resolve
from nbstore.store.folder import DEFAULT_CACHE_LIMIT, StoreFolder
from nbstore.store.fsio import atomic_write
from nbstore.store.locking import store_lock
from nbstore.store.maintenance import DEFAULT_MIN_TEMP_AGE, GcReport, VerifyReport, gc, verify
from nbstore.store.objects import has_object, object_rel, put_object, read_object
from nbstore.store.safeio import MAX_OBJECT_BYTES, read_outside, remove_entry, unlink_in
from nbstore.untrusted import artifact_name_problem, loads_bounded

__all__ = ["DEFAULT_CACHE_LIMIT", "NbStore", "get_cache", "notebook_file_key"]

# A file hashed less than this long after its last modification may change again within the
# same timestamp tick, so its hash is not trusted on the next look (git's "racy clean" rule).
_RACY_NS = 100_000_000

#: Cache sidecar key: its "uri" is relative to the folder holding the store (absent: the uri as given).
RELATIVE_URI = "uri_relative"


def _read_notebook_file(path: Path) -> dict:
    """Read and check a notebook file, translating OS errors into nbstore errors."""
    try:
        data = read_outside(path, MAX_OBJECT_BYTES, what="notebook file")
    except FileNotFoundError as exc:
        raise NotebookNotFoundError(f"notebook not found: {path}") from exc
    except IsADirectoryError as exc:
        raise NotebookReadError(f"{path}: is a folder, not a notebook file") from exc
    except StoreUnsafeError as exc:
        raise NotebookReadError(str(exc)) from exc
    except OSError as exc:
        raise NotebookReadError(f"{path}: cannot read: {exc.strerror}") from exc
    return notebooks.parse_notebook(data, source=str(path))


def _read_with(path: Path, reader: str) -> dict:
    """Read a notebook file with the named reader (.ipynb files are parsed here, importing nothing)."""
    if reader == DEFAULT_READER:
        return _read_notebook_file(path)
    from nbstore.readers import read_notebook

    return read_notebook(reader, path)


def notebook_file_key(path: str | os.PathLike[str]) -> str | None:
    """Return the key of the notebook file at path, None if it declares dependencies (nbstore errors if malformed)."""
    path = Path(path)
    facts = _facts(_read_notebook_file(path), source=str(path))
    if facts.depends or facts.env:
        return None
    return compose_key(facts)[0]


def _plain(nb: Any, *, source: str) -> dict:
    """Return a plain, JSON-safe, structurally checked dict copy of a notebook object."""
    try:
        plain = json.loads(json.dumps(nb))
    except (TypeError, ValueError) as exc:
        raise NotebookReadError(f"{source}: not a notebook: not JSON-serialisable ({exc})") from exc
    notebooks.check_structure(plain, source=source)
    return plain


def _facts(nb: dict, *, source: str) -> NotebookFacts:
    """Return a checked notebook's key facts; NotebookReadError names a malformed metadata.nbstore."""
    try:
        return notebook_facts(nb)
    except ValueError as exc:
        raise NotebookReadError(f"{source}: {exc}") from exc


# The stat-cache entry of a staged notebook, one string (a list of six values took ~1 KB per notebook in
# memory, a third of a status over 100,000): "size mtime_ns ctime_ns inode hashed_ns key1 digest x tail",
# where tail is the compact JSON of [kernel, depends, env].
_PLAIN_TAIL = json.dumps([DEFAULT_KERNEL, [], []], separators=(",", ":"))


_NO_INPUTS = KeyInputs()


def _stat_text(st: os.stat_result, facts: NotebookFacts, hashed_ns: int) -> str:
    tail = json.dumps([facts.kernel, list(facts.depends), list(facts.env)], separators=(",", ":"), ensure_ascii=False)
    return (
        f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {hashed_ns} "
        f"{facts.key1} {facts.digest} {int(facts.execution)} {tail}"
    )


def _cached_facts(entry: object, st: os.stat_result) -> NotebookFacts | None:
    """The facts a stat-cache entry holds if the file is unchanged since (and not hashed racily), else None."""
    if isinstance(entry, str):
        parts = entry.split(" ", 8)
        if len(parts) != 9:
            return None
        try:
            size, mtime, ctime, ino, hashed = (int(p) for p in parts[:5])
        except ValueError:
            return None
        if (size, mtime, ctime, ino) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return None
        if hashed - st.st_mtime_ns <= _RACY_NS or parts[7] not in ("0", "1"):
            return None
        if parts[8] == _PLAIN_TAIL:
            kernel, depends, env = DEFAULT_KERNEL, (), ()
        else:
            try:
                kernel, depends, env = json.loads(parts[8])
                kernel, depends, env = str(kernel), tuple(map(str, depends)), tuple(map(str, env))
            except (ValueError, TypeError):
                return None
        return NotebookFacts(parts[5], parts[6], parts[7] == "1", depends, env, kernel)
    # The list form of earlier versions: [size, mtime_ns, ctime_ns, inode, facts dict, hashed_ns].
    if (
        isinstance(entry, list)
        and len(entry) == 6
        and entry[:4] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        and isinstance(entry[5], int)
        and entry[5] - st.st_mtime_ns > _RACY_NS
    ):
        return _entry_facts(entry[4])
    return None


def _entry_facts(entry: object) -> NotebookFacts | None:
    if not isinstance(entry, dict):
        return None
    try:
        return NotebookFacts(
            key1=str(entry["k"]),
            digest=str(entry["n"]),
            execution=bool(entry["x"]),
            depends=tuple(str(d) for d in entry["d"]),
            env=tuple(str(e) for e in entry["e"]),
            kernel=str(entry["K"]),
        )
    except (KeyError, TypeError):
        return None


def _names(values: Iterable[str | os.PathLike[str]], what: str) -> list[str]:
    out = []
    for value in values:
        text = os.fspath(value)
        if not isinstance(text, str) or not text:
            raise CachingError(f"{what} must be non-empty strings, not {value!r}")
        out.append(text)
    return list(dict.fromkeys(out))


class NbStore(ProjectAPI, StoreFolder):
    """A notebook cache and staging area in one folder of plain files."""

    _deps: DepCache | None = None

    # ------------------------------------------------------------------ keys

    def _dep_cache(self) -> DepCache:
        if self._deps is None:
            self._deps = DepCache(self.layout.root / "stat" / "depends.json", self.layout.tmp)
        return self._deps

    def _key_info(
        self,
        facts: NotebookFacts,
        folder: str,
        depends: Iterable[str] = (),
        env: Iterable[str] = (),
        *,
        memo: dict | None = None,
        skip_inputs: Container[str] = frozenset(),
    ) -> KeyInfo:
        """Return the key of a notebook with these facts in folder (DependencyError if a declaration fails).

        skip_inputs: keys whose KeyInfo may go without inputs (None), to spare a dict per notebook.
        """
        depends = tuple(dict.fromkeys((*facts.depends, *depends)))
        env = tuple(dict.fromkeys((*facts.env, *env)))
        inputs = KeyInputs()
        if depends or env:
            inputs = resolve(self._dep_cache(), folder, depends, env, kernel=facts.kernel, memo=memo)
        key, rule = compose_key(facts, inputs)
        return KeyInfo(key, rule, None if key in skip_inputs else key_record(facts, inputs), facts.execution)

    def _notebook_key_info(self, nb: dict, *, folder: str, source: str, stage: dict | None = None) -> KeyInfo:
        """Key a notebook read from folder (declarations of its stage record too); errors raise."""
        cache = self._dep_cache()
        cache.load()
        cache._kernel_memo.clear()
        try:
            return self._key_info(
                _facts(nb, source=source), folder, (stage or {}).get("depends", ()), (stage or {}).get("env", ())
            )
        except DependencyError as exc:
            raise DependencyError(f"{source}: {exc}") from exc
        finally:
            cache.save()

    def _stage_of_path(self, path: Path) -> dict | None:
        state = self._state_in_sync()
        return state.stage.get(stage_name(self._stored_uri(path.resolve())))

    def key_of_file(self, path: str | os.PathLike[str], *, reader: str | None = None, nb: Any = None) -> KeyInfo:
        """Return the key of the notebook file at path now, with its declarations (and its stage record's).

        nb, if given, is the notebook as already read from path: it is keyed instead of reading the file again.
        """
        nb = _read_with(Path(path), self._reader_for(path, reader)) if nb is None else _plain(nb, source=str(path))
        path = Path(path)
        stage = self._stage_of_path(path) if self.exists() else None
        return self._notebook_key_info(nb, folder=str(path.absolute().parent), source=str(path), stage=stage)

    def key_of_staged_notebook(self, pk_or_uri: int | str | os.PathLike[str], nb: Any = None) -> KeyInfo:
        """Return the key of a staged notebook (of nb, as read from its file, if given); errors raise."""
        state = self._state_in_sync()
        name = self._stage_key(pk_or_uri, state)
        rec = state.stage[name]
        uri = self._abs_uri(rec["uri"])
        if nb is None:
            nb = _read_with(Path(uri), rec.get("reader", DEFAULT_READER))
        plain = nb if isinstance(nb, dict) else _plain(nb, source=uri)
        return self._notebook_key_info(plain, folder=os.path.dirname(uri), source=uri, stage=rec)

    # ------------------------------------------------------------------ maintenance

    def verify(self, *, repair: bool = False, min_temp_age: float = DEFAULT_MIN_TEMP_AGE) -> VerifyReport:
        """Re-hash every object and check every record and the index; repair=True fixes what it safely can."""
        return verify(self, repair=repair, min_temp_age=min_temp_age)

    def gc(self, *, dry_run: bool = False, min_temp_age: float = DEFAULT_MIN_TEMP_AGE) -> GcReport:
        """Remove objects no record refers to, leftover temp files and claims idle for min_temp_age seconds."""
        return gc(self, dry_run=dry_run, min_temp_age=min_temp_age)

    # ------------------------------------------------------------------ records

    def _cache_record(self, state: IndexState, key: str) -> NbCacheRecord:
        memo = self._memo.get(("cache", key))
        if memo is None:
            touched = state.touched.get(key)
            rec = state.cache[key]
            uri = self._abs_cache_uri(str(rec.get("uri") or "")) if rec.get(RELATIVE_URI) is True else None
            try:
                memo = NbCacheRecord.from_sidecar(rec, accessed=parse_time(touched) if touched else None, uri=uri)
            except (KeyError, TypeError, ValueError) as exc:
                # The index is volatile state anyone may have shipped: its copy is checked like a record file.
                raise StoreCorruptError(
                    f"cache record {key} in the index {self.layout.index} is damaged ({exc}); "
                    "run `nbstore verify --repair`"
                ) from exc
            self._memo[("cache", key)] = memo
        return memo

    def _abs_cache_uri(self, stored: str) -> str:
        # Only a plain relative path is joined: a record from an untrusted store must not name a file outside.
        if not stored or os.path.isabs(stored) or "\\" in stored:
            return stored
        if os.sep == "/" and "//" not in stored and "/." not in "/" + stored and not stored.endswith("/"):
            return self._base_prefix + stored  # what the join below gives, for the plain paths nbstore writes
        parts = stored.split("/")
        if ".." in parts:
            return stored
        return os.path.join(self._base, *parts)

    def _relative_cache_uri(self, uri: str) -> str | None:
        """Return uri relative to the folder holding the store if it is an absolute path inside it, else None."""
        if not uri or not os.path.isabs(uri):
            return None  # as given: a relative uri or a URL means what its caller meant (jupyter-cache keeps it)
        for form in (os.path.abspath(uri), os.path.realpath(uri)):
            rel = os.path.relpath(form, self._base) if form.startswith(str(self._base) + os.sep) else None
            if rel is not None:
                return Path(rel).as_posix()
        return None

    def _abs_uri(self, stored: str) -> str:
        # Plain string joins: status builds this for every staged notebook, and pathlib costs 5x more.
        return stored if os.path.isabs(stored) else self._base_prefix + stored  # = os.path.join(base, stored)

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
            folder = os.path.dirname(uri)
            memo = NbStageRecord(
                pk=rec["pk"],
                uri=uri,
                created=parse_time(rec["created"]),
                assets=tuple(os.path.join(folder, a) for a in rec.get("assets", [])),
                traceback=state.tracebacks.get(name, ""),
                reader=rec.get("reader", DEFAULT_READER),
                depends=tuple(rec.get("depends", ())),
                env=tuple(rec.get("env", ())),
            )
            self._memo[("stage", name)] = memo
        return memo

    # ------------------------------------------------------------------ cache: reading

    def list_cache_records(self) -> list[NbCacheRecord]:
        """Return a snapshot of every cache record, by pk."""
        state = self._state_in_sync()
        return sorted((self._cache_record(state, k) for k in state.cache), key=lambda r: r.pk)

    def _key_of_pk(self, state: IndexState, pk: int) -> str:
        key = state.name_of_pk("cache", pk)
        if key is None:
            raise RecordNotFoundError(f"Cache record not found for pk: {pk}")
        return key

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

    def _cached_notebook(self, pk: int, *, retry: bool = True) -> tuple[NbCacheRecord, dict]:
        """Return cache record pk and its notebook as a fresh plain dict, recording the access."""
        state = self._state_in_sync()
        key = self._key_of_pk(state, int(pk))
        record = self._cache_record(state, key)
        try:
            data = read_object(self.layout, record.notebook)
        except StoreCorruptError as exc:
            # Another process may have removed (or replaced) the record, and its objects, since the lookup.
            state = self._state_in_sync()
            changed = self._key_of_pk(state, int(pk)) != key or state.cache[key]["notebook"] != record.notebook
            if changed and retry:
                return self._cached_notebook(pk, retry=False)
            raise StoreCorruptError(f"cache record {pk}: {exc}") from exc
        try:
            nb = loads_bounded(data)
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

    def has_objects(self, record: NbCacheRecord) -> bool:
        """True if every object the record refers to is in the store as a regular file (a cache hit needs them)."""
        # lstat only: a missing object is caught here, a damaged one when it is read (and by verify).
        return self._sidecar_has_objects({"notebook": record.notebook, "artifacts": record.artifacts})

    def _sidecar_has_objects(self, rec: dict) -> bool:
        """has_objects for a record's plain sidecar dict (as the index holds it)."""
        lay = self.layout
        artifacts = rec.get("artifacts") or {}
        return (
            has_object(lay, rec.get("notebook"))
            and isinstance(artifacts, dict)
            and all(has_object(lay, oid) for oid in artifacts.values())
        )

    def match_cache_key(self, key: str) -> NbCacheRecord:
        """Return the cache record with this hashkey (KeyError naming the hashkey if none or its objects are gone)."""
        state = self._state_in_sync()
        if key not in state.cache:
            raise RecordNotFoundError(f"Cache record not found for NB with hashkey: {key}")
        record = self._cache_record(state, key)
        if not self.has_objects(record):
            raise RecordNotFoundError(
                f"Cache record {record.pk} for NB with hashkey {key} is missing its objects, so it is no match "
                "(`nbstore verify --repair` puts it aside)"
            )
        return record

    def match_cache_notebook(self, nb: Any, *, path: str | os.PathLike[str] | None = None) -> NbCacheRecord:
        """Return the cache record whose key matches this notebook (KeyError naming the hashkey if none).

        path is the file nb was read from: its folder and stage record resolve declared dependencies
        (without it, the current folder does).
        """
        if not isinstance(nb, dict):
            raise NotebookReadError(f"not a notebook: got {type(nb).__name__}")
        notebooks.check_structure(nb, source="notebook")
        if path is not None:
            return self.match_cache_key(self.key_of_file(path, nb=nb).key)
        # A notebook object has no folder: its declared dependencies are looked up from the current one.
        return self.match_cache_key(self._notebook_key_info(nb, folder=os.getcwd(), source="notebook").key)

    def match_cache_file(self, path: str | os.PathLike[str], *, reader: str | None = None) -> NbCacheRecord:
        """Return the cache record matching the notebook file at path (read by reader; its dependencies as now)."""
        return self.match_cache_key(self.key_of_file(path, reader=reader).key)

    def _reader_for(self, path: str | os.PathLike[str], reader: str | None) -> str:
        """Return reader, else the reader path is staged with (an .ipynb file, or one not staged: nbformat)."""
        if reader is not None:
            return reader
        if os.fspath(path).endswith(".ipynb"):
            return DEFAULT_READER
        try:
            return self.get_staged_record(path).reader
        except NbStoreError:
            return DEFAULT_READER

    def merge_match_into_notebook(
        self,
        nb: Any,
        nb_meta: Iterable[str] | None = ("kernelspec", "language_info", "widgets"),
        cell_meta: Iterable[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> tuple[int, Any]:
        """Return (pk, notebook) with the matching cached outputs merged into a copy of nb (read from path if given)."""
        plain = notebooks.to_v4(_plain(nb, source=str(path or "notebook")))
        if path is not None:
            folder = str(Path(path).absolute().parent)
            pk, merged = self._merged(plain, nb_meta, cell_meta, folder=folder, path=Path(path))
            return pk, notebooks.to_node(merged)
        # A notebook object has no folder: its declared dependencies are looked up from the current one.
        pk, merged = self._merged(plain, nb_meta, cell_meta, folder=os.getcwd())
        return pk, notebooks.to_node(merged)

    def merge_match_into_dict(
        self,
        path: str | os.PathLike[str],
        nb_meta: Iterable[str] | None = ("kernelspec", "language_info", "widgets"),
        cell_meta: Iterable[str] | None = None,
        *,
        reader: str | None = None,
    ) -> tuple[int, dict]:
        """Return (pk, plain dict) as merge_match_into_file does, importing nbformat only to convert nbformat 3."""
        plain = notebooks.to_v4(_read_with(Path(path), self._reader_for(path, reader)))
        return self._merged(plain, nb_meta, cell_meta, folder=str(Path(path).absolute().parent), path=Path(path))

    def _merged(
        self,
        plain: dict,
        nb_meta: Iterable[str] | None,
        cell_meta: Iterable[str] | None,
        *,
        folder: str,
        path: Path | None = None,
    ) -> tuple[int, dict]:
        stage = self._stage_of_path(path) if path is not None and self.exists() else None
        info = self._notebook_key_info(plain, folder=folder, source=str(path or "notebook"), stage=stage)
        record = self.match_cache_key(info.key)
        _, cached = self._cached_notebook(record.pk)
        # Both dicts are fresh copies made here: merging in place spares two deep copies of large outputs.
        return record.pk, notebooks.merge_outputs(plain, cached, nb_meta=nb_meta, cell_meta=cell_meta, owned=True)

    def merge_match_into_file(
        self,
        path: str | os.PathLike[str],
        nb_meta: Iterable[str] | None = ("kernelspec", "language_info", "widgets"),
        cell_meta: Iterable[str] | None = None,
        *,
        reader: str | None = None,
    ) -> tuple[int, Any]:
        """Return (pk, notebook) for the notebook file at path (read by reader) with its cached outputs merged in."""
        nb = _read_with(Path(path), self._reader_for(path, reader))
        plain = notebooks.to_v4(_plain(nb, source=str(path)))
        pk, merged = self._merged(plain, nb_meta, cell_meta, folder=str(Path(path).absolute().parent), path=Path(path))
        return pk, notebooks.to_node(merged)

    def diff_nbnode_with_cache(self, pk: int, nb: Any, uri: str = "", as_str: bool = False, **kwargs: Any) -> Any:
        """Return nbdime's diff of cache record pk against nb (text when as_str; needs nbstore-cache[diff])."""
        compared = ("kernelspec", "language_info", "widgets")
        _, cached_plain = self._cached_notebook(pk)
        cached_plain["metadata"] = {k: v for k, v in cached_plain.get("metadata", {}).items() if k in compared}
        other_plain = notebooks.strip_notebook(notebooks.to_v4(_plain(nb, source=str(uri) or "notebook")))
        other_plain["metadata"] = {k: v for k, v in other_plain.get("metadata", {}).items() if k in compared}
        header = f"nbdiff\n--- cached pk={pk}\n+++ other: {uri}\n"
        if cached_plain == other_plain:
            # Nothing for nbdime to find; importing it (and nbformat, with jsonschema) costs seconds.
            return header if as_str else []
        try:
            from nbdime.diffing.notebooks import diff_notebooks
            from nbdime.prettyprint import PrettyPrintConfig, pretty_print_diff
        except ImportError as exc:
            raise NbStoreError("diffing needs nbdime: pip install 'nbstore-cache[diff]'") from exc
        cached = notebooks.to_node(cached_plain)
        diff = diff_notebooks(cached, notebooks.to_node(other_plain))
        if not as_str:
            return diff
        import io

        stream = io.StringIO()
        stream.write(header)
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
            bundle, nb, check_validity=check_validity, overwrite=overwrite, description="", key=None, inputs=None
        )

    def cache_notebook_bundle(
        self,
        bundle: NbBundleIn,
        check_validity: bool = True,
        overwrite: bool = False,
        description: str = "",
        *,
        key: str | None = None,
        created: datetime | None = None,
        accessed: datetime | None = None,
        inputs: dict | None = None,
    ) -> NbCacheRecord:
        """Cache a bundle (under `key` if given: the executor passes the pre-run key and the `inputs` of it).

        `created` and `accessed` (naive UTC, as records hold them; default now) keep the times of a record
        imported from elsewhere.
        """
        nb = _plain(bundle.nb, source=str(bundle.uri or "") or "notebook")
        return self._cache_plain(
            bundle,
            nb,
            check_validity=check_validity,
            overwrite=overwrite,
            description=description,
            key=key,
            created=created,
            accessed=accessed,
            inputs=inputs,
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
        created: datetime | None = None,
        accessed: datetime | None = None,
        inputs: dict | None = None,
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
        rule = KEY_RULE_DEPENDS if inputs else KEY_RULE
        if not key:
            folder = os.path.dirname(os.path.abspath(uri)) if uri else os.getcwd()
            # A staged notebook cached from elsewhere is keyed with its stage record's declarations too.
            stage = self._stage_of_path(Path(uri)) if uri and self.exists() else None
            info = self._notebook_key_info(nb, folder=folder, source=uri or "notebook", stage=stage)
            key, rule, inputs = info.key, info.rule, info.inputs if info.rule != KEY_RULE else None
        nb_bytes = notebooks.dump_notebook(notebooks.strip_notebook(nb))
        art_blobs: dict[str, bytes] = {}
        if bundle.artifacts is not None:
            for rel, handle in bundle.artifacts:
                name = rel.as_posix()
                problem = artifact_name_problem(name)
                if problem is not None:
                    raise ArtifactPathError(
                        f"artifact name {name!r} {problem} (artifact names are plain relative paths)"
                    )
                art_blobs[name] = handle.read()
                if len(art_blobs[name]) > MAX_OBJECT_BYTES:
                    raise CachingError(
                        f"artifact {name!r} is {len(art_blobs[name])} bytes, more than the {MAX_OBJECT_BYTES} "
                        "a stored object may hold"
                    )
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
            created = created or now()
            accessed = max(accessed or created, created)
            record = NbCacheRecord(
                pk=state.high_water["cache"] + 1,
                hashkey=key,
                uri=uri,
                created=created,
                accessed=accessed,
                description=description,
                data=json.loads(json.dumps(data)),
                notebook=nb_oid,
                artifacts=objects,
                key_rule=rule,
                inputs=dict(inputs or {}),
            )
            sidecar = record.to_sidecar()
            relative = self._relative_cache_uri(uri)
            if relative is not None:
                # A committed store must not leak this machine's folders; a clone hands out its own path.
                sidecar.update({"uri": relative, RELATIVE_URI: True})
            self._begin()
            atomic_write(self.layout.cache_sidecar(key), dump_json(sidecar), tmpdir=self.layout.tmp)
            entries: list[dict] = [{"op": "put", "kind": "cache", "name": key, "rec": sidecar}]
            if accessed != created:
                entries.append({"op": "touch", "kind": "cache", "name": key, "t": format_time(accessed)})
            self._append(*entries)
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
                unlink_in(self.path, f"cache/{key}.json")
        self._append(*({"op": "del", "kind": "cache", "name": k} for k in keys))
        if self._in_repository():
            return  # objects wait for gc: another branch may add a record that uses one of them
        live = set()
        for rec in self._state.cache.values():
            live.add(rec["notebook"])
            live.update(rec.get("artifacts", {}).values())
        for oid in dropped - live:
            with suppress(FileNotFoundError, StoreCorruptError):
                unlink_in(self.path, object_rel(oid))

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
            failed: list[str] = []
            for name in ("cache", "stage", "objects", "quarantine", "tmp", "index", "nbstore.json"):
                failed += remove_entry(self.path, name)
            self._state, self._index_id, self._index_offset, self._memo = None, None, 0, {}
            if failed:
                # Say so rather than "Cleared": the caller must know what is still there.
                raise StoreWriteError(f"clear could not remove {len(failed)} path(s): {', '.join(failed[:5])}")
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
            name = state.name_of_pk("stage", int(pk_or_uri))
            if name is None:
                raise RecordNotFoundError(f"Staged record not found for pk: {pk_or_uri}")
            return name
        text = os.fspath(pk_or_uri)
        if isinstance(text, str) and text.isdigit() and not Path(text).exists():
            return self._stage_key(int(text), state)
        name = stage_name(self._stored_uri(Path(text).resolve()))
        if name not in state.stage:
            raise RecordNotFoundError(f"Staged record not found for URI: {text}")
        return name

    def stage_notebook_file(
        self,
        path: str | os.PathLike[str],
        assets: Iterable[str | os.PathLike[str]] = (),
        *,
        reader: str | None = None,
        depends: Iterable[str] = (),
        env: Iterable[str] = (),
    ) -> NbStageRecord:
        """Stage a notebook file read by the named reader (default nbformat), with dependency globs and env names."""
        nb_path = Path(path).resolve()
        if not nb_path.is_file():
            if nb_path.exists():
                raise NotebookReadError(f"{path}: is not a file")
            raise NotebookNotFoundError(f"notebook not found: {path}")
        reader = DEFAULT_READER if reader is None else reader
        if not isinstance(reader, str):
            raise TypeError(f"reader must be a reader's name, not {reader!r}")
        try:
            nb = _read_with(nb_path, reader)
        except NotebookReadError as exc:
            if reader != DEFAULT_READER or nb_path.suffix == ".ipynb":
                raise
            raise NotebookReadError(f"{exc} (a text notebook? stage it with the reader 'jupytext')") from exc
        rel_assets = sorted(
            {check_inside(Path(a), nb_path.parent, what="asset", folders=True).as_posix() for a in assets}
        )
        declared = {"depends": _names(depends, "dependencies"), "env": _names(env, "environment variable names")}
        declared = {k: v for k, v in declared.items() if v}  # records without declarations stay as they were
        stored = self._stored_uri(nb_path)
        _require_utf8([stored, rel_assets, declared], f"the path, assets or declarations of {str(path)!r}")
        name = stage_name(stored)
        hash_entry = self._hash_entry(nb_path, _facts(nb, source=str(path)))
        with self._writing() as state:
            old = state.stage.get(name)
            same = old is not None and all(old.get(k) == declared.get(k) for k in ("depends", "env"))
            if same and old.get("assets", []) == rel_assets and old.get("reader", DEFAULT_READER) == reader:
                if hash_entry:
                    self._append({"op": "hash", "kind": "stage", "name": name, "stat": hash_entry})
                return self._stage_record(self._state, name)
            rec = {
                "assets": rel_assets,
                "created": old["created"] if old else format_time(now()),
                "pk": old["pk"] if old else state.high_water["stage"] + 1,
                "uri": stored,
                **declared,
            }
            if reader != DEFAULT_READER:
                # Only named when not the default: records of .ipynb notebooks stay as they always were.
                rec["reader"] = reader
            self._begin()
            atomic_write(self.layout.stage_sidecar(name), dump_json(rec), tmpdir=self.layout.tmp)
            entries: list[dict] = [{"op": "put", "kind": "stage", "name": name, "rec": rec}]
            if hash_entry:
                entries.append({"op": "hash", "kind": "stage", "name": name, "stat": hash_entry})
            self._append(*entries)
            return self._stage_record(self._state, name)

    @staticmethod
    def _hash_entry(path: str | Path, facts: NotebookFacts, st: os.stat_result | None = None) -> str | None:
        try:
            st = st or os.stat(path)
        except OSError:
            return None
        return _stat_text(st, facts, time.time_ns())

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
        nb = notebooks.to_v4(_read_with(Path(record.uri), record.reader))
        folder = Path(record.uri).parent
        # An asset folder stands for the files in it at run time.
        files = files_below((folder / a for a in record.assets), inside=folder)
        assets = NbArtifacts(files, in_folder=folder, check_existence=False)
        return NbBundleIn(notebooks.to_node(nb), record.uri, assets)

    def staged_keys(self, pks: Iterable[int] | None = None) -> dict[int, str | None]:
        """Return {stage pk: key of its file now, or None if unreadable}, re-hashing only changed files."""
        return {pk: info.key for pk, info in self.staged_key_infos(pks).items()}

    def staged_key_infos(self, pks: Iterable[int] | None = None, *, cached_inputs: bool = True) -> dict[int, KeyInfo]:
        """Return {stage pk: KeyInfo} for the staged notebooks as they are now (their dependencies too).

        Notebooks and dependency files whose size and mtime did not change are not read again. With
        cached_inputs=False, a notebook whose key has a cache record gets inputs None (what outdated_reasons
        needs is kept; a status of 100,000 notebooks holds no inputs dict per up-to-date notebook).
        """
        state = self._state_in_sync()
        out: dict[int, KeyInfo] = {}
        fresh: list[dict] = []
        wanted = None if pks is None else set(pks)
        cache = self._dep_cache()
        cache.load()
        cache._kernel_memo.clear()
        memo: dict = {}
        skip = frozenset() if cached_inputs else state.cache
        for name, rec in state.stage.items():
            if wanted is not None and rec["pk"] not in wanted:
                continue
            path = self._abs_uri(rec["uri"])
            try:
                st = os.stat(path)
            except OSError as exc:
                out[rec["pk"]] = KeyInfo(None, error=f"{path}: {exc.strerror}", broken="notebook")
                continue
            cached = state.hashes.get(name)
            facts = _cached_facts(cached, st) if cached else None
            if facts is not None and type(cached) is list:
                # An earlier version's entry: kept in the string form from now on (a third of the memory).
                fresh.append({"op": "hash", "kind": "stage", "name": name, "stat": _stat_text(st, facts, cached[5])})
            if facts is None:
                try:
                    facts = _facts(_read_with(Path(path), rec.get("reader", DEFAULT_READER)), source=path)
                except NbStoreError as exc:
                    out[rec["pk"]] = KeyInfo(None, error=str(exc), broken="notebook")
                    continue
                entry = self._hash_entry(path, facts, st)
                if entry != cached:
                    fresh.append({"op": "hash", "kind": "stage", "name": name, "stat": entry})
            depends, env = rec.get("depends", ()), rec.get("env", ())
            if not (facts.execution or facts.depends or facts.env or depends or env):
                # A rule-1 notebook (most of them): its key is the stat-cache's, with nothing to resolve.
                key = facts.key1
                inputs = None if key in skip else key_record(facts, _NO_INPUTS)
                out[rec["pk"]] = KeyInfo(key, KEY_RULE, inputs, False)
                continue
            try:
                out[rec["pk"]] = self._key_info(facts, os.path.dirname(path), depends, env, memo=memo, skip_inputs=skip)
            except DependencyError as exc:
                out[rec["pk"]] = KeyInfo(None, error=f"{path}: {exc}", broken="dependency")
        cache.save()
        if fresh:
            with suppress(StoreWriteError, StoreBusyError, OSError), store_lock(self.layout.lock, timeout=5):
                self._sync_locked()
                self._append(*fresh)
                self._compact_if_bloated()
        return out

    def outdated_reasons(self, infos: dict[int, KeyInfo]) -> dict[int, str]:
        """Return {stage pk: why it is outdated} for notebooks of infos with no record of their key.

        The reason compares what entered the key now with what entered the key of the notebook's latest
        record (`code changed`, `data/x.csv changed`, `MY_SETTING changed`, `environment changed`); it is
        '' when the notebook never ran.
        """
        from nbstore.hashing import describe_change

        state = self._state_in_sync()
        outdated = [pk for pk, info in infos.items() if info.key is not None and info.key not in state.cache]
        if not outdated:
            return {}  # the common case of a status over a large store: no record need be looked at
        stages = {}
        for pk in outdated:
            name = state.name_of_pk("stage", pk)
            if name is not None:
                stages[pk] = self._abs_uri(state.stage[name]["uri"])
        wanted = set(stages.values())
        latest: dict[str, dict] = {}
        for rec in state.cache.values():
            uri = self._abs_uri(rec.get("uri") or "")
            if uri not in wanted:
                continue
            old = latest.get(uri)
            if old is None or (rec["created"], rec["pk"]) > (old["created"], old["pk"]):
                latest[uri] = rec
        out = {}
        for pk, uri in stages.items():
            info = infos[pk]
            before = latest.get(uri)
            if before is None:
                out[pk] = ""
                continue
            previous = before.get("inputs") or {"code": before["hashkey"]}
            out[pk] = describe_change(previous, info.inputs or {}, execution=info.execution)
        return out

    def get_cache_record_of_staged(self, pk_or_uri: int | str | os.PathLike[str]) -> NbCacheRecord | None:
        """Return the cache record matching the staged notebook as it is now, or None."""
        record = self.get_staged_record(pk_or_uri)
        key = self.staged_keys([record.pk]).get(record.pk)
        state = self._state_in_sync()
        if key not in state.cache:
            return None
        found = self._cache_record(state, key)
        return found if self.has_objects(found) else None

    def list_staged_unexecuted(self) -> list[NbStageRecord]:
        """Return the stage records whose notebook, as it is now, has no match in the cache."""
        keys = self.staged_keys()
        state = self._state_in_sync()
        hits = {k for k in set(keys.values()) if k in state.cache and self.has_objects(self._cache_record(state, k))}
        return [r for r in self.list_staged_records() if keys.get(r.pk) not in hits]

    def discard_staged_notebook(self, pk_or_uri: int | str | os.PathLike[str]) -> None:
        """Remove a notebook from the staging area (KeyError if it is not staged)."""
        with self._writing() as state:
            name = self._stage_key(pk_or_uri, state)
            self._begin()
            with suppress(FileNotFoundError):
                unlink_in(self.path, f"stage/{name}.json")
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


def get_cache(path: str | os.PathLike[str] = ".nbstore") -> NbStore:
    """Return the store at path (created on its first write)."""
    return NbStore(path)
