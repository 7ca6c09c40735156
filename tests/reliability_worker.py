"""A worker process for the reliability tests: writes to a store, and can be told where to die.

Run as `python reliability_worker.py <command> <args...>`; see the functions below. Each prints one line per
completed call *after* the call returned ("done <key> <pk>"), flushed, so that a test that kills the worker knows
exactly which calls had completed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from storetools import executed_nb, write_nb  # noqa: E402

import nbstore  # noqa: E402


def say(*parts: object) -> None:
    """Write one line to stdout in a single system call, so that a kill never leaves half of it."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (" ".join(map(str, parts)) + "\n").encode())


def wait_go(go: Path) -> None:
    """Wait until the test creates the go file, so that every worker starts at once."""
    say("ready")
    while not go.exists():
        time.sleep(0.002)


def cmd_cache(store: str, folder: str, tag: str, count: str, go: str) -> None:
    """Cache `count` distinct notebooks tagged `tag`."""
    cache = nbstore.get_cache(store)
    paths = [write_nb(Path(folder) / f"{tag}-{i}.ipynb", executed_nb(f"{tag}-{i}")) for i in range(int(count))]
    wait_go(Path(go))
    for path in paths:
        rec = cache.cache_notebook_file(path)
        say("done", rec.hashkey, rec.pk)


def cmd_mixed(store: str, folder: str, tag: str, count: str, seed: str, go: str) -> None:
    """Mix cache, stage, discard, remove and reads of this worker's own notebooks; print what must remain."""
    rng = random.Random(int(seed))
    cache = nbstore.get_cache(store)
    paths = [
        write_nb(Path(folder) / f"{tag}-{i}.ipynb", executed_nb(f"{tag}-{i}", cells=rng.randint(1, 3)))
        for i in range(int(count))
    ]
    cached: dict[str, int] = {}  # key -> pk
    staged: set[str] = set()
    fresh = list(paths)
    wait_go(Path(go))
    for _ in range(int(count) * 2):
        op = rng.choice(["cache", "cache", "stage", "discard", "remove", "read"])
        if op == "cache" and fresh:
            rec = cache.cache_notebook_file(fresh.pop(), artifacts=())
            cached[rec.hashkey] = rec.pk
        elif op == "stage":
            path = rng.choice(paths)
            rec = cache.stage_notebook_file(path)
            assert Path(rec.uri) == path.resolve(), (rec.uri, path)
            staged.add(str(path.resolve()))
        elif op == "discard" and staged:
            uri = rng.choice(sorted(staged))
            cache.discard_staged_notebook(uri)
            staged.discard(uri)
        elif op == "remove" and cached:
            key = rng.choice(sorted(cached))
            assert cache.get_cache_record(cached[key]).hashkey == key, "a pk of this worker changed hands"
            cache.remove_cache(cached.pop(key))
        elif op == "read" and cached:
            key = rng.choice(sorted(cached))
            bundle = cache.get_cache_bundle(cached[key])
            assert bundle.record.hashkey == key, "a pk of this worker changed hands"
            assert cache.match_cache_key(key).pk == cached[key]
            cache.list_cache_records()
            cache.list_staged_records()
    say(json.dumps({"cache": cached, "stage": sorted(staged)}))


def cmd_reader(store: str, go: str, total: str) -> None:
    """List and read every record, over and over, until `total` records exist; print any error seen."""
    cache = nbstore.get_cache(store)
    wait_go(Path(go))
    errors: list[str] = []
    reads = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            records = cache.list_cache_records()
            for rec in records[-5:]:
                bundle = cache.get_cache_bundle(rec.pk)
                if bundle.record.hashkey != rec.hashkey or not bundle.nb.cells:
                    errors.append(f"pk {rec.pk}: wrong or empty bundle")
                reads += 1
            if len({r.pk for r in records}) != len(records):
                errors.append("a pk is listed twice")
        except Exception as exc:  # every other failure is what this reader is looking for
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if len(records) >= int(total):
            break
    say(json.dumps({"errors": errors, "reads": reads}))


def cmd_maint(store: str, go: str, rounds: str) -> None:
    """Run gc, verify and verify(repair=True) over and over while others write; print what they reported."""
    cache = nbstore.get_cache(store)
    wait_go(Path(go))
    problems: list[str] = []
    removed = 0
    for i in range(int(rounds)):
        try:
            removed += len(cache.gc().removed)
            report = cache.verify(repair=i % 2 == 1)
            problems += [f"{p.kind} {p.path}: {p.detail}" for p in report.problems]
        except nbstore.StoreNotFoundError:
            time.sleep(0.01)  # the writers have not created the store yet
    say(json.dumps({"problems": problems, "removed": removed}))


def cmd_crashwriter(store: str, folder: str, seed: str) -> None:
    """Cache, remove and stage notebooks until killed, announcing each call that returned."""
    rng = random.Random(int(seed))
    cache = nbstore.get_cache(store)
    shared = Path(folder) / "shared.bin"
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_bytes(b"the same artifact in many records\n" * 100)
    done: list[tuple[str, int]] = []
    say("ready")
    i = 0
    while True:
        i += 1
        nb_dir = Path(folder) / f"{seed}-{i}"
        size = rng.choice([0, 100, 1000, 10_000, 100_000, 1_000_000])
        path = write_nb(
            nb_dir / "nb.ipynb", executed_nb(f"crash-{seed}-{i}", cells=rng.randint(1, 4), output_bytes=size)
        )
        arts = []
        if rng.random() < 0.5:
            (nb_dir / "own.bin").write_bytes(os.urandom(rng.choice([10, 50_000])))
            (nb_dir / "shared.bin").write_bytes(shared.read_bytes())
            arts = ["own.bin", "shared.bin"]
        roll = rng.random()
        if roll < 0.15 and done:
            key, pk = done.pop(rng.randrange(len(done)))
            say("removing", key)
            cache.remove_cache(pk)
            say("removed", key)
        elif roll < 0.3:
            cache.stage_notebook_file(path)
            say("staged", path.resolve())
        else:
            rec = cache.cache_notebook_file(path, artifacts=arts, data={"i": i})
            done.append((rec.hashkey, rec.pk))
            say("done", rec.hashkey, rec.pk, nb_dir)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _changes_records(data: bytes) -> bool:
    return b'"op":"put"' in data or b'"op":"del"' in data


def _at(path, dir_fd: int | None) -> Path:
    """The absolute path a dir_fd-relative call names (nbstore walks its store with openat-style calls)."""
    if dir_fd is None or os.path.isabs(os.fspath(path)):
        return Path(os.path.abspath(os.fspath(path)))
    return Path(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fspath(path))


def _arm(point: str, store: Path) -> None:
    """Make this process SIGKILL itself at one named point of the write path (fault injection)."""
    import nbstore.store.folder as folder_mod

    real_replace, real_write, real_unlink = os.replace, os.write, os.unlink
    real_append = folder_mod.append_bytes

    def fd_path(fd: int) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    def replace(src, dst, **kw):
        dst_path = _at(dst, kw.get("dst_dir_fd"))
        where = dst_path.relative_to(store).parts[0] if dst_path.is_relative_to(store) else ""
        if point == f"before-rename-{where}":
            _die()
        real_replace(src, dst, **kw)
        if point == f"after-rename-{where}":
            _die()

    def write(fd, data):
        target = fd_path(fd)
        if point == "mid-object-write" and target.startswith(f"{store}/tmp/") and len(data) > 1:
            real_write(fd, bytes(data[: len(data) // 2]))
            _die()
        if point == "mid-index-rewrite" and target.startswith(f"{store}/tmp/index.") and len(data) > 1:
            real_write(fd, bytes(data[: len(data) // 2]))
            _die()
        if point == "mid-index-append" and target == str(store / "index") and _changes_records(bytes(data)):
            real_write(fd, bytes(data[: len(data) // 2]))
            _die()
        return real_write(fd, data)

    def unlink(path, **kw):
        real_unlink(path, **kw)
        if point == "after-unlink-cache" and _at(path, kw.get("dir_fd")).parent.name == "cache":
            _die()

    def append(path, data):
        real_append(path, data)
        if point == "after-index-append" and _changes_records(data):
            _die()

    os.replace, os.write, os.unlink = replace, write, unlink
    folder_mod.append_bytes = append


def cmd_crashpoint(store: str, folder: str, point: str, op: str) -> None:
    """Complete one add, then run `op` (add/remove/stage) with a SIGKILL armed at `point`."""
    cache = nbstore.get_cache(store)
    first = cache.cache_notebook_file(write_nb(Path(folder) / "first.ipynb", executed_nb("first")))
    say("done", first.hashkey, first.pk)
    path = write_nb(Path(folder) / "second.ipynb", executed_nb("second", output_bytes=200_000))
    (Path(folder) / "art.bin").write_bytes(b"artifact" * 1000)
    _arm(point, Path(store).absolute())
    if op == "add":
        cache.cache_notebook_file(path, artifacts=["art.bin"])
    elif op == "compact":
        import nbstore.store.folder as folder_mod

        folder_mod._COMPACT_FLOOR = -(1 << 40)  # this add's write ends by compacting the index
        cache.cache_notebook_file(path, artifacts=["art.bin"])
    elif op == "remove":
        cache.remove_cache(first.pk)
    elif op == "stage":
        cache.stage_notebook_file(path)
    say("survived")


def cmd_crashcompact(store: str, folder: str, count: str, point: str) -> None:
    """Grow a store to `count` cached notebooks (every other one staged), then die at `point` of a compaction."""
    import nbstore.store.folder as folder_mod

    real_fsync = os.fsync
    os.fsync = lambda fd: None  # growing the store is setup: the compaction below runs with fsync on
    cache = nbstore.get_cache(store)
    cache.change_cache_limit(10**6)
    for i in range(int(count)):
        path = write_nb(Path(folder) / f"nb{i:05d}.ipynb", executed_nb(f"grown-{i}"))
        cache.cache_notebook_file(path)
        if i % 2 == 0:
            cache.stage_notebook_file(path)
    cache.get_cache_bundle(3)  # an access time, in the snapshot's touched table
    os.fsync = real_fsync
    say("grown", len(cache.list_cache_records()))
    path = write_nb(Path(folder) / "last.ipynb", executed_nb("last"))
    _arm(point, Path(store).absolute())
    folder_mod._COMPACT_FLOOR = -(1 << 40)  # this add's write ends by compacting the index
    cache.cache_notebook_file(path)
    say("survived")


def cmd_addone(store: str, notebook: str) -> None:
    """Cache one notebook file."""
    rec = nbstore.get_cache(store).cache_notebook_file(notebook)
    say("done", rec.hashkey, rec.pk)


def cmd_holdlock(store: str) -> None:
    """Take the store's lock and hold it until killed."""
    from nbstore.store.locking import store_lock

    cache = nbstore.get_cache(store)
    with store_lock(cache.layout.lock):
        say("locked")
        time.sleep(600)


def _inject_read_only(store: Path) -> None:
    """Fault injection for when the folder cannot really be made read-only: every change under it is EROFS."""
    import builtins
    import errno
    import io

    def inside(path, dir_fd=None) -> bool:
        return isinstance(path, (str, os.PathLike)) and _at(path, dir_fd).is_relative_to(store)

    def refuse(path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def guard(real, *, paths=1, flags=None, mode=None):
        def wrapper(*args, **kwargs):
            writes = True
            if flags is not None:
                writes = bool(args[1] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
            if mode is not None:
                writes = any(c in (args[1] if len(args) > 1 else kwargs.get("mode", "r")) for c in "wax+")
            fds = [kwargs.get("dir_fd", kwargs.get("src_dir_fd")), kwargs.get("dst_dir_fd", kwargs.get("dir_fd"))]
            if writes and any(inside(a, fd) for a, fd in zip(args[:paths], fds[:paths], strict=False)):
                refuse(args[0])
            return real(*args, **kwargs)

        return wrapper

    os.open = guard(os.open, flags=True)
    builtins.open = io.open = guard(io.open, mode=True)
    for name in ("replace", "rename"):
        setattr(os, name, guard(getattr(os, name), paths=2))
    for name in ("unlink", "remove", "mkdir", "rmdir", "chmod", "utime"):
        setattr(os, name, guard(getattr(os, name)))


def cmd_readonly(store: str, notebook: str) -> None:
    """On a read-only store: read everything, try each kind of write, print what happened as JSON."""
    if os.environ.get("NBSTORE_TEST_INJECT_READ_ONLY"):
        _inject_read_only(Path(store).absolute())
    cache = nbstore.get_cache(store)
    out: dict = {}
    out["pks"] = [r.pk for r in cache.list_cache_records()]
    out["match"] = cache.match_cache_file(notebook).pk
    out["bundle_cells"] = len(cache.get_cache_bundle(out["match"]).nb.cells)
    out["staged_keys"] = {str(k): v for k, v in cache.staged_keys().items()}
    report = cache.verify()
    out["verify_ok"] = report.ok
    out["verify_objects"] = report.objects_checked
    attempts = {
        "cache": lambda: cache.cache_notebook_file(notebook, overwrite=True),
        "remove": lambda: cache.remove_cache(out["match"]),
        "stage": lambda: cache.stage_notebook_file(notebook),
        "limit": lambda: cache.change_cache_limit(5),
        "repair": lambda: cache.verify(repair=True),
        "gc": lambda: cache.gc(),
    }
    for name, call in attempts.items():
        try:
            call()
            out[name] = "no error"
        except Exception as exc:  # the test checks the exact type and message
            out[name] = f"{type(exc).__name__}: {exc}"
    say(json.dumps(out))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    globals()[f"cmd_{command}"](*arguments)
