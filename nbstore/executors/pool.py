"""The executor's side of its worker processes: start them fresh (never forked), talk to them, stop them."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nbstore.errors import ExecutionError
from nbstore.executors.wire import Job, WireClosed, read_frame, write_frame

__all__ = ["Pool", "WorkerHandle"]

#: Seconds stopped workers get to kill their kernels and exit before they are killed.
STOP_GRACE = 3.0

#: Seconds an idle worker gets to finish shutting down its last kernels after "stop".
CLOSE_GRACE = 10.0

# A fresh interpreter that finds this nbstore even when it is not installed (tests, source checkouts),
# without touching the environment that kernels inherit.
WORKER_CODE = (
    "import sys; root = {root!r}\n"
    "if root not in sys.path: sys.path.insert(0, root)\n"
    "from nbstore.executors.worker import main; sys.exit(main())"
)


@dataclass(eq=False)
class WorkerHandle:
    """One worker process as the executor sees it."""

    proc: subprocess.Popen
    rfd: int
    wfd: int
    ready: bool = False
    job: Job | None = None
    #: Process group of the kernel running the current job, once the worker reports it.
    kernel_pgid: int | None = None
    dead: bool = False
    returncode: int | None = None

    @property
    def pid(self) -> int:
        """Return the worker's process id."""
        return self.proc.pid


def _kill_group(pgid: int | None, sig: int = signal.SIGKILL) -> None:
    if pgid is None or pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the executor stops its processes, then deliver them: cleanup always finishes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def note(signum: int, frame: object) -> None:
        caught.append(signum)

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    swapped = {sig: handler for sig, handler in old.items() if handler is not None and handler is not signal.SIG_IGN}
    for sig in swapped:
        signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in swapped.items():
            signal.signal(sig, handler)
        # SIGTERM first: the stronger request must not be lost to the exception SIGINT raises.
        for sig in sorted(set(caught), key=lambda sig: sig != signal.SIGTERM):
            signal.raise_signal(sig)


class Pool:
    """Worker processes started with a fresh interpreter, each in its own session."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        self.workers: list[WorkerHandle] = []
        self._sel = selectors.DefaultSelector()
        package_root = str(Path(__file__).resolve().parents[2])
        self._code = WORKER_CODE.format(root=package_root)

    def start_worker(self) -> WorkerHandle:
        """Start one worker; it reports "ready" once its imports are done."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        args = [str(to_child_r), str(from_child_w), str(os.getpid()), self.runtime_dir]
        try:
            # Its own session: a Ctrl-C at the terminal reaches the executor only, which then stops the workers.
            proc = subprocess.Popen(
                [sys.executable, "-c", self._code, *args],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                # Whatever a kernel writes to its inherited stdout must not mix into the caller's output.
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException as exc:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            if isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
                raise ExecutionError(f"cannot start a worker process with {sys.executable}: {reason}") from exc
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        worker = WorkerHandle(proc=proc, rfd=from_child_r, wfd=to_child_w)
        self.workers.append(worker)
        self._sel.register(from_child_r, selectors.EVENT_READ, worker)
        return worker

    def alive(self) -> list[WorkerHandle]:
        """Return the workers that have not died or been stopped."""
        return [w for w in self.workers if not w.dead]

    def idle(self) -> list[WorkerHandle]:
        """Return the ready workers without a job."""
        return [w for w in self.workers if w.ready and not w.dead and w.job is None]

    def send(self, worker: WorkerHandle, job: Job) -> None:
        """Give a job to an idle worker (a worker that died meanwhile shows up as "died" in poll)."""
        worker.job = job
        worker.kernel_pgid = None
        with contextlib.suppress(BrokenPipeError):
            write_frame(worker.wfd, job)

    def poll(self, timeout: float | None) -> list[tuple]:
        """Wait up to timeout for messages: ("ready"|"kernel"|"done"|"died", worker, *payload)."""
        if not self._sel.get_map():
            if timeout:
                time.sleep(timeout)
            return []
        out = []
        for key, _ in self._sel.select(timeout):
            worker: WorkerHandle = key.data
            try:
                msg = read_frame(worker.rfd)
            except (WireClosed, OSError, EOFError, ValueError):
                out.append(("died", worker, self._bury(worker)))
                continue
            kind = msg[0]
            if kind == "ready":
                worker.ready = True
            elif kind == "kernel":
                worker.kernel_pgid = msg[2]
            elif kind == "done":
                worker.job = None
                worker.kernel_pgid = None
            out.append((kind, worker, *msg[1:]))
        return out

    def _bury(self, worker: WorkerHandle) -> int | None:
        """Reap a worker whose pipe closed; kill the kernel it may have left behind."""
        self._sel.unregister(worker.rfd)
        worker.dead = True
        try:
            worker.returncode = worker.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(worker.pid)
            worker.returncode = worker.proc.wait()
        _kill_group(worker.kernel_pgid)
        for fd in (worker.rfd, worker.wfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        return worker.returncode

    def close(self, *, force: bool) -> None:
        """Stop every worker: politely when the run is done; at once (kernels killed) when force."""
        live = self.alive()
        with _signals_deferred():
            if force:
                for worker in live:
                    _kill_group(worker.pid, signal.SIGTERM)
                grace = STOP_GRACE
            else:
                for worker in live:
                    with contextlib.suppress(OSError):
                        write_frame(worker.wfd, None)
                grace = CLOSE_GRACE
            deadline = time.monotonic() + grace
            for worker in live:
                try:
                    worker.returncode = worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _kill_group(worker.pid)
                    worker.returncode = worker.proc.wait()
                # A worker stopped mid-run kills its kernel; this covers one that could not.
                if force:
                    _kill_group(worker.kernel_pgid)
                worker.dead = True
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(worker.rfd)
                for fd in (worker.rfd, worker.wfd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._sel.close()
