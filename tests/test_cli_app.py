"""The `nbstore` commands through Typer's test runner, against real stores in tmp_path (no kernels here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbstore import get_cache, notebook_key
from nbstore.cli.app import app
from tests.conftest import make_nb, write_nb

ANSI = "\x1b["


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run every command from tmp_path with no NBSTORE_CACHE and no colour forced from outside."""
    for name in ("NBSTORE_CACHE", "FORCE_COLOR", "NO_COLOR", "COLUMNS", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str, input: str | None = None, env: dict | None = None):
    """Invoke nbstore in-process with separate stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)


def ok(*args: str, **kwargs):
    """Invoke nbstore and insist on exit status 0 (showing stderr otherwise)."""
    result = run(*args, **kwargs)
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def executed(path: Path, sources=("a = 1\nprint(a)",), **kwargs) -> Path:
    return write_nb(path, make_nb(list(sources), **kwargs))


def fresh(path: Path, sources=("a = 1\nprint(a)",)) -> Path:
    return write_nb(path, make_nb(list(sources), executed=False))


# ---------------------------------------------------------------------------- shape of the command


def test_version_and_help(cwd):
    """--version prints the version; --help lists every command; neither creates a store."""
    from nbstore import __version__

    assert ok("--version").stdout.strip() == f"nbstore {__version__}"
    text = ok("--help").stdout
    for name in ("cache", "stage", "execute", "status", "match", "merge", "clear", "verify", "gc"):
        assert name in text
    for group in ("cache", "stage"):
        assert "add" in ok(group, "--help").stdout
    assert not (cwd / ".nbstore").exists()


def test_no_subcommand_shows_help_and_is_a_usage_error(cwd):
    """`nbstore` alone prints the help and exits 2 (a command is missing)."""
    result = run()
    assert result.exit_code == 2
    assert "Usage" in result.stdout and "status" in result.stdout


def test_bad_option_is_one_error_line_with_exit_2(cwd):
    """An unknown option or command, or a missing argument, is a usage error: exit 2, one red line, no traceback."""
    for args in (["cache", "list", "--bogus"], ["bogus"], ["status", "--nope"], ["cache", "add"], ["match"], ["merge"]):
        result = run(*args)
        assert result.exit_code == 2, args
        assert len(error_lines(result)) == 1, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["cache", "list"],
        ["cache", "list", "--json"],
        ["cache", "show", "1"],
        ["cache", "limit"],
        ["cache", "remove", "--all"],
        ["cache", "cat-artifact", "1", "x.txt"],
        ["stage", "list", "--json"],
        ["stage", "show", "1"],
        ["stage", "remove", "--all"],
        ["match", "nb.ipynb"],
        ["merge", "nb.ipynb"],
        ["clear", "--yes"],
        ["verify"],
        ["gc", "--dry-run"],
    ],
)
def test_read_only_command_on_missing_store_says_so(cwd, args):
    """A command that only reads (or removes) says there is no store, exits 1 and creates nothing."""
    fresh(cwd / "nb.ipynb")
    result = run(*args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert error_lines(result) == [error_lines(result)[0]] and "there is no store at .nbstore" in result.stderr
    assert result.stdout == ""
    assert not (cwd / ".nbstore").exists()


@pytest.mark.parametrize("args", [["status"], ["cache", "list"], ["stage", "add", "nb.ipynb"]])
def test_a_file_given_as_the_store_is_named_as_one(cwd, args):
    """--cache naming a file, for reading or writing, is one error line that says it is a file; the file stays."""
    fresh(cwd / "nb.ipynb")
    (cwd / "notes.txt").write_text("mine")
    result = run("--cache", "notes.txt", *args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    [line] = error_lines(result)
    assert line.startswith("Error: ") and line.endswith("notes.txt is a file, not a store folder")
    assert (cwd / "notes.txt").read_text() == "mine"


def test_store_location_option_env_and_default(cwd):
    """--cache wins over NBSTORE_CACHE, which wins over .nbstore in the current folder."""
    nb = fresh(cwd / "nb.ipynb")
    ok("stage", "add", nb)
    assert get_cache(cwd / ".nbstore").list_staged_records()[0].uri == str(nb)
    ok("stage", "add", nb, env={"NBSTORE_CACHE": str(cwd / "from-env")})
    assert get_cache(cwd / "from-env").exists()
    ok("--cache", cwd / "from-option", "stage", "add", nb, env={"NBSTORE_CACHE": str(cwd / "from-env2")})
    assert get_cache(cwd / "from-option").exists() and not (cwd / "from-env2").exists()
    rows = json.loads(ok("-c", "from-option", "status", "--json").stdout)
    assert [r["uri"] for r in rows] == [str(nb)]


def test_store_that_is_a_file_is_an_error_with_traceback_only_when_verbose(cwd):
    """A store path that is a file fails with one line; --verbose adds the traceback."""
    (cwd / "file").write_text("x")
    nb = fresh(cwd / "nb.ipynb")
    plain = run("--cache", "file", "stage", "add", nb)
    assert plain.exit_code == 1
    assert error_lines(plain) == ["Error: " + str(cwd / "file") + " is a file, not a store folder"]
    assert "Traceback" not in plain.stderr
    verbose = run("--verbose", "--cache", "file", "stage", "add", nb)
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert "StoreFormatError" in verbose.stderr


# ---------------------------------------------------------------------------- cache


def test_cache_add_list_show(cwd):
    """cache add prints the new ID; list and show give the record, as a table and as parsed JSON."""
    nb = executed(cwd / "nbs" / "a.ipynb")
    assert ok("cache", "add", nb).stdout.strip() == f"Cached {nb} as ID 1"
    listing = ok("cache", "list").stdout
    assert "nbs/a.ipynb" in listing and " 1 " in f" {listing} "
    (rec,) = json.loads(ok("cache", "list", "--json").stdout)
    key = notebook_key(json.loads(nb.read_text()))
    assert rec["pk"] == 1 and rec["hashkey"] == key and rec["uri"] == str(nb)
    assert rec["created"].endswith("Z") and rec["artifacts"] == {} and rec["data"] == {}
    shown = json.loads(ok("cache", "show", "1", "--json").stdout)
    assert shown == rec
    text = ok("cache", "show", "1").stdout
    assert key in text and "nbs/a.ipynb" in text
    assert key in ok("cache", "list", "--hashkeys").stdout and key not in listing


def test_cache_add_several_continues_past_bad_ones(cwd):
    """Each bad notebook gets its own error line (missing, not a notebook, unexecuted); the good ones are cached."""
    good = executed(cwd / "good.ipynb")
    (cwd / "bad.ipynb").write_text('{"cells": []}')
    (cwd / "junk.ipynb").write_bytes(b"\xff\xfe not json")
    unexecuted = fresh(cwd / "fresh.ipynb", ["b = 2"])
    result = run("cache", "add", "missing.ipynb", "bad.ipynb", good, "junk.ipynb", unexecuted)
    assert result.exit_code == 1
    errors = error_lines(result)
    assert len(errors) == 4, result.stderr
    assert "notebook not found: missing.ipynb" in errors[0]
    assert errors[1].startswith("Error: bad.ipynb: not a notebook")
    assert errors[2].startswith("Error: junk.ipynb: not a notebook")
    assert "fresh.ipynb" in errors[3] and "--no-validate" in errors[3]
    assert result.stdout.strip() == f"Cached {good} as ID 1"
    assert [r.pk for r in get_cache(cwd / ".nbstore").list_cache_records()] == [1]
    ok("cache", "add", "--no-validate", unexecuted)
    assert len(get_cache(cwd / ".nbstore").list_cache_records()) == 2


def test_cache_add_twice_needs_overwrite(cwd):
    """Adding a notebook already cached names its ID and exits 1; --overwrite replaces it."""
    nb = executed(cwd / "a.ipynb")
    ok("cache", "add", nb)
    again = run("cache", "add", nb)
    assert again.exit_code == 1
    assert error_lines(again) == [f"Error: {nb}: already cached as ID 1 (--overwrite replaces it)"]
    ok("cache", "add", "--overwrite", nb)
    assert [r.pk for r in get_cache(cwd / ".nbstore").list_cache_records()] == [2]


def test_cache_artifacts_and_cat_artifact(cwd):
    """--artifact stores files from the notebook's folder; cat-artifact writes their exact bytes to stdout."""
    nb = executed(cwd / "nbs" / "a.ipynb")
    (cwd / "nbs" / "out").mkdir()
    blob = bytes(range(256)) * 3
    (cwd / "nbs" / "out" / "data.bin").write_bytes(blob)
    (cwd / "outside.txt").write_text("no")
    bad = run("cache", "add", nb, "--artifact", "outside.txt")
    assert bad.exit_code == 1 and "outside" in error_lines(bad)[0]
    assert "1 artifact" in ok("cache", "add", nb, "--artifact", "nbs/out/data.bin").stdout
    assert json.loads(ok("cache", "show", "1", "--json").stdout)["artifacts"].keys() == {"out/data.bin"}
    assert ok("cache", "cat-artifact", "1", "out/data.bin").stdout_bytes == blob
    missing = run("cache", "cat-artifact", "1", "nope.txt")
    assert missing.exit_code == 1 and "it has: out/data.bin" in error_lines(missing)[0]


def test_cache_list_latest_only(cwd):
    """--latest-only keeps the newest record of each origin."""
    nb = executed(cwd / "a.ipynb", ["x = 1"])
    other = executed(cwd / "b.ipynb", ["y = 1"])
    ok("cache", "add", nb, other)
    executed(nb, ["x = 2"])
    ok("cache", "add", nb)
    assert [r["pk"] for r in json.loads(ok("cache", "list", "--json").stdout)] == [1, 2, 3]
    latest = json.loads(ok("cache", "list", "--latest-only", "--json").stdout)
    assert [(r["pk"], Path(r["uri"]).name) for r in latest] == [(2, "b.ipynb"), (3, "a.ipynb")]


def test_cache_ids_are_validated(cwd):
    """A malformed cache ID is a usage error (2); a well-formed unknown one is a failure (1)."""
    ok("cache", "add", executed(cwd / "a.ipynb"))
    for bad in ("x", "0", "-1", "1.5"):
        result = run("cache", "show", bad)
        assert result.exit_code == 2, (bad, result.stderr)
        assert len(error_lines(result)) == 1
    unknown = run("cache", "show", "99")
    assert unknown.exit_code == 1
    assert error_lines(unknown) == ["Error: no cached notebook has ID 99 (see `nbstore cache list`)"]


def test_cache_remove(cwd):
    """remove takes IDs or --all (exactly one of them); an unknown ID fails without stopping the others."""
    ok("cache", "add", executed(cwd / "a.ipynb", ["a"]), executed(cwd / "b.ipynb", ["b"]), executed(cwd / "c.ipynb"))
    assert run("cache", "remove").exit_code == 2
    assert run("cache", "remove", "1", "--all").exit_code == 2
    result = run("cache", "remove", "7", "1")
    assert result.exit_code == 1 and error_lines(result) == ["Error: no cached notebook has ID 7"]
    assert [r.pk for r in get_cache(cwd / ".nbstore").list_cache_records()] == [2, 3]
    ok("cache", "remove", "--all")
    assert get_cache(cwd / ".nbstore").list_cache_records() == []
    assert [p for p in (cwd / ".nbstore" / "objects").rglob("*") if p.is_file()] == []


def test_cache_diff(cwd):
    """diff exits 0 when nothing differs, 1 with nbdime's diff when it does, 2 when it cannot compare."""
    pytest.importorskip("nbdime")
    nb = executed(cwd / "a.ipynb", ["x = 1"])
    ok("cache", "add", nb)
    same = ok("cache", "diff", "1", nb)
    assert same.stdout == "" and "does not differ from cache ID 1" in same.stderr
    executed(nb, ["x = 12345"])
    changed = run("cache", "diff", "1", nb)
    assert changed.exit_code == 1 and error_lines(changed) == []
    assert "x = 12345" in changed.stdout and "cached pk=1" in changed.stdout
    missing = run("cache", "diff", "1", "missing.ipynb")
    assert missing.exit_code == 2 and "missing.ipynb" in error_lines(missing)[0]
    unknown = run("cache", "diff", "5", nb)
    assert unknown.exit_code == 2
    assert error_lines(unknown) == ["Error: no cached notebook has ID 5 (see `nbstore cache list`)"]
    (cwd / "bad.ipynb").write_text("not json")
    assert run("cache", "diff", "1", "bad.ipynb").exit_code == 2
    assert run("--cache", "nowhere", "cache", "diff", "1", nb).exit_code == 2


def test_cache_limit(cwd):
    """limit prints the limit; limit N sets it and evicts; N must be positive."""
    for i in range(3):
        ok("cache", "add", executed(cwd / f"n{i}.ipynb", [f"v = {i}"]))
    assert ok("cache", "limit").stdout.strip() == "1000"
    assert "evicted 2" in ok("cache", "limit", "1").stdout
    assert ok("cache", "limit").stdout.strip() == "1"
    assert [r.pk for r in get_cache(cwd / ".nbstore").list_cache_records()] == [3]
    assert run("cache", "limit", "0").exit_code == 2


# ---------------------------------------------------------------------------- stage


def test_stage_add_list_show_remove(cwd):
    """Stage notebooks with assets, list and show them (by ID and by path), then unstage them."""
    a = fresh(cwd / "nbs" / "a.ipynb", ["a = 1"])
    b = fresh(cwd / "nbs" / "b.ipynb", ["b = 1"])
    (cwd / "nbs" / "data.csv").write_text("1,2\n")
    out = ok("stage", "add", a, b, "--asset", "nbs/data.csv").stdout.splitlines()
    # Named as status names them (relative to the current folder), whatever form the argument took.
    assert out == ["Staged nbs/a.ipynb as ID 1", "Staged nbs/b.ipynb as ID 2"]
    rows = json.loads(ok("stage", "list", "--json").stdout)
    assert [(r["pk"], r["uri"], r["assets"], r["cache_pk"], r["failed"]) for r in rows] == [
        (1, str(a), [str(cwd / "nbs" / "data.csv")], None, False),
        (2, str(b), [str(cwd / "nbs" / "data.csv")], None, False),
    ]
    assert "nbs/a.ipynb" in ok("stage", "list").stdout
    by_id = json.loads(ok("stage", "show", "2", "--json").stdout)
    by_path = json.loads(ok("stage", "show", "nbs/b.ipynb", "--json").stdout)
    assert (
        by_id == by_path
        and by_id["status"] == "outdated"
        and by_id["hashkey"] == notebook_key(json.loads(b.read_text()))
    )
    assert "nbs/data.csv" in ok("stage", "show", "1").stdout
    assert ok("stage", "remove", "1").stdout.strip() == "Unstaged ID 1"
    assert ok("stage", "remove", "nbs/b.ipynb").stdout.strip() == "Unstaged nbs/b.ipynb"
    assert json.loads(ok("stage", "list", "--json").stdout) == []
    assert "Nothing is staged" in ok("stage", "list").stderr


def test_stage_errors(cwd):
    """Bad stage input: missing file and non-notebook (1), asset outside (1), bad ID (2), unknown ID or path (1)."""
    fresh(cwd / "a.ipynb")
    (cwd / "notes.txt").write_text("hello")
    result = run("stage", "add", "missing.ipynb", "notes.txt", "a.ipynb")
    assert result.exit_code == 1 and len(error_lines(result)) == 2
    assert "notebook not found: missing.ipynb" in error_lines(result)[0]
    assert "notes.txt: not a notebook" in error_lines(result)[1]
    (cwd / "elsewhere").mkdir()
    (cwd / "elsewhere" / "x.csv").write_text("x")
    (cwd / "sub").mkdir()
    inner = fresh(cwd / "sub" / "b.ipynb", ["b"])
    outside = run("stage", "add", inner, "--asset", "elsewhere/x.csv")
    assert outside.exit_code == 1 and "outside" in error_lines(outside)[0]
    assert run("stage", "show", "0").exit_code == 2
    unknown = run("stage", "show", "42")
    assert unknown.exit_code == 1 and "no staged notebook has ID 42" in error_lines(unknown)[0]
    unstaged = run("stage", "show", "notes.txt")
    assert unstaged.exit_code == 1 and "notes.txt is not staged" in error_lines(unstaged)[0]
    assert run("stage", "remove").exit_code == 2
    assert run("stage", "remove", "1", "--all").exit_code == 2
    assert run("stage", "remove", "9").exit_code == 1
    ok("stage", "remove", "--all")
    assert get_cache(cwd / ".nbstore").list_staged_records() == []


def test_stage_show_prints_the_traceback_of_a_failed_run(cwd):
    """A staged notebook whose last run failed shows status failed and the recorded traceback."""
    nb = fresh(cwd / "a.ipynb", ["raise ValueError('boom')"])
    ok("stage", "add", nb)
    get_cache(cwd / ".nbstore").set_staged_traceback(1, "Traceback...\nValueError: boom")
    text = ok("stage", "show", "1").stdout
    assert "failed" in text and "ValueError: boom" in text
    assert json.loads(ok("stage", "show", "1", "--json").stdout)["traceback"].endswith("ValueError: boom")
    assert json.loads(ok("stage", "list", "--json").stdout)[0]["failed"] is True


# ---------------------------------------------------------------------------- status, match, merge


def test_status_shows_every_state(cwd):
    """status gives up to date (with cache ID, last run, seconds), outdated, failed, missing file and unreadable."""
    store = get_cache(cwd / ".nbstore")
    paths = {name: fresh(cwd / f"{name}.ipynb", [f"name = {name!r}"]) for name in ("up", "out", "fail", "gone", "bad")}
    ok("stage", "add", *paths.values())
    executed_copy = executed(cwd / "executed" / "up.ipynb", ["name = 'up'"])
    record = store.cache_notebook_file(executed_copy, uri=str(paths["up"]), data={"execution_seconds": 1.25})
    store.set_staged_traceback(3, "Traceback\nZeroDivisionError")
    paths["gone"].unlink()
    paths["bad"].write_text("not json")
    rows = json.loads(ok("status", "--json").stdout)
    assert [(r["pk"], r["status"], r["cache_pk"]) for r in rows] == [
        (1, "up to date", record.pk),
        (2, "outdated", None),
        (3, "failed", None),
        (4, "missing file", None),
        (5, "unreadable", None),
    ]
    assert rows[0]["seconds"] == 1.25 and rows[0]["last_run"].endswith("Z")
    assert rows[1]["last_run"] is None and rows[1]["seconds"] is None
    text = ok("status").stdout
    for word in ("up to date", "outdated", "failed", "missing file", "unreadable", "1.25 s", "up.ipynb"):
        assert word in text
    assert "1 up to date, 1 outdated, 1 failed, 1 missing file, 1 unreadable" in text


def test_status_with_nothing_staged(cwd):
    """An existing store with nothing staged: an empty JSON list, or a note on stderr."""
    ok("cache", "add", executed(cwd / "a.ipynb"))
    assert json.loads(ok("status", "--json").stdout) == []
    result = ok("status")
    assert result.stdout == "" and "Nothing is staged" in result.stderr


def test_match(cwd):
    """match prints 'ID<TAB>path' per match and exits 1 if any notebook has none (or is unreadable)."""
    a = executed(cwd / "a.ipynb", ["a"])
    ok("cache", "add", a)
    edited = fresh(cwd / "a2.ipynb", ["a"])
    other = fresh(cwd / "b.ipynb", ["b"])
    assert ok("match", "a.ipynb", "a2.ipynb").stdout == "1\ta.ipynb\n1\ta2.ipynb\n"
    result = run("match", "a.ipynb", "b.ipynb", "missing.ipynb")
    assert result.exit_code == 1
    assert result.stdout == "1\ta.ipynb\n"
    assert error_lines(result) == [
        "Error: b.ipynb: no cached notebook matches it",
        "Error: notebook not found: missing.ipynb",
    ]
    as_json = run("match", "--json", str(edited), str(other))
    assert as_json.exit_code == 1 and json.loads(as_json.stdout) == {str(edited): 1, str(other): None}


def test_merge_to_stdout_and_file(cwd):
    """merge writes the notebook with cached outputs (nbformat layout) to stdout or -o; no match exits 1."""
    nb = executed(
        cwd / "a.ipynb", ["print('hi')"], outputs={0: [{"name": "stdout", "output_type": "stream", "text": "hi\n"}]}
    )
    ok("cache", "add", nb)
    source = fresh(cwd / "src.ipynb", ["print('hi')"])
    out = ok("merge", source).stdout
    merged = json.loads(out)
    code = [c for c in merged["cells"] if c["cell_type"] == "code"]
    assert "".join(code[0]["outputs"][0]["text"]) == "hi\n" and code[0]["execution_count"] == 1
    assert out.endswith("}\n") and out.startswith('{\n "cells": [')
    result = ok("merge", source, "-o", "merged.ipynb")
    assert result.stdout == "" and "cache ID 1" in result.stderr
    assert (cwd / "merged.ipynb").read_text() == out
    nomatch = run("merge", fresh(cwd / "b.ipynb", ["other"]))
    assert nomatch.exit_code == 1 and nomatch.stdout == ""
    assert "no cached notebook matches it" in error_lines(nomatch)[0]
    assert run("merge", "missing.ipynb").exit_code == 1


# ---------------------------------------------------------------------------- clear, output conventions


def test_clear_asks_first(cwd):
    """clear asks on stderr: no answer or 'n' removes nothing (exit 1); 'y' or --yes clears."""
    ok("cache", "add", executed(cwd / "a.ipynb"))
    for answer in (None, "n\n", "maybe\n"):
        result = run("clear", input=answer)
        assert result.exit_code == 1 and "nothing was removed" in error_lines(result)[0]
        assert len(get_cache(cwd / ".nbstore").list_cache_records()) == 1
    assert "Remove every cached and staged notebook" in ok("clear", input="y\n").stderr
    assert get_cache(cwd / ".nbstore").list_cache_records() == []
    ok("cache", "add", executed(cwd / "a.ipynb"))
    ok("clear", "--yes")
    assert get_cache(cwd / ".nbstore").list_cache_records() == []


def test_json_output_is_one_document_and_nothing_else(cwd):
    """Every --json command writes exactly one parseable JSON document on stdout."""
    nb = executed(cwd / "a.ipynb")
    ok("cache", "add", nb)
    ok("stage", "add", nb)
    commands = [
        ["status", "--json"],
        ["cache", "list", "--json"],
        ["cache", "list", "--json", "--latest-only"],
        ["cache", "show", "1", "--json"],
        ["stage", "list", "--json"],
        ["stage", "show", "1", "--json"],
        ["match", "--json", "a.ipynb"],
    ]
    for args in commands:
        result = ok(*args)
        json.loads(result.stdout)  # raises on anything but one document
        assert result.stdout.count("\n") == len(json.dumps(json.loads(result.stdout), indent=2).splitlines())


def test_colour_follows_the_terminal_and_no_color(cwd):
    """Captured (piped) output has no ANSI codes; FORCE_COLOR adds them to errors; NO_COLOR removes them again."""
    ok("stage", "add", fresh(cwd / "a.ipynb"))
    plain = run("cache", "show", "9")
    assert ANSI not in plain.stderr and ANSI not in ok("status").stdout
    forced = run("cache", "show", "9", env={"FORCE_COLOR": "1"})
    assert ANSI in forced.stderr
    assert ANSI in run("status", env={"FORCE_COLOR": "1"}).stdout
    no_color = run("cache", "show", "9", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    # NO_COLOR removes colours (SGR 30-38); emphasis such as bold may stay.
    assert not re.search(r"\x1b\[[0-9;]*3[0-8][;m]", no_color.stderr), repr(no_color.stderr)
    assert "Error: no cached notebook has ID 9" in re.sub(r"\x1b\[[0-9;]*m", "", no_color.stderr)


def test_piped_tables_are_not_wrapped(cwd):
    """A table written to a pipe keeps each row on one line however long the path."""
    deep = cwd / ("a-rather-long-folder-name-" * 4) / ("and-another-one-" * 4)
    nb = fresh(deep / "notebook-with-a-long-name.ipynb")
    ok("stage", "add", nb)
    lines = [line for line in ok("status").stdout.splitlines() if "notebook-with-a-long-name" in line]
    assert len(lines) == 1 and "outdated" in lines[0]
    assert all(line == line.rstrip() for line in ok("status").stdout.splitlines())


def test_store_warnings_go_to_stderr(cwd):
    """A damaged record the store skips is reported as a warning on stderr, never on stdout."""
    nb = fresh(cwd / "a.ipynb")
    ok("stage", "add", nb)
    ok("cache", "add", executed(cwd / "b.ipynb", ["b"]))
    (sidecar,) = (cwd / ".nbstore" / "cache").glob("*.json")
    (cwd / "damaged.json").write_text("{ damaged")
    # Replaced, not rewritten in place: the folder's mtime is what tells the store to re-read its records.
    (cwd / "damaged.json").replace(sidecar)
    result = ok("status", "--json")
    assert json.loads(result.stdout)[0]["status"] == "outdated"
    assert "Warning:" in result.stderr and "unreadable cache record" in result.stderr


# ---------------------------------------------------------------------------- verify and gc


def test_verify_reports_damage_and_repair_fixes_it(cwd):
    """verify exits 0 on a sound store and 1 on a corrupt object; --repair quarantines it and exits 0."""
    nb = executed(cwd / "a.ipynb")
    (cwd / "out.txt").write_text("result\n")
    ok("cache", "add", nb, "--artifact", "out.txt")
    sound = json.loads(ok("verify", "--json").stdout)
    assert sound == {"ok": True, "objects_checked": 2, "records_checked": 1, "problems": []}
    assert "OK: checked 2 objects and 1 record; 0 problems" in ok("verify").stdout
    oid = json.loads(ok("cache", "show", "1", "--json").stdout)["artifacts"]["out.txt"]
    obj = cwd / ".nbstore" / "objects" / oid[:2] / oid[2:]
    obj.chmod(0o644)
    obj.write_text("tampered\n")
    damaged = run("verify", "--json")
    assert damaged.exit_code == 1
    report = json.loads(damaged.stdout)
    assert report["ok"] is False
    assert {"kind": "corrupt-object", "path": f"objects/{oid[:2]}/{oid[2:]}"}.items() <= report["problems"][0].items()
    table = run("verify")
    assert table.exit_code == 1 and "DAMAGED" in table.stdout and oid[2:] in table.stdout
    repaired = ok("verify", "--repair", "--json")
    assert all(p["repaired"] for p in json.loads(repaired.stdout)["problems"])
    assert json.loads(ok("verify", "--json").stdout)["problems"] == []


def test_gc_dry_run_then_remove(cwd, monkeypatch, tmp_path_factory):
    """gc --dry-run lists an unreferenced object and keeps it; gc removes it and reports the bytes freed."""
    import hashlib
    import tempfile

    # gc also removes dead runs' kernel folders from the temp folder: give it an empty one of its own.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("systmp")))
    ok("cache", "add", executed(cwd / "a.ipynb"))
    blob = b"nothing refers to me\n"
    oid = hashlib.sha256(blob).hexdigest()
    orphan = cwd / ".nbstore" / "objects" / oid[:2] / oid[2:]
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(blob)
    dry = json.loads(ok("gc", "--dry-run", "--json").stdout)
    assert dry == {
        "dry_run": True,
        "removed": [f"objects/{oid[:2]}/{oid[2:]}"],
        "bytes_freed": len(blob),
        "runtime_dirs": [],
    }
    assert orphan.exists()
    assert f"Would remove objects/{oid[:2]}/{oid[2:]}" in ok("gc", "--dry-run").stdout
    text = ok("gc").stdout
    assert f"Removed objects/{oid[:2]}/{oid[2:]}" in text and f"Removed 1 file, {len(blob)} B" in text
    assert not orphan.exists()
    assert json.loads(ok("gc", "--json").stdout) == {
        "dry_run": False,
        "removed": [],
        "bytes_freed": 0,
        "runtime_dirs": [],
    }
    assert ok("match", "a.ipynb").stdout == "1\ta.ipynb\n"
