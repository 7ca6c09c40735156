"""Key rule 2: declared dependency files, environment variables and @kernel, with real files and kernels."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from nbstore import DependencyError, get_cache
from nbstore.executors import load_executor
from tests.conftest import make_nb, write_nb
from tests.executortools import code_nb, log_line, process_guard
from tests.test_readme import repo_copy  # noqa: F401 - a fixture


@pytest.fixture
def guard():
    """Fail the test if a worker or kernel it started outlives it (and kill such a survivor)."""
    with process_guard() as marker:
        yield marker


def _runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _bump_mtime(path: Path) -> None:
    """Give path a new mtime (well clear of the racy window) without changing its content."""
    later = time.time() + 5
    os.utime(path, (later, later))


def _status(cache, pk: int) -> tuple[str | None, str]:
    info = cache.staged_key_infos([pk])[pk]
    reason = cache.outdated_reasons({pk: info}).get(pk, info.error)
    cached = info.key is not None and any(r.hashkey == info.key for r in cache.list_cache_records())
    return ("up to date" if cached else "outdated") if info.key else None, reason


@pytest.mark.kernel
def test_csv_content_not_mtime_decides_and_restoring_hits_the_first_record(tmp_path, guard):
    """A notebook reading a declared CSV re-runs when its content changes, not its mtime; restored, it hits again."""
    log = tmp_path / "runs.log"
    (tmp_path / "data").mkdir()
    csv = tmp_path / "data" / "iris.csv"
    csv.write_text("a,b\n1,2\n")
    nb = code_nb(
        tmp_path / "reader.ipynb",
        log_line(log, "run"),
        "print(open('data/iris.csv').read())",
        meta={"nbstore": {"depends": ["data/*.csv"]}},
    )
    cache = get_cache(tmp_path / ".nbstore")
    pk = cache.stage_notebook_file(nb).pk
    executor = load_executor("local-serial", cache=cache)
    first = executor.run_and_cache()
    assert first.succeeded == [str(nb)]
    record = cache.get_cache_record(first.outcomes[0].cache_pk)
    assert record.key_rule == 2
    assert record.inputs["files"] == {"data/iris.csv": hashlib.sha256(b"a,b\n1,2\n").hexdigest()}
    outputs = cache.get_cache_bundle(record.pk).nb.cells[-1]["outputs"]
    assert outputs[0]["text"].startswith("a,b\n1,2")

    _bump_mtime(csv)
    assert _status(cache, pk) == ("up to date", "")
    assert executor.run_and_cache().outcomes == ()

    csv.write_text("a,b\n3,4\n")
    _bump_mtime(csv)
    assert _status(cache, pk) == ("outdated", "data/iris.csv changed")
    second = executor.run_and_cache()
    assert second.succeeded == [str(nb)]
    assert "3,4" in cache.get_cache_bundle(second.outcomes[0].cache_pk).nb.cells[-1]["outputs"][0]["text"]

    csv.write_text("a,b\n1,2\n")
    _bump_mtime(csv)
    assert cache.get_cache_record_of_staged(pk).pk == record.pk
    assert executor.run_and_cache().outcomes == ()
    assert cache.match_cache_file(nb).pk == record.pk
    assert _runs(log) == ["run", "run"]


@pytest.mark.kernel
def test_env_var_set_changed_unset_each_rerun(tmp_path, guard, monkeypatch):
    """An env var declared at staging enters the key: set, changed and unset (distinct from empty) each re-run."""
    nb = code_nb(tmp_path / "env.ipynb", "import os\nprint(repr(os.environ.get('NBSTORE_T13')))")
    cache = get_cache(tmp_path / ".nbstore")
    pk = cache.stage_notebook_file(nb, env=["NBSTORE_T13"]).pk
    assert cache.get_staged_record(pk).env == ("NBSTORE_T13",)
    executor = load_executor("local-serial", cache=cache)
    seen = []
    for value in (None, "one", "two", "", None):
        if value is None:
            monkeypatch.delenv("NBSTORE_T13", raising=False)
        else:
            monkeypatch.setenv("NBSTORE_T13", value)
        if seen:
            assert _status(cache, pk)[1] in ("NBSTORE_T13 changed", "")
        result = executor.run_and_cache()
        printed = None
        if result.outcomes:
            assert result.succeeded == [str(nb)]
            printed = cache.get_cache_bundle(result.outcomes[0].cache_pk).nb.cells[-1]["outputs"][0]["text"]
        seen.append((value, printed))
    # Four distinct states ran; the final unset hits the record of the first.
    assert seen == [(None, "None\n"), ("one", "'one'\n"), ("two", "'two'\n"), ("", "''\n"), (None, None)]
    record = cache.get_cache_record_of_staged(pk)
    assert record.inputs["env"] == {"NBSTORE_T13": None}
    assert "one" not in json.dumps([r.inputs for r in cache.list_cache_records()])


def test_glob_gaining_a_file_changes_the_key_and_says_so(tmp_path):
    """A `**` glob (reaching outside the notebook's folder) that gains a file gives a new key naming the file."""
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "a.py").write_text("A = 1\n")
    book = tmp_path / "book"
    nb = write_nb(book / "nb.ipynb", make_nb(["import a"], meta={"nbstore": {"depends": ["../src/**/*.py"]}}))
    cache = get_cache(tmp_path / ".nbstore")
    pk = cache.stage_notebook_file(nb).pk
    before = cache.staged_key_infos([pk])[pk]
    assert before.rule == 2 and set(before.inputs["files"]) == {"../src/pkg/a.py"}
    cache.cache_notebook_file(nb)
    assert cache.get_cache_record_of_staged(pk) is not None
    (src / "deep").mkdir()
    (src / "deep" / "b.py").write_text("B = 2\n")
    (src / "notes.txt").write_text("not python\n")
    after = cache.staged_key_infos([pk])[pk]
    assert after.key != before.key
    assert set(after.inputs["files"]) == {"../src/pkg/a.py", "../src/pkg/deep/b.py"}
    assert cache.outdated_reasons({pk: after}) == {pk: "../src/pkg/deep/b.py added"}


def test_declarations_matching_nothing_new_keep_the_key(tmp_path):
    """Declaring, at staging, a file the metadata's glob already matches leaves the key as it was."""
    (tmp_path / "d.csv").write_text("1\n")
    nb = write_nb(tmp_path / "nb.ipynb", make_nb(["1"], meta={"nbstore": {"depends": ["*.csv"]}}))
    cache = get_cache(tmp_path / ".nbstore")
    pk = cache.stage_notebook_file(nb).pk
    key = cache.staged_keys()[pk]
    cache.stage_notebook_file(nb, depends=["d.csv", "./d.csv"])
    assert cache.staged_keys()[pk] == key


def test_a_glob_matching_nothing_errors_that_notebook_only(tmp_path):
    """A glob that matches nothing, or an unreadable file, is an error naming notebook and pattern; others go on."""
    good = write_nb(tmp_path / "good.ipynb", make_nb(["1"]))
    bad = write_nb(tmp_path / "bad.ipynb", make_nb(["2"], meta={"nbstore": {"depends": ["data/*.parquet"]}}))
    (tmp_path / "locked.csv").write_text("x\n")
    cache = get_cache(tmp_path / ".nbstore")
    good_pk = cache.stage_notebook_file(good).pk
    bad_pk = cache.stage_notebook_file(bad).pk
    infos = cache.staged_key_infos()
    assert infos[good_pk].key is not None
    assert infos[bad_pk].key is None and infos[bad_pk].broken == "dependency"
    assert str(bad) in infos[bad_pk].error and "'data/*.parquet' matches no file" in infos[bad_pk].error
    with pytest.raises(DependencyError, match=r"bad\.ipynb.*data/\*\.parquet"):
        cache.match_cache_file(bad)
    if os.geteuid() != 0:  # root reads any file
        locked = write_nb(tmp_path / "locked.ipynb", make_nb(["3"]))
        cache.stage_notebook_file(locked, depends=["locked.csv"])
        (tmp_path / "locked.csv").chmod(0)
        try:
            info = cache.staged_key_infos()[cache.get_staged_record(locked).pk]
        finally:
            (tmp_path / "locked.csv").chmod(0o644)
        assert "locked.csv" in info.error and "cannot be read" in info.error
    result = load_executor("local-serial", cache=cache).run_and_cache(filter_pks=[bad_pk])
    assert result.errored == [str(bad)] and "matches no file" in result.outcomes[0].reason


def test_execution_metadata_enters_the_key_presentation_does_not(tmp_path):
    """skip-execution/raises-exception tags and metadata.execution change a stored notebook's key; remove-input not."""
    cache = get_cache(tmp_path / ".nbstore")
    plain = make_nb(["1", "2"])
    path = write_nb(tmp_path / "nb.ipynb", plain)
    record = cache.cache_notebook_file(path)
    assert record.key_rule == 1
    cosmetic = json.loads(json.dumps(plain))
    cosmetic["cells"][1]["metadata"]["tags"] = ["remove-input", "hide-output"]
    assert cache.match_cache_notebook(cosmetic).pk == record.pk
    for change in ("skip-execution", "raises-exception", "allow_errors"):
        nb = json.loads(json.dumps(plain))
        if change == "allow_errors":
            nb["metadata"]["execution"] = {"allow_errors": True}
        else:
            nb["cells"][2]["metadata"]["tags"] = [change]
        with pytest.raises(KeyError):
            cache.match_cache_notebook(nb)
        other = write_nb(tmp_path / f"{change}.ipynb", nb)
        rec = cache.cache_notebook_file(other)
        assert rec.key_rule == 2 and rec.hashkey != record.hashkey


def test_stage_cli_declares_and_status_explains(tmp_path):
    """`stage add --depends --env` records declarations; status names the changed file; stage show lists inputs."""
    (tmp_path / "data.csv").write_text("1\n")
    write_nb(tmp_path / "nb.ipynb", make_nb(["1"]))
    env = {k: v for k, v in os.environ.items() if k != "NBSTORE_CACHE"}
    env["NBSTORE_T13_CLI"] = "secret-value"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nbstore", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    staged = cli("stage", "add", "nb.ipynb", "--depends", "data.csv", "--env", "NBSTORE_T13_CLI")
    assert staged.returncode == 0, staged.stderr
    assert cli("cache", "add", "nb.ipynb").returncode == 0
    assert json.loads(cli("status", "--json").stdout)[0]["status"] == "up to date"
    (tmp_path / "data.csv").write_text("2\n")
    rows = json.loads(cli("status", "--json").stdout)
    assert (rows[0]["status"], rows[0]["reason"]) == ("outdated", "data.csv changed")
    table = cli("status").stdout
    assert "Reason" in table and "data.csv changed" in table
    env["NBSTORE_T13_CLI"] = "other"
    assert json.loads(cli("status", "--json").stdout)[0]["reason"] == "data.csv changed, NBSTORE_T13_CLI changed"
    shown = cli("stage", "show", "nb.ipynb")
    assert shown.returncode == 0, shown.stderr
    assert "depends data.csv" in shown.stdout and "env NBSTORE_T13_CLI" in shown.stdout
    assert "data.csv  sha256:" + hashlib.sha256(b"2\n").hexdigest()[:16] in shown.stdout
    doc = json.loads(cli("stage", "show", "nb.ipynb", "--json").stdout)
    assert doc["inputs"]["env"] == {"NBSTORE_T13_CLI": hashlib.sha256(b"other").hexdigest()}
    assert "other" not in json.dumps(doc["inputs"])
    for sidecar in (tmp_path / ".nbstore" / "cache").iterdir():
        assert "secret-value" not in sidecar.read_text()


# ------------------------------------------------------------------------------------------ @kernel


def _tiny_wheel(folder: Path, version: str) -> Path:
    """Build a minimal pure-Python wheel by hand (a wheel is a zip with METADATA, WHEEL and RECORD)."""
    name = f"nbstore_t13_tiny-{version}-py3-none-any.whl"
    info = f"nbstore_t13_tiny-{version}.dist-info"
    files = {
        "nbstore_t13_tiny.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: nbstore-t13-tiny\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: nbstore-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*lines, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / name
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.mark.kernel
@pytest.mark.slow
def test_kernel_fingerprint_notices_a_distribution_installed_into_the_kernels_venv(tmp_path, guard, monkeypatch):
    """`env: ["@kernel"]` re-runs a notebook once a distribution is installed where its kernel runs."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The kernel needs ipykernel: the test environment's packages are visible to the throwaway venv.
    outer = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "nbstore_outer.pth").write_text("\n".join(outer) + "\n")
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "t13venv"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "t13", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))

    log = tmp_path / "runs.log"
    nb = code_nb(
        tmp_path / "k.ipynb",
        log_line(log, "run"),
        "import importlib.util\nprint(importlib.util.find_spec('nbstore_t13_tiny') is not None)",
        kernel="t13venv",
        meta={"nbstore": {"env": ["@kernel"]}},
    )
    cache = get_cache(tmp_path / ".nbstore")
    pk = cache.stage_notebook_file(nb).pk
    executor = load_executor("local-serial", cache=cache)
    first = executor.run_and_cache()
    assert first.succeeded == [str(nb)], first.outcomes
    assert cache.get_cache_bundle(first.outcomes[0].cache_pk).nb.cells[-1]["outputs"][0]["text"] == "False\n"
    assert _status(cache, pk) == ("up to date", "")

    wheel = _tiny_wheel(tmp_path, "1.0")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index", "--no-deps"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    assert _status(cache, pk) == ("outdated", "environment changed")
    second = executor.run_and_cache()
    assert second.succeeded == [str(nb)]
    assert cache.get_cache_bundle(second.outcomes[0].cache_pk).nb.cells[-1]["outputs"][0]["text"] == "True\n"
    assert executor.run_and_cache().outcomes == ()
    assert _runs(log) == ["run", "run"]


# ------------------------------------------------------------------------------------------ README


@pytest.mark.kernel
@pytest.mark.slow
def test_readme_dependencies_example_prints_what_the_readme_shows(repo_copy):  # noqa: F811
    """The README's worked example of declared dependencies runs in one shell and prints what it shows."""
    from tests.test_readme import BLOCKS, _env, console_steps, matches

    steps = [s for b in BLOCKS if b["group"] == "dependencies" for s in console_steps(b["code"])]
    assert len(steps) >= 6
    script = []
    for i, (command, _) in enumerate(steps):
        script.append(f"echo '@@step {i}@@'")
        script.append(command)
    env = _env(repo_copy)
    env.pop("MY_SETTING", None)
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script) + "\n"],
        cwd=repo_copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    chunks = re.split(r"^@@step \d+@@\n", proc.stdout, flags=re.M)[1:]
    assert len(chunks) == len(steps), proc.stdout
    for (command, expected), chunk in zip(steps, chunks, strict=True):
        actual = chunk.rstrip("\n").splitlines()
        assert matches(expected, actual), f"$ {command}\n--- README\n" + "\n".join(expected) + "\n--- got\n" + chunk
    assert not (repo_copy / ".nbstore-deps").exists() and not (repo_copy / "iris.ipynb").exists()


def test_a_notebook_object_is_keyed_with_the_path_it_was_read_from(tmp_path, monkeypatch):
    """match/merge of a notebook object with path= resolve its declarations from that file's folder and record."""
    book = tmp_path / "book"
    (book / "data").mkdir(parents=True)
    (book / "data" / "t.csv").write_text("1\n")
    (book / "extra.txt").write_text("x\n")
    path = write_nb(book / "nb.ipynb", make_nb(["print(1)"], meta={"nbstore": {"depends": ["data/*.csv"]}}))
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(path, depends=["extra.txt"])
    record = cache.cache_notebook_file(path)
    nb = json.loads(path.read_text())
    monkeypatch.chdir(tmp_path)  # not the notebook's folder: without path=, data/*.csv matches nothing here
    with pytest.raises(DependencyError, match=r"data/\*\.csv"):
        cache.match_cache_notebook(nb)
    assert cache.match_cache_notebook(nb, path=path).pk == record.pk
    assert cache.key_of_file(path, nb=nb).key == record.hashkey == cache.key_of_file(path).key
    pk, merged = cache.merge_match_into_notebook(nb, path=path)
    assert pk == record.pk and merged["cells"][1]["outputs"][0]["text"] == "out 1\n"
    (book / "extra.txt").write_text("changed\n")  # declared by the stage record only
    with pytest.raises(KeyError):
        cache.match_cache_notebook(nb, path=path)
