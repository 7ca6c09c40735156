"""Bundles handed into and out of the cache: a notebook with its URI, artifacts and data."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nbstore.errors import ArtifactPathError, NotebookNotFoundError, StoreUnsafeError
from nbstore.records import NbCacheRecord
from nbstore.store.safeio import write_out
from nbstore.untrusted import artifact_name_problem

__all__ = ["NbArtifacts", "NbBundleIn", "NbBundleOut", "StoredArtifacts", "check_inside", "files_below"]


def check_inside(path: Path, folder: Path, *, what: str = "artifact", folders: bool = False) -> Path:
    """Return path relative to folder, raising ArtifactPathError if it (or a symlink in it) leaves folder.

    It must be a regular file, or also a folder where folders is true (an asset folder).
    """
    folder = folder.resolve()
    candidate = path if path.is_absolute() else folder / path
    if not os.path.lexists(candidate):
        raise NotebookNotFoundError(f"{what} not found: {candidate}")
    real = candidate.resolve()
    try:
        rel = real.relative_to(folder)
    except ValueError:
        raise ArtifactPathError(f"{what} {path} is outside the folder {folder}") from None
    if not (real.is_file() or (folders and real.is_dir())):
        raise ArtifactPathError(f"{what} {path} is not a regular file{' or folder' if folders else ''}")
    return rel


def files_below(paths: Iterable[Path], *, inside: Path) -> list[Path]:
    """Return paths with each folder inside `inside` replaced by the regular files below it (links not followed).

    Anything else is returned as it is, for check_inside to refuse when it is used: a record from an untrusted
    store must not make nbstore walk folders outside the notebook's.
    """
    base = os.path.realpath(inside)
    out: list[Path] = []
    for path in paths:
        real = os.path.realpath(path)
        if os.path.islink(path) or not os.path.isdir(path) or not (real + os.sep).startswith(base + os.sep):
            out.append(path)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(root, d)))
            out.extend(Path(root, f) for f in sorted(files) if not os.path.islink(os.path.join(root, f)))
    return out


class NbArtifacts:
    """Files that belong with a notebook, given by path inside one folder."""

    def __init__(self, paths: Iterable[str | Path], in_folder: str | Path, check_existence: bool = True) -> None:
        self.in_folder = Path(in_folder).absolute()
        self.paths = [Path(p) if Path(p).is_absolute() else self.in_folder / p for p in paths]
        if check_existence:
            for path in self.paths:
                check_inside(path, self.in_folder)

    @property
    def relative_paths(self) -> list[Path]:
        """Return each artifact's path relative to in_folder."""
        return [check_inside(p, self.in_folder) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[Path, IO[bytes]]]:
        for path in self.paths:
            with open(path, "rb") as handle:
                yield check_inside(path, self.in_folder), handle

    def __repr__(self) -> str:
        return f"NbArtifacts(paths={len(self.paths)})"


class StoredArtifacts:
    """Artifacts of a cached notebook, read from the store's objects."""

    def __init__(self, mapping: Mapping[str, str], opener: Callable[[str], IO[bytes]]) -> None:
        self._mapping = dict(mapping)
        self._opener = opener

    @property
    def relative_paths(self) -> list[Path]:
        """Return each artifact's path relative to the notebook's folder."""
        return [Path(p) for p in sorted(self._mapping)]

    @property
    def paths(self) -> list[Path]:
        """Return the relative paths (artifacts are stored by content, not at a place)."""
        return self.relative_paths

    def __len__(self) -> int:
        return len(self._mapping)

    def __iter__(self) -> Iterator[tuple[Path, IO[bytes]]]:
        for rel in sorted(self._mapping):
            with self._opener(self._mapping[rel]) as handle:
                yield Path(rel), handle

    def read(self, path: str | Path) -> bytes:
        """Return the bytes of one artifact, by its relative path."""
        key = Path(path).as_posix()
        if key not in self._mapping:
            raise NotebookNotFoundError(f"no artifact {key!s} in this record")
        with self._opener(self._mapping[key]) as handle:
            return handle.read()

    def write_to(self, folder: str | Path) -> list[Path]:
        """Write every artifact under folder at its relative path as a new file; return the written paths.

        Names come from the store (untrusted): each must be a plain relative path, and each file is created
        without following a symlink and never over an existing file (ArtifactPathError otherwise).
        """
        out = []
        for name in sorted(self._mapping):
            problem = artifact_name_problem(name)
            if problem is not None:
                raise ArtifactPathError(f"artifact name {name!r} {problem}: refusing to write it under {folder}")
        for rel, handle in self:
            try:
                out.append(write_out(folder, rel.as_posix(), handle.read()))
            except (FileExistsError, StoreUnsafeError) as exc:
                raise ArtifactPathError(f"cannot write artifact {rel.as_posix()!r} under {folder}: {exc}") from exc
        return out

    def __repr__(self) -> str:
        return f"NbArtifacts(paths={len(self._mapping)})"


@dataclass(frozen=True)
class NbBundleIn:
    """A notebook to cache, with its origin URI, optional artifacts and JSON data."""

    nb: Any
    uri: str | Path = ""
    artifacts: NbArtifacts | None = None
    data: dict = field(default_factory=dict)


@dataclass(frozen=True, repr=False)
class NbBundleOut:
    """A cached notebook read back: the notebook, its record and its artifacts."""

    nb: Any
    record: NbCacheRecord
    artifacts: StoredArtifacts | None = None

    def __repr__(self) -> str:
        cells = len(self.nb.get("cells", [])) if isinstance(self.nb, dict) else "?"
        return f"NbBundleOut(nb=Notebook(cells={cells}), record={self.record!r}, artifacts={self.artifacts!r})"
