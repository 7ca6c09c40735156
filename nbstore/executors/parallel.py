"""Parallel executors: a pool of worker processes (one per CPU by default), each running one notebook at a time."""

from __future__ import annotations

from nbstore.executors.base import Executor

__all__ = ["LocalParallelExecutor", "TempParallelExecutor"]


class LocalParallelExecutor(Executor):
    """Run outdated staged notebooks on a pool of workers, each notebook in its own folder."""

    in_temp = False
    parallel = True


class TempParallelExecutor(Executor):
    """Run outdated staged notebooks on a pool of workers, each in a temporary folder; keep the files it makes."""

    in_temp = True
    parallel = True
