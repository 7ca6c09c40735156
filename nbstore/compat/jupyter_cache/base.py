"""jupyter-cache 1.0's `base` module: bundles, project notebooks and the errors, as nbstore defines them."""

from __future__ import annotations

from nbstore.base import CacheBundleIn, CacheBundleOut, JupyterCacheAbstract, ProjectNb
from nbstore.bundles import NbArtifacts as NbArtifactsAbstract
from nbstore.errors import CachingError, NbValidityError, RetrievalError
from nbstore.records import NbCacheRecord, NbProjectRecord

#: The nbformat major version notebooks are cached in.
NB_VERSION = 4

__all__ = [
    "NB_VERSION",
    "CacheBundleIn",
    "CacheBundleOut",
    "CachingError",
    "JupyterCacheAbstract",
    "NbArtifactsAbstract",
    "NbCacheRecord",
    "NbProjectRecord",
    "NbValidityError",
    "ProjectNb",
    "RetrievalError",
]
