"""`nbstore import-jupyter-cache`: a jupyter-cache 1.0.1 folder, built byte for byte as it writes one, moves in."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nbstore import get_cache
from nbstore.errors import StoreFormatError
from nbstore.jupyter_cache_import import import_jupyter_cache
from tests.conftest import make_nb, write_nb

# jupyter-cache 1.0.1's tables exactly as SQLAlchemy creates them from jupyter_cache/cache/db.py.
SCHEMA_1_0_1 = """
CREATE TABLE settings (
	pk INTEGER NOT NULL,
	"key" VARCHAR(36) NOT NULL,
	value JSON,
	PRIMARY KEY (pk),
	UNIQUE ("key")
);
CREATE TABLE nbproject (
	pk INTEGER NOT NULL,
	uri VARCHAR(255) NOT NULL,
	read_data JSON NOT NULL,
	assets JSON NOT NULL,
	exec_data JSON,
	created DATETIME NOT NULL,
	traceback TEXT,
	PRIMARY KEY (pk),
	UNIQUE (uri)
);
CREATE TABLE nbcache (
	pk INTEGER NOT NULL,
	hashkey VARCHAR(255) NOT NULL,
	uri VARCHAR(255) NOT NULL,
	description VARCHAR(255) NOT NULL,
	data JSON,
	created DATETIME NOT NULL,
	accessed DATETIME NOT NULL,
	PRIMARY KEY (pk),
	UNIQUE (hashkey)
);
"""

READ_DATA = json.dumps({"name": "nbformat", "type": "plugin"})


def _hashed(nb: dict) -> dict:
    """What jupyter-cache writes to executed/<hashkey>/base.ipynb: the notebook with its code cells only."""
    return dict(nb, cells=[c for c in nb["cells"] if c["cell_type"] == "code"])


class JupyterCacheFolder:
    """A .jupyter_cache folder written the way jupyter-cache 1.0.1 writes one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "executed").mkdir(parents=True)
        (path / "__version__.txt").write_text("1.0.1")
        self.db = sqlite3.connect(path / "global.db")
        self.db.executescript(SCHEMA_1_0_1)

    def cache(self, pk, hashkey, uri, nb, *, data=None, artifacts=None, created="2024-05-01 10:00:00.123456"):
        folder = self.path / "executed" / hashkey
        folder.mkdir(parents=True, exist_ok=True)
        if nb is not None:
            (folder / "base.ipynb").write_text(json.dumps(_hashed(nb)), encoding="utf8")
        for rel, content in (artifacts or {}).items():
            target = folder / "artifacts" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        self.db.execute(
            "INSERT INTO nbcache VALUES (?, ?, ?, '', ?, ?, ?)",
            (pk, hashkey, uri, json.dumps(data or {}), created, "2024-05-03 08:30:00.000001"),
        )
        self.db.commit()

    def project(self, pk, uri, *, traceback=None, assets=()):
        self.db.execute(
            "INSERT INTO nbproject VALUES (?, ?, ?, ?, NULL, '2024-04-30 09:00:00.000000', ?)",
            (pk, str(uri), READ_DATA, json.dumps([str(a) for a in assets]), traceback),
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def _snapshot(root: Path) -> dict:
    """Every entry under root with its bytes and mtime (to prove the source is never written)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        out[p.relative_to(root).as_posix()] = (st.st_mtime_ns, st.st_mode, None if p.is_dir() else p.read_bytes())
    return out


@pytest.fixture
def jc(tmp_path: Path) -> JupyterCacheFolder:
    """A jupyter-cache folder with two cached notebooks (one with artifacts) and two project records."""
    folder = JupyterCacheFolder(tmp_path / ".jupyter_cache")
    a = make_nb(["print(1)"])
    b = make_nb(["import pathlib", "pathlib.Path('out.csv').write_text('1,2')"])
    folder.cache(1, "a" * 32, str(tmp_path / "a.ipynb"), a, data={"execution_seconds": 1.5})
    folder.cache(2, "b" * 32, str(tmp_path / "b.ipynb"), b, artifacts={"out.csv": b"1,2", "sub/deep.txt": b"x"})
    write_nb(tmp_path / "a.ipynb", make_nb(["print(1)"], executed=False))
    write_nb(tmp_path / "c.ipynb", make_nb(["raise ValueError('no')"], executed=False))
    folder.project(1, tmp_path / "a.ipynb")
    folder.project(2, tmp_path / "c.ipynb", traceback="ValueError: no")
    yield folder
    folder.close()


def test_import_keeps_notebooks_artifacts_data_times_and_project(tmp_path: Path, jc: JupyterCacheFolder) -> None:
    """Cached notebooks come over with outputs, artifacts, data and times; project records are staged."""
    before = _snapshot(jc.path)
    store = get_cache(tmp_path / ".nbstore")
    report = import_jupyter_cache(store, jc.path)
    assert [(i.kind, i.source_pk, i.imported) for i in report.items] == [
        ("cache", 1, True),
        ("cache", 2, True),
        ("project", 1, True),
        ("project", 2, True),
    ]
    first = store.get_cache_record(report.items[0].pk)
    assert first.data == {"execution_seconds": 1.5}
    assert first.created == dt.datetime(2024, 5, 1, 10, 0, 0, 123456)
    assert first.accessed == dt.datetime(2024, 5, 3, 8, 30, 0, 1)
    second = store.get_cache_bundle(report.items[1].pk)
    assert dict((p.as_posix(), h.read()) for p, h in second.artifacts) == {"out.csv": b"1,2", "sub/deep.txt": b"x"}
    # The notebook of a.ipynb as it is now (no outputs) matches the imported record and gets its outputs.
    pk, merged = store.merge_match_into_file(tmp_path / "a.ipynb")
    assert pk == first.pk
    assert merged.cells[1].outputs[0]["text"] == "out 1\n"
    staged = {Path(r.uri).name: r for r in store.list_staged_records()}
    assert set(staged) == {"a.ipynb", "c.ipynb"}
    assert staged["c.ipynb"].traceback == "ValueError: no"
    assert store.get_cache_record_of_staged(staged["a.ipynb"].pk).pk == first.pk
    assert _snapshot(jc.path) == before


def test_import_twice_skips_what_is_there(tmp_path: Path, jc: JupyterCacheFolder) -> None:
    """A second import adds nothing and says why each record was skipped."""
    store = get_cache(tmp_path / ".nbstore")
    import_jupyter_cache(store, jc.path)
    again = import_jupyter_cache(store, jc.path)
    assert not again.imported
    assert [i.reason for i in again.skipped] == [
        "already cached in the store (ID 1)",
        "already cached in the store (ID 2)",
        "already staged in the store (ID 1)",
        "already staged in the store (ID 2)",
    ]
    assert len(store.list_cache_records()) == 2


def test_hostile_records_are_skipped_with_reasons(tmp_path: Path, jc: JupyterCacheFolder) -> None:
    """Bad hashkeys, links, missing or broken notebooks, missing project files: skipped, nothing read outside."""
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.txt").write_text("secret")
    write_nb(outside / "base.ipynb", make_nb(["print('outside')"]))
    jc.cache(3, "../../secret", "x.ipynb", None)
    link = jc.path / "executed" / ("c" * 32)
    link.symlink_to(outside, target_is_directory=True)
    row = (4, "c" * 32, "c.ipynb", "", "{}", "2024-05-01 10:00:00", "2024-05-01 10:00:00")
    jc.db.execute("INSERT INTO nbcache VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    jc.cache(5, "d" * 32, "d.ipynb", make_nb(["print(5)"]))
    (jc.path / "executed" / ("d" * 32) / "artifacts").mkdir()
    (jc.path / "executed" / ("d" * 32) / "artifacts" / "key.txt").symlink_to(outside / "key.txt")
    jc.cache(6, "e" * 32, "e.ipynb", None)
    (jc.path / "executed" / ("e" * 32) / "base.ipynb").write_text("not json")
    jc.cache(7, "f" * 32, "f.ipynb", None)
    jc.project(3, tmp_path / "gone.ipynb")
    jc.db.commit()
    store = get_cache(tmp_path / ".nbstore")
    report = import_jupyter_cache(store, jc.path)
    reasons = {(i.kind, i.source_pk): i.reason for i in report.skipped}
    assert "is not jupyter-cache's 32 hex digits" in reasons[("cache", 3)]
    assert "is missing (or is a link)" in reasons[("cache", 4)]
    assert reasons[("cache", 5)] == f"executed/{'d' * 32}: artifact key.txt is a link"
    assert "not a notebook" in reasons[("cache", 6)]
    assert "base.ipynb is missing" in reasons[("cache", 7)]
    assert reasons[("project", 3)] == "its notebook file is missing"
    assert len(report.imported) == 4  # the fixture's two cached and two project records
    for record in store.list_cache_records():
        assert "outside" not in json.dumps(store.get_cache_bundle(record.pk).nb)


def test_not_a_jupyter_cache_folder(tmp_path: Path) -> None:
    """A folder without global.db, or whose database is not jupyter-cache's, is a clear error."""
    store = get_cache(tmp_path / ".nbstore")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreFormatError, match="has no global.db"):
        import_jupyter_cache(store, tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "global.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreFormatError, match="not a jupyter-cache database"):
        import_jupyter_cache(store, tmp_path / "other")
    assert not store.exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "nbstore", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_cli_imports_and_names_the_command_for_a_jupyter_cache_folder(tmp_path: Path, jc: JupyterCacheFolder) -> None:
    """The command reports each record; any command pointed at a jupyter-cache folder names the import command."""
    pointed = _cli("--cache", ".jupyter_cache", "status", cwd=tmp_path)
    assert pointed.returncode == 1
    assert "is a jupyter-cache folder" in pointed.stderr and "nbstore import-jupyter-cache" in pointed.stderr
    with pytest.raises(StoreFormatError, match="import-jupyter-cache"):
        get_cache(jc.path).stage_notebook_file(tmp_path / "a.ipynb")
    done = _cli("import-jupyter-cache", ".jupyter_cache", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported  cached notebook 2 as ID 2" in done.stdout
    assert "Imported 2 cached and 2 project notebooks" in done.stdout
    assert [r.pk for r in get_cache(tmp_path / ".nbstore").list_cache_records()] == [1, 2]
    assert not (jc.path / "nbstore.json").exists()
