"""Durable file writes: temp file in the same folder, fsync, os.replace, fsync of the folder."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from pathlib import Path

from nbstore.errors import StoreUnsafeError, StoreWriteError
from nbstore.layout import temp_name
from nbstore.store.safeio import dir_fd, open_in, relative_to_store

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
    """Write bytes to path atomically: readers see the old file or the new one, never a part.

    tmpdir is the store's tmp/ (its parent is the store root): the temp file and path are both reached from
    the root without following a symlink, so a symlinked folder of the store is refused, never written through.
    """
    root = tmpdir.parent
    rel = relative_to_store(root, path)
    folder, _, name = rel.rpartition("/")
    tmp_name = temp_name(name, HOST_TAG, os.getpid(), secrets.token_hex(4))
    tfd = pfd = None
    created = False
    try:
        tfd = dir_fd(root, relative_to_store(root, tmpdir), create=True)
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=tfd)
        created = True
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        # The folder is opened (made again if git dropped it after emptying it) without following symlinks;
        # a rename replaces a symlink at path itself, never its target.
        pfd = dir_fd(root, folder, create=True, durable=durable)
        os.replace(tmp_name, name, src_dir_fd=tfd, dst_dir_fd=pfd)
        created = False
        if durable:
            os.fsync(pfd)
    except OSError as exc:
        if created and tfd is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=tfd)
        raise translate_os_error(exc, "write", path) from exc
    finally:
        for fd in (tfd, pfd):
            if fd is not None:
                os.close(fd)


def append_bytes(path: Path, data: bytes) -> None:
    """Append bytes to a top-level store file in one write, ending any torn last line first (caller holds the lock)."""
    try:
        fd = open_in(path.parent, path.name, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except StoreUnsafeError:
        raise
    except OSError as exc:
        raise translate_os_error(exc, "append to", path) from exc
