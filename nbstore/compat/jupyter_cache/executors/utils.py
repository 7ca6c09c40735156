"""jupyter-cache 1.0's `executors.utils`: single_nb_execution runs one notebook in place (MyST-NB calls it)."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["ExecutionResult", "single_nb_execution"]


@dataclass
class ExecutionResult:
    """How single_nb_execution went: the notebook, its folder, wall seconds, the cell error and its traceback."""

    nb: Any
    cwd: str | None
    time: float
    err: BaseException | None = None
    exc_string: str | None = None


def single_nb_execution(
    nb: Any,
    cwd: str | None,
    timeout: int | None,
    allow_errors: bool,
    meta_override: bool = True,
    record_timing: bool = False,
    **kwargs: Any,
) -> ExecutionResult:
    """Execute nb (a NotebookNode) in place in cwd; a cell error or timeout is returned in the result, not raised.

    With meta_override, the notebook's metadata.execution.timeout and .allow_errors win over the arguments;
    other keyword arguments go to nbclient's NotebookClient.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    execution = nb.metadata.get("execution", {}) if meta_override else {}
    timeout = execution.get("timeout", timeout)
    allow_errors = execution.get("allow_errors", allow_errors)
    resources = {"metadata": {"path": cwd}} if cwd is not None else {}
    client = NotebookClient(
        nb, timeout=timeout, allow_errors=allow_errors, record_timing=record_timing, resources=resources, **kwargs
    )
    error = exc_string = None
    start = time.perf_counter()
    try:
        client.execute(cwd=cwd)
    except (CellExecutionError, CellTimeoutError) as exc:
        error, exc_string = exc, traceback.format_exc()
    return ExecutionResult(nb, cwd, time.perf_counter() - start, error, exc_string)
