"""What a newcomer and a CI pipeline meet on the command line (issue 11): checks, exits, help, names, folders."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from nbstore import get_cache
from nbstore.errors import ArtifactPathError
from tests.test_cli_app import error_lines, executed, fresh, ok, run


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run every command from tmp_path with no NBSTORE_CACHE and no colour forced from outside."""
    for name in ("NBSTORE_CACHE", "FORCE_COLOR", "NO_COLOR", "COLUMNS", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------- status --check


def test_status_check_passes_when_everything_is_up_to_date(cwd):
    """status --check exits 0 when every staged notebook has a cached result (table and JSON alike)."""
    nb = executed(cwd / "a.ipynb")
    ok("cache", "add", nb)
    ok("stage", "add", nb)
    assert "1 up to date" in ok("status", "--check").stdout
    assert json.loads(ok("status", "--check", "--json").stdout)[0]["status"] == "up to date"


def test_status_check_fails_naming_each_stale_notebook(cwd):
    """status --check exits 1 naming every outdated, failed and missing notebook; plain status still exits 0."""
    store = get_cache(cwd / ".nbstore")
    up = executed(cwd / "up.ipynb", ["u = 1"])
    ok("cache", "add", up)
    paths = [up] + [fresh(cwd / f"{name}.ipynb", [f"n = {name!r}"]) for name in ("out", "fail", "gone")]
    ok("stage", "add", *paths)
    store.set_staged_traceback(3, "Traceback\nZeroDivisionError")
    (cwd / "gone.ipynb").unlink()
    assert run("status").exit_code == 0
    checked = run("status", "--check")
    assert checked.exit_code == 1 and "1 up to date, 1 outdated, 1 failed, 1 missing file" in checked.stdout
    assert error_lines(checked) == [
        "Error: 3 staged notebooks are not up to date: out.ipynb (outdated), fail.ipynb (failed), "
        "gone.ipynb (missing file)"
    ]
    as_json = run("status", "--check", "--json")
    assert as_json.exit_code == 1 and len(json.loads(as_json.stdout)) == 4


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command",
    [
        ["stage", "add"],
        ["stage", "remove"],
        ["cache", "add"],
        ["cache", "remove"],
        ["cache", "limit"],
        ["cache", "diff"],
        ["execute"],
        ["match"],
        ["merge"],
    ],
)
def test_help_shows_metavars_a_person_reads(cwd, command):
    """--help writes `NB...`, `PATH`, `N`, never Click's `{NB}`, `<list[Path]>` or `<int range>`."""
    text = ok(*command, "--help").stdout
    assert "{" not in text and "<" not in text, text
    usage = text.splitlines()[0]
    if command in (["stage", "add"], ["cache", "add"], ["match"]):
        assert usage.endswith(" NB..."), usage


def test_help_of_execute_and_limit(cwd):
    """execute --help names its values NAME, N and SECONDS; cache limit's argument is [N]."""
    text = ok("execute", "--help").stdout
    assert "--executor NAME" in text and "--workers N" in text and "--timeout SECONDS" in text
    assert ok("cache", "limit", "--help").stdout.splitlines()[0].endswith(" [N]")


# ---------------------------------------------------------------------------- seconds


def test_tables_show_seconds_as_seconds_and_json_keeps_them(cwd):
    """cache list/show print execution_seconds as '0.63 s'; --json keeps every digit."""
    nb = executed(cwd / "a.ipynb")
    store = get_cache(cwd / ".nbstore")
    store.cache_notebook_file(nb, data={"execution_seconds": 0.6286610199999814, "tag": "x"})
    listed = ok("cache", "list").stdout
    assert '{"execution_seconds": 0.63 s, "tag": "x"}' in listed and "0.62866" not in listed
    shown = ok("cache", "show", "1").stdout
    assert "0.63 s" in shown and "0.62866" not in shown
    assert json.loads(ok("cache", "list", "--json").stdout)[0]["data"]["execution_seconds"] == 0.6286610199999814


# ---------------------------------------------------------------------------- symlinks


def test_symlinked_notebook_has_one_name_in_stage_add_and_status(cwd):
    """A notebook staged through a symlink is reported by the same name by stage add, stage list and status."""
    real = fresh(cwd / "real" / "nb.ipynb")
    os.symlink(real, cwd / "link.ipynb")
    added = ok("stage", "add", "link.ipynb").stdout
    assert added.strip() == "Staged real/nb.ipynb as ID 1"
    assert "real/nb.ipynb" in ok("status").stdout and "link.ipynb" not in ok("status").stdout
    assert "real/nb.ipynb" in ok("stage", "list").stdout


# ---------------------------------------------------------------------------- errors


def test_artifact_path_error_is_also_an_os_error_and_pickles():
    """ArtifactPathError is caught as IOError (jupyter-cache's) and as ValueError, and pickles with its message."""
    exc = ArtifactPathError("artifact out is not a regular file")
    assert isinstance(exc, IOError) and isinstance(exc, ValueError)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is ArtifactPathError and str(back) == str(exc) and back.args == exc.args


def test_folder_artifact_raises_ioerror(cwd):
    """Caching a notebook with a folder as artifact raises what a jupyter-cache caller catches (IOError)."""
    nb = executed(cwd / "a.ipynb")
    (cwd / "out").mkdir()
    with pytest.raises(IOError, match="not a regular file"):
        get_cache(cwd / ".nbstore").cache_notebook_file(nb, artifacts=[cwd / "out"])


# ---------------------------------------------------------------------------- stage add: folders, globs, assets


def _tree(root):
    """Write a docs tree with notebooks in nested, hidden, checkpoint and store folders (and one non-notebook)."""
    for rel in (
        "docs/a.ipynb",
        "docs/sub/b.ipynb",
        "docs/sub/deeper/c.ipynb",
        "docs/.hidden/h.ipynb",
        "docs/sub/.ipynb_checkpoints/b-checkpoint.ipynb",
        "docs/.nbstore/x.ipynb",
    ):
        fresh(root / rel, [f"name = {rel!r}"])
    (root / "docs" / "notes.txt").write_text("not a notebook")


def test_stage_add_folder_stages_every_notebook_below(cwd):
    """stage add FOLDER stages every .ipynb below it, skipping hidden folders, checkpoints and the store itself."""
    _tree(cwd)
    ok("--cache", "docs/store", "cache", "limit", "5")  # a store folder that a plain walk would enter
    fresh(cwd / "docs" / "store" / "tmp" / "inner.ipynb")
    out = ok("--cache", "docs/store", "stage", "add", "docs").stdout.splitlines()
    assert out == [
        "Staged docs/a.ipynb as ID 1",
        "Staged docs/sub/b.ipynb as ID 2",
        "Staged docs/sub/deeper/c.ipynb as ID 3",
    ]


def test_stage_add_expands_a_quoted_glob(cwd):
    """stage add 'docs/**/*.ipynb' (unexpanded by the shell) stages what the pattern matches, hidden ones aside."""
    _tree(cwd)
    out = ok("stage", "add", "docs/sub/**/*.ipynb").stdout.splitlines()
    assert out == ["Staged docs/sub/b.ipynb as ID 1", "Staged docs/sub/deeper/c.ipynb as ID 2"]
    assert ok("stage", "add", "docs/*.ipynb").stdout.splitlines() == ["Staged docs/a.ipynb as ID 3"]


def test_stage_add_folder_or_glob_without_notebooks_is_an_error(cwd):
    """A folder or glob naming no notebook is an error naming it; the other arguments are still staged."""
    _tree(cwd)
    (cwd / "empty").mkdir()
    result = run("stage", "add", "empty", "nothing/*.ipynb", "docs/a.ipynb")
    assert result.exit_code == 1
    assert error_lines(result) == [
        "Error: empty: no notebook (.ipynb) below it",
        "Error: nothing/*.ipynb: no notebook (.ipynb) matches it",
    ]
    assert result.stdout.splitlines() == ["Staged docs/a.ipynb as ID 1"]
    missing = run("stage", "add", "nope.ipynb")
    assert missing.exit_code == 1 and "nope.ipynb" in error_lines(missing)[0]


def test_stage_add_accepts_an_asset_folder(cwd):
    """--asset may name a folder inside the notebook's; the staged bundle holds every file below it."""
    nb = fresh(cwd / "book" / "nb.ipynb")
    (cwd / "book" / "data" / "deep").mkdir(parents=True)
    (cwd / "book" / "data" / "a.csv").write_text("1")
    (cwd / "book" / "data" / "deep" / "b.csv").write_text("2")
    ok("stage", "add", nb, "--asset", "book/data")
    (row,) = json.loads(ok("stage", "list", "--json").stdout)
    assert row["assets"] == [str(cwd / "book" / "data")]
    bundle = get_cache(cwd / ".nbstore").get_staged_notebook(1)
    assert sorted(p.as_posix() for p in bundle.artifacts.relative_paths) == ["data/a.csv", "data/deep/b.csv"]
    (cwd / "outside").mkdir()
    refused = run("stage", "add", nb, "--asset", "outside")
    assert refused.exit_code == 1 and "outside the folder" in error_lines(refused)[0]


# ---------------------------------------------------------------------------- runtime folders


def test_dead_runtime_dirs_skips_links_files_live_runs_and_other_names(tmp_path):
    """Only real folders named nbstore-rt-<pid>-* whose pid is dead are removed; a planted link's target stays."""
    import subprocess
    import sys

    from nbstore.tempdirs import make_runtime_dir, remove_dead_runtime_dirs

    dead = int(subprocess.run([sys.executable, "-c", "print(__import__('os').getpid())"], capture_output=True).stdout)
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    base = tmp_path / "systmp"
    base.mkdir()
    (base / f"nbstore-rt-{dead}-gone").mkdir()
    os.symlink(target, base / f"nbstore-rt-{dead}-link")
    (base / f"nbstore-rt-{dead}-file").write_text("x")
    (base / f"nbstore-rt-{os.getppid()}-parent").mkdir()
    (base / "nbstore-rt-legacy").mkdir()
    (base / "nbstore-run-x").mkdir()
    assert remove_dead_runtime_dirs(str(base), dry_run=True) == [str(base / f"nbstore-rt-{dead}-gone")]
    assert (base / f"nbstore-rt-{dead}-gone").exists()
    assert remove_dead_runtime_dirs(str(base)) == [str(base / f"nbstore-rt-{dead}-gone")]
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [f"nbstore-rt-{dead}-link", f"nbstore-rt-{dead}-file", f"nbstore-rt-{os.getppid()}-parent"]
        + ["nbstore-rt-legacy", "nbstore-run-x"]
    )
    assert (target / "keep.txt").read_text() == "keep"
    import tempfile

    mine = make_runtime_dir()
    try:
        assert os.path.basename(mine).startswith(f"nbstore-rt-{os.getpid()}-")
        assert os.path.dirname(mine) == tempfile.gettempdir()
    finally:
        os.rmdir(mine)


# ---------------------------------------------------------------------------- portable cache records


def _sidecars(store_path):
    return [json.loads(p.read_text()) for p in sorted((store_path / "cache").glob("*.json"))]


def test_cache_record_of_a_notebook_inside_is_stored_relative_and_read_back_absolute(cwd, tmp_path_factory):
    """cache add of a notebook under the store's parent stores its path relative to it; a moved copy reads its own."""
    import shutil

    inside = executed(cwd / "book" / "squares.ipynb", ["s = 1"])
    outside_dir = tmp_path_factory.mktemp("elsewhere")
    outside = executed(outside_dir / "far.ipynb", ["f = 1"])
    ok("cache", "add", "book/squares.ipynb", outside)
    by_pk = {s["pk"]: s for s in _sidecars(cwd / ".nbstore")}
    assert by_pk[1]["uri"] == "book/squares.ipynb" and by_pk[1]["uri_relative"] is True
    assert by_pk[2]["uri"] == str(outside) and "uri_relative" not in by_pk[2]
    listed = json.loads(ok("cache", "list", "--json").stdout)
    assert [r["uri"] for r in listed] == [str(inside), str(outside)]
    assert get_cache(cwd / ".nbstore").get_cache_record(1).uri == str(inside)
    moved = tmp_path_factory.mktemp("clone") / "project"
    shutil.copytree(cwd, moved, symlinks=True)
    clone = get_cache(moved / ".nbstore")
    assert [r.uri for r in clone.list_cache_records()] == [str(moved / "book" / "squares.ipynb"), str(outside)]
    # The table, run from elsewhere, names the clone's file as the current folder sees it.
    os.chdir(moved / "book")
    table = ok("--cache", "../.nbstore", "cache", "list").stdout
    assert " squares.ipynb " in table and "book/squares.ipynb" not in table and str(outside) in table
    assert str(cwd) not in (moved / ".nbstore" / "cache").joinpath(f"{by_pk[1]['hashkey']}.json").read_text()


def test_cache_uri_as_given_when_relative_and_a_marked_uri_never_leaves_the_folder(cwd):
    """A relative or URL uri is kept as given (jupyter-cache's); a marked uri with '..' is handed out unjoined."""
    nb = executed(cwd / "a.ipynb", ["a = 1"])
    store = get_cache(cwd / ".nbstore")
    assert store.cache_notebook_file(nb, uri="docs/a.ipynb").uri == "docs/a.ipynb"
    assert store.get_cache_record(1).uri == "docs/a.ipynb"
    (side,) = _sidecars(cwd / ".nbstore")
    assert "uri_relative" not in side
    path = next((cwd / ".nbstore" / "cache").glob("*.json"))
    side.update(uri="../../etc/passwd", uri_relative=True)
    # As a checkout writes it: a new file in place of the old (the store notices the folder changed).
    (cwd / "edited.json").write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    os.replace(cwd / "edited.json", path)
    (cwd / ".nbstore" / "index").unlink()
    assert get_cache(cwd / ".nbstore").get_cache_record(1).uri == "../../etc/passwd"
