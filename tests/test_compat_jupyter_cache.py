"""The `jupyter_cache` compatibility package, driven in fresh processes as Quarto and MyST-NB drive it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nbstore
from nbstore import get_cache
from tests.conftest import make_nb, write_nb
from tests.executortools import process_guard

pytestmark = pytest.mark.kernel

# What Quarto's Jupyter runner does with `execute: cache: true` (its calls, in its order).
QUARTO_RUNNER = """
import json, os, sys
import nbformat
from nbclient import NotebookClient
from jupyter_cache import get_cache

path = sys.argv[1]
cache = get_cache(os.getenv("JUPYTERCACHE", ".jupyter_cache"))
nb = nbformat.read(path, as_version=4)
try:
    record = cache.match_cache_notebook(nb)
except KeyError:
    NotebookClient(nb, timeout=60).execute(cwd=os.path.dirname(path))
    executed = path + ".executed.ipynb"
    nbformat.write(nb, executed)
    cache.cache_notebook_file(executed, overwrite=True)
    how = "ran"
else:
    nb = cache.get_cache_bundle(record.pk).nb
    how = f"cache {record.pk}"
outputs = [c.outputs[0]["text"] for c in nb.cells if c.cell_type == "code"]
print(json.dumps({"how": how, "outputs": outputs}))
"""

# MyST-NB 1.x's NotebookClientCache.start_client (nb_execution_mode = "cache"), call for call.
MYST_NB_CACHE_CLIENT = """
import json, os, sys
from contextlib import suppress
import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.cache.db import NbProjectRecord
from jupyter_cache.executors.utils import single_nb_execution

path, cache_path = sys.argv[1], sys.argv[2]
read_fmt = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
notebook = nbformat.read(path, 4) if read_fmt is None else __import__("jupytext").read(path)
cache = get_cache(cache_path)
cache_record = None
with suppress(KeyError):
    cache_record = cache.match_cache_notebook(notebook)
if cache_record is not None:
    _, notebook = cache.merge_match_into_notebook(notebook)
    meta = {"how": "cached", "mtime": cache_record.created.timestamp(),
            "runtime": cache_record.data.get("execution_seconds", None)}
else:
    if read_fmt is not None:
        stage_record = cache.add_nb_to_project(path, read_data=read_fmt)
    else:
        stage_record = cache.add_nb_to_project(path)
    NbProjectRecord.remove_tracebacks([stage_record.pk], cache.db)
    result = single_nb_execution(notebook, cwd=os.path.dirname(path), allow_errors=False, timeout=30,
                                 meta_override=True)
    if result.err is not None:
        NbProjectRecord.set_traceback(stage_record.uri, result.exc_string, cache.db)
        meta = {"how": "failed", "error": result.err.__class__.__name__}
    else:
        cache_record = cache.cache_notebook_bundle(
            CacheBundleIn(notebook, stage_record.uri, data={"execution_seconds": result.time}),
            check_validity=False, overwrite=True)
        meta = {"how": "ran", "pk": cache_record.pk}
meta["outputs"] = [o.get("text", o.get("ename")) for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
print(json.dumps(meta))
"""


def _run(script: str, *args: str, cwd: Path, env_extra: dict | None = None) -> dict:
    """Run script in a fresh interpreter with nbstore's compat folder first on PYTHONPATH; return its JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([nbstore.compat_path(), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compat_path_holds_the_package_and_is_not_installed():
    """`nbstore compat-path` prints compat_path(), which holds jupyter_cache; plain `import jupyter_cache` is not it."""
    out = subprocess.run(
        [sys.executable, "-m", "nbstore", "compat-path"], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == nbstore.compat_path()
    assert Path(nbstore.compat_path()).name == "compat"
    assert (Path(nbstore.compat_path()) / "jupyter_cache" / "__init__.py").is_file()
    probe = "import importlib.util as u; s = u.find_spec('jupyter_cache'); print(s.origin if s else '')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert not found.stdout.strip().startswith(nbstore.compat_path())


def test_compat_import_paths(tmp_path):
    """Every jupyter-cache 1.0 import path tools use resolves to nbstore's objects, and __version__ is 1.0.1."""
    script = """
import json, nbstore, nbstore.base, nbstore.errors, nbstore.executors.runner
import jupyter_cache
from jupyter_cache import get_cache, __version__
from jupyter_cache.base import CacheBundleIn, CacheBundleOut, NbValidityError, CachingError, RetrievalError
from jupyter_cache.cache.main import JupyterCacheBase
from jupyter_cache.cache.db import NbProjectRecord, NbCacheRecord
from jupyter_cache.executors import load_executor, list_executors
from jupyter_cache.executors.utils import single_nb_execution
from jupyter_cache.utils import tabulate_cache_records, tabulate_project_records
from jupyter_cache.readers import get_reader, DEFAULT_READ_DATA
cache = get_cache("store")
print(json.dumps({
    "file": jupyter_cache.__file__, "version": __version__,
    "bundle": CacheBundleIn is nbstore.base.CacheBundleIn and CacheBundleOut is nbstore.NbBundleOut,
    "errors": NbValidityError is nbstore.errors.NbValidityError and CachingError is nbstore.errors.CachingError,
    "cache": isinstance(cache, nbstore.NbStore) and isinstance(cache, JupyterCacheBase),
    "records": issubclass(NbProjectRecord, nbstore.NbProjectRecord)
    and issubclass(NbCacheRecord, nbstore.NbCacheRecord),
    "executors": sorted(list_executors()), "executor": type(load_executor("local-serial", cache)).__name__,
    "reader": get_reader(dict(DEFAULT_READ_DATA)).__name__,
    "exists_before_write": cache.path.exists(),
}))
"""
    out = _run(script, cwd=tmp_path)
    assert out["file"].startswith(nbstore.compat_path())
    assert out["version"] == "1.0.1"
    assert out["bundle"] and out["errors"] and out["cache"] and out["records"]
    assert {"local-serial", "local-parallel", "temp-serial", "temp-parallel"} <= set(out["executors"])
    assert out["executor"] == "LocalSerialExecutor"
    assert out["reader"] == "read_nbformat"
    assert out["exists_before_write"] is False


def test_quarto_runner_caches_in_an_nbstore_store(tmp_path):
    """Quarto's calls run a notebook once, then serve its outputs from an nbstore store; a code edit misses."""
    nb_path = write_nb(tmp_path / "doc.ipynb", make_nb(["print(6 * 7)"], executed=False))
    env = {"JUPYTERCACHE": str(tmp_path / "qcache")}
    with process_guard():
        first = _run(QUARTO_RUNNER, str(nb_path), cwd=tmp_path, env_extra=env)
        second = _run(QUARTO_RUNNER, str(nb_path), cwd=tmp_path, env_extra=env)
        nb = json.loads(nb_path.read_text())
        nb["cells"][0]["source"] = "# a new title"
        write_nb(nb_path, nb)
        prose = _run(QUARTO_RUNNER, str(nb_path), cwd=tmp_path, env_extra=env)
        nb["cells"][1]["source"] = "print(6 * 9)"
        write_nb(nb_path, nb)
        code = _run(QUARTO_RUNNER, str(nb_path), cwd=tmp_path, env_extra=env)
    assert first == {"how": "ran", "outputs": ["42\n"]}
    assert second == {"how": "cache 1", "outputs": ["42\n"]} == prose
    assert code == {"how": "ran", "outputs": ["54\n"]}
    store = get_cache(tmp_path / "qcache")
    assert (tmp_path / "qcache" / "nbstore.json").is_file() and not (tmp_path / "qcache" / "global.db").exists()
    assert [r.pk for r in store.list_cache_records()] == [1, 2]
    assert store.verify().ok


def test_myst_nb_cache_client_calls(tmp_path):
    """MyST-NB's cache-mode calls: run and cache, then merge from cache; a failure sets the project traceback."""
    good = write_nb(tmp_path / "good.ipynb", make_nb(["print('hello')"], executed=False))
    bad = write_nb(tmp_path / "bad.ipynb", make_nb(["raise ValueError('oopsie')"], executed=False))
    cache_path = str(tmp_path / ".jupyter_cache")
    with process_guard():
        ran = _run(MYST_NB_CACHE_CLIENT, str(good), cache_path, cwd=tmp_path)
        cached = _run(MYST_NB_CACHE_CLIENT, str(good), cache_path, cwd=tmp_path)
        failed = _run(MYST_NB_CACHE_CLIENT, str(bad), cache_path, cwd=tmp_path)
    assert ran == {"how": "ran", "pk": 1, "outputs": ["hello\n"]}
    assert cached["how"] == "cached" and cached["outputs"] == ["hello\n"] and cached["runtime"] > 0
    assert failed["how"] == "failed" and failed["error"] == "CellExecutionError"
    store = get_cache(cache_path)
    assert [r.uri for r in store.list_staged_records()] == [str(good), str(bad)]
    assert store.get_staged_record(str(good)).traceback == ""
    assert "ValueError: oopsie" in re.sub(r"\x1b\[[0-9;]*m", "", store.get_staged_record(str(bad)).traceback)
    # nbstore's own view of the same store: the good notebook is up to date, the bad one outdated.
    assert [r.uri for r in store.list_staged_unexecuted()] == [str(bad)]


def test_myst_nb_cache_client_text_notebook(tmp_path):
    """A MyST Markdown notebook added with read_data (jupytext) is cached under its .md path; prose edits hit."""
    pytest.importorskip("jupytext", reason="the jupytext extra is not installed")
    md = tmp_path / "page.md"
    md.write_text(
        textwrap.dedent(
            """\
            ---
            jupytext:
              text_representation:
                extension: .md
                format_name: myst
            kernelspec:
              name: python3
              display_name: Python 3
            ---
            # A page

            ```{code-cell} ipython3
            print(1 + 1)
            ```
            """
        )
    )
    cache_path = str(tmp_path / ".jupyter_cache")
    read_fmt = json.dumps({"name": "jupytext", "type": "plugin"})
    with process_guard():
        ran = _run(MYST_NB_CACHE_CLIENT, str(md), cache_path, read_fmt, cwd=tmp_path)
        md.write_text(md.read_text().replace("# A page", "# A page, reworded"))
        cached = _run(MYST_NB_CACHE_CLIENT, str(md), cache_path, read_fmt, cwd=tmp_path)
    assert ran["how"] == "ran" and ran["outputs"] == ["2\n"]
    assert cached["how"] == "cached" and cached["outputs"] == ["2\n"]
    store = get_cache(cache_path)
    record = store.get_project_record(str(md))
    assert record.reader == "jupytext"
    assert store.get_cached_project_nb(str(md)).pk == 1
