"""jupyter-cache 1.0's `cache` package: the cache class and the record classes."""

from jupyter_cache.cache.main import JupyterCacheBase

__all__ = ["JupyterCacheBase"]
