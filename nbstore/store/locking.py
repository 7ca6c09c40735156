"""The store's one lock: explicit, short, and never held while a kernel runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nbstore.errors import StoreBusyError, StoreWriteError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "lock_timeout", "store_lock"]

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
        fh = open(path, "a+b")  # noqa: SIM115 - the lock lives as long as the handle
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
