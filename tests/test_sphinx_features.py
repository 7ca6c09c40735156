"""nbstore.sphinx: declared dependencies, nbstore_depends and MyST-NB's cache-mode options, in real Sphinx builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="the Sphinx tests need the extra: pip install -e '.[sphinx]'")
pytest.importorskip("myst_nb", reason="the Sphinx tests need the extra: pip install -e '.[sphinx]'")

from nbstore import get_cache  # noqa: E402
from tests.conftest import make_nb, write_nb  # noqa: E402
from tests.executortools import process_guard  # noqa: E402
from tests.test_sphinx import KERNEL_WRAPPER, readme_conf  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

CONF = readme_conf() + 'nbstore_workers = 2\nnb_execution_show_tb = True\nexclude_patterns = ["_build"]\n'


def _logged(name: str, *code: str) -> list[str]:
    """Code cells that note a run of notebook `name` in the runs log, then run `code`."""
    note = f"import os\nwith open(os.environ['NBSTORE_TEST_RUNS'], 'a') as f:\n    f.write('{name}\\n')"
    return [note, *code]


class Book:
    """A small Sphinx + MyST-NB project built by the real sphinx-build in a process group of its own."""

    def __init__(self, root: Path, *, conf: str = "", notebooks: dict[str, dict] | None = None) -> None:
        self.root = root
        self.src = root / "src"
        self.src.mkdir(parents=True)
        (self.src / "conf.py").write_text(CONF + conf)
        for name, nb in (notebooks or {}).items():
            write_nb(self.src / name, nb)
        docs = sorted(str(Path(n).with_suffix("").as_posix()) for n in (notebooks or {}))
        (self.src / "index.md").write_text("# Book\n\n```{toctree}\n" + "\n".join(docs) + "\n```\n")
        kernels = root / "jupyter" / "kernels" / "python3"
        kernels.mkdir(parents=True)
        self.wrapper = root / "jupyter" / "wrapper.py"
        self.wrapper.write_text(KERNEL_WRAPPER)
        spec = {
            "argv": [sys.executable, str(self.wrapper), "-f", "{connection_file}"],
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
        """Run sphinx-build; return the finished process (output kept for the assertions)."""
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
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        if ok:
            assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}\n{done.stderr}"
        return done

    def runs(self) -> list[str]:
        return sorted(self.runs_log.read_text().split())

    def kernel_starts(self) -> int:
        return len(self.kernels_log.read_text().split())

    def page(self, name: str) -> str:
        return (self.out / f"{name}.html").read_text(encoding="utf-8")


@pytest.fixture
def books(tmp_path: Path):
    """Make Books in tmp_path; a process their builds leave behind (kernel, worker) is killed and fails the test."""
    with process_guard():
        yield lambda **kwargs: Book(tmp_path / f"book{len(list(tmp_path.iterdir()))}", **kwargs)


READ_CSV = "print('CSV:' + open('data/table.csv').read().strip().replace(chr(10), '|'))"


def test_declared_csv_content_change_reruns_only_that_notebook(books) -> None:
    """A notebook declaring a CSV in metadata re-runs when its content changes, not when only its mtime does."""
    reads = make_nb(_logged("reads", READ_CSV), executed=False, meta={"nbstore": {"depends": ["data/*.csv"]}})
    plain = make_nb(_logged("plain", "print('PL' + 'AIN')"), executed=False)
    book = books(notebooks={"reads.ipynb": reads, "plain.ipynb": plain})
    csv = book.src / "data" / "table.csv"
    csv.parent.mkdir()
    csv.write_text("a,b\n1,2\n")
    book.build()
    assert book.runs() == ["plain", "reads"]
    assert "CSV:a,b|1,2" in book.page("reads") and "PLAIN" in book.page("plain")

    csv.write_text("a,b\n3,4\n")
    done = book.build()
    assert book.runs() == ["reads"], done.stderr
    assert book.kernel_starts() == 1
    assert "CSV:a,b|3,4" in book.page("reads") and "PLAIN" in book.page("plain")

    # The same bytes with a newer mtime: Sphinx reads the page again, but the key (content) is a hit.
    stat = csv.stat()
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    book.build()
    assert book.kernel_starts() == 0
    assert "CSV:a,b|3,4" in book.page("reads")

    # Back to the first content: the first record is hit again, nothing runs.
    csv.write_text("a,b\n1,2\n")
    book.build()
    assert book.kernel_starts() == 0
    assert "CSV:a,b|1,2" in book.page("reads")


def test_declared_dependency_matching_nothing_fails_only_that_notebook(books) -> None:
    """A declared glob that matches nothing is reported as that notebook's failure, naming it; the build goes on."""
    broken = make_nb(_logged("broken", "print(1)"), executed=False, meta={"nbstore": {"depends": ["missing/*.csv"]}})
    plain = make_nb(_logged("plain", "print('PL' + 'AIN')"), executed=False)
    book = books(notebooks={"broken.ipynb": broken, "plain.ipynb": plain})
    done = book.build()
    assert book.runs() == ["plain"]
    assert "PLAIN" in book.page("plain")
    assert "missing/*.csv" in done.stderr and "broken.ipynb" in done.stderr
    assert "Executing notebook failed" in done.stderr


def test_nbstore_depends_adds_globs_to_the_notebooks_it_matches(books) -> None:
    """nbstore_depends declares globs for the notebooks it matches, merged with their metadata's; others unaffected."""
    read_shared = "print('CSV:' + open('../data/table.csv').read().strip())"
    one = make_nb(_logged("one", read_shared), executed=False)
    two = make_nb(
        _logged("two", read_shared, "print('NOTES:' + open('notes.txt').read().strip())"),
        executed=False,
        meta={"nbstore": {"depends": ["notes.txt"]}},
    )
    other = make_nb(_logged("other", "print('OTHER:' + open('data/table.csv').read().strip())"), executed=False)
    conf = 'nbstore_depends = {"chapters/*.ipynb": ["../data/*.csv"]}\n'
    book = books(conf=conf, notebooks={"chapters/one.ipynb": one, "chapters/two.ipynb": two, "other.ipynb": other})
    (book.src / "data").mkdir()
    (book.src / "data" / "table.csv").write_text("v1\n")
    (book.src / "chapters" / "notes.txt").write_text("n1\n")
    store = get_cache(book.src / ".nbstore")
    store.stage_notebook_file(book.src / "other.ipynb", depends=["data/*.csv"])  # by hand: the build replaces it
    book.build()
    assert book.runs() == ["one", "other", "two"]
    assert store.get_staged_record(book.src / "chapters" / "one.ipynb").depends == ("../data/*.csv",)
    assert store.get_staged_record(book.src / "other.ipynb").depends == ()

    (book.src / "data" / "table.csv").write_text("v2\n")
    book.build()
    assert book.runs() == ["one", "two"]  # other.ipynb is not matched by the pattern: it keeps its record
    assert "CSV:v2" in book.page("chapters/one") and "CSV:v2" in book.page("chapters/two")
    assert "OTHER:v1" in book.page("other")

    (book.src / "chapters" / "notes.txt").write_text("n2\n")
    book.build()
    assert book.runs() == ["two"]  # the metadata's declaration still counts
    assert "NOTES:n2" in book.page("chapters/two")


def test_nbstore_depends_of_the_wrong_shape_is_a_config_error(books) -> None:
    """nbstore_depends that is not {glob: [glob, ...]} stops the build with a message naming the setting."""
    book = books(conf='nbstore_depends = {"*.ipynb": "data.csv"}\n', notebooks={})
    done = book.build(ok=False)
    assert done.returncode != 0 and "nbstore_depends must map globs of notebooks" in done.stderr


def test_declared_environment_variable_change_reruns_that_notebook(books, monkeypatch) -> None:
    """A notebook declaring an environment variable re-runs when its value changes between builds, not otherwise."""
    monkeypatch.setenv("NBSTORE_TEST_SETTING", "first")
    reads = make_nb(
        _logged("reads", "print('SETTING:' + os.environ['NBSTORE_TEST_SETTING'])"),
        executed=False,
        meta={"nbstore": {"env": ["NBSTORE_TEST_SETTING"]}},
    )
    plain = make_nb(_logged("plain", "print('PL' + 'AIN')"), executed=False)
    book = books(notebooks={"reads.ipynb": reads, "plain.ipynb": plain})
    book.build()
    assert book.runs() == ["plain", "reads"]
    monkeypatch.setenv("NBSTORE_TEST_SETTING", "second")
    book.build()
    assert book.runs() == ["reads"]
    assert "SETTING:second" in book.page("reads")
    book.build()
    assert book.kernel_starts() == 0
    assert "SETTING:second" in book.page("reads")


def test_raise_on_error_stops_the_build_naming_the_failing_notebook(books) -> None:
    """nb_execution_raise_on_error = True: a failing notebook stops the build with an error naming it (run once)."""
    good = make_nb(_logged("good", "print('GO' + 'OD')"), executed=False)
    failing = make_nb(_logged("failing", "raise ValueError('boom-' + 'xyz')"), executed=False)
    book = books(conf="nb_execution_raise_on_error = True\n", notebooks={"good.ipynb": good, "failing.ipynb": failing})
    done = book.build(ok=False)
    assert done.returncode != 0
    assert "ExecutionError" in done.stderr and str(book.src / "failing.ipynb") in done.stderr
    assert book.runs().count("failing") == 1  # the first phase's run is the one reported, not a second


def test_in_temp_runs_the_notebook_outside_its_source_folder(books) -> None:
    """nb_execution_in_temp = True: the notebook's cwd is not its folder and the files it writes stay out of it."""
    writes = make_nb(
        _logged("writes", "print('CW' + 'D:' + os.getcwd())\nopen('written.txt', 'w').write('x')"), executed=False
    )
    book = books(conf="nb_execution_in_temp = True\n", notebooks={"writes.ipynb": writes})
    book.build()
    assert book.runs() == ["writes"]
    page = book.page("writes")
    cwd = page[page.index("CWD:") + 4 :].split("\n")[0].split("<")[0].strip()
    assert Path(cwd).is_absolute() and Path(cwd).resolve() != book.src.resolve(), cwd
    assert book.src.resolve() not in Path(cwd).resolve().parents
    assert not list(book.src.rglob("written.txt")) and not list(book.root.rglob("written.txt"))
    book.build("-E")
    assert book.kernel_starts() == 0 and "CWD:" in book.page("writes")


def test_timeout_allow_errors_and_exclude_patterns_per_notebook(books) -> None:
    """A notebook sleeping past its mystnb timeout fails, others pass; allow_errors keeps errors; excluded don't run."""
    slow = make_nb(
        _logged("slow", "import time\ntime.sleep(60)", "print('SLOW' + 'DONE')"),
        executed=False,
        meta={"mystnb": {"execution_timeout": 2}},
    )
    quick = make_nb(_logged("quick", "print('QUI' + 'CK')"), executed=False)
    erring = ["raise ValueError('ALLOWED-' + 'ERR')", "print('AFTER' + 'ERROR')"]
    allowed = make_nb(_logged("allowed", *erring), executed=False, meta={"mystnb": {"execution_allow_errors": True}})
    strict = make_nb(_logged("strict", *erring), executed=False)
    excluded = make_nb(_logged("excluded", "print('EXCL' + 'UDED')"), executed=False)
    conf = 'nb_execution_timeout = 120\nnb_execution_excludepatterns = ["skipped/*"]\n'
    notebooks = {
        "slow.ipynb": slow,
        "quick.ipynb": quick,
        "allowed.ipynb": allowed,
        "strict.ipynb": strict,
        "skipped/excluded.ipynb": excluded,
    }
    book = books(conf=conf, notebooks=notebooks)
    done = book.build()
    assert book.runs() == ["allowed", "quick", "slow", "strict"]
    assert "QUICK" in book.page("quick")
    assert "SLOWDONE" not in book.page("slow")
    assert "ALLOWED-ERR" in book.page("allowed") and "AFTERERROR" in book.page("allowed")
    assert "AFTERERROR" not in book.page("strict")
    assert "EXCLUDED" not in book.page("skipped/excluded")
    failed = [line for line in done.stderr.splitlines() if "Executing notebook failed" in line]
    assert len(failed) == 2 and any("slow.ipynb" in line for line in failed)
    assert any("strict.ipynb" in line for line in failed)
    # The notebook's own timeout (2 s), not the build's (120 s), in MyST-NB's report.
    assert (
        "timed out while it was being executed, after 2.0 seconds"
        in (book.out / "reports" / "slow.err.log").read_text()
    )
    store = get_cache(book.src / ".nbstore")
    assert sorted(Path(r.uri).name for r in store.list_cache_records()) == ["allowed.ipynb", "quick.ipynb"]
