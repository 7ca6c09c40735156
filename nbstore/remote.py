"""Share a store through any fsspec URL: push_remote and pull_remote copy what the other side lacks.

A remote store keeps nbstore's layout (``nbstore.json``, ``objects/`` with git's fan-out, ``cache/``), made
for object stores, which have no rename and no lock: every file is written once under a name fixed by its
content. Objects are named by their hash as in a local store; a cache record is
``cache/<hashkey>.<version>.json``, where version is the start of the SHA-256 of the record's bytes, so two
machines pushing different records for one key never overwrite each other. Readers resolve: for each key
the record created first wins (the rule of a git merge of two stores), and a record is only seen once every
object it names is there. Pushes write objects first and records last, so a reader never sees a record
whose objects are still on their way, and a push killed at any moment leaves nothing a reader would use.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from nbstore.errors import RemoteError, StoreCorruptError, StoreFormatError, StoreNotFoundError
from nbstore.hashing import object_id
from nbstore.layout import FORMAT
from nbstore.records import NbCacheRecord, dump_json
from nbstore.store import exchange
from nbstore.store.cache import NbStore

__all__ = ["MAX_OBJECT_BYTES", "MAX_RECORD_BYTES", "SyncReport", "pull_remote", "push_remote"]

#: The largest remote record file read (a record is a few hundred bytes; this bounds a hostile remote).
MAX_RECORD_BYTES = 1 << 20

#: The largest remote object read (a notebook with its outputs, or an artifact file).
MAX_OBJECT_BYTES = 1 << 30

_OID = re.compile(r"[0-9a-f]{64}")
_RECORD_NAME = re.compile(r"([0-9a-f]{32,64})\.([0-9a-f]{16})\.json")
# Object stores write a whole object in one request; elsewhere a file is written beside its place and renamed.
_WHOLE_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "oss"}
# Files moved or fetched per request batch (between progress updates).
_BATCH = 64

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SyncReport:
    """What a push or pull copied (or, with dry_run, would copy), removed with prune, and refused."""

    direction: str
    url: str
    dry_run: bool
    records: tuple[str, ...] = ()
    objects: int = 0
    bytes: int = 0
    pruned: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    uris: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if nothing was refused."""
        return not self.problems

    def to_dict(self) -> dict:
        """Return the report as plain JSON-ready data (what `--json` prints)."""
        return {
            "direction": self.direction,
            "url": self.url,
            "dry_run": self.dry_run,
            "records": [{"hashkey": k, "uri": self.uris.get(k, "")} for k in self.records],
            "objects": self.objects,
            "bytes": self.bytes,
            "pruned": list(self.pruned),
            "problems": list(self.problems),
            "ok": self.ok,
        }


@dataclass
class _Version:
    """One record file on the remote."""

    key: str
    version: str
    path: str
    size: int
    rec: dict | None = None


class _Remote:
    """A remote store: an fsspec file system and the root path of the store in it."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as exc:
            raise RemoteError("push and pull need fsspec: pip install 'nbstore-cache[remote]'") from exc
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            raise RemoteError(f"{url}: {exc} (s3:// needs s3fs: pip install 'nbstore-cache[remote]')") from exc
        except (ValueError, OSError) as exc:
            raise RemoteError(f"{url}: cannot open: {exc}") from exc
        self.root = root.rstrip("/")
        protocol = self.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        self.whole_put = bool(protocols & _WHOLE_PUT)
        self.objects: dict[str, int] = {}
        self.versions: dict[str, list[_Version]] = {}
        self.problems: list[str] = []

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def object_path(self, oid: str) -> str:
        return self.path("objects", oid[:2], oid[2:])

    def _fail(self, action: str, exc: BaseException) -> RemoteError:
        return RemoteError(f"{self.url}: cannot {action}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ reading

    def read_config(self, *, create: bool) -> None:
        """Check nbstore.json (refusing an unknown format); create it when pushing to an empty place."""
        path = self.path("nbstore.json")
        try:
            self.fs.invalidate_cache()
            raw = self.fs.cat_file(path) if self.fs.exists(path) else None
        except OSError as exc:
            raise self._fail("read nbstore.json", exc) from exc
        if raw is None:
            if not create:
                raise StoreNotFoundError(f"there is no nbstore store at {self.url} (no nbstore.json)")
            self.put(path, dump_json({"cache_limit": 1000, "format": FORMAT}))
            return
        try:
            fmt = json.loads(raw[:MAX_RECORD_BYTES])["format"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"{self.url}: nbstore.json is damaged: {exc}") from exc
        if not isinstance(fmt, int) or fmt > FORMAT:
            raise StoreFormatError(
                f"{self.url} uses store format {fmt!r}; this version of nbstore reads format {FORMAT}: upgrade nbstore"
            )

    def scan(self) -> None:
        """List the remote's objects and record files (names checked; nothing read yet)."""
        self.objects, self.versions = {}, {}
        objects_root = self.path("objects") + "/"
        try:
            found = self.fs.find(self.path("objects"), detail=True)
        except FileNotFoundError:
            found = {}
        except OSError as exc:
            raise self._fail("list objects/", exc) from exc
        for name, info in found.items():
            rel = name[len(objects_root) :] if name.startswith(objects_root) else ""
            fan, _, rest = rel.partition("/")
            oid = fan + rest
            if info.get("type", "file") == "file" and len(fan) == 2 and _OID.fullmatch(oid):
                self.objects[oid] = int(info.get("size") or 0)
        try:
            listed = self.fs.ls(self.path("cache"), detail=True)
        except FileNotFoundError:
            listed = []
        except OSError as exc:
            raise self._fail("list cache/", exc) from exc
        for info in listed:
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            match = _RECORD_NAME.fullmatch(name)
            if match is None or info.get("type", "file") != "file":
                continue  # temp files of writes in progress, and anything else that is not a record
            key, version = match.groups()
            v = _Version(key, version, info["name"], int(info.get("size") or 0))
            self.versions.setdefault(key, []).append(v)

    def load(self, versions: list[_Version]) -> None:
        """Fetch and check the given record files; a bad one becomes a problem and is dropped."""
        wanted = []
        for v in versions:
            if v.size > MAX_RECORD_BYTES:
                self.problems.append(f"{v.path}: record file of {v.size} bytes is larger than {MAX_RECORD_BYTES}")
            else:
                wanted.append(v)
        for i in range(0, len(wanted), _BATCH * 4):
            chunk = wanted[i : i + _BATCH * 4]
            try:
                data = self.fs.cat([v.path for v in chunk], on_error="return")
            except OSError as exc:
                raise self._fail("read records", exc) from exc
            for v in chunk:
                raw = data.get(v.path)
                if isinstance(raw, BaseException) or raw is None:
                    self.problems.append(f"{v.path}: cannot read: {raw}")
                    continue
                if len(raw) > MAX_RECORD_BYTES:
                    self.problems.append(f"{v.path}: record file larger than {MAX_RECORD_BYTES} bytes")
                    continue
                try:
                    v.rec = _check_record(raw, v.key, v.version)
                except ValueError as exc:
                    self.problems.append(f"{v.path}: refused: {exc}")

    def complete(self, rec: dict) -> bool:
        """True if every object the record names is on the remote."""
        return all(oid in self.objects for oid in exchange.record_objects(rec))

    def winner(self, key: str) -> _Version | None:
        """Return the record a reader sees for key: of those loaded and complete, the one created first."""
        best = None
        for v in self.versions.get(key, ()):
            if v.rec is not None and self.complete(v.rec) and (best is None or exchange.wins(v.rec, best.rec)):
                best = v
        return best

    def get_objects(self, oids: list[str]) -> dict[str, bytes]:
        """Fetch objects (each at most MAX_OBJECT_BYTES); one that cannot be read becomes a problem."""
        out: dict[str, bytes] = {}
        paths = {}
        for oid in oids:
            if self.objects.get(oid, 0) > MAX_OBJECT_BYTES:
                self.problems.append(f"{self.object_path(oid)}: object larger than {MAX_OBJECT_BYTES} bytes")
            else:
                paths[self.object_path(oid)] = oid
        try:
            data = self.fs.cat(list(paths), on_error="return") if paths else {}
        except OSError as exc:
            raise self._fail("read objects", exc) from exc
        for path, oid in paths.items():
            raw = data.get(path)
            if isinstance(raw, BaseException) or raw is None:
                self.problems.append(f"{path}: cannot read object {oid}: {raw}")
            elif len(raw) > MAX_OBJECT_BYTES:  # it grew after the listing
                self.problems.append(f"{path}: object larger than {MAX_OBJECT_BYTES} bytes")
            else:
                out[oid] = raw
        return out

    # ------------------------------------------------------------------ writing

    def put(self, path: str, data: bytes) -> None:
        """Write one file whole: readers see it complete or not at all."""
        self.put_many({path: data})

    def put_many(self, files: dict[str, bytes]) -> None:
        try:
            if self.whole_put:
                self.fs.pipe(files)
                return
            for path, data in files.items():
                parent = path.rsplit("/", 1)[0]
                self.fs.makedirs(parent, exist_ok=True)
                tmp = f"{path}.{secrets.token_hex(6)}.tmp"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, path)
        except OSError as exc:
            raise self._fail(f"write {len(files)} files", exc) from exc

    def remove(self, paths: list[str]) -> None:
        try:
            if paths:
                self.fs.rm(paths)
        except OSError as exc:
            raise self._fail("remove files", exc) from exc


def _check_record(raw: bytes, key: str, version: str) -> dict:
    """Parse and check a remote record file named cache/<key>.<version>.json (ValueError naming the problem)."""
    if object_id(raw)[:16] != version:
        raise ValueError("its bytes do not match the hash in its name")
    try:
        rec = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    try:
        NbCacheRecord.from_sidecar(rec)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a cache record: {type(exc).__name__}: {exc}") from None
    if rec["hashkey"] != key:
        raise ValueError(f"hashkey {rec['hashkey']!r} does not match the file name")
    for oid in exchange.record_objects(rec):
        if not isinstance(oid, str) or not _OID.fullmatch(oid):
            raise ValueError(f"bad object id {oid!r}")
    for name in rec.get("artifacts", {}):
        _check_artifact_name(name)
    return rec


def _check_artifact_name(name: str) -> None:
    """Refuse an artifact name that is not a plain relative path (it is written under a folder on read)."""
    parts = name.split("/")
    if (
        not name
        or len(name) > 4096
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(p in ("", ".", "..") for p in parts)
        or len(parts) > 64
    ):
        raise ValueError(f"bad artifact name {name!r}")


def _local_versions(store: NbStore) -> dict[str, tuple[str, bytes, dict]]:
    """Return {key: (version, bytes, sidecar)} of every local cache record, as it would be pushed."""
    out = {}
    for key, rec in exchange.cache_sidecars(store).items():
        raw = dump_json(rec)
        out[key] = (object_id(raw)[:16], raw, rec)
    return out


def _fill_known(remote: _Remote, local: dict[str, tuple[str, bytes, dict]]) -> None:
    """Give remote record files that hold a local record (the same name, so the same bytes) that record."""
    for key, (ver, _, rec) in local.items():
        for v in remote.versions.get(key, ()):
            if v.version == ver and v.rec is None:
                v.rec = rec


def _note(on_progress: Progress | None, phase: str, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(phase, done, total)


def push_remote(
    store: NbStore,
    url: str,
    *,
    dry_run: bool = False,
    prune: bool = False,
    on_progress: Progress | None = None,
) -> SyncReport:
    """Copy to the remote store at url every cache record (and its objects) it lacks; prune=True also removes
    the remote's records this store lacks, and objects then unused (never while others push)."""
    remote = _Remote(url)
    if not dry_run:
        remote.read_config(create=True)
    else:
        with contextlib.suppress(StoreNotFoundError):
            remote.read_config(create=False)  # an empty place: a dry run creates nothing
    remote.scan()
    local = _local_versions(store) if store.exists() else {}
    # Only records whose content is not known from its name need fetching: those of keys pushed differently.
    remote.load([v for key, (ver, _, _) in local.items() for v in remote.versions.get(key, ()) if v.version != ver])
    _fill_known(remote, local)
    records: dict[str, bytes] = {}
    wanted: set[str] = set()
    problems: list[str] = []
    uris: dict[str, str] = {}
    for key, (ver, raw, rec) in sorted(local.items()):
        equal = [
            v
            for v in remote.versions.get(key, ())
            if v.rec is not None and exchange.content_without_pk(v.rec) == exchange.content_without_pk(rec)
        ]
        if equal:
            wanted.update(oid for oid in exchange.record_objects(rec) if oid not in remote.objects)
            continue
        best = remote.winner(key)
        if best is not None and exchange.wins(best.rec, rec):
            continue  # the remote's record of this key was created first: ours would never be seen
        records[remote.path("cache", f"{key}.{ver}.json")] = raw
        uris[key] = rec.get("uri", "")
        wanted.update(oid for oid in exchange.record_objects(rec) if oid not in remote.objects)
    pruned: list[str] = []
    prune_paths: list[str] = []
    if prune:
        for key, versions in sorted(remote.versions.items()):
            if key not in local:
                pruned.append(key)
                prune_paths.extend(v.path for v in versions)
    # Read every object to send now: a local object that is damaged keeps its record from being pushed.
    blobs: dict[str, bytes] = {}
    for oid in sorted(wanted):
        try:
            blobs[oid] = exchange.local_object(store, oid)
        except StoreCorruptError as exc:
            problems.append(str(exc))
    if problems:
        bad = {oid for oid in wanted if oid not in blobs}
        for key in list(uris):
            if set(exchange.record_objects(local[key][2])) & bad:
                records.pop(remote.path("cache", f"{key}.{local[key][0]}.json"), None)
                uris.pop(key)
    keys = tuple(sorted(uris))
    size = sum(len(b) for b in blobs.values())
    if dry_run:
        return SyncReport("push", url, True, keys, len(blobs), size, tuple(pruned), tuple(problems), uris)
    files = [(remote.object_path(oid), data) for oid, data in sorted(blobs.items())]
    total = len(files) + len(records)
    done = 0
    _note(on_progress, "objects", done, total)
    for i in range(0, len(files), _BATCH):
        chunk = dict(files[i : i + _BATCH])
        remote.put_many(chunk)
        done += len(chunk)
        _note(on_progress, "objects", done, total)
    # Records last: once one is there, every object it names is too.
    items = sorted(records.items())
    for i in range(0, len(items), _BATCH):
        chunk = dict(items[i : i + _BATCH])
        remote.put_many(chunk)
        done += len(chunk)
        _note(on_progress, "records", done, total)
    if prune:
        remote.remove(prune_paths)
        remote.fs.invalidate_cache()
        remote.scan()
        remote.load([v for vs in remote.versions.values() for v in vs])
        used = {oid for vs in remote.versions.values() for v in vs if v.rec for oid in exchange.record_objects(v.rec)}
        if not remote.problems:  # an unreadable record may need any object
            remote.remove([remote.object_path(oid) for oid in remote.objects if oid not in used])
    problems.extend(remote.problems)
    return SyncReport("push", url, False, keys, len(blobs), size, tuple(pruned), tuple(problems), uris)


def pull_remote(
    store: NbStore,
    url: str,
    *,
    dry_run: bool = False,
    prune: bool = False,
    on_progress: Progress | None = None,
) -> SyncReport:
    """Copy from the remote store at url every cache record (and its objects) this store lacks, each object
    checked against its hash; prune=True also removes this store's records that the remote lacks."""
    remote = _Remote(url)
    remote.read_config(create=False)
    remote.scan()
    local = _local_versions(store) if store.exists() else {}
    remote.load(
        [v for key, vs in remote.versions.items() for v in vs if key not in local or v.version != local[key][0]]
    )
    _fill_known(remote, local)
    incoming: dict[str, dict] = {}
    for key in sorted(remote.versions):
        best = remote.winner(key)
        if best is None:
            continue  # still being pushed, or refused
        mine = local.get(key)
        if mine is not None and (
            exchange.content_without_pk(mine[2]) == exchange.content_without_pk(best.rec)
            or not exchange.wins(best.rec, mine[2])
        ):
            continue
        incoming[key] = best.rec
    needed = sorted({oid for rec in incoming.values() for oid in exchange.record_objects(rec)})
    needed = sorted(exchange.missing_objects(store, needed)) if store.exists() else needed
    pruned = tuple(sorted(key for key in local if key not in remote.versions)) if prune else ()
    uris = {key: rec.get("uri", "") for key, rec in incoming.items()}
    if dry_run:
        size = sum(remote.objects.get(oid, 0) for oid in needed)
        return SyncReport(
            "pull", url, True, tuple(sorted(incoming)), len(needed), size, pruned, tuple(remote.problems), uris
        )
    bad: set[str] = set()
    size = 0
    got = 0
    _note(on_progress, "objects", 0, len(needed) + len(incoming))
    for i in range(0, len(needed), _BATCH):
        chunk = needed[i : i + _BATCH]
        blobs = remote.get_objects(chunk)
        for oid in chunk:
            data = blobs.get(oid)
            if data is None:
                bad.add(oid)
                continue
            try:
                exchange.receive_object(store, oid, data, source=remote.object_path(oid))
            except StoreCorruptError as exc:
                remote.problems.append(f"{exc}; records that use it were not pulled")
                bad.add(oid)
                continue
            size += len(data)
            got += 1
        _note(on_progress, "objects", i + len(chunk), len(needed) + len(incoming))
    for key in [k for k, rec in incoming.items() if set(exchange.record_objects(rec)) & bad]:
        del incoming[key]
        uris.pop(key)
    changed = exchange.merge_cache_sidecars(store, incoming) if incoming else []
    _note(on_progress, "records", len(needed) + len(incoming), len(needed) + len(incoming))
    if pruned:
        by_key = {r.hashkey: r.pk for r in store.list_cache_records()}
        for key in pruned:
            if key in by_key:
                store.remove_cache(by_key[key])
    return SyncReport("pull", url, False, tuple(sorted(changed)), got, size, pruned, tuple(remote.problems), uris)
