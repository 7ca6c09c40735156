"""The one way nbstore touches a store's files: never through a symlink, never outside it, never unbounded.

A store folder is untrusted input (it may come from anyone's pull request). Every path inside it is walked
from the store's root one component at a time with ``O_NOFOLLOW`` and ``dir_fd`` (openat-style), so a
symlinked ``cache/``, ``objects/ab/`` or ``claims/<key>`` is refused instead of followed; every file is
checked to be a regular file (fstat, no extra read) and its size checked against a documented maximum before
a byte is read. The root itself is the folder the caller named and is trusted as given.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from nbstore.errors import StoreUnsafeError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_INDEX_BYTES",
    "MAX_OBJECT_BYTES",
    "MAX_RECORD_BYTES",
    "dir_fd",
    "kind_of",
    "lstat_in",
    "open_in",
    "opened_dir",
    "read_fd",
    "read_at",
    "read_in",
    "read_outside",
    "relative_to_store",
    "remove_entry",
    "unlink_in",
    "write_out",
]

#: Largest nbstore.json read (settings are a few dozen bytes).
MAX_CONFIG_BYTES = 64 * 1024
#: Largest record file (cache/<key>.json, stage/<name>.json) read.
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: Largest index file read; a larger one is volatile state that is rebuilt from the record files.
MAX_INDEX_BYTES = 256 * 1024 * 1024
#: Largest object or notebook file read into memory.
MAX_OBJECT_BYTES = 256 * 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}


def kind_of(mode: int) -> str:
    """Name the type of a file mode ("a symbolic link", "a folder", ...; "a file" for a regular one)."""
    return _KINDS.get(stat.S_IFMT(mode), "a file")


def relative_to_store(root: Path, path: Path | str) -> str:
    """Return path relative to root as 'a/b' (raising StoreUnsafeError for a path that is not inside it)."""
    text, base = os.fspath(path), os.fspath(root)
    if text.startswith(base) and text[len(base) : len(base) + 1] == "/":
        rel = text[len(base) + 1 :]
        parts = rel.split("/")
        if all(p not in ("", ".", "..") for p in parts):
            return rel
    raise StoreUnsafeError(f"{path} is not a path inside the store {root}")


def _refusal(root: Path, rel: str, exc: OSError, *, want: str) -> StoreUnsafeError | None:
    """Translate the OSError of a no-follow open into StoreUnsafeError, or None if it is an ordinary error."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO):
        return None
    path = root / rel
    try:
        what = kind_of(os.lstat(path).st_mode)
    except OSError:
        what = "not " + want
    err = StoreUnsafeError(f"{path} is {what}, not {want}: nbstore never follows or uses it (run `nbstore verify`)")
    err.path = str(path)
    return err


def _walk(fd: int, parts: list[str], *, create: bool, durable: bool, shown: Path) -> int:
    """Descend from the open folder fd through parts, never following a symlink; return the last folder's fd."""
    done: list[str] = []
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise StoreUnsafeError(f"{shown / '/'.join(parts)} is not a plain path inside {shown}")
            done.append(part)
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    if durable:
                        os.fsync(fd)  # the new folder's entry reaches the disk with what goes in it
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    refusal = _refusal(shown, "/".join(done), exc, want="a folder")
                    if refusal is None:
                        raise
                    raise refusal from None
            except OSError as exc:
                refusal = _refusal(shown, "/".join(done), exc, want="a folder")
                if refusal is None:
                    raise
                raise refusal from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def dir_fd(root: Path, reldir: str, *, create: bool = False, durable: bool = True) -> int:
    """Open a folder of the store without following any symlink on the way (creating missing ones if asked)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if not reldir:
        return fd
    return _walk(fd, reldir.split("/"), create=create, durable=durable, shown=root)


def open_in(
    root: Path,
    rel: str,
    flags: int = os.O_RDONLY,
    mode: int = 0o644,
    *,
    create_dirs: bool = False,
) -> int:
    """Open a regular file of the store, walking from root without following symlinks; return its fd."""
    folder, _, name = rel.rpartition("/")
    if name in ("", ".", ".."):
        raise StoreUnsafeError(f"{root / rel} is not a path inside the store {root}")
    dfd = dir_fd(root, folder, create=create_dirs)
    try:
        # O_NONBLOCK: opening a named pipe must not hang; it is refused just below.
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd)
    except OSError as exc:
        refusal = _refusal(root, rel, exc, want="a regular file")
        if refusal is None:
            raise
        raise refusal from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            err = StoreUnsafeError(
                f"{root / rel} is {kind_of(st.st_mode)}, not a regular file: nbstore never reads it "
                "(run `nbstore verify`)"
            )
            err.path = str(root / rel)
            raise err
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, limit: int, *, path: Path | str, what: str) -> bytes:
    """Read a whole regular file from fd, refusing one larger than limit before reading a byte."""
    size = os.fstat(fd).st_size
    if size > limit:
        err = StoreUnsafeError(
            f"{path} is {size} bytes, more than the {limit} a {what} may hold: refused as damaged "
            "(run `nbstore verify`)"
        )
        err.path = str(path)
        raise err
    chunks = []
    left = size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_in(root: Path, rel: str, limit: int, *, what: str) -> bytes:
    """Read a whole regular file of the store (no symlink followed, at most limit bytes)."""
    fd = open_in(root, rel)
    try:
        return read_fd(fd, limit, path=root / rel, what=what)
    finally:
        os.close(fd)


def read_at(dfd: int, name: str, limit: int, *, path: Path | str, what: str) -> bytes:
    """Read a whole regular file named name in the open store folder dfd (no symlink followed, bounded)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        err = StoreUnsafeError(f"{path} is a symbolic link, not a regular file: nbstore never follows it")
        err.path = str(path)
        raise err from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            err = StoreUnsafeError(f"{path} is {kind_of(st.st_mode)}, not a regular file: nbstore never reads it")
            err.path = str(path)
            raise err
        os.set_blocking(fd, True)
        return read_fd(fd, limit, path=path, what=what)
    finally:
        os.close(fd)


def lstat_in(root: Path, rel: str) -> os.stat_result:
    """lstat a path of the store, its folders walked without following symlinks."""
    folder, _, name = rel.rpartition("/")
    dfd = dir_fd(root, folder)
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    finally:
        os.close(dfd)


def unlink_in(root: Path, rel: str) -> None:
    """Remove a file (or a symlink itself) of the store; the folders on the way are never followed."""
    folder, _, name = rel.rpartition("/")
    dfd = dir_fd(root, folder)
    try:
        os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)


@contextmanager
def opened_dir(root: Path, reldir: str, *, create: bool = False) -> Iterator[int]:
    """Hold a no-follow fd of a store folder for a batch of dir_fd-relative operations."""
    fd = dir_fd(root, reldir, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def read_outside(path: Path | str, limit: int, *, what: str) -> bytes:
    """Read a file the caller named (symlinks allowed: it is theirs), refusing a non-regular or oversized one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise StoreUnsafeError(f"{path} is {kind_of(st.st_mode)}, not a regular file: refusing to read it")
        os.set_blocking(fd, True)
        return read_fd(fd, limit, path=path, what=what)
    finally:
        os.close(fd)


def write_out(folder: Path | str, rel: str, data: bytes, *, mode: int = 0o644) -> Path:
    """Write a new file at folder/rel, never through a symlink and never over an existing file; return its path.

    rel must already be a checked plain relative path; missing folders under folder are created.
    """
    base = Path(folder)
    parts = rel.split("/")
    base.mkdir(parents=True, exist_ok=True)  # the folder the caller named (theirs: links in it are theirs)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = _walk(fd, parts[:-1], create=True, durable=False, shown=base)
    try:
        try:
            out = os.open(
                parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd
            )
        except FileExistsError:
            raise FileExistsError(
                errno.EEXIST, "already exists: nbstore writes only new files, never over one", str(base / rel)
            ) from None
    finally:
        os.close(fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(out, view) :]
    finally:
        os.close(out)
    return base / rel


def remove_entry(root: Path, name: str) -> list[str]:
    """Remove a top-level entry of the store and all it holds, never following a symlink; return what stayed.

    A symlink is removed itself (its target is never touched); a folder's content is removed through
    folder fds (as shutil.rmtree does on Linux), read-only sub-folders made writable first.
    """
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _remove_at(rfd, name, root / name, 0)
    finally:
        os.close(rfd)


#: Deepest folder nesting remove_entry descends into (no fd or stack exhaustion on a hostile tree).
_MAX_REMOVE_DEPTH = 64


def _remove_at(pfd: int, name: str, shown: Path, depth: int) -> list[str]:
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except OSError:
            return [str(shown)]
        return []
    if depth >= _MAX_REMOVE_DEPTH:
        return [f"{shown} (nested more than {_MAX_REMOVE_DEPTH} folders deep)"]
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    except OSError:
        return [str(shown)]
    left: list[str] = []
    try:
        if not st.st_mode & stat.S_IWUSR:
            with suppress(OSError):
                os.chmod(fd, 0o700)  # fchmod: the folder just opened without following, never a link's target
        for child in os.listdir(fd):
            left += _remove_at(fd, child, shown / child, depth + 1)
    finally:
        os.close(fd)
    if not left:
        try:
            os.rmdir(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(str(shown))
    return left
