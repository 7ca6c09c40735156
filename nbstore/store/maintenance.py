"""Store maintenance: `verify` (check every byte, optionally repair) and `gc` (drop what nothing uses)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from nbstore.errors import StoreCorruptError, StoreFormatError, StoreNotFoundError, StoreUnsafeError, StoreWriteError
from nbstore.indexfile import IndexState, load
from nbstore.layout import FORMAT, temp_writer
from nbstore.records import dump_json, parse_config
from nbstore.store.folder import DEFAULT_CACHE_LIMIT
from nbstore.store.fsio import atomic_write, translate_os_error, writer_is_dead
from nbstore.store.locking import CLAIMS_DIR, idle_claims, store_lock
from nbstore.store.objects import read_object
from nbstore.store.safeio import (
    MAX_CONFIG_BYTES,
    MAX_INDEX_BYTES,
    MAX_OBJECT_BYTES,
    MAX_RECORD_BYTES,
    kind_of,
    open_in,
    opened_dir,
    read_in,
    relative_to_store,
    unlink_in,
)
from nbstore.untrusted import artifact_name_problem, loads_bounded

if TYPE_CHECKING:
    from nbstore.store.cache import NbStore

__all__ = ["DEFAULT_MIN_TEMP_AGE", "LEFTOVER_KINDS", "GcReport", "Problem", "VerifyReport", "gc", "verify"]

#: Problem kinds that are leftovers of an interrupted write, not damage: verify reports them, gc removes them.
LEFTOVER_KINDS = frozenset({"stale-temp"})

# Deepest folder nesting verify looks into (a store is three deep; deeper is tampering, reported, not walked).
_MAX_WALK_DEPTH = 8

#: Temp files younger than this (seconds) may belong to a live writer, so they are left alone (unless the
#: writer their name records has exited).
DEFAULT_MIN_TEMP_AGE = 3600.0

_OID = re.compile(rb"[0-9a-f]{64}")
_OID_TEXT = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_HEX62 = re.compile(r"[0-9a-f]{62}")


@dataclass(frozen=True)
class Problem:
    """One thing verify found wrong: its kind, the path (relative to the store) and what is wrong."""

    kind: str
    path: str
    detail: str
    repaired: bool = False


@dataclass(frozen=True)
class VerifyReport:
    """What verify checked and every problem it found (and, with repair, fixed)."""

    problems: tuple[Problem, ...]
    objects_checked: int
    records_checked: int

    @property
    def ok(self) -> bool:
        """True when no problem is left unrepaired (leftovers of interrupted writes are not damage)."""
        return all(p.repaired or p.kind in LEFTOVER_KINDS for p in self.problems)

    @property
    def leftovers(self) -> tuple[Problem, ...]:
        """The unrepaired leftovers of interrupted writes (temp files), which lose nothing and gc removes."""
        return tuple(p for p in self.problems if p.kind in LEFTOVER_KINDS and not p.repaired)


@dataclass(frozen=True)
class GcReport:
    """What gc removed (paths relative to the store), the bytes it freed, and whether it was a dry run."""

    removed: tuple[str, ...]
    bytes_freed: int
    dry_run: bool


# ---------------------------------------------------------------------- helpers


def _rel(store: NbStore, path: Path) -> str:
    return path.relative_to(store.path).as_posix()


def _hash_file(store: NbStore, path: Path) -> str:
    # Streamed: an object is hashed in bounded memory whatever its size (it is a regular file, never a link).
    digest = hashlib.sha256()
    fd = open_in(store.path, _rel(store, path))
    try:
        for chunk in iter(lambda: os.read(fd, 1 << 20), b""):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _scan(store: NbStore, reldir: str) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of a store folder, by name; the folder opened without following a symlink."""
    out = []
    try:
        with opened_dir(store.path, reldir) as dfd, os.scandir(dfd) as entries:
            for entry in entries:
                try:
                    out.append((entry.name, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # renamed or removed by a writer meanwhile
    except (FileNotFoundError, StoreUnsafeError):
        return []  # an unsafe folder is reported by _unsafe_entries
    return sorted(out, key=lambda item: item[0])


def _object_files(store: NbStore) -> Iterator[tuple[Path, str | None]]:
    """Yield every file under objects/ with its object id (None when the name or type is not an object's)."""
    root = store.layout.objects
    for fan, fan_st in _scan(store, "objects"):
        if not stat.S_ISDIR(fan_st.st_mode):
            yield root / fan, None
            continue
        for name, st in _scan(store, f"objects/{fan}"):
            ok = _HEX2.fullmatch(fan) and _HEX62.fullmatch(name) and stat.S_ISREG(st.st_mode)
            yield root / fan / name, (fan + name) if ok else None


def _temp_files(store: NbStore) -> Iterator[tuple[Path, os.stat_result]]:
    for name, st in _scan(store, "tmp"):
        if stat.S_ISREG(st.st_mode):
            yield store.layout.tmp / name, st


# What each top-level name of a store must be (anything else there is left alone: it is not nbstore's).
_TOP_FILES = ("nbstore.json", "index", "lock", ".gitignore", ".gitattributes")
_TOP_FOLDERS = ("objects", "cache", "stage", "tmp", "claims")
_QUARANTINE = "quarantine"  # checked, never walked: it holds what repair put aside, symlinks included


def _unsafe_entries(store: NbStore) -> list[tuple[str, str]]:
    """Every symlink, special file or wrong-typed file in the store (quarantine/ aside): (relative path, why).

    Nothing is followed: folders are walked through no-follow fds, each entry judged by its lstat.
    """
    found: list[tuple[str, str]] = []
    for name in (*_TOP_FILES, *_TOP_FOLDERS, _QUARANTINE):
        try:
            st = os.lstat(store.path / name)
        except FileNotFoundError:
            continue
        want_dir = name in _TOP_FOLDERS or name == _QUARANTINE
        if (
            stat.S_ISLNK(st.st_mode)
            or stat.S_ISDIR(st.st_mode) != want_dir
            or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode))
        ):
            want = "a folder" if want_dir else "a regular file"
            found.append((name, f"is {kind_of(st.st_mode)}, not {want}: nbstore never follows or uses it"))
    bad_top = {rel for rel, _ in found}
    pending = [(name, 1) for name in _TOP_FOLDERS if name not in bad_top and (store.path / name).is_dir()]
    while pending:
        reldir, depth = pending.pop()
        for name, st in _scan(store, reldir):
            rel = f"{reldir}/{name}"
            if stat.S_ISDIR(st.st_mode):
                if depth >= _MAX_WALK_DEPTH:
                    found.append((rel, f"is nested more than {_MAX_WALK_DEPTH} folders deep"))
                else:
                    pending.append((rel, depth + 1))
            elif not stat.S_ISREG(st.st_mode):
                found.append((rel, f"is {kind_of(st.st_mode)}, not a regular file: nbstore never follows or uses it"))
    return sorted(found)


def _stale_temps(store: NbStore, min_temp_age: float) -> Iterator[tuple[Path, os.stat_result, str]]:
    """Temp files no live writer will rename into place: their writer has exited, or they are old."""
    now = time.time()
    for path, st in _temp_files(store):
        writer = temp_writer(path.name)
        if writer is not None and writer_is_dead(*writer):
            yield path, st, f"its writer, pid {writer[1]}, has exited"
        elif now - st.st_mtime >= min_temp_age:
            yield path, st, f"{now - st.st_mtime:.0f} s old"


def _raw_index(store: NbStore) -> tuple[IndexState | None, int]:
    """Replay the whole index file from scratch (None if there is none); return it and its bad line count."""
    try:
        data = read_in(store.path, "index", MAX_INDEX_BYTES, what="index")
    except (FileNotFoundError, StoreUnsafeError):
        return None, 0  # an unsafe index is reported by _unsafe_entries or as oversized, and rebuilt
    state, end = load(data)
    # A torn last line (no newline yet) counts as damage here, as parse_lines counts it.
    return state, state.bad_lines + (end < len(data))


def _config_problem(store: NbStore) -> tuple[str | None, dict, str]:
    """Return nbstore.json's problem (None if sound), the settings repair writes and its note; a newer format raises."""
    defaults = {"format": FORMAT, "cache_limit": DEFAULT_CACHE_LIMIT}
    reset = "; rewritten with default settings"
    try:
        raw = read_in(store.path, "nbstore.json", MAX_CONFIG_BYTES, what="settings file")
    except FileNotFoundError:
        return "nbstore.json is missing", defaults, reset
    except StoreUnsafeError as exc:
        return f"nbstore.json is refused ({exc})", defaults, reset
    except OSError as exc:
        return f"nbstore.json cannot be read: {exc.strerror}", defaults, reset
    try:
        config, conflicted = parse_config(raw)
        fmt = config["format"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"nbstore.json is damaged ({type(exc).__name__}: {exc})", defaults, reset
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= FORMAT:
        # Perhaps a format from a later version: never "repair" what this version cannot read.
        raise StoreFormatError(
            f"{store.path} uses store format {fmt!r}; this version of nbstore reads format {FORMAT}: "
            "upgrade nbstore to use it"
        )
    limit = config.get("cache_limit", 1)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return f"nbstore.json has an invalid cache_limit {limit!r}", defaults, reset
    if conflicted:
        issue = f"unresolved git merge conflict; the larger cache limit ({limit}) is used"
        return issue, config, "; written as the settings (`git add` it to conclude the merge)"
    return None, config, ""


def _check_exists(store: NbStore) -> None:
    lay = store.layout
    if not store.path.is_dir():
        raise StoreNotFoundError(f"no nbstore store at {store.path}")
    if not lay.config.exists() and not (lay.objects.is_dir() or lay.cache.is_dir()):
        raise StoreNotFoundError(f"no nbstore store at {store.path} (no nbstore.json)")


@contextmanager
def _locked(store: NbStore, *, required: bool) -> Iterator[bool]:
    """Hold the store lock; when not required, carry on without it on a store that cannot be written."""
    with ExitStack() as stack:
        try:
            stack.enter_context(store_lock(store.layout.lock))
            locked = True
        except (StoreWriteError, StoreUnsafeError):
            if required:
                raise
            locked = False
        yield locked


class _Quarantine:
    """Moves damaged files aside (never deletes them) under quarantine/<time of this repair>/."""

    def __init__(self, store: NbStore) -> None:
        self.store = store
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.root = store.layout.quarantine / f"{stamp}-{os.getpid()}"

    def move(self, path: Path) -> bool:
        """Rename path (the entry itself, never what a symlink points to) into this repair's quarantine folder."""
        rel = _rel(self.store, path)
        if rel == _QUARANTINE:
            return self._move_quarantine()
        folder, _, name = rel.rpartition("/")
        target = relative_to_store(self.store.path, self.root) + (f"/{folder}" if folder else "")
        try:
            with (
                opened_dir(self.store.path, folder) as src,
                opened_dir(self.store.path, target, create=True) as dst,
            ):
                os.replace(name, name, src_dir_fd=src, dst_dir_fd=dst)
        except (OSError, StoreUnsafeError):
            return False
        return True

    def _move_quarantine(self) -> bool:
        """Put aside a quarantine/ that is not a folder: renamed at the top, then moved into a new quarantine/."""
        aside = f"quarantine-{self.root.name}"
        try:
            with opened_dir(self.store.path, "") as top:
                os.replace(_QUARANTINE, aside, src_dir_fd=top, dst_dir_fd=top)
        except OSError:
            return False
        return self.move(self.store.path / aside)


def _record_refs(rec: dict) -> list[tuple[str, str]]:
    """Return (what, object id) for every object a cache sidecar refers to."""
    refs = [("notebook", rec.get("notebook"))]
    refs += [(f"artifact {name!r}", oid) for name, oid in sorted((rec.get("artifacts") or {}).items())]
    return refs


def _record_damage(store: NbStore, rec: dict, present: set[str], corrupt: dict[str, str]) -> str | None:
    """Return why a cache record cannot be served (None if all its objects are there and sound)."""
    for what, oid in _record_refs(rec):
        if not isinstance(oid, str) or not _OID_TEXT.fullmatch(oid):
            return f"its {what} reference {oid!r} is not an object id"
        if oid in corrupt:
            return f"its {what} object {oid} is corrupt"
        if oid not in present:
            return f"its {what} object {oid} is missing"
    for name in rec.get("artifacts") or {}:
        problem = artifact_name_problem(name)
        if problem is not None:
            return f"its artifact name {name!r} {problem} (artifact names are plain relative paths)"
    try:
        nb = loads_bounded(read_object(store.layout, rec["notebook"], check=False))
    except (OSError, ValueError) as exc:
        return f"its notebook object {rec['notebook']} is not a readable notebook ({exc})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return f"its notebook object {rec['notebook']} is not a notebook"
    return None


# ---------------------------------------------------------------------- verify


def verify(store: NbStore, *, repair: bool = False, min_temp_age: float = DEFAULT_MIN_TEMP_AGE) -> VerifyReport:
    """Check every object, record and the index of a store; with repair=True fix what can be fixed safely."""
    _check_exists(store)
    problems: list[Problem] = []
    config_issue, settings, repair_note = _config_problem(store)
    unsafe = [(rel, why) for rel, why in _unsafe_entries(store) if rel != "nbstore.json"]
    unsafe_paths = {store.path / rel for rel, _why in unsafe}
    quarantine = _Quarantine(store)
    if repair and "lock" in dict(unsafe):
        # The lock itself is not a lock nbstore can take: put it aside first (a new one is made at once).
        unsafe = [
            (rel, why + ("; moved to quarantine" if quarantine.move(store.layout.lock) else ""))
            if rel == "lock"
            else (rel, why)
            for rel, why in unsafe
        ]
    with _locked(store, required=repair):
        for rel, why in unsafe:
            if rel == "lock":
                fixed = why.endswith("; moved to quarantine")
            else:
                fixed = repair and quarantine.move(store.path / rel)
                why += "; moved to quarantine" if fixed else ""
            problems.append(Problem("unsafe-file", rel, why, fixed))
        if config_issue is not None:
            fixed = False
            if repair:
                if os.path.lexists(store.layout.config):
                    quarantine.move(store.layout.config)
                atomic_write(store.layout.config, dump_json(settings), tmpdir=store.layout.tmp)
                fixed = True
            problems.append(Problem("config", "nbstore.json", config_issue + (repair_note if fixed else ""), fixed))

        # Objects: every byte re-hashed.
        present: set[str] = set()
        corrupt: dict[str, str] = {}
        strays: list[Path] = []
        objects_checked = 0
        for path, oid in _object_files(store):
            if path in unsafe_paths:
                continue
            if oid is None:
                strays.append(path)
                continue
            objects_checked += 1
            try:
                size = os.lstat(path).st_size
                if size > MAX_OBJECT_BYTES:
                    # Never served (read_object refuses it): not worth reading gigabytes to say so.
                    corrupt[oid] = f"oversized: it is {size} bytes, more than the {MAX_OBJECT_BYTES} an object may hold"
                    continue
                actual = _hash_file(store, path)
            except (OSError, StoreUnsafeError) as exc:
                actual = f"unreadable ({getattr(exc, 'strerror', None) or exc})"
            if actual != oid:
                corrupt[oid] = actual
            else:
                present.add(oid)

        # Records: what the sidecars say, against the objects and the index.
        raw, bad_lines = _raw_index(store)
        scanned, unreadable, conflicted = store._scan_sidecars(raw or IndexState())
        unreadable = [(path, reason) for path, reason in unreadable if path not in unsafe_paths]
        records_checked = len(scanned.cache) + len(scanned.stage) + len(unreadable)
        damaged: dict[str, str] = {}
        for name in sorted(scanned.cache):
            why = _record_damage(store, scanned.cache[name], present, corrupt)
            if why is not None:
                damaged[name] = why

        # An unreadable sidecar whose last good copy the index still holds can be written back.
        restorable: dict[Path, tuple[str, str, dict]] = {}
        for path, _reason in unreadable:
            kind = path.parent.name
            name = path.name[:-5]
            table = (raw.cache if kind == "cache" else raw.stage) if raw is not None else {}
            rec = table.get(name)
            if rec is None:
                continue
            try:
                store._check_sidecar(kind, rec, name)
            except (ValueError, KeyError, TypeError):
                continue
            if kind == "cache" and _record_damage(store, rec, present, corrupt) is not None:
                continue
            restorable[path] = (kind, name, rec)

        for oid, actual in sorted(corrupt.items()):
            path = store.layout.object_path(oid)
            fixed = repair and quarantine.move(path)
            why = (
                actual.removeprefix("oversized: ")
                if actual.startswith("oversized: ")
                else f"bytes hash to {actual}, not to the object's name"
            )
            detail = why + ("; moved to quarantine" if fixed else "")
            problems.append(Problem("corrupt-object", _rel(store, path), detail, fixed))
        for path in strays:
            fixed = repair and quarantine.move(path)
            detail = "not an object (unexpected name or type)" + ("; moved to quarantine" if fixed else "")
            problems.append(Problem("stray-file", _rel(store, path), detail, fixed))

        for path, reason in unreadable:
            fixed = False
            if path in restorable:
                kind, name, rec = restorable[path]
                if repair and quarantine.move(path):
                    atomic_write(path, dump_json(rec), tmpdir=store.layout.tmp)
                    fixed = True
                detail = f"{reason}; the index holds its last good copy" + (", written back" if fixed else "")
            else:
                fixed = repair and quarantine.move(path)
                detail = reason + ("; moved to quarantine" if fixed else "")
            problems.append(Problem("unreadable-record", _rel(store, path), detail, fixed))

        for path, rec in conflicted.items():
            # Both sides are whole records of one notebook (or one staging); any clone picks the same one.
            fixed = False
            if repair:
                atomic_write(path, dump_json(rec), tmpdir=store.layout.tmp)
                fixed = True
            detail = f"unresolved git merge conflict; the side created first (pk {rec['pk']}) is used" + (
                "; written as the record (`git add` it to conclude the merge)" if fixed else ""
            )
            problems.append(Problem("merge-conflict", _rel(store, path), detail, fixed))

        for name, why in damaged.items():
            rec = scanned.cache[name]
            path = store.layout.cache_sidecar(name)
            fixed = repair and quarantine.move(path)
            detail = f"cache record pk {rec['pk']} ({rec.get('uri') or 'no uri'}): {why}" + (
                "; record moved to quarantine" if fixed else ""
            )
            problems.append(Problem("damaged-record", _rel(store, path), detail, fixed))

        # pk clashes, as the index rebuild resolves them (earliest created keeps its pk).
        after = copy.deepcopy(scanned)
        for name in damaged:
            after.cache.pop(name, None)
        for kind, name, rec in restorable.values():
            (after.cache if kind == "cache" else after.stage)[name] = rec
        clashes = store._resolve_collisions(after)

        # Index: torn or garbled lines, or a table that disagrees with the sidecars while claiming to agree.
        index_issues: list[str] = []
        with contextlib.suppress(OSError):
            size = os.lstat(store.layout.index).st_size
            if size > MAX_INDEX_BYTES and "index" not in dict(unsafe):
                index_issues.append(f"{size} bytes, more than the {MAX_INDEX_BYTES} an index may hold (not read)")
        if raw is not None:
            if bad_lines:
                index_issues.append(f"{bad_lines} torn or garbled line(s)")
            if raw.header is None:
                index_issues.append("no header line")
            elif raw.header.get("format") != FORMAT:
                index_issues.append(f"header names format {raw.header.get('format')!r}")
            if raw.fingerprint == store._fingerprint() and not bad_lines:
                for kind in ("cache", "stage"):
                    have, want = getattr(raw, kind), getattr(scanned, kind)
                    broken = {p.name[:-5] for p, _ in unreadable if p.parent.name == kind}
                    for name in sorted((set(have) | set(want)) - broken):
                        if have.get(name) != want.get(name):
                            where = "only in the index" if name not in want else "differs from its sidecar"
                            if name not in have:
                                where = "missing from the index"
                            index_issues.append(f"{kind} record {name} {where}")

        for path, _st, why in _stale_temps(store, min_temp_age):
            fixed = False
            if repair:
                try:
                    unlink_in(store.path, _rel(store, path))
                    fixed = True
                except FileNotFoundError:
                    fixed = True
                except (OSError, StoreUnsafeError):
                    fixed = False
            detail = f"leftover temp file of an interrupted write ({why}; it loses nothing)" + (
                "; removed" if fixed else "; `nbstore gc` removes it"
            )
            problems.append(Problem("stale-temp", _rel(store, path), detail, fixed))

        rebuilt = False
        if repair:
            store.rebuild_index()
            rebuilt = True
        for relname, old_pk, new_pk in clashes:
            kind, fname = relname.split("/")
            if rebuilt:
                # Report the pk the rebuild actually gave (it also counts the index's high-water mark).
                table = store._read_index().cache if kind == "cache" else store._read_index().stage
                new_pk = table.get(fname[:-5], {}).get("pk", new_pk)
            detail = f"{kind} pk {old_pk} is used by an earlier record too" + (
                f"; renumbered to {new_pk}" if rebuilt else f"; repair renumbers it to {new_pk}"
            )
            problems.append(Problem("duplicate-pk", relname, detail, rebuilt))
        for issue in index_issues:
            detail = issue + ("; index rebuilt from the sidecars" if rebuilt else "")
            problems.append(Problem("index", _rel(store, store.layout.index), detail, rebuilt))
    return VerifyReport(tuple(problems), objects_checked, records_checked)


# ---------------------------------------------------------------------- gc


def _referenced(store: NbStore) -> set[str]:
    """Every object id any record file mentions: sidecars, quarantined files, and the index's copies."""
    refs: set[str] = set()
    pending = [("cache", 1), ("quarantine", 1)]
    while pending:
        reldir, depth = pending.pop()
        for name, st in _scan(store, reldir):
            rel = f"{reldir}/{name}"
            if stat.S_ISDIR(st.st_mode):
                if depth < _MAX_WALK_DEPTH:
                    pending.append((rel, depth + 1))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a symlink names nothing nbstore reads (verify reports it)
            try:
                data = read_in(store.path, rel, MAX_RECORD_BYTES, what="record file")
            except StoreUnsafeError:
                continue  # larger than any record: a quarantined object, not a record
            except OSError as exc:
                # An unreadable record might name any object: refuse rather than guess.
                raise translate_os_error(exc, "read", store.path / rel) from exc
            refs.update(m.decode() for m in _OID.findall(data))
    raw, _bad = _raw_index(store)
    if raw is not None:
        for rec in raw.cache.values():
            refs.update(oid for _what, oid in _record_refs(rec) if isinstance(oid, str))
    return refs


def gc(store: NbStore, *, dry_run: bool = False, min_temp_age: float = DEFAULT_MIN_TEMP_AGE) -> GcReport:
    """Remove unreferenced objects, leftover temp files and idle old claims; report what was freed."""
    _check_exists(store)
    store._read_config()  # never delete from a store whose format is unknown or whose settings are damaged
    removed: list[str] = []
    freed = 0
    with _locked(store, required=not dry_run) as locked:
        # A record file that cannot be parsed might need any object: refuse until verify has dealt with it.
        _scanned, unreadable, _conflicted = store._scan_sidecars(IndexState())
        damaged = [_rel(store, path) for path, _reason in unreadable if path.parent == store.layout.cache]
        if damaged:
            raise StoreCorruptError(
                f"gc refused: {len(damaged)} cache record file(s) cannot be read ({', '.join(damaged)}); "
                "run `nbstore verify --repair` first"
            )
        before_sync = _referenced(store)
        if locked:
            store._sync_locked()
        live = before_sync | _referenced(store)
        doomed: list[tuple[Path, int]] = []
        for path, oid in _object_files(store):
            if oid is None or oid in live:
                continue
            try:
                doomed.append((path, os.lstat(path).st_size))
            except FileNotFoundError:
                continue
        for path, st, _why in _stale_temps(store, min_temp_age):
            doomed.append((path, st.st_size))
        try:
            # Claims of runs that ended long ago tell nothing more (each is removed under its own flock).
            claims = idle_claims(store.path, min_temp_age, remove=not dry_run)
        except OSError as exc:
            raise translate_os_error(exc, "remove a claim in", store.path / CLAIMS_DIR) from exc
        for path, size in claims:
            removed.append(_rel(store, path))
            freed += size
        for path, size in doomed:
            if not dry_run:
                try:
                    unlink_in(store.path, _rel(store, path))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise translate_os_error(exc, "remove", path) from exc
            removed.append(_rel(store, path))
            freed += size
    return GcReport(tuple(sorted(removed)), freed, dry_run)
