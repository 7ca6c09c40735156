"""The store's one lock: explicit, short, and never held while a kernel runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from nbstore.errors import StoreBusyError, StoreUnsafeError, StoreWriteError
from nbstore.store.safeio import open_in, opened_dir, unlink_in
from nbstore.untrusted import loads_bounded

__all__ = ["CLAIMS_DIR", "DEFAULT_LOCK_TIMEOUT", "Claim", "idle_claims", "lock_timeout", "store_lock", "try_claim"]

#: Seconds to wait for the lock; long enough for a busy CI machine (NBSTORE_LOCK_TIMEOUT overrides).
DEFAULT_LOCK_TIMEOUT = 120.0


def lock_timeout() -> float:
    """Return the lock timeout in seconds, from NBSTORE_LOCK_TIMEOUT or the default."""
    raw = os.environ.get("NBSTORE_LOCK_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


@contextmanager
def store_lock(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the store's exclusive lock (an flock on path, which is never deleted) for a short write."""
    import portalocker  # imported here: read-only commands never need it

    wait = lock_timeout() if timeout is None else timeout
    try:
        # Never through a symlink: a committed `lock` link must not create or lock a file elsewhere.
        fh = os.fdopen(open_in(path.parent, path.name, os.O_RDWR | os.O_CREAT), "r+b")
    except OSError as exc:
        raise StoreWriteError(f"cannot open the store lock {path}: {exc.strerror}") from exc
    try:
        try:
            portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            _wait_for(fh, wait, path)
        try:
            yield
        finally:
            portalocker.unlock(fh)
    finally:
        fh.close()


def _wait_for(fh, wait: float, path: Path) -> None:
    import time

    import portalocker

    deadline = time.monotonic() + wait
    delay = 0.001
    while True:
        try:
            portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
            return
        except portalocker.LockException as exc:
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"store busy: another process has held {path} for more than {wait:g} s "
                    "(set NBSTORE_LOCK_TIMEOUT to wait longer)"
                ) from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


#: Folder of a store that holds one claim file per notebook key that an executor has run.
CLAIMS_DIR = "claims"

_KEY_CHARS = frozenset("0123456789abcdef")


class Claim:
    """A held claim on one notebook key: an flock on <store>/claims/<key>, so one process runs it at a time."""

    def __init__(self, path: Path, fh, previous: dict | None) -> None:
        self.path = path
        self._fh = fh
        #: What the last holder wrote: {"pid", "started", "finished", "status", "reason"}, or None.
        self.previous = previous

    def __repr__(self) -> str:
        return f"Claim({self.path.name!r}, held={self._fh is not None})"

    def _write(self, record: dict) -> None:
        import json

        fh = self._fh
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(record, sort_keys=True).encode())
        fh.flush()

    def finish(self, status: str, reason: str = "") -> None:
        """Record how the run of this key ended, for a process that waited on the claim to read."""
        import time

        if self._fh is None:
            return
        record = {"pid": os.getpid(), "finished": time.time_ns(), "status": status, "reason": reason[:2000]}
        with suppress(OSError):  # the outcome is a courtesy to waiters; the store holds the truth
            self._write(record)

    def release(self) -> None:
        """Release the claim (closing the file releases the flock)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _claims_folder(store_root: Path) -> Path:
    folder = store_root / CLAIMS_DIR
    try:
        # Stores created before claims existed do not ignore the folder at their top level.
        with opened_dir(store_root, CLAIMS_DIR, create=True) as dfd, suppress(FileExistsError):
            fd = os.open(".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            try:
                os.write(fd, b"*\n")
            finally:
                os.close(fd)
    except StoreUnsafeError as exc:
        raise StoreWriteError(f"cannot use the claims folder: {exc}") from exc
    except OSError as exc:
        raise StoreWriteError(f"cannot create the claims folder {folder}: {exc.strerror}") from exc
    return folder


def try_claim(store_root: Path, key: str) -> Claim | None:
    """Take the claim on a notebook key without waiting; return None if another process holds it."""
    import time

    import portalocker

    if len(key) != 32 or not set(key) <= _KEY_CHARS:
        raise ValueError(f"not a notebook key: {key!r}")
    store_root = Path(store_root)
    path = _claims_folder(store_root) / key
    while True:
        try:
            # No symlink followed: a committed claims/<key> link must not truncate a file elsewhere.
            fd = open_in(store_root, f"{CLAIMS_DIR}/{key}", os.O_RDWR | os.O_CREAT)
        except StoreUnsafeError as exc:
            raise StoreWriteError(f"cannot use the claim: {exc}") from exc
        except OSError as exc:
            raise StoreWriteError(f"cannot open the claim {path}: {exc.strerror}") from exc
        fh = os.fdopen(fd, "r+b")
        try:
            portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            fh.close()
            return None
        except BaseException:
            fh.close()
            raise
        if _still_at(fh, path):
            break
        fh.close()  # gc removed this idle claim file after it was opened: claim the one now at path
    try:
        raw = fh.read(65536)
        previous = loads_bounded(raw) if raw else None
        if not isinstance(previous, dict):
            previous = None
    except (OSError, ValueError):
        previous = None  # a holder killed mid-write leaves no usable outcome
    claim = Claim(path, fh, previous)
    try:
        claim._write({"pid": os.getpid(), "started": time.time_ns()})
    except OSError as exc:
        claim.release()
        raise StoreWriteError(f"cannot write the claim {path}: {exc.strerror}") from exc
    return claim


def _still_at(fh, path: Path) -> bool:
    """True if the open file is still the one at path (gc may have unlinked it in between)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fh.fileno())
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def idle_claims(store_root: Path, min_age: float, *, remove: bool) -> list[tuple[Path, int]]:
    """Claim files no process holds, last written min_age seconds ago or more; remove them if asked."""
    import time

    import portalocker

    store_root = Path(store_root)
    folder = store_root / CLAIMS_DIR
    try:
        with opened_dir(store_root, CLAIMS_DIR) as dfd:
            names = sorted(os.listdir(dfd))
    except FileNotFoundError:
        return []
    found = []
    now = time.time()
    for name in names:
        if len(name) != 32 or not set(name) <= _KEY_CHARS:
            continue
        path = folder / name
        try:
            fh = os.fdopen(open_in(store_root, f"{CLAIMS_DIR}/{name}"), "rb")
        except FileNotFoundError:
            continue
        except StoreUnsafeError:
            continue  # not a claim nbstore made: verify reports it, nothing here touches it
        with fh:
            st = os.fstat(fh.fileno())
            if now - st.st_mtime < min_age:
                continue
            try:
                portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
            except portalocker.LockException:
                continue  # a run holds it
            if not _still_at(fh, path):
                continue
            if remove:
                # Unlinked while locked: a process that opened it meanwhile sees it gone once it locks it.
                unlink_in(store_root, f"{CLAIMS_DIR}/{name}")
            found.append((path, st.st_size))
    return found
