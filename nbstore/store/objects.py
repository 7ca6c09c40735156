"""The object directory: immutable files named by the SHA-256 of their bytes."""

from __future__ import annotations

import os
from pathlib import Path

from nbstore.errors import StoreCorruptError
from nbstore.hashing import object_id
from nbstore.layout import Layout
from nbstore.store.fsio import atomic_write, make_dirs

__all__ = ["has_object", "put_object", "read_object"]


def has_object(layout: Layout, oid: str, size: int | None = None) -> bool:
    """Return True if the object exists (with the given size, when one is given)."""
    try:
        st = os.stat(layout.object_path(oid))
    except OSError:
        return False
    return size is None or st.st_size == size


def put_object(layout: Layout, data: bytes, *, oid: str | None = None) -> str:
    """Store bytes as an object (once: an existing whole object is kept) and return its id."""
    oid = oid or object_id(data)
    if has_object(layout, oid, len(data)):
        return oid
    path = layout.object_path(oid)
    if not path.parent.is_dir():
        # objects/ (absent in a fresh clone) and the fan-out folder: each new folder's own entry must reach
        # the disk as surely as the object in it, or a crash could lose the object behind a durable record.
        make_dirs(path.parent)
    atomic_write(path, data, mode=0o444, tmpdir=layout.tmp)
    return oid


def read_object(layout: Layout, oid: str, *, check: bool = True) -> bytes:
    """Return an object's bytes, raising StoreCorruptError if it is missing or its hash is wrong."""
    path: Path = layout.object_path(oid)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise StoreCorruptError(f"object {oid} is missing from {layout.objects}") from exc
    if check and object_id(data) != oid:
        raise StoreCorruptError(f"object {oid} is corrupt: its bytes do not match its hash ({path})")
    return data
