"""jupyter-cache 1.0's API answered by nbstore (on PYTHONPATH via `nbstore compat-path`; not the real package)."""

from __future__ import annotations

import os
from typing import Any

#: The jupyter-cache API version this package answers to.
__version__ = "1.0.1"

#: Marks this package as nbstore's stand-in, for tools (and people) that need to tell.
NBSTORE_COMPAT = True


def get_cache(path: str | os.PathLike[str], cache_cls: Any = None) -> Any:
    """Return the cache (an nbstore store) in the folder at path, created on its first write."""
    if cache_cls is None:
        from jupyter_cache.cache.main import JupyterCacheBase as cache_cls

    return cache_cls(path)
