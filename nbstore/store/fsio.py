"""Durable file writes: temp file in the same folder, fsync, os.replace, fsync of the folder."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from pathlib import Path

from nbstore.errors import StoreWriteError
from nbstore.layout import temp_name

__all__ = ["HOST_TAG", "append_bytes", "atomic_write", "fsync_dir", "make_dirs", "translate_os_error", "writer_is_dead"]

#: This machine, as temp file names record it (a pid means nothing on another machine sharing the store).
HOST_TAG = hashlib.sha256(os.uname().nodename.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def writer_is_dead(host: str, pid: int) -> bool:
    """True only if the process that wrote a temp file surely no longer runs: same machine, no such pid."""
    if host != HOST_TAG or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (perhaps another user's process)
    return False


def translate_os_error(exc: OSError, action: str, path: Path) -> StoreWriteError:
    """Return a StoreWriteError that names the path and the cause of an OS error."""
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "permission denied (is the store folder read-only?)"
    else:
        reason = exc.strerror or str(exc)
    err = StoreWriteError(f"cannot {action} {path}: {reason}")
    err.errno = exc.errno
    return err


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk so that a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """Create a folder and any missing parents, each one's entry flushed into its parent (a crash keeps them)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        fsync_dir(new.parent)


def atomic_write(path: Path, data: bytes, *, tmpdir: Path, mode: int = 0o644, durable: bool = True) -> None:
    """Write bytes to path atomically: readers see the old file or the new one, never a part."""
    tmp = tmpdir / temp_name(path.name, HOST_TAG, os.getpid(), secrets.token_hex(4))
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileNotFoundError:
            # tmp/ is made on first need (a clone has none); a mkdir on every write costs more than the retry.
            tmpdir.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            # git drops folders it has emptied (cache/ or stage/ after a checkout): make the folder again.
            if path.parent.is_dir():
                raise
            make_dirs(path.parent)
            os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise translate_os_error(exc, "write", path) from exc
    if durable:
        fsync_dir(path.parent)


def append_bytes(path: Path, data: bytes) -> None:
    """Append bytes to a file in one write, ending any torn last line first (caller holds the lock)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        raise translate_os_error(exc, "append to", path) from exc
