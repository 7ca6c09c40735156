"""Kernel runtime folders in the system temp folder: named by the run's pid, so that a later run can tell
whose owner is dead and remove it (a SIGKILLed `execute` cannot clean up after itself)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile

__all__ = ["RUNTIME_PREFIX", "dead_runtime_dirs", "make_runtime_dir", "remove_dead_runtime_dirs"]

#: Every run's folder of kernel connection files is `nbstore-rt-<pid>-<random>` in the temp folder.
RUNTIME_PREFIX = "nbstore-rt-"
_NAME = re.compile(re.escape(RUNTIME_PREFIX) + r"(\d+)-[A-Za-z0-9_]+\Z")


def make_runtime_dir() -> str:
    """Create this run's runtime folder (private to the user, as mkdtemp makes it) and return its path."""
    return tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def dead_runtime_dirs(tmpdir: str | None = None) -> list[str]:
    """Return the runtime folders in tmpdir of this user whose run's process no longer exists."""
    base = tmpdir or tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return []
    dead = []
    for name in sorted(names):
        match = _NAME.match(name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        # Only real folders of this user: never follow a link planted in a shared /tmp.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if not _alive(int(match.group(1))):
            dead.append(path)
    return dead


def remove_dead_runtime_dirs(tmpdir: str | None = None, *, dry_run: bool = False) -> list[str]:
    """Remove (unless dry_run) the runtime folders of dead runs; return their paths."""
    dead = dead_runtime_dirs(tmpdir)
    if not dry_run:
        for path in dead:
            shutil.rmtree(path, ignore_errors=True)
    return dead
