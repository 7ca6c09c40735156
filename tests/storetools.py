"""Helpers shared by the reliability tests: notebooks, folder snapshots and the worker process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = Path(__file__).with_name("reliability_worker.py")


def executed_nb(tag: str, *, cells: int = 1, output_bytes: int = 0, kernel: str = "python3") -> dict:
    """Return an executed v4 notebook whose key depends on tag (outputs padded to output_bytes)."""
    code = []
    for i in range(cells):
        text = f"{tag} {i}\n" + ("x" * output_bytes if i == 0 else "")
        code.append(
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "source": f"print({tag!r}, {i})",
                "execution_count": i + 1,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": text}],
            }
        )
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": kernel, "display_name": kernel, "language": "python"}},
        "cells": [{"cell_type": "markdown", "id": "m", "metadata": {}, "source": f"# {tag}"}, *code],
    }


def write_nb(path: Path, nb: dict) -> Path:
    """Write a notebook as JSON and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, tuple]:
    """Return {relative path: (kind, size, sha256, mode)} for everything under folder (a full listing)."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                out[rel] = ("file", st.st_size, hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o7777)
    return out


def record_files(store_path: Path) -> dict[str, tuple]:
    """Return the snapshot of the files a store commits: config, sidecars, objects (no index, lock, tmp, folders)."""
    snap = snapshot(store_path)
    volatile = ("index", "lock", "tmp", "quarantine")
    return {k: v for k, v in snap.items() if k.split("/")[0] not in volatile and v[0] != "dir"}


def worker(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the worker script with args to completion, failing loudly on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if proc.returncode != 0:
        raise AssertionError(f"worker {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_worker(*args: str, **kwargs) -> subprocess.Popen:
    """Start the worker script with args, its stdout as a line-buffered text pipe."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        **kwargs,
    )


def wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 60) -> None:
    """Read the worker's stdout until a line equal to expected (fail if it exits or times out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode} before {expected!r}: {proc.stderr.read()}")
    raise AssertionError(f"worker did not print {expected!r} in {timeout} s")
