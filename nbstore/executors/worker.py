"""A worker process: runs the notebooks its executor sends, one at a time, and writes each result to the store.

Started by nbstore.executors.pool with the arguments RFD WFD PARENT_PID RUNTIME_DIR (see pool.WORKER_CODE).
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from nbstore.executors.wire import Job, Report, WireClosed, read_frame, write_frame

__all__ = ["main", "run_job"]

log = logging.getLogger(__name__)


class _Stop(SystemExit):
    """Raised in the main thread when the executor asks this worker to stop now (SIGTERM)."""


_state: dict[str, Any] = {"writing": False, "stop": False, "kernels": None}


def _on_term(signum: int, frame: Any) -> None:
    _state["stop"] = True
    kernels = _state["kernels"]
    if kernels is not None:
        kernels.kill_all()
    if not _state["writing"]:
        raise _Stop(128 + signum)


@contextmanager
def _store_write():
    """Finish a store write even if a stop request arrives during it (SIGTERM waits until it is done)."""
    _state["writing"] = True
    try:
        yield
    finally:
        _state["writing"] = False
        if _state["stop"]:
            raise _Stop(128 + signal.SIGTERM)


def _watch_parent(parent_pid: int) -> None:
    # An executor killed outright (SIGKILL) cannot stop its workers; they notice and stop themselves.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)
            return


_stores: dict[str, Any] = {}


def _store(path: str) -> Any:
    store = _stores.get(path)
    if store is None:
        from nbstore.store.cache import NbStore

        store = _stores[path] = NbStore(path)
    return store


def _options(nb: Any, timeout: float | None, allow_errors: bool) -> tuple[float | None, bool]:
    """Apply the notebook's metadata.execution overrides; ValueError names a bad value."""
    meta = nb.get("metadata", {}).get("execution")
    if not isinstance(meta, dict):
        return timeout, allow_errors
    if "timeout" in meta:
        value = meta["timeout"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"metadata.execution.timeout must be a number of seconds or null, not {value!r}")
        timeout = value
    if "allow_errors" in meta:
        value = meta["allow_errors"]
        if not isinstance(value, bool):
            raise ValueError(f"metadata.execution.allow_errors must be true or false, not {value!r}")
        allow_errors = value
    return timeout, allow_errors


def _copy_assets(bundle: Any, folder: Path) -> dict[str, str]:
    """Copy a staged notebook's assets into folder; return {relative path: sha256} of what was copied."""
    copied = {}
    for rel, handle in bundle.artifacts or ():
        data = handle.read()
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        copied[rel.as_posix()] = hashlib.sha256(data).hexdigest()
    return copied


def _created_files(folder: Path, copied: dict[str, str]) -> list[Path]:
    """Return the regular files under folder that the run created or changed (bytecode caches aside)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(folder).as_posix()
            if rel in copied and hashlib.sha256(path.read_bytes()).hexdigest() == copied[rel]:
                continue
            out.append(path)
    return out


def _set_tracebacks(store: Any, job: Job, text: str) -> None:
    from nbstore.errors import RecordNotFoundError

    for pk in (job.pk, *job.followers):
        with suppress(RecordNotFoundError):
            store.set_staged_traceback(pk, text)


def run_job(job: Job, *, kernels: Any, runtime_dir: str | None, on_kernel: Any = None) -> Report:
    """Run one staged notebook and write the outcome to the store: the notebook if it ran, else the traceback."""
    from nbstore.bundles import NbArtifacts, NbBundleIn
    from nbstore.errors import NbStoreError, RecordNotFoundError
    from nbstore.executors.runner import execute_notebook
    from nbstore.hashing import KEY_RULE

    store = _store(job.store_path)
    try:
        bundle = store.get_staged_notebook(job.pk)
        # The key of the notebook as it is just before it runs, its declared dependencies as they are now.
        info = store.key_of_staged_notebook(job.pk, bundle.nb)
    except RecordNotFoundError:
        return Report(job.job_id, "errored", 0.0, "the notebook is no longer staged")
    except NbStoreError as exc:
        with _store_write():
            _set_tracebacks(store, job, str(exc))
        return Report(job.job_id, "errored", 0.0, str(exc))
    nb = bundle.nb
    key = info.key
    inputs = info.inputs if info.rule != KEY_RULE else None
    try:
        timeout, allow_errors = _options(nb, job.timeout, job.allow_errors)
    except ValueError as exc:
        with _store_write():
            _set_tracebacks(store, job, str(exc))
        return Report(job.job_id, "errored", 0.0, str(exc), key=key)

    tmp = tempfile.mkdtemp(prefix="nbstore-run-") if job.in_temp else None
    try:
        if tmp is not None:
            try:
                copied = _copy_assets(bundle, Path(tmp))
            except (NbStoreError, OSError) as exc:
                reason = f"cannot copy the assets: {exc}"
                with _store_write():
                    _set_tracebacks(store, job, reason)
                return Report(job.job_id, "errored", 0.0, reason, key=key)
            cwd = tmp
        else:
            cwd = str(Path(bundle.uri).parent)
        result = execute_notebook(
            nb,
            cwd=cwd,
            timeout=timeout,
            allow_errors=allow_errors,
            kernels=kernels,
            runtime_dir=runtime_dir,
            on_kernel=on_kernel,
            record_timing=job.record_timing,
            # Files a temp-* run leaves become artifacts: let the kernel exit (and flush) before reading them.
            wait_for_exit=tmp is not None,
        )
        if result.status != "succeeded":
            with _store_write():
                _set_tracebacks(store, job, result.traceback or result.reason)
            return Report(job.job_id, result.status, result.seconds, result.reason, key=key)
        try:
            artifacts = None
            if tmp is not None:
                artifacts = NbArtifacts(_created_files(Path(tmp), copied), in_folder=tmp)
            data = {"execution_seconds": result.seconds}
            with _store_write():
                record = store.cache_notebook_bundle(
                    NbBundleIn(nb, bundle.uri, artifacts, data),
                    check_validity=False,
                    overwrite=True,
                    key=key,
                    inputs=inputs,
                )
                _set_tracebacks(store, job, "")
        except (NbStoreError, OSError) as exc:
            reason = f"the notebook ran but could not be cached: {exc}"
            with _store_write():
                _set_tracebacks(store, job, reason)
            return Report(job.job_id, "errored", result.seconds, reason, key=key)
        return Report(job.job_id, "succeeded", result.seconds, "", record.pk, key)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


#: Seconds the last kernels of a run get to exit once the run is over, before they are killed.
FINAL_GRACE = 0.5


def _wait_readable(fd: int, kernels: Any) -> None:
    # While kernels are still shutting down, wake up now and then to finish them off.
    while kernels.pending():
        ready, _, _ = select.select([fd], [], [], 0.1)
        kernels.reap()
        if ready:
            return


def main(argv: list[str] | None = None) -> int:
    """Serve jobs from the executor until it says stop (None) or goes away."""
    args = sys.argv[1:] if argv is None else argv
    rfd, wfd, parent_pid = int(args[0]), int(args[1]), int(args[2])
    for fd in (rfd, wfd):
        os.set_inheritable(fd, False)  # kernels must not hold the executor's pipes open
    runtime_dir = args[3] if len(args) > 3 and args[3] else None
    signal.signal(signal.SIGTERM, _on_term)
    quiet = logging.getLogger("nbstore.executors.nbclient")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    # With rfc3987-syntax installed, jsonschema (imported by nbformat) compiles an IRI grammar at import:
    # about a second per worker, for a format check that no notebook schema uses.
    sys.modules.setdefault("rfc3987_syntax", None)
    from nbstore.executors.runner import Kernels  # the heavy imports happen once, before "ready"

    kernels = Kernels()
    _state["kernels"] = kernels
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        write_frame(wfd, ("ready", os.getpid()))
        while True:
            _wait_readable(rfd, kernels)
            job = read_frame(rfd)
            if job is None:
                break

            def on_kernel(pgid: int | None, job_id: int = job.job_id) -> None:
                write_frame(wfd, ("kernel", job_id, pgid))

            try:
                report = run_job(job, kernels=kernels, runtime_dir=runtime_dir, on_kernel=on_kernel)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one notebook, not the run
                text = traceback.format_exc()
                reason = f"internal error in the worker: {type(exc).__name__}: {exc}"
                with suppress(Exception), _store_write():
                    _set_tracebacks(_store(job.store_path), job, f"{reason}\n{text}")
                report = Report(job.job_id, "errored", 0.0, reason)
            write_frame(wfd, ("done", report))
    except (WireClosed, BrokenPipeError):
        pass  # the executor went away: stop
    except _Stop:
        kernels.kill_all()
        return 128 + signal.SIGTERM
    finally:
        with suppress(BaseException):
            # The run is over and every result is stored: a kernel slow to exit (ipykernel sometimes takes
            # 3.5 s) would only hold up the caller, so it gets a short grace and is then killed.
            kernels.hurry(FINAL_GRACE)
            kernels.reap(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
