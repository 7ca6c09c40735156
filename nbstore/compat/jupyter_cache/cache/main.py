"""jupyter-cache 1.0's `cache.main`: JupyterCacheBase, an nbstore store with jupyter-cache's few extras."""

from __future__ import annotations

from nbstore.bundles import NbArtifacts
from nbstore.store.cache import DEFAULT_CACHE_LIMIT, NbStore

__all__ = ["DEFAULT_CACHE_LIMIT", "JupyterCacheBase", "NbArtifacts"]


class JupyterCacheBase(NbStore):
    """An nbstore store under jupyter-cache's class name (the folder holds nbstore's layout, not SQLite)."""

    @property
    def db(self) -> JupyterCacheBase:
        """Return the store itself, created if absent: jupyter-cache's record helpers take it as their `db`."""
        self._ensure()
        return self

    def get_version(self) -> str | None:
        """Return the jupyter-cache API version the store answers to (None before the store exists)."""
        from jupyter_cache import __version__

        return __version__ if self.exists() else None
