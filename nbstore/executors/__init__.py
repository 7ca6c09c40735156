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


# The executors nbstore ships (as pyproject.toml declares them), for a checkout used without installing it.
_BUILTIN = {
    "basic": "nbstore.executors.serial:LocalSerialExecutor",
    "local-serial": "nbstore.executors.serial:LocalSerialExecutor",
    "temp-serial": "nbstore.executors.serial:TempSerialExecutor",
    "local-parallel": "nbstore.executors.parallel:LocalParallelExecutor",
    "temp-parallel": "nbstore.executors.parallel:TempParallelExecutor",
}


def list_executors() -> list[EntryPoint]:
    """Return the entry points of the installed executors (nbstore's own always among them), by name."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name, value in _BUILTIN.items():
        found.setdefault(name, EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP))
    return sorted(found.values(), key=lambda ep: ep.name)


def load_executor(name: str, cache: NbStore, logger: logging.Logger | None = None) -> Executor:
    """Return the executor registered under name, bound to cache (ExecutorNotFoundError if none is)."""
    found = {ep.name: ep for ep in list_executors()}
    if name not in found:
        known = ", ".join(found)
        raise ExecutorNotFoundError(f"no executor named {name!r}; known executors: {known}")
    cls = found[name].load()
    return cls(cache=cache, logger=logger)
