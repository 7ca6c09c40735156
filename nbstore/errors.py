"""The exception tree: every error nbstore raises derives from NbStoreError."""

from __future__ import annotations

__all__ = [
    "ArtifactPathError",
    "CachingError",
    "DependencyError",
    "ExecutionError",
    "ExecutorNotFoundError",
    "NbStoreError",
    "NbValidityError",
    "NotebookFailedError",
    "NotebookNotFoundError",
    "NotebookReadError",
    "ReaderNotFoundError",
    "RecordNotFoundError",
    "RemoteError",
    "RetrievalError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreFormatError",
    "StoreNotFoundError",
    "StoreUnsafeError",
    "StoreWriteError",
]


class NbStoreError(Exception):
    """Base class of every error nbstore raises."""

    def __str__(self) -> str:
        # KeyError quotes its message; keep one readable form for every error.
        return str(self.args[0]) if self.args else ""


class CachingError(NbStoreError):
    """A notebook could not be added to the cache."""


class NbValidityError(CachingError, ValueError):
    """A notebook does not look executed (execution counts are not 1, 2, 3...)."""

    def __init__(self, message: str, uri: str | None = None) -> None:
        super().__init__(message, uri)
        self.uri = uri


class RetrievalError(NbStoreError):
    """Something could not be read back from the store."""


class RecordNotFoundError(RetrievalError, KeyError):
    """No cache or stage record matches the given pk, URI or hashkey."""

    def __str__(self) -> str:
        # Match the builtin KeyError rendering, as the seed's tour shows it.
        return repr(self.args[0]) if self.args else ""


class NotebookReadError(NbStoreError, ValueError):
    """A file or object is not a notebook nbstore can read."""


class NotebookNotFoundError(NbStoreError, FileNotFoundError):
    """A notebook, asset or artifact path does not exist."""


class ArtifactPathError(CachingError, ValueError, OSError):
    """An artifact or asset path lies outside the folder it must be in, or is not a regular file."""

    # jupyter-cache raises IOError for an artifact that is a folder, ValueError for one outside: callers of
    # either catch this. OSError's own constructor would read a second argument as an errno; keep args plain.
    def __init__(self, *args: object) -> None:
        Exception.__init__(self, *args)

    def __reduce__(self) -> tuple:
        return (type(self), self.args)


class StoreBusyError(NbStoreError, TimeoutError):
    """The store's lock could not be taken in time (another process holds it)."""


class StoreFormatError(NbStoreError, ValueError):
    """The store was written in a format this version cannot read."""


class StoreNotFoundError(NbStoreError, FileNotFoundError):
    """There is no store at the given path."""


class StoreCorruptError(RetrievalError, ValueError):
    """Stored bytes do not match their hash or cannot be parsed."""


class StoreUnsafeError(StoreCorruptError):
    """A store file is a symlink, of the wrong type, too large or too deeply nested, or names a path outside."""


class StoreWriteError(NbStoreError, OSError):
    """Writing to the store failed (disk full, read-only folder, ...)."""


class RemoteError(NbStoreError, OSError):
    """A remote store (an fsspec URL) could not be opened, listed, read or written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ExecutorNotFoundError(NbStoreError, KeyError):
    """No executor is registered under the given name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ReaderNotFoundError(NbStoreError, ValueError):
    """No notebook reader is registered under the given name (or read_data names none)."""


class ExecutionError(NbStoreError):
    """The executor could not run notebooks at all (no worker process could be started)."""


class NotebookFailedError(NbStoreError, RuntimeError):
    """A notebook's run failed (a cell raised or timed out): what a docs build reports for it."""


class DependencyError(NbStoreError, ValueError):
    """A notebook's declared dependencies cannot be resolved (a glob matches nothing, a file is unreadable)."""
