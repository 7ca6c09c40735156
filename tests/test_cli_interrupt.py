"""`nbstore execute` stopped from outside: Ctrl-C reports what it stopped; a SIGKILLed run's temp folder goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.executortools import code_nb, process_guard

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def _env(systmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NBSTORE_CACHE", "FORCE_COLOR", "COLUMNS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["TMPDIR"] = str(systmp)  # the run's kernel folder goes here, where the test can watch it
    return env


def _wait_for(condition, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def _dead_pid() -> int:
    """Return the pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _runtime_dirs(systmp: Path) -> list[Path]:
    return sorted(p for p in systmp.iterdir() if p.name.startswith("nbstore-rt-"))


def test_ctrl_c_says_what_was_interrupted_and_what_finished(tmp_path):
    """SIGINT mid-run: exit 130, one line naming the stopped notebook and the count finished, then the table."""
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    started = tmp_path / "started"
    code_nb(tmp_path / "a_quick.ipynb", "x = 1")
    code_nb(tmp_path / "b_slow.ipynb", f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(120)")
    cli = [sys.executable, "-m", "nbstore", "--cache", str(tmp_path / ".nbstore")]
    with process_guard():
        subprocess.run([*cli, "stage", "add", "a_quick.ipynb", "b_slow.ipynb"], cwd=tmp_path, check=True)
        proc = subprocess.Popen(
            [*cli, "execute", "--executor", "local-serial"],
            cwd=tmp_path,
            env=_env(systmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _wait_for(started.exists, 120, proc)
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 130, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: interrupted: stopped b_slow.ipynb; 1 finished (their results are kept)"], err
    rows = {line.split()[1]: line for line in out.splitlines()[2:]}
    assert "succeeded" in rows["a_quick.ipynb"] and rows["a_quick.ipynb"].split()[-1] == "1"
    assert "interrupted" in rows["b_slow.ipynb"] and "stopped by Ctrl-C" in rows["b_slow.ipynb"]
    status = subprocess.run([*cli, "status"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "1 up to date, 1 outdated" in status
    assert _runtime_dirs(systmp) == []


def test_runtime_folder_of_a_killed_run_is_removed_by_the_next_run_and_by_gc(tmp_path):
    """A SIGKILLed execute leaves nbstore-rt-<pid>-*; the next run removes dead runs' folders, and so does gc."""
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    planted = systmp / f"nbstore-rt-{_dead_pid()}-planted"
    planted.mkdir()
    (planted / "kernel-x.json").write_text("{}")
    started = tmp_path / "started"
    code_nb(tmp_path / "slow.ipynb", f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(120)")
    cli = [sys.executable, "-m", "nbstore", "--cache", str(tmp_path / ".nbstore")]
    env = _env(systmp)
    with process_guard():
        subprocess.run([*cli, "stage", "add", "slow.ipynb"], cwd=tmp_path, check=True)
        proc = subprocess.Popen(
            [*cli, "execute", "--executor", "local-serial"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for(started.exists, 120, proc)
            mine = _runtime_dirs(systmp)
            assert [p.name.split("-")[2] for p in mine] == [str(proc.pid)], mine  # the planted one went
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert _runtime_dirs(systmp) == mine  # killed: nothing could clean up
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = systmp / f"nbstore-rt-{live.pid}-live"
        alive.mkdir()
        dry = subprocess.run([*cli, "gc", "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert f"Would remove {mine[0]}" in dry.stdout and mine[0].exists()
        gc = subprocess.run([*cli, "gc"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert gc.returncode == 0 and f"Removed {mine[0]}" in gc.stdout, gc
        assert _runtime_dirs(systmp) == [alive]  # a live run's folder stays
    finally:
        live.kill()
        live.wait()
