"""nbstore: keep executed Jupyter notebooks in plain files so unchanged notebooks never run again."""

from __future__ import annotations

import os

from nbstore.bundles import NbArtifacts, NbBundleIn, NbBundleOut
from nbstore.errors import (
    ArtifactPathError,
    CachingError,
    DependencyError,
    ExecutionError,
    ExecutorNotFoundError,
    NbStoreError,
    NbValidityError,
    NotebookFailedError,
    NotebookNotFoundError,
    NotebookReadError,
    ReaderNotFoundError,
    RecordNotFoundError,
    RemoteError,
    RetrievalError,
    StoreBusyError,
    StoreCorruptError,
    StoreFormatError,
    StoreNotFoundError,
    StoreUnsafeError,
    StoreWriteError,
)
from nbstore.hashing import KeyInfo, notebook_key
from nbstore.project import ProjectNb
from nbstore.records import NbCacheRecord, NbProjectRecord, NbStageRecord
from nbstore.store.cache import NbStore, get_cache
from nbstore.store.maintenance import GcReport, Problem, VerifyReport

__version__ = "0.1.0"

# Executors and tables are re-exported lazily: `import nbstore` (and so every CLI command) stays light.
_LAZY = {
    "ExecutionEvent": "nbstore.executors",
    "ExecutionResult": "nbstore.executors",
    "ImportReport": "nbstore.jupyter_cache_import",
    "Executor": "nbstore.executors",
    "NotebookOutcome": "nbstore.executors",
    "SyncReport": "nbstore.remote",
    "pull_remote": "nbstore.remote",
    "push_remote": "nbstore.remote",
    "list_executors": "nbstore.executors",
    "import_jupyter_cache": "nbstore.jupyter_cache_import",
    "list_readers": "nbstore.readers",
    "load_executor": "nbstore.executors",
    "tabulate_cache_records": "nbstore.utils",
    "tabulate_project_records": "nbstore.utils",
    "tabulate_stage_records": "nbstore.utils",
}


# The seed's module paths, reachable as attributes after a plain `import nbstore` (nbstore.utils.tabulate_...).
_SUBMODULES = frozenset({"base", "executors", "readers", "utils"})


def compat_path() -> str:
    """Return the folder that, first on PYTHONPATH, makes `import jupyter_cache` import nbstore's compat package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat")


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"nbstore.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ArtifactPathError",
    "CachingError",
    "DependencyError",
    "ExecutionError",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "ExecutorNotFoundError",
    "GcReport",
    "ImportReport",
    "KeyInfo",
    "NbArtifacts",
    "NbBundleIn",
    "NbBundleOut",
    "NbCacheRecord",
    "NbProjectRecord",
    "NbStageRecord",
    "NbStore",
    "NbStoreError",
    "NbValidityError",
    "NotebookFailedError",
    "NotebookNotFoundError",
    "NotebookOutcome",
    "NotebookReadError",
    "Problem",
    "ProjectNb",
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
    "SyncReport",
    "VerifyReport",
    "__version__",
    "compat_path",
    "get_cache",
    "import_jupyter_cache",
    "list_executors",
    "list_readers",
    "load_executor",
    "notebook_key",
    "pull_remote",
    "push_remote",
    "tabulate_cache_records",
    "tabulate_project_records",
    "tabulate_stage_records",
]
