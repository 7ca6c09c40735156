"""The README runs as written: every block marked `<!-- runnable ... -->` runs in a copy of the repository.

Python blocks must run without an exception. Console blocks (`$ command` lines, each followed by its output)
run in one shell session per group, in order, and their output must match, after normalising what differs
from run to run (times, dates, seconds, object ids, column padding); an expected line `...` matches any lines.
The quick start's install steps are left out: the copy's `.venv` is the environment running these tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- runnable(?:: (?P<group>[\w-]+))?\b.*-->")
#: What the copy needs: the package, the example notebooks and the README (no store, no venv, no caches).
COPIED = ("nbstore", "examples", "README.md", "pyproject.toml")


def runnable_blocks(text: str) -> list[dict]:
    """Return the fenced blocks that follow a runnable marker: language, group, code and line number."""
    blocks = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = MARKER.fullmatch(line.strip())
        if match is None:
            continue
        fence = lines[i + 1]
        assert fence.startswith("```"), f"README line {i + 2}: a runnable marker must precede a fenced block"
        end = lines.index("```", i + 2)
        blocks.append(
            {"lang": fence[3:], "group": match["group"], "code": "\n".join(lines[i + 2 : end]), "line": i + 2}
        )
    return blocks


BLOCKS = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture
def repo_copy(tmp_path):
    """A copy of the repository's runnable parts whose .venv is the running interpreter's environment."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", ".nbstore*"))
        else:
            shutil.copy2(src, root / name)
    (root / ".venv").symlink_to(Path(sys.prefix))
    try:
        yield root
    finally:
        if (root / ".systmp").is_symlink():
            shutil.rmtree(os.readlink(root / ".systmp"), ignore_errors=True)


def _short_tmp(root: Path) -> str:
    """Return the copy's private temp folder: a short path under /tmp, named in the copy for its fixture."""
    link = root / ".systmp"
    if not link.exists():
        link.symlink_to(tempfile.mkdtemp(prefix="nbrd-", dir="/tmp"))
    return os.readlink(link)


def _env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NBSTORE_CACHE", "FORCE_COLOR", "COLUMNS", "NO_COLOR")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleave as on a terminal
    env["PYTHONPATH"] = str(root)  # the copy's nbstore, not the checkout's
    # A temp folder of its own, since `gc` also lists dead runs' kernel folders that other runs may have left;
    # a short one, since kernels' IPC socket paths must stay under ~107 bytes.
    env["TMPDIR"] = _short_tmp(root)
    return env


def test_readme_marks_the_blocks_it_claims_run():
    """The quick start, the Python tour, the 1.0 names, the executor example and the walkthrough are marked runnable."""
    kinds = [(b["lang"], b["group"]) for b in BLOCKS]
    assert kinds.count(("bash", None)) == 1 and kinds.count(("python", None)) == 3
    assert kinds.count(("console", "walkthrough")) >= 4


def test_quick_start_is_one_command_and_runs(repo_copy):
    """The quick start is one command line; without its install steps it stages, runs, reruns and checks."""
    (block,) = [b for b in BLOCKS if b["lang"] == "bash"]
    assert len(block["code"].splitlines()) == 1
    steps = [s.strip() for s in block["code"].split("&&")]
    assert steps[0].startswith("python3 -m venv .venv") and steps[1].startswith(".venv/bin/pip install")
    proc = subprocess.run(
        ["bash", "-c", " && ".join(steps[2:])],
        cwd=repo_copy,
        env=_env(repo_copy),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Nothing to run: every selected notebook is up to date" in proc.stderr
    assert "3 up to date" in proc.stdout


@pytest.mark.parametrize(
    "block",
    # Only the executor example starts kernels: mark it so, and leave the tour among the quick tests.
    [
        pytest.param(b, marks=[pytest.mark.kernel] if "run_and_cache" in b["code"] else [])
        for b in BLOCKS
        if b["lang"] == "python"
    ],
    ids=lambda b: f"line{b['line']}",
)
def test_python_block_runs(repo_copy, block):
    """A runnable Python block of the README runs to the end from the root of a fresh copy."""
    (repo_copy / "block.py").write_text(block["code"] + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "block.py"], cwd=repo_copy, env=_env(repo_copy), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"README line {block['line']}:\n{proc.stdout}\n{proc.stderr}"


# ---------------------------------------------------------------------------- console blocks


def console_steps(code: str) -> list[tuple[str, list[str]]]:
    """Split a console block into (command, expected output lines) pairs."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"console output before any command: {line!r}"
            steps[-1][1].append(line)
    return steps


_NORMAL = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\b\d+\.\d+ s\b"), "<s>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<object id>"),
    (re.compile(r"─+"), "─"),
    (re.compile(r"[ ]+"), " "),
]


def normal(line: str) -> str:
    """Return line with what changes between runs (times, seconds, object ids, column padding) made alike."""
    for pattern, repl in _NORMAL:
        line = pattern.sub(repl, line)
    return line.strip()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Return whether the normalised actual lines equal the expected ones, `...` standing for any lines."""
    exp, act = [normal(x) for x in expected], [normal(x) for x in actual]
    if not exp:
        return not act
    if exp[0] == "...":
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(act) and exp[0] == act[0] and matches(expected[1:], actual[1:])


@pytest.mark.kernel
@pytest.mark.slow
def test_walkthrough_runs_and_prints_what_the_readme_shows(repo_copy):
    """The walkthrough's commands run in one shell, in order, and print the output the README shows."""
    steps = [s for b in BLOCKS if b["group"] == "walkthrough" for s in console_steps(b["code"])]
    script = []
    for i, (command, _) in enumerate(steps):
        # Keep $? across the marker, so that `echo $?` reports the previous command's status.
        script.append(f"__status=$?; echo '@@step {i}@@'; (exit $__status)")
        script.append(command)
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script) + "\n"],
        cwd=repo_copy,
        env=_env(repo_copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    chunks = re.split(r"^@@step \d+@@\n", proc.stdout, flags=re.M)[1:]
    assert len(chunks) == len(steps), proc.stdout
    for (command, expected), chunk in zip(steps, chunks, strict=True):
        actual = chunk.rstrip("\n").splitlines()  # a README block cannot show trailing blank lines
        assert matches(expected, actual), f"$ {command}\n--- README\n" + "\n".join(expected) + "\n--- got\n" + chunk
    assert not (repo_copy / ".nbstore-tour").exists() and not (repo_copy / "squares.executed.ipynb").exists()
