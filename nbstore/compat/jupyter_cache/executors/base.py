"""jupyter-cache 1.0's `executors.base`: nbstore's executors under jupyter-cache's names."""

from __future__ import annotations

import logging
from typing import Any

from nbstore.errors import ExecutionError
from nbstore.executors import ExecutionResult as ExecutorRunResult
from nbstore.executors import Executor as JupyterExecutorAbstract
from nbstore.executors import list_executors as _list_executors
from nbstore.executors import load_executor as _load_executor

__all__ = ["ExecutionError", "ExecutorRunResult", "JupyterExecutorAbstract", "list_executors", "load_executor"]


def list_executors() -> set[str]:
    """Return the names of the installed executors."""
    return {ep.name for ep in _list_executors()}


def load_executor(entry_point: str, cache: Any, logger: logging.Logger | None = None) -> JupyterExecutorAbstract:
    """Return the executor registered under this name, bound to cache."""
    return _load_executor(entry_point, cache, logger)
