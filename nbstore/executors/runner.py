"""Run one notebook on a fresh kernel with nbclient (the only module of nbstore that imports nbclient)."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import traceback
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import run_sync

from nbstore.hashing import kernel_name

__all__ = ["Kernels", "RunResult", "execute_notebook", "strip_ansi"]

log = logging.getLogger(__name__)

# nbclient's own log (kernel died, timeouts) repeats what the result says; keep it out of the caller's log.
_nbclient_log = logging.getLogger("nbstore.executors.nbclient")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

#: Seconds a kernel asked to shut down gets before its process group is killed.
SHUTDOWN_GRACE = 5.0

# Unix socket paths are limited to ~107 bytes; past this, fall back to TCP.
_MAX_IPC_PATH = 90


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class RunResult:
    """How one execution ended: status, wall seconds, a one-line reason and the full traceback text."""

    status: str
    seconds: float
    reason: str = ""
    traceback: str = ""


@dataclass
class _Kernel:
    km: Any
    pgid: int | None
    proc: Any
    client: Any = None
    deadline: float = field(default=0.0)


def _kill_group(pgid: int | None, sig: int = signal.SIGKILL) -> None:
    if pgid is None or pgid <= 1:
        return
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Kernels:
    """The kernels this process started: the one running and those shutting down in the background."""

    def __init__(self) -> None:
        self._live: list[_Kernel] = []
        self._closing: list[_Kernel] = []

    def track(self, km: Any) -> _Kernel:
        """Start tracking a kernel that has just been started."""
        prov = km.provisioner
        proc = getattr(prov, "process", None)
        pgid = getattr(prov, "pgid", None) or getattr(proc, "pid", None)
        handle = _Kernel(km=km, pgid=pgid, proc=proc)
        self._live.append(handle)
        return handle

    def kill_all(self) -> None:
        """Kill every kernel's process group now (safe to call from a signal handler)."""
        for handle in self._live + self._closing:
            _kill_group(handle.pgid)

    def _stop_channels(self, handle: _Kernel) -> None:
        kc = getattr(handle.client, "kc", None)
        if kc is not None:
            # Closing the sockets of a dead kernel may fail in any way.
            with suppress(Exception):
                kc.stop_channels()
            handle.client.kc = None

    def shutdown_now(self, handle: _Kernel) -> None:
        """Kill a kernel (its whole process group) and clean up its connection files."""
        self._stop_channels(handle)
        try:
            run_sync(handle.km.shutdown_kernel)(now=True)
        except Exception as exc:  # noqa: BLE001 - the kill below is the backstop
            log.debug("kernel shutdown failed: %s", exc)
        _kill_group(handle.pgid)
        self.forget(handle)

    def close(self, handle: _Kernel, *, wait: bool) -> None:
        """Ask a finished kernel to exit; wait for it, or let it exit while the next notebook starts."""
        self._stop_channels(handle)
        try:
            run_sync(handle.km.request_shutdown)()
        except Exception as exc:  # noqa: BLE001
            log.debug("shutdown request failed: %s", exc)
            self.shutdown_now(handle)
            return
        handle.deadline = time.monotonic() + SHUTDOWN_GRACE
        self._live.remove(handle)
        self._closing.append(handle)
        if wait:
            self._wait(handle)

    def _wait(self, handle: _Kernel) -> None:
        proc = handle.proc
        if proc is not None:
            try:
                proc.wait(timeout=max(0.0, handle.deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - TimeoutExpired: it had its chance
                _kill_group(handle.pgid)
                proc.wait()
        self._finalize(handle)

    def _finalize(self, handle: _Kernel) -> None:
        # The kernel is gone: stop what the notebook left running in its process group, remove its files.
        if handle.proc is not None and handle.proc.poll() is not None:
            _kill_group(handle.pgid, signal.SIGTERM)
        try:
            run_sync(handle.km.cleanup_resources)()
        except Exception as exc:  # noqa: BLE001
            log.debug("kernel cleanup failed: %s", exc)
        self.forget(handle)

    def forget(self, handle: _Kernel) -> None:
        """Stop tracking a kernel (it is dead, or its process group has been killed)."""
        for group in (self._live, self._closing):
            if handle in group:
                group.remove(handle)

    def hurry(self, grace: float) -> None:
        """Give the kernels still shutting down at most grace seconds more before they are killed."""
        limit = time.monotonic() + grace
        for handle in self._closing:
            handle.deadline = min(handle.deadline, limit)

    def pending(self) -> bool:
        """Return True while some kernel is still shutting down."""
        return bool(self._closing)

    def reap(self, *, wait: bool = False) -> None:
        """Finish the shutdown of kernels that have exited; kill those past their grace (all, if wait)."""
        for handle in list(self._closing):
            proc = handle.proc
            if proc is None or proc.poll() is not None:
                self._finalize(handle)
            elif wait or time.monotonic() > handle.deadline:
                if wait:
                    self._wait(handle)
                else:
                    _kill_group(handle.pgid)
                    self._wait(handle)


def _kernel_manager(name: str, runtime_dir: str | None) -> AsyncKernelManager:
    if os.name == "posix" and runtime_dir:
        connection_file = os.path.join(runtime_dir, f"kernel-{uuid.uuid4().hex[:12]}.json")
        if len(connection_file) < _MAX_IPC_PATH:
            # IPC sockets: no TCP port races between many kernels and no "unencrypted TCP" warning.
            return AsyncKernelManager(kernel_name=name, transport="ipc", connection_file=connection_file)
    return AsyncKernelManager(kernel_name=name)


def _error_line(cell: Any, exc: CellExecutionError) -> str:
    """`Name: value` of the exception a cell raised, from its error output (the kernel's reply can say NoneType)."""
    ename, evalue = exc.ename, exc.evalue
    errors = [out for out in (cell or {}).get("outputs", []) if out.get("output_type") == "error"]
    if errors:
        ename, evalue = errors[-1].get("ename", ename), errors[-1].get("evalue", evalue)
    evalue = strip_ansi(str(evalue)).strip()
    return f"{ename}: {evalue}" if evalue else str(ename)


def _kernel_missing(name: str) -> RunResult:
    try:
        known = ", ".join(sorted(KernelSpecManager().find_kernel_specs())) or "none"
    except Exception:  # noqa: BLE001 - a broken kernelspec folder must not hide the real problem
        known = "unknown"
    reason = f"kernel {name!r} is not installed (installed kernels: {known})"
    return RunResult("errored", 0.0, reason, reason)


def _exit_code(handle: _Kernel | None) -> int | None:
    proc = handle.proc if handle else None
    if proc is None:
        return None
    try:
        proc.wait(timeout=1)
    except Exception:  # noqa: BLE001
        return None
    return proc.returncode


def execute_notebook(
    nb: Any,
    *,
    cwd: str | os.PathLike[str],
    timeout: float | None,
    allow_errors: bool,
    kernels: Kernels,
    runtime_dir: str | None = None,
    on_kernel: Any = None,
    wait_for_exit: bool = False,
    record_timing: bool = False,
) -> RunResult:
    """Execute nb (a NotebookNode, changed in place) on a new kernel started in cwd; never raises on failure."""
    limit = None if timeout is None or timeout <= 0 else float(timeout)
    name = kernel_name(nb)
    km = _kernel_manager(name, runtime_dir)
    client = NotebookClient(
        nb,
        km=km,
        kernel_name=name,
        timeout=None if limit is None else max(1, int(limit + 0.999)),
        timeout_func=None if limit is None else (lambda cell: limit),
        allow_errors=allow_errors,
        record_timing=record_timing,
        resources={"metadata": {"path": str(cwd)}},
        log=_nbclient_log,
    )
    start = time.perf_counter()
    handle: _Kernel | None = None
    index: int | None = None
    try:
        try:
            client.start_new_kernel(cwd=str(cwd))
        except NoSuchKernel:
            return _kernel_missing(name)
        handle = kernels.track(km)
        handle.client = client
        if on_kernel is not None:
            on_kernel(handle.pgid)
        client.start_new_kernel_client()
        kernels.reap()  # the previous notebook's kernel has usually exited by now
        reply = client.wait_for_reply(client.kc.kernel_info())
        if reply is not None and "language_info" in reply.get("content", {}):
            nb.metadata["language_info"] = reply["content"]["language_info"]
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        client.set_widgets_metadata()
    except CellTimeoutError as exc:
        result = RunResult(
            "excepted",
            time.perf_counter() - start,
            f"cell {_cell_no(index)} timed out after {limit:g} s",
            strip_ansi(str(exc)),
        )
    except CellExecutionError as exc:
        text = strip_ansi(str(exc)).rstrip()
        last = _error_line(nb.cells[index] if index is not None else None, exc)
        if last not in text:
            text = f"{text}\n{last}"
        summary = last if len(last) <= 300 else last[:297] + "..."
        result = RunResult("excepted", time.perf_counter() - start, f"{summary} (cell {_cell_no(index)})", text + "\n")
    except DeadKernelError:
        code = _exit_code(handle)
        how = f"the kernel died (exit code {code})" if code is not None else "the kernel died"
        reason = f"{how} while " + ("starting" if index is None else f"running cell {_cell_no(index)}")
        result = RunResult("errored", time.perf_counter() - start, reason, reason)
    except Exception as exc:  # noqa: BLE001 - anything else means the notebook could not be run
        where = "while starting the kernel" if index is None else f"while running cell {_cell_no(index)}"
        reason = f"{type(exc).__name__} {where}: {exc}"
        result = RunResult("errored", time.perf_counter() - start, reason, traceback.format_exc())
    except BaseException:
        # Interrupted: no time for courtesy, the kernel's whole process group goes now.
        if handle is not None:
            _kill_group(handle.pgid)
            kernels.forget(handle)
        raise
    else:
        seconds = time.perf_counter() - start
        kernels.close(handle, wait=wait_for_exit)
        return RunResult("succeeded", seconds)
    if handle is not None:
        kernels.shutdown_now(handle)
    else:
        _cleanup_unstarted(km)
    return result


def _cell_no(index: int | None) -> str:
    return "?" if index is None else str(index + 1)


def _cleanup_unstarted(km: Any) -> None:
    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
        else:
            run_sync(km.cleanup_resources)()
    except Exception as exc:  # noqa: BLE001
        log.debug("cleanup of a kernel that did not start failed: %s", exc)
