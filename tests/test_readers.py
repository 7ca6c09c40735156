"""Readers: text notebooks are staged, hashed, executed and merged like .ipynb, by the reader in their record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nbstore import NotebookReadError, ReaderNotFoundError, get_cache, list_readers, notebook_key
from nbstore.executors import load_executor
from tests.conftest import make_nb, write_nb
from tests.executortools import process_guard

jupytext = pytest.importorskip("jupytext", reason="the jupytext extra (nbstore-cache[jupytext]) is not installed")

MYST = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# {title}

Some prose.

```{{code-cell}} ipython3
{code}
```
"""

PERCENT = """\
# %% [markdown]
# # {title}

# %%
{code}
"""


def _myst(path: Path, code: str, title: str = "A page") -> Path:
    path.write_text(MYST.format(title=title, code=code), encoding="utf-8")
    return path


def _percent(path: Path, code: str, title: str = "A script") -> Path:
    path.write_text(PERCENT.format(title=title, code=code), encoding="utf-8")
    return path


def _age(path: Path, seconds: float = 10.0) -> None:
    """Date a file back, so that its hash is not "racy" (re-checked) when status next looks at it."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_builtin_readers_listed():
    """nbformat and jupytext are always among the readers."""
    assert {"nbformat", "jupytext"} <= set(list_readers())


def test_text_notebook_keys_like_its_ipynb(store, tmp_path):
    """A MyST notebook staged with jupytext has the key of the same code as .ipynb; prose edits keep it."""
    md = _myst(tmp_path / "page.md", "print(6 * 7)")
    executed = write_nb(tmp_path / "page.ipynb", make_nb(["print(6 * 7)"]))
    record = store.stage_notebook_file(md, reader="jupytext")
    assert record.reader == "jupytext" and record.read_data == {"name": "jupytext", "type": "plugin"}
    sidecar = json.loads(next((store.path / "stage").glob("*.json")).read_text())
    assert sidecar["reader"] == "jupytext"
    assert store.get_cache_record_of_staged(md) is None
    cached = store.cache_notebook_file(executed)
    assert store.get_cache_record_of_staged(md) == cached
    _myst(md, "print(6 * 7)", title="Reworded title")
    assert store.get_cache_record_of_staged(md) == cached
    assert store.match_cache_file(md) == cached  # the reader comes from the stage record
    _myst(md, "print(6 * 9)")
    assert store.get_cache_record_of_staged(md) is None
    assert [r.pk for r in store.list_staged_unexecuted()] == [1]


def test_ipynb_records_name_no_reader_and_restaging_changes_it(store, tmp_path):
    """An .ipynb stage record has no "reader" field; staging again with another reader updates it, same pk."""
    nb = write_nb(tmp_path / "a.ipynb", make_nb(["x = 1"], executed=False))
    store.stage_notebook_file(nb)
    sidecar = next((store.path / "stage").glob("*.json"))
    assert "reader" not in json.loads(sidecar.read_text())
    record = store.stage_notebook_file(nb, reader="jupytext")  # jupytext reads .ipynb too
    assert (record.pk, record.reader) == (1, "jupytext")
    assert json.loads(sidecar.read_text())["reader"] == "jupytext"
    assert store.stage_notebook_file(nb).reader == "nbformat"
    assert "reader" not in json.loads(sidecar.read_text())


def test_bad_reader_or_format_changes_nothing(store, tmp_path):
    """An unknown reader, or a text file staged as .ipynb, is an error naming it, and writes nothing."""
    md = _myst(tmp_path / "page.md", "x = 1")
    with pytest.raises(ReaderNotFoundError, match="no notebook reader named 'nope'.*jupytext"):
        store.stage_notebook_file(md, reader="nope")
    with pytest.raises(NotebookReadError, match="page.md.*reader 'jupytext'"):
        store.stage_notebook_file(md)
    with pytest.raises(TypeError):
        store.stage_notebook_file(md, reader={"name": "jupytext"})
    assert not store.path.exists()


def test_reader_failure_is_a_read_error(store, tmp_path):
    """A file the reader cannot parse is a NotebookReadError naming the file and the reader."""
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"\xff\xfe not text")
    with pytest.raises(NotebookReadError, match="bad.md"):
        store.stage_notebook_file(bad, reader="jupytext")


def test_jcache_readers_entry_point(tmp_path):
    """A reader registered in jupyter-cache's `jcache.readers` group (as MyST-NB does) is found and used."""
    site = tmp_path / "site"
    (site / "upper_reader-1.0.dist-info").mkdir(parents=True)
    (site / "upper_reader-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: upper-reader\nVersion: 1.0\n"
    )
    (site / "upper_reader-1.0.dist-info" / "entry_points.txt").write_text(
        "[jcache.readers]\nlines = upper_reader:read\n"
    )
    (site / "upper_reader.py").write_text(
        textwrap.dedent(
            """\
            import nbformat

            def read(uri):
                lines = open(uri).read().split("---\\n")
                return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in lines])
            """
        )
    )
    doc = tmp_path / "doc.lines"
    doc.write_text("x = 1\n---\nprint(x)\n")
    code = (
        "import json, sys, nbstore\n"
        "c = nbstore.get_cache(sys.argv[1])\n"
        "r = c.add_nb_to_project(sys.argv[2], read_data={'name': 'lines', 'type': 'plugin'})\n"
        "print(json.dumps([r.reader, c.staged_keys()[r.pk], 'lines' in nbstore.list_readers()]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s"), str(doc)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    reader, key, listed = json.loads(proc.stdout)
    expected = make_nb(["x = 1\n", "print(x)\n"], executed=False, markdown=False, kernel=None)
    assert (reader, key, listed) == ("lines", notebook_key(expected), True)


def test_cli_stage_add_reader(tmp_path):
    """`stage add --reader jupytext` stages text notebooks (globs match any file); an unknown reader exits 2."""
    _myst(tmp_path / "a.md", "x = 1")
    _percent(tmp_path / "b.py", "y = 2")

    def nbstore(*args):
        return subprocess.run(
            [sys.executable, "-m", "nbstore", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    bad = nbstore("stage", "add", "--reader", "nope", "a.md")
    assert bad.returncode == 2 and "no notebook reader named 'nope'" in bad.stderr
    assert not (tmp_path / ".nbstore").exists()
    plain = nbstore("stage", "add", "a.md")
    assert plain.returncode == 1 and "--reader" not in plain.stderr and "reader 'jupytext'" in plain.stderr
    ok = nbstore("stage", "add", "--reader", "jupytext", "*.md", "b.py")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["Staged a.md as ID 1", "Staged b.py as ID 2"]
    shown = json.loads(nbstore("stage", "show", "2", "--json").stdout)
    assert shown["reader"] == "jupytext" and shown["status"] == "outdated"


@pytest.mark.slow
@pytest.mark.kernel
def test_text_notebooks_execute_in_parallel_and_merge(tmp_path):
    """.md, .py and .ipynb notebooks run together in parallel, are up to date after, and merge with outputs."""
    md = _myst(tmp_path / "page.md", "print('from md')")
    py = _percent(tmp_path / "script.py", "print('from py')")
    nb = write_nb(tmp_path / "nb.ipynb", make_nb(["print('from ipynb')"], executed=False))
    store = get_cache(tmp_path / ".nbstore")
    store.stage_notebook_file(md, reader="jupytext")
    store.stage_notebook_file(py, reader="jupytext")
    store.stage_notebook_file(nb)
    with process_guard():
        result = load_executor("local-parallel", store).run_and_cache(workers=2)
    assert sorted(result.succeeded) == sorted([str(md), str(py), str(nb)]) and not result.excepted
    assert store.list_staged_unexecuted() == []
    assert store.get_cache_record_of_staged(md).uri == str(md)
    pk, merged = store.merge_match_into_file(md)
    code = [c for c in merged.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == "from md\n"
    assert [c.cell_type for c in merged.cells] == ["markdown", "code"]  # the prose stays, from the .md
    out = subprocess.run(
        [sys.executable, "-m", "nbstore", "merge", "script.py", "-o", "script.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    merged_py = json.loads((tmp_path / "script.ipynb").read_text())
    outputs = [o["text"] for c in merged_py["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert ["".join(text) for text in outputs] == ["from py\n"]  # on disk, text is a list of lines
    status = subprocess.run(
        [sys.executable, "-m", "nbstore", "status", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert [r["status"] for r in json.loads(status.stdout)] == ["up to date"] * 3


@pytest.mark.slow
def test_status_reads_unchanged_text_notebooks_without_importing_readers(tmp_path):
    """status imports neither jupytext nor nbformat while no text notebook changed; after an edit it re-reads it."""
    md = _myst(tmp_path / "page.md", "x = 1")
    _age(md)
    store = get_cache(tmp_path / ".nbstore")
    store.stage_notebook_file(md, reader="jupytext")

    def status():
        env = {k: v for k, v in os.environ.items() if k not in ("NBSTORE_CACHE", "PYTHONDONTWRITEBYTECODE")}
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "nbstore", "status", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        names = {m.group(1).split(".")[0] for m in re.finditer(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", proc.stderr)}
        return json.loads(proc.stdout), names

    rows, names = status()
    assert rows[0]["status"] == "outdated"
    assert not names & {"jupytext", "nbformat", "nbclient"}
    _myst(md, "x = 2")
    _age(md, 5)
    rows, names = status()
    assert rows[0]["status"] == "outdated" and "jupytext" in names
    key = store.staged_keys()[1]
    assert key == notebook_key(make_nb(["x = 2"], executed=False, markdown=False))
    rows, names = status()
    assert not names & {"jupytext", "nbformat"}
