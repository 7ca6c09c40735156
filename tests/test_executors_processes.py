"""Executors across processes: interrupting a run leaves no process and a sound store; two runs share the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbstore import get_cache
from nbstore.hashing import notebook_key
from nbstore.layout import TEMP_SUFFIX
from nbstore.store.locking import try_claim
from tests.executortools import code_nb, log_line, marked_processes, process_guard, wait_until_gone

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]

RUN_SCRIPT = """\
import sys
from nbstore import get_cache
from nbstore.executors import load_executor

cache = get_cache(sys.argv[1])
try:
    result = load_executor(sys.argv[2], cache=cache).run_and_cache(workers=2, timeout=None)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", dict(result), flush=True)
"""

SHARED_SCRIPT = """\
import json, sys, time
from pathlib import Path
from nbstore import get_cache
from nbstore.executors import load_executor

store, barrier, me, name = sys.argv[1:5]
Path(barrier, me).touch()
while len(list(Path(barrier).iterdir())) < 2:
    time.sleep(0.01)
result = load_executor(name, cache=get_cache(store)).run_and_cache()
print(json.dumps([[o.pk, o.status, o.reason] for o in result.outcomes]))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _wait_for(condition, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to reach the point of interruption")
        time.sleep(0.05)


def _stray_temp_files(store: Path) -> list[str]:
    return [
        p.relative_to(store).as_posix()
        for p in store.rglob("*")
        if p.is_file() and p.name.endswith(TEMP_SUFFIX) and "tmp" not in p.relative_to(store).parts
    ]


@pytest.mark.parametrize(
    ("name", "signum"),
    [
        ("local-parallel", signal.SIGINT),
        ("temp-parallel", signal.SIGTERM),
        ("local-serial", signal.SIGINT),
        ("local-parallel", signal.SIGKILL),
    ],
)
def test_interrupt_kills_everything_and_keeps_finished_work(tmp_path, name, signum):
    """SIGINT/SIGTERM (even SIGKILL) mid-run: workers and kernels go within seconds, finished work stays cached."""
    started = tmp_path / "started"
    started.mkdir()
    quick = code_nb(tmp_path / "nbs" / "a_quick.ipynb", "print('quick')")
    sleepers = [
        code_nb(
            tmp_path / "nbs" / f"sleep{i}.ipynb",
            f"open({str(started / str(i))!r}, 'w').close()",
            "import time\ntime.sleep(300)",
        )
        for i in range(3)
    ]
    store = tmp_path / ".nbstore"
    cache = get_cache(store)
    for path in [quick, *sleepers]:
        cache.stage_notebook_file(path)
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    running = 1 if name.endswith("serial") else 2

    with process_guard() as marker:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(store), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        try:
            _wait_for(
                lambda: len(list(started.iterdir())) >= running and get_cache(store).list_cache_records(),
                120,
                proc,
            )
            assert any("ipykernel_launcher" in cmd for cmd in marked_processes(marker).values())
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if signum == signal.SIGINT:
            assert proc.returncode == 130 and "interrupted" in out, (out, err)
        else:
            assert proc.returncode == -signum, (out, err)
        assert wait_until_gone(marker, 5) == {}

    cache = get_cache(store)
    records = cache.list_cache_records()
    assert [r.uri for r in records] == [str(quick)]
    assert cache.match_cache_file(quick).pk == records[0].pk
    assert cache.get_cache_bundle(records[0].pk).nb.cells[-1].outputs[0]["text"] == "quick\n"
    assert [r.uri for r in cache.list_staged_unexecuted()] == [str(p) for p in sleepers]
    # An interrupted run is no failure of the notebook: no traceback is recorded for it.
    assert all(r.traceback == "" for r in cache.list_staged_records())
    assert _stray_temp_files(store) == []
    assert cache.verify().problems == ()
    for path in sleepers:
        claim = try_claim(store, notebook_key(json.loads(path.read_text())))
        assert claim is not None
        claim.release()


def test_two_processes_run_each_notebook_once(tmp_path):
    """Two executors started together on one staged set run every notebook once between them."""
    log = tmp_path / "runs.log"
    nbs = tmp_path / "nbs"
    sleep = "import time\ntime.sleep(1)"
    failing = code_nb(nbs / "a_fail.ipynb", log_line(log, "fail"), sleep, "raise Exception('oopsie!')")
    good = [code_nb(nbs / f"b{i}.ipynb", log_line(log, f"b{i}"), sleep) for i in range(4)]
    store = tmp_path / ".nbstore"
    cache = get_cache(store)
    for path in [failing, *good]:
        cache.stage_notebook_file(path)
    script = tmp_path / "shared.py"
    script.write_text(SHARED_SCRIPT)
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    with process_guard():
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(store), str(barrier), me, "local-serial"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            )
            for me in ("one", "two")
        ]
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))

    runs = log.read_text().splitlines()
    assert sorted(runs) == ["b0", "b1", "b2", "b3", "fail"]
    statuses = {pk: status for outcome in outputs for pk, status, _ in outcome}
    assert statuses == {1: "excepted", 2: "succeeded", 3: "succeeded", 4: "succeeded", 5: "succeeded"}
    cache = get_cache(store)
    assert sorted(r.uri for r in cache.list_cache_records()) == [str(p) for p in good]
    assert "Exception: oopsie!" in cache.get_staged_record(1).traceback
    # Both processes took part, and each reported the other's work as such.
    reasons = [reason for outcome in outputs for _, _, reason in outcome]
    assert all(outputs) and any("another process" in r for r in reasons)
