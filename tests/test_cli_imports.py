"""The fast commands stay fast: nbformat, nbclient, jupyter_client, nbdime (and pydantic) are never imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import make_nb, write_nb

HEAVY = ("nbformat", "nbclient", "jupyter_client", "nbdime")
#: An executed nbformat 3 notebook (merging it converts it with nbformat).
V3 = {
    "metadata": {},
    "nbformat": 3,
    "nbformat_minor": 0,
    "worksheets": [
        {"cells": [{"cell_type": "code", "input": "v = 3", "language": "python", "outputs": [], "prompt_number": 1}]}
    ],
}


def _imported(args: list[str], cwd) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run `python -X importtime -m nbstore ARGS` and return the top-level modules it imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("NBSTORE_CACHE", "PYTHONDONTWRITEBYTECODE")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nbstore", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = set()
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", line)
        if match:
            names.add(match.group(1).split(".")[0])
    return names, proc


def test_importing_the_cli_module_is_light():
    """`import nbstore.cli.app` (what every command loads) pulls in none of the heavy Jupyter packages."""
    code = f"import sys, nbstore.cli.app; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_fast_commands_import_no_heavy_package(tmp_path):
    """--help, status (which hashes changed notebooks), cache list and match import no heavy package."""
    for i in range(3):
        write_nb(tmp_path / f"n{i}.ipynb", make_nb([f"x = {i}"], executed=i == 0))
    setup = subprocess.run(
        [sys.executable, "-m", "nbstore", "stage", "add", "n0.ipynb", "n1.ipynb", "n2.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr
    subprocess.run([sys.executable, "-m", "nbstore", "cache", "add", "n0.ipynb"], cwd=tmp_path, check=True, timeout=120)
    # Touch a staged file so that status has to re-hash it (the slow path of staged_keys).
    write_nb(tmp_path / "n1.ipynb", make_nb(["x = 'changed'"], executed=False))
    for args in (["--help"], ["status"], ["status", "--json"], ["cache", "list"], ["match", "n0.ipynb"]):
        names, proc = _imported(args, tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "nbstore" in names and "typer" in names, args
        assert not names & set(HEAVY), (args, sorted(names & set(HEAVY)))
        # Typer's pydantic-based coercion is bypassed for flags, strings and paths (nbstore.cli.fastparse).
        assert "pydantic" not in names, args
        # Plain help: Typer's Rich help would import a Markdown parser on every --help.
        assert "markdown_it" not in names, args
    # The detector itself works: converting an nbformat 3 notebook needs nbformat, so it must show up there.
    (tmp_path / "v3.ipynb").write_text(json.dumps(V3))
    subprocess.run([sys.executable, "-m", "nbstore", "cache", "add", "v3.ipynb"], cwd=tmp_path, check=True, timeout=120)
    names, proc = _imported(["merge", "v3.ipynb"], tmp_path)
    assert proc.returncode == 0 and "nbformat" in names, proc.stderr[-2000:]
    rows = json.loads(_imported(["status", "--json"], tmp_path)[1].stdout)
    assert [r["status"] for r in rows] == ["up to date", "outdated", "outdated"]


@pytest.mark.slow
def test_merge_and_an_unchanged_diff_import_neither_nbformat_nor_nbdime(tmp_path):
    """`nbstore merge` of a v4 notebook and `cache diff` of an unchanged one import no heavy package."""
    write_nb(tmp_path / "n0.ipynb", make_nb(["x = 0"]))
    subprocess.run([sys.executable, "-m", "nbstore", "cache", "add", "n0.ipynb"], cwd=tmp_path, check=True, timeout=120)
    for args in (["merge", "n0.ipynb"], ["merge", "n0.ipynb", "-o", "out.ipynb"], ["cache", "diff", "1", "n0.ipynb"]):
        names, proc = _imported(args, tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "nbstore" in names and not names & set(HEAVY), (args, sorted(names & set(HEAVY)))
    assert json.loads((tmp_path / "out.ipynb").read_text())["cells"][1]["outputs"][0]["text"] == ["out 1\n"]
