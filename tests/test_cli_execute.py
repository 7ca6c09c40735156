"""`nbstore execute` with real kernels, its bad input, and the installed command end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbstore import get_cache
from nbstore.cli.app import app
from tests.conftest import make_nb, write_nb
from tests.executortools import process_guard


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run every command from tmp_path with no NBSTORE_CACHE and no forced colour."""
    for name in ("NBSTORE_CACHE", "FORCE_COLOR", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args):
    """Invoke nbstore in-process with separate stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args])


def fresh(path: Path, *sources: str) -> Path:
    return write_nb(path, make_nb(list(sources), executed=False))


def test_execute_bad_input(cwd):
    """Unknown executor (2), bad ID (2), missing store (1, nothing created), unstaged target (1); no kernel starts."""
    nb = fresh(cwd / "a.ipynb", "print(1)")
    unknown = run("execute", "--executor", "no-such-executor")
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith("Error: unknown executor 'no-such-executor' (available: ")
    assert "local-serial" in unknown.stderr
    missing = run("execute")
    assert missing.exit_code == 1 and "there is no store" in missing.stderr
    assert not (cwd / ".nbstore").exists()
    assert run("stage", "add", nb).exit_code == 0
    assert run("execute", "0").exit_code == 2
    not_staged = run("execute", "7")
    assert not_staged.exit_code == 1 and "no staged notebook has ID 7" in not_staged.stderr
    other = fresh(cwd / "b.ipynb", "print(2)")
    assert run("execute", other).exit_code == 1
    assert run("stage", "remove", "--all").exit_code == 0
    nothing = run("execute", "--json")
    assert nothing.exit_code == 0 and json.loads(nothing.stdout)["outcomes"] == []
    assert "Nothing is staged" in nothing.stderr


@pytest.mark.kernel
@pytest.mark.slow
def test_execute_reports_each_notebook_and_fails_if_one_fails(cwd):
    """execute runs the outdated notebooks, reports each on stderr, exits 1 on a failure; status follows."""
    good = fresh(cwd / "good.ipynb", "x = 6 * 7\nprint(x)")
    bad = fresh(cwd / "bad.ipynb", "raise ValueError('no good')")
    assert run("stage", "add", good, bad).exit_code == 0
    with process_guard():
        result = run("execute", "--executor", "local-serial", "--json")
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["succeeded"] == [str(good)] and doc["excepted"] == [str(bad)] and doc["errored"] == []
    outcomes = {o["uri"]: o for o in doc["outcomes"]}
    assert outcomes[str(good)]["status"] == "succeeded" and outcomes[str(good)]["cache_pk"] == 1
    assert outcomes[str(bad)]["status"] == "excepted" and "ValueError" in outcomes[str(bad)]["reason"]
    lines = result.stderr.splitlines()
    assert any(line.startswith("succeeded") and "good.ipynb" in line and line.endswith(" s") for line in lines)
    assert any(line.startswith("excepted") and "bad.ipynb" in line and "ValueError" in line for line in lines)
    assert "Execution Failed" not in result.stderr  # the executor's own log line would repeat the progress line
    rows = {Path(r["uri"]).name: r for r in json.loads(run("status", "--json").stdout)}
    assert rows["good.ipynb"]["status"] == "up to date" and rows["good.ipynb"]["cache_pk"] == 1
    assert isinstance(rows["good.ipynb"]["seconds"], float)
    assert rows["bad.ipynb"]["status"] == "failed"
    assert "ValueError: no good" in run("stage", "show", "bad.ipynb").stdout
    again = run("execute", "good.ipynb")
    assert again.exit_code == 0 and "Nothing to run" in again.stderr
    merged = json.loads(run("merge", good).stdout)
    assert "".join(merged["cells"][1]["outputs"][0]["text"]) == "42\n"


def _nbstore(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run the installed `nbstore` script in its own session, killing the whole group if it overruns."""
    exe = shutil.which("nbstore", path=os.path.dirname(sys.executable)) or shutil.which("nbstore")
    assert exe, "the nbstore console script is not installed"
    proc = subprocess.Popen(
        [exe, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"nbstore {' '.join(args)} timed out:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.kernel
@pytest.mark.slow
def test_installed_command_end_to_end(tmp_path):
    """The installed `nbstore`: stage two notebooks, execute them, see them up to date, merge one's outputs."""
    project = tmp_path / "project"
    fresh(project / "one.ipynb", "print('one')")
    fresh(project / "sub" / "two.ipynb", "import math\nprint(math.factorial(5))")
    env = {k: v for k, v in os.environ.items() if k not in ("NBSTORE_CACHE", "FORCE_COLOR")}
    with process_guard() as marker:
        env["NBSTORE_TEST_MARKER"] = marker
        staged = _nbstore("stage", "add", "one.ipynb", "sub/two.ipynb", cwd=project, env=env)
        assert staged.returncode == 0, staged.stderr
        assert staged.stdout.splitlines() == ["Staged one.ipynb as ID 1", "Staged sub/two.ipynb as ID 2"]
        executed = _nbstore("execute", "--workers", "2", cwd=project, env=env)
    assert executed.returncode == 0, executed.stderr
    assert "\x1b[" not in executed.stdout + executed.stderr  # piped: plain text
    assert "2 succeeded" in executed.stdout
    status = _nbstore("status", cwd=project, env=env)
    assert status.returncode == 0
    assert [line.split()[:5] for line in status.stdout.splitlines()[2:4]] == [
        ["1", "one.ipynb", "up", "to", "date"],
        ["2", "sub/two.ipynb", "up", "to", "date"],
    ]
    assert "2 up to date" in status.stdout
    merged = _nbstore("merge", "sub/two.ipynb", "-o", "two.merged.ipynb", cwd=project, env=env)
    assert merged.returncode == 0 and merged.stdout == ""
    nb = json.loads((project / "two.merged.ipynb").read_text())
    assert "".join(nb["cells"][1]["outputs"][0]["text"]) == "120\n"
    assert (project / "two.merged.ipynb").read_text().endswith("}\n")
    assert len(get_cache(project / ".nbstore").list_cache_records()) == 2
