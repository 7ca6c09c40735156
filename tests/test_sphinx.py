"""nbstore.sphinx: real Sphinx builds of a MyST-NB project (notebooks, MyST Markdown, a failing one) on a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="the Sphinx tests need the extra: pip install -e '.[sphinx]'")
pytest.importorskip("myst_nb", reason="the Sphinx tests need the extra: pip install -e '.[sphinx]'")
pytest.importorskip("jupytext", reason="the py:percent notebook needs the extra: pip install -e '.[jupytext]'")

from nbstore import get_cache  # noqa: E402
from tests.conftest import make_nb, write_nb  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def readme_conf() -> str:
    """The conf.py lines of the README's "Docs builds" section: the tests build what a user is told to write."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Docs builds") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


# Two workers whatever the machine; tracebacks in the log, so that the tests can see MyST-NB's report;
# py:percent notebooks as MyST-NB's documentation shows them.
CONF = readme_conf() + (
    'nbstore_workers = 2\nnb_execution_show_tb = True\nexclude_patterns = ["_build"]\n'
    'nb_custom_formats = {".pct.py": ["jupytext.reads", {"fmt": "py:percent"}]}\n'
)

INDEX = """\
# Book

```{toctree}
alpha
beta
gamma
delta
failing
static
about
```

```{nb-exec-table}
```
"""

GAMMA = """\
---
file_format: mystnb
kernelspec:
  name: python3
  display_name: Python 3
---

# Gamma

```{code-cell} ipython3
import os
with open(os.environ["NBSTORE_TEST_RUNS"], "a") as f:
    f.write("gamma\\n")
print("GAMMA-" + str(6 * 7))
```
"""

DELTA = """\
# %% [markdown]
# # Delta

# %%
import os
with open(os.environ["NBSTORE_TEST_RUNS"], "a") as f:
    f.write("delta\\n")
print("DELTA-" + "PCT")
"""

# A kernelspec named python3 that notes each start before becoming ipykernel: proof of what really ran.
KERNEL_WRAPPER = """\
import os, sys
with open(os.environ["NBSTORE_TEST_KERNELS"], "a") as f:
    f.write(f"{os.getpid()}\\n")
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


def _code(name: str, text: str) -> list[str]:
    return [
        f"import os\nwith open(os.environ['NBSTORE_TEST_RUNS'], 'a') as f:\n    f.write('{name}\\n')",
        # Split in the source, whole only in the output: finding the text in a page proves the output is there.
        f"print({text[:2]!r} + {text[2:]!r})",
    ]


def _notebook(name: str, text: str, prose: str, *, meta: dict | None = None) -> dict:
    nb = make_nb(_code(name, text), executed=False, meta=meta)
    nb["cells"][0]["source"] = f"# {name.title()}\n\n{prose}"
    return nb


class Project:
    """A Sphinx + MyST-NB project in a folder, built with the real sphinx-build in a fresh process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        self.src.mkdir(parents=True)
        (self.src / "conf.py").write_text(CONF)
        (self.src / "index.md").write_text(INDEX)
        (self.src / "about.md").write_text("# About\n\nA plain page.\n")
        write_nb(self.src / "alpha.ipynb", _notebook("alpha", "ALPHA-1", "Prose one."))
        write_nb(self.src / "beta.ipynb", _notebook("beta", "BETA-1", "Prose two."))
        (self.src / "gamma.md").write_text(GAMMA)
        (self.src / "delta.pct.py").write_text(DELTA)
        failing = make_nb(["raise ValueError('boom-' + 'xyz')"], executed=False)
        write_nb(self.src / "failing.ipynb", failing)
        # Per-notebook MyST-NB metadata turns execution off: the first phase must leave it alone too.
        static = _notebook("static", "STATIC", "Not run.", meta={"mystnb": {"execution_mode": "off"}})
        write_nb(self.src / "static.ipynb", static)
        kernels = root / "jupyter" / "kernels" / "python3"
        kernels.mkdir(parents=True)
        (root / "jupyter" / "wrapper.py").write_text(KERNEL_WRAPPER)
        spec = {
            "argv": [sys.executable, str(root / "jupyter" / "wrapper.py"), "-f", "{connection_file}"],
            "display_name": "Python 3 (counted)",
            "language": "python",
        }
        (kernels / "kernel.json").write_text(json.dumps(spec))
        self.runs_log = root / "runs.log"
        self.kernels_log = root / "kernels.log"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def build(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        """Run sphinx-build; return the finished process (its output is kept for the assertions)."""
        self.runs_log.write_text("")
        self.kernels_log.write_text("")
        env = dict(os.environ)
        env.update(
            JUPYTER_PATH=str(self.root / "jupyter"),
            NBSTORE_TEST_RUNS=str(self.runs_log),
            NBSTORE_TEST_KERNELS=str(self.kernels_log),
            PYTHONWARNINGS="ignore",
        )
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", *args, str(self.src), str(self.out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        if ok:
            assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}\n{done.stderr}"
        return done

    def runs(self) -> list[str]:
        return sorted(self.runs_log.read_text().split())

    def kernel_starts(self) -> int:
        return len(self.kernels_log.read_text().split())

    def page(self, name: str) -> str:
        return (self.out / f"{name}.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """One project that the ordered tests below build cold, warm, after a prose edit and after a code edit."""
    return Project(tmp_path_factory.mktemp("book"))


def test_cold_build_runs_each_notebook_once_and_serves_outputs(project: Project) -> None:
    """Cold: every notebook runs once (the failing one too, not twice), outputs and MyST-NB's reports appear."""
    done = project.build()
    assert project.runs() == ["alpha", "beta", "delta", "gamma"]
    assert project.kernel_starts() == 5  # alpha, beta, gamma, delta and the failing one; static is off
    assert "ALPHA-1" in project.page("alpha")
    assert "GAMMA-42" in project.page("gamma")
    assert "DELTA-PCT" in project.page("delta")
    assert "STATIC" not in project.page("static")  # execution off: no output
    # MyST-NB's own error report, from the first phase's run.
    report = project.out / "reports" / "failing.err.log"
    assert "boom-xyz" in report.read_text()
    assert "Executing notebook failed" in done.stderr and "boom-xyz" in done.stderr
    # MyST-NB's execution statistics table lists the notebooks, the failing one as failed.
    table = project.page("index")
    for name in ("alpha", "beta", "gamma", "failing"):
        assert name in table
    assert "❌" in table and "✅" in table
    store = get_cache(project.src / ".nbstore")
    cached = sorted(Path(r.uri).name for r in store.list_cache_records())
    assert cached == ["alpha.ipynb", "beta.ipynb", "delta.pct.py", "gamma.md"]


def test_warm_build_starts_no_kernel(project: Project) -> None:
    """Warm, with -E (every document read again): no kernel starts; outputs come from the store."""
    done = project.build("-E")
    assert project.kernel_starts() == 0
    assert project.runs() == []
    assert "ALPHA-1" in project.page("alpha") and "GAMMA-42" in project.page("gamma")
    assert "DELTA-PCT" in project.page("delta")
    assert "boom-xyz" in (project.out / "reports" / "failing.err.log").read_text()
    assert "Executing notebook failed" in done.stderr


def test_prose_edit_runs_nothing(project: Project) -> None:
    """A markdown-only edit: the page shows the new prose, with the cached outputs, and nothing runs."""
    nb = json.loads((project.src / "alpha.ipynb").read_text())
    nb["cells"][0]["source"] = "# Alpha\n\nProse edited today."
    write_nb(project.src / "alpha.ipynb", nb)
    project.build()
    assert project.kernel_starts() == 0
    page = project.page("alpha")
    assert "Prose edited today." in page and "ALPHA-1" in page


def test_code_edit_runs_only_that_notebook(project: Project) -> None:
    """A code edit: only that notebook runs, and its page shows the new output."""
    nb = json.loads((project.src / "beta.ipynb").read_text())
    nb["cells"][2]["source"] = "print('BE' + 'TA-TWO')"
    write_nb(project.src / "beta.ipynb", nb)
    project.build()
    assert project.runs() == ["beta"]
    assert project.kernel_starts() == 1
    assert "BETA-TWO" in project.page("beta")
    assert "ALPHA-1" in project.page("alpha")


def test_parallel_readers_from_an_empty_store(tmp_path: Path) -> None:
    """`sphinx -j 2` from an empty store: builds, each notebook runs once, pages have their outputs."""
    project = Project(tmp_path / "book")
    done = project.build("-j", "2")
    assert project.runs() == ["alpha", "beta", "delta", "gamma"]
    assert project.kernel_starts() == 5
    assert "ALPHA-1" in project.page("alpha") and "GAMMA-42" in project.page("gamma")
    assert "Exception occurred" not in done.stderr  # Sphinx's words for a crash
    again = project.build("-j", "2", "-E")
    assert project.kernel_starts() == 0
    assert "BETA-1" in project.page("beta")
    assert "sqlite" not in (done.stderr + again.stderr).lower()


def test_unsupported_myst_nb_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A MyST-NB version the extension was not written for stops the build with a message naming it."""
    import myst_nb
    from sphinx.errors import ExtensionError

    from nbstore.sphinx import mystnb

    monkeypatch.setattr(myst_nb, "__version__", "9.9.0")
    with pytest.raises(ExtensionError, match=r"MyST-NB 1\.4\.x, not 9\.9\.0"):
        mystnb.check_version()


def test_store_path_is_relative_to_conf_py_and_refuses_a_jupyter_cache_folder(tmp_path: Path) -> None:
    """nbstore_cache_path is relative to conf.py's folder, may lie outside the sources, and is never jupyter-cache's."""
    project = Project(tmp_path / "book")
    for name in ("beta.ipynb", "gamma.md", "delta.pct.py", "failing.ipynb", "static.ipynb"):
        (project.src / name).unlink()
    (project.src / "index.md").write_text("# Book\n\n```{toctree}\nalpha\nabout\n```\n")
    old_cache = tmp_path / "book" / "old-cache"
    old_cache.mkdir()
    (old_cache / "global.db").write_bytes(b"")
    (project.src / "conf.py").write_text(CONF.replace('".nbstore"', '"../old-cache"'))
    refused = project.build(ok=False)
    assert refused.returncode != 0
    assert "is a jupyter-cache folder" in refused.stderr and "nbstore import-jupyter-cache" in refused.stderr
    assert project.kernel_starts() == 0
    (project.src / "conf.py").write_text(CONF.replace('".nbstore"', '"../shared-store"'))
    project.build()
    store = get_cache(tmp_path / "book" / "shared-store")
    assert [Path(r.uri).name for r in store.list_cache_records()] == ["alpha.ipynb"]
    assert not (project.src / ".nbstore").exists()
