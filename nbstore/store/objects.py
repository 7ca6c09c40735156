"""The object directory: immutable files named by the SHA-256 of their bytes."""

from __future__ import annotations

import os
import stat

from nbstore.errors import StoreCorruptError
from nbstore.hashing import object_id
from nbstore.layout import Layout
from nbstore.store.fsio import atomic_write
from nbstore.store.safeio import MAX_OBJECT_BYTES, open_in, read_fd
from nbstore.untrusted import is_object_id

__all__ = ["has_object", "object_rel", "put_object", "read_object"]


def object_rel(oid: str) -> str:
    """Return an object's path relative to the store root (refusing anything that is not an object id)."""
    if not is_object_id(oid):
        raise StoreCorruptError(f"{oid!r} is not an object id")
    return f"objects/{oid[:2]}/{oid[2:]}"


def has_object(layout: Layout, oid: str, size: int | None = None) -> bool:
    """Return True if the object exists as a regular file (with the given size, when one is given)."""
    if not is_object_id(oid):
        return False
    try:
        st = os.lstat(layout.object_text(oid))
    except OSError:
        return False
    # Only decides whether to write: every read walks the store without following symlinks.
    return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)


def put_object(layout: Layout, data: bytes, *, oid: str | None = None) -> str:
    """Store bytes as an object (once: an existing whole object is kept) and return its id."""
    oid = oid or object_id(data)
    if has_object(layout, oid, len(data)):
        return oid
    rel = object_rel(oid)
    # atomic_write makes objects/ (absent in a fresh clone) and the fan-out folder, each new folder's entry
    # flushed: a crash must not lose the object behind a durable record.
    atomic_write(layout.root / rel, data, mode=0o444, tmpdir=layout.tmp)
    return oid


def read_object(layout: Layout, oid: str, *, check: bool = True, limit: int = MAX_OBJECT_BYTES) -> bytes:
    """Return an object's bytes, raising StoreCorruptError if it is missing, not a plain file or its hash is wrong."""
    rel = object_rel(oid)
    path = layout.root / rel
    try:
        fd = open_in(layout.root, rel)
    except FileNotFoundError as exc:
        raise StoreCorruptError(f"object {oid} is missing from {layout.objects}") from exc
    except OSError as exc:
        raise StoreCorruptError(f"object {oid} cannot be read ({path}: {exc.strerror})") from exc
    try:
        data = read_fd(fd, limit, path=path, what="object read into memory")
    finally:
        os.close(fd)
    if check and object_id(data) != oid:
        raise StoreCorruptError(f"object {oid} is corrupt: its bytes do not match its hash ({path})")
    return data
