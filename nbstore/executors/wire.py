"""What the executor and its worker processes say to each other, and how it is framed on a pipe."""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass

__all__ = ["Job", "Report", "WireClosed", "read_frame", "write_frame"]

_HEADER = struct.Struct(">I")


class WireClosed(EOFError):
    """The other end of a worker pipe closed (the process exited or died)."""


@dataclass(frozen=True)
class Job:
    """One notebook for a worker to run: a staged record and how to run it."""

    job_id: int
    pk: int
    uri: str
    key: str
    store_path: str
    in_temp: bool
    timeout: float | None
    allow_errors: bool
    #: Other stage records with the same key: they share this run's outcome (traceback included).
    followers: tuple[int, ...] = ()
    #: Let nbclient stamp each cell's metadata.execution with timestamps (off: reruns give identical cells).
    record_timing: bool = False


@dataclass(frozen=True)
class Report:
    """How a worker's run of one job ended (the store has been written when it is sent)."""

    job_id: int
    status: str
    seconds: float
    reason: str = ""
    cache_pk: int | None = None
    key: str | None = None


def write_frame(fd: int, obj: object) -> None:
    """Write one length-prefixed pickle to a pipe, whole."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes:
    parts = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise WireClosed("pipe closed")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int) -> object:
    """Read one frame written by write_frame (blocking); WireClosed at end of file."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))
