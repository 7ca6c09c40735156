"""jupyter-cache 1.0's `utils`: the record tables and path helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbstore.utils import shorten_path as _shorten_path
from nbstore.utils import tabulate_cache_records, tabulate_project_records, tabulate_stage_records

__all__ = [
    "Timer",
    "shorten_path",
    "tabulate_cache_records",
    "tabulate_project_records",
    "tabulate_stage_records",
    "to_relative_paths",
]


def shorten_path(file_path: str | os.PathLike[str], length: int | None) -> Path:
    """Return the last `length` parts of a path (all of it when length is None)."""
    return Path(_shorten_path(os.fspath(file_path), length))


def to_relative_paths(
    paths: Iterable[str | os.PathLike[str]], folder: str | os.PathLike[str], check_existence: bool = False
) -> list[Path]:
    """Return each path relative to folder (ValueError if one is outside it, OSError if missing and checked)."""
    base = Path(folder).absolute()
    out = []
    for path in paths:
        full = Path(path).absolute()
        if check_existence and not full.exists():
            raise OSError(f"Path does not exist: {full}")
        if check_existence and not full.is_file():
            raise OSError(f"Path is not a file: {full}")
        try:
            out.append(full.relative_to(base))
        except ValueError:
            raise ValueError(f"Path '{path}' is not in folder '{base}'") from None
    return out


class Timer:
    """A context manager timing its block: last_split is the seconds the last block took."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._split = 0.0

    @property
    def last_split(self) -> float:
        """Return the seconds of the last timed block."""
        return self._split

    def reset(self) -> None:
        """Start timing now."""
        self._start = time.perf_counter()

    def split(self) -> float:
        """Record and return the seconds since the start."""
        self._split = time.perf_counter() - (self._start or time.perf_counter())
        return self._split

    def __enter__(self) -> Timer:
        self.reset()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.split()
