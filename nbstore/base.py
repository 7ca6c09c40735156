"""The seed's `base` module: bundles, records and the errors a caller catches (with jupyter-cache 1.0's names)."""

from __future__ import annotations

from dataclasses import dataclass

from nbstore.bundles import NbArtifacts, NbBundleIn, NbBundleOut
from nbstore.errors import CachingError, NbValidityError, RetrievalError
from nbstore.project import ProjectNb
from nbstore.records import NbCacheRecord, NbProjectRecord, NbStageRecord
from nbstore.store.cache import NbStore

#: jupyter-cache's name for the cache class, kept so ported code reads naturally.
JupyterCacheAbstract = NbStore


@dataclass(frozen=True)
class CacheBundleIn(NbBundleIn):
    """jupyter-cache 1.0's bundle to cache: NbBundleIn, plus the traceback of a run (kept by nothing)."""

    traceback: str | None = None


#: jupyter-cache 1.0's name for a cached notebook read back.
CacheBundleOut = NbBundleOut

__all__ = [
    "CacheBundleIn",
    "CacheBundleOut",
    "CachingError",
    "JupyterCacheAbstract",
    "NbArtifacts",
    "NbBundleIn",
    "NbBundleOut",
    "NbCacheRecord",
    "NbProjectRecord",
    "NbStageRecord",
    "NbValidityError",
    "ProjectNb",
    "RetrievalError",
]
