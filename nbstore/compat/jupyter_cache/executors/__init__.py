"""jupyter-cache 1.0's `executors`: load_executor and list_executors, answered by nbstore's executors."""

from jupyter_cache.executors.base import JupyterExecutorAbstract, list_executors, load_executor

__all__ = ["JupyterExecutorAbstract", "list_executors", "load_executor"]
