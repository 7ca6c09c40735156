"""nbstore: keep executed Jupyter notebooks in plain files so unchanged notebooks never run again."""

from __future__ import annotations

from nbstore.bundles import NbArtifacts, NbBundleIn, NbBundleOut
from nbstore.errors import (
    ArtifactPathError,
    CachingError,
    ExecutionError,
    ExecutorNotFoundError,
    NbStoreError,
    NbValidityError,
    NotebookNotFoundError,
    NotebookReadError,
    RecordNotFoundError,
    RetrievalError,
    StoreBusyError,
    StoreCorruptError,
    StoreFormatError,
    StoreNotFoundError,
    StoreWriteError,
)
from nbstore.hashing import notebook_key
from nbstore.records import NbCacheRecord, NbStageRecord
from nbstore.store.cache import NbStore, get_cache
from nbstore.store.maintenance import GcReport, Problem, VerifyReport

__version__ = "0.1.0"

__all__ = [
    "ArtifactPathError",
    "CachingError",
    "ExecutionError",
    "ExecutorNotFoundError",
    "GcReport",
    "NbArtifacts",
    "NbBundleIn",
    "NbBundleOut",
    "NbCacheRecord",
    "NbStageRecord",
    "NbStore",
    "NbStoreError",
    "NbValidityError",
    "NotebookNotFoundError",
    "NotebookReadError",
    "Problem",
    "RecordNotFoundError",
    "RetrievalError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreFormatError",
    "StoreNotFoundError",
    "StoreWriteError",
    "VerifyReport",
    "__version__",
    "get_cache",
    "notebook_key",
]
