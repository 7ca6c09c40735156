"""Executors: run staged notebooks that have no cache match and cache the successes (found by entry point)."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from nbstore.errors import ExecutorNotFoundError
from nbstore.executors.base import ExecutionEvent, ExecutionResult, Executor, NotebookOutcome

if TYPE_CHECKING:
    from nbstore.store.cache import NbStore

__all__ = [
    "ENTRY_POINT_GROUP",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "NotebookOutcome",
    "list_executors",
    "load_executor",
]

#: The entry-point group other packages add executors to.
ENTRY_POINT_GROUP = "nbstore.executors"


def list_executors() -> list[EntryPoint]:
    """Return the entry points of the installed executors, by name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_executor(name: str, cache: NbStore, logger: logging.Logger | None = None) -> Executor:
    """Return the executor registered under name, bound to cache (ExecutorNotFoundError if none is)."""
    found = {ep.name: ep for ep in list_executors()}
    if name not in found:
        known = ", ".join(found) or "none (is nbstore installed?)"
        raise ExecutorNotFoundError(f"no executor named {name!r}; known executors: {known}")
    cls = found[name].load()
    return cls(cache=cache, logger=logger)
