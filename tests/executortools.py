"""Helpers for executor tests: marked processes (to prove no kernel or worker outlives a run) and notebooks."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.conftest import make_nb, write_nb

#: Environment variable that every worker and kernel a test starts inherits, so that they can be found.
MARKER_VAR = "NBSTORE_TEST_MARKER"


def marked_processes(marker: str) -> dict[int, str]:
    """Return {pid: command line} of live processes whose environment carries the marker (Linux /proc)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            env = Path("/proc", name, "environ").read_bytes()
            if needle not in env.split(b"\0"):
                continue
            status = Path("/proc", name, "stat").read_text()
            if status.rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie is already dead; its parent just has not reaped it yet
            cmd = Path("/proc", name, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(name)] = cmd
    return found


def wait_until_gone(marker: str, seconds: float) -> dict[int, str]:
    """Wait up to seconds for every marked process to end; return those still alive."""
    deadline = time.monotonic() + seconds
    while True:
        alive = marked_processes(marker)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@contextmanager
def process_guard(grace: float = 5.0):
    """Mark every process started inside; afterwards kill any survivor and fail if there was one."""
    if not sys.platform.startswith("linux"):
        pytest.skip("process checks read /proc (Linux only)")
    marker = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MARKER_VAR, marker)
        failed = True
        try:
            yield marker
            failed = False
        finally:
            survivors = wait_until_gone(marker, grace)
            for pid in survivors:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    if not failed:
        assert survivors == {}, f"processes left behind: {survivors}"


def code_nb(path: Path, *sources: str, kernel: str = "python3", meta: dict | None = None, tags=None) -> Path:
    """Write an unexecuted notebook with one code cell per source (tags: {cell index: [tags]})."""
    spec = {"display_name": kernel, "language": "python", "name": kernel}
    nb = make_nb(list(sources), executed=False, kernel=spec, meta=meta)
    for index, cell_tags in (tags or {}).items():
        nb["cells"][index + 1]["metadata"]["tags"] = cell_tags
    return write_nb(path, nb)


def log_line(log: Path, text: str) -> str:
    """Return code that appends a line to log when it runs (to count runs across processes)."""
    return f"with open({str(log)!r}, 'a') as _f:\n    _f.write({text!r} + '\\n')"
