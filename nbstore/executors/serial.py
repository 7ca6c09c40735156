"""Serial executors: one notebook at a time, in its own folder (local) or in a temporary one (temp)."""

from __future__ import annotations

from nbstore.executors.base import Executor

__all__ = ["LocalSerialExecutor", "TempSerialExecutor"]


class LocalSerialExecutor(Executor):
    """Run outdated staged notebooks one at a time, each in its own folder."""

    in_temp = False
    parallel = False


class TempSerialExecutor(Executor):
    """Run outdated staged notebooks one at a time, each in a temporary folder; keep the files it makes."""

    in_temp = True
    parallel = False
