"""The seed's `base` module: bundles, records and the errors a caller catches."""

from __future__ import annotations

from nbstore.bundles import NbArtifacts, NbBundleIn, NbBundleOut
from nbstore.errors import CachingError, NbValidityError, RetrievalError
from nbstore.records import NbCacheRecord, NbStageRecord
from nbstore.store.cache import NbStore

#: jupyter-cache's name for the cache class, kept so ported code reads naturally.
JupyterCacheAbstract = NbStore

__all__ = [
    "CachingError",
    "JupyterCacheAbstract",
    "NbArtifacts",
    "NbBundleIn",
    "NbBundleOut",
    "NbCacheRecord",
    "NbStageRecord",
    "NbValidityError",
    "RetrievalError",
]
