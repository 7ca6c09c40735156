"""Bad input at every entry point: a clear exception naming the problem, the store folder unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import nbstore
from nbstore import (
    ArtifactPathError,
    CachingError,
    NbBundleIn,
    NbStoreError,
    NotebookNotFoundError,
    NotebookReadError,
    RecordNotFoundError,
)
from tests.storetools import executed_nb, snapshot, write_nb


@pytest.fixture
def store(tmp_path):
    """A store with two cached notebooks (one with an artifact) and one staged notebook, index current."""
    cache = nbstore.get_cache(tmp_path / "store")
    folder = tmp_path / "nbs"
    write_nb(folder / "a.ipynb", executed_nb("a"))
    write_nb(folder / "b.ipynb", executed_nb("b"))
    (folder / "a.txt").write_text("artifact")
    cache.cache_notebook_file(folder / "a.ipynb", artifacts=["a.txt"])
    cache.cache_notebook_file(folder / "b.ipynb")
    cache.stage_notebook_file(folder / "a.ipynb")
    cache.list_cache_records()
    return cache


BAD_FILES = {
    "not-json": (b"this is not JSON {", NotebookReadError, "invalid JSON at line 1"),
    "empty": (b"", NotebookReadError, "invalid JSON"),
    "json-list": (b"[1, 2, 3]", NotebookReadError, "JSON top level is list"),
    "no-nbformat": (b'{"cells": [], "metadata": {}}', NotebookReadError, "no integer 'nbformat'"),
    "cells-not-list": (
        b'{"nbformat": 4, "nbformat_minor": 5, "cells": {}, "metadata": {}}',
        NotebookReadError,
        "no 'cells' list",
    ),
    "cell-not-object": (
        b'{"nbformat": 4, "nbformat_minor": 5, "cells": [3], "metadata": {}}',
        NotebookReadError,
        "cell 0",
    ),
    "nbformat-5": (
        b'{"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}',
        NotebookReadError,
        "nbformat 5 is newer",
    ),
    "nbformat-2": (b'{"nbformat": 2, "worksheets": [], "metadata": {}}', NotebookReadError, "nbformat 2 is too old"),
    "non-utf8": (
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": "caf\xe9"}]}',
        NotebookReadError,
        "not UTF-8 (byte 0xe9 at offset 99)",
    ),
    "utf16": ("{}".encode("utf-16"), NotebookReadError, "not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_notebook_file_at_every_entry_point(tmp_path, store, name):
    """A file that is not a notebook nbstore reads is a NotebookReadError naming the file and the reason."""
    content, error, reason = BAD_FILES[name]
    bad = tmp_path / "nbs" / f"{name}.ipynb"
    bad.write_bytes(content)
    before = snapshot(store.path)
    calls = {
        "cache": lambda: store.cache_notebook_file(bad),
        "stage": lambda: store.stage_notebook_file(bad),
        "match": lambda: store.match_cache_file(bad),
        "merge": lambda: store.merge_match_into_file(bad),
        "diff": lambda: store.diff_nbfile_with_cache(1, bad),
    }
    for call_name, call in calls.items():
        with pytest.raises(error) as info:
            call()
        assert str(bad) in str(info.value), call_name
        assert reason in str(info.value), (call_name, str(info.value))
    assert snapshot(store.path) == before


def test_staged_file_that_turns_bad_is_reported_when_read(tmp_path, store):
    """A staged notebook overwritten with garbage: its key reads as None and reading it names the file."""
    staged = tmp_path / "nbs" / "a.ipynb"
    staged.write_bytes(b"\x00\x01garbage")
    assert store.staged_keys() == {1: None}
    before = snapshot(store.path)
    with pytest.raises(NotebookReadError, match="a.ipynb"):
        store.get_staged_notebook(1)
    assert [r.pk for r in store.list_staged_unexecuted()] == [1]
    assert store.get_cache_record_of_staged(1) is None
    assert snapshot(store.path) == before


BAD_OBJECTS = {
    "none": None,
    "string": "{}",
    "list": [],
    "no-cells": {"nbformat": 4, "metadata": {}},
    "cell-without-type": {"nbformat": 4, "metadata": {}, "cells": [{"source": "x"}]},
    "unserialisable": {"nbformat": 4, "cells": [], "metadata": {"x": object()}},
}


@pytest.mark.parametrize("name", sorted(BAD_OBJECTS))
def test_bad_notebook_object_at_every_entry_point(store, name):
    """A Python object that is not a notebook is a clear error from cache, match and merge, changing nothing."""
    nb = BAD_OBJECTS[name]
    before = snapshot(store.path)
    calls = [
        lambda: store.cache_notebook_bundle(NbBundleIn(nb, "x.ipynb")),
        lambda: store.merge_match_into_notebook(nb),
    ]
    if name != "unserialisable":  # matching hashes code cells only: odd metadata does not stop it
        calls.append(lambda: store.match_cache_notebook(nb))
    for call in calls:
        with pytest.raises(NotebookReadError) as info:
            call()
        assert "not a notebook" in str(info.value)
    assert snapshot(store.path) == before


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink-out", "symlinked-folder-out", "folder", "missing"])
def test_artifact_or_asset_outside_the_notebook_folder(tmp_path, store, kind):
    """An artifact or asset path leaving the notebook's folder (../, absolute, symlink) is refused, changing nothing."""
    folder = tmp_path / "nbs"
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("x")
    new = write_nb(folder / "new.ipynb", executed_nb("new"))
    if kind == "symlink-out":
        os.symlink(outside, folder / "link.txt")
    if kind == "symlinked-folder-out":
        os.symlink(tmp_path / "elsewhere", folder / "sub")
    if kind == "folder":
        (folder / "adir").mkdir()
    path = {
        "dotdot": "../secret.txt",
        "absolute": str(outside),
        "symlink-out": "link.txt",
        "symlinked-folder-out": "sub/x.txt",
        "folder": "adir",
        "missing": "nope.txt",
    }[kind]
    expected = NotebookNotFoundError if kind == "missing" else ArtifactPathError
    before = snapshot(store.path)
    with pytest.raises(expected) as info:
        store.cache_notebook_file(new, artifacts=[path])
    assert Path(path).name in str(info.value)
    with pytest.raises(expected):
        store.cache_notebook_bundle(NbBundleIn(executed_nb("new"), str(new), nbstore.NbArtifacts([path], folder)))
    if kind != "folder":  # an asset may be a folder (its files at run time); an artifact may not
        with pytest.raises(expected):
            store.stage_notebook_file(new, assets=[path])
    assert snapshot(store.path) == before


@pytest.mark.parametrize("pk", [0, -1, 3, 99, 10**30])
def test_pk_that_does_not_exist(store, pk):
    """A pk with no record is a KeyError naming it, from every call that takes one, changing nothing."""
    before = snapshot(store.path)
    calls = [
        store.get_cache_record,
        store.get_cache_bundle,
        store.remove_cache,
        lambda p: store.diff_nbnode_with_cache(p, executed_nb("a")),
        lambda p: store.cache_artefacts_temppath(p).__enter__(),
        store.get_staged_record,
        store.get_staged_notebook,
        store.discard_staged_notebook,
        store.get_cache_record_of_staged,
        lambda p: store.set_staged_traceback(p, "boom"),
    ]
    for call in calls:
        with pytest.raises(RecordNotFoundError) as info:
            call(pk)
        assert isinstance(info.value, KeyError) and str(pk) in str(info.value)
    assert snapshot(store.path) == before


def test_uri_or_key_that_does_not_exist(tmp_path, store):
    """A URI that is not staged, or a hashkey with no record, is a KeyError naming it, changing nothing."""
    before = snapshot(store.path)
    for uri in (tmp_path / "nbs" / "b.ipynb", tmp_path / "nope.ipynb", "relative/nope.ipynb"):
        for call in (store.get_staged_record, store.get_staged_notebook, store.discard_staged_notebook):
            with pytest.raises(RecordNotFoundError, match=Path(uri).name):
                call(uri)
    with pytest.raises(RecordNotFoundError, match="0" * 32):
        store.match_cache_key("0" * 32)
    unknown = executed_nb("never cached")
    with pytest.raises(KeyError, match=nbstore.notebook_key(unknown)):
        store.match_cache_notebook(unknown)
    with pytest.raises(NotebookNotFoundError, match="nope.ipynb"):
        store.cache_notebook_file(tmp_path / "nope.ipynb")
    with pytest.raises(NotebookNotFoundError, match="nope.ipynb"):
        store.stage_notebook_file(tmp_path / "nope.ipynb")
    with pytest.raises(NotebookReadError, match="is a folder|is not a file"):
        store.cache_notebook_file(tmp_path / "nbs")
    assert snapshot(store.path) == before


def test_data_that_is_not_json(tmp_path, store):
    """Record data that JSON cannot hold is a CachingError, changing nothing."""
    before = snapshot(store.path)
    new = write_nb(tmp_path / "nbs" / "new.ipynb", executed_nb("new"))
    with pytest.raises(CachingError, match="not JSON-serialisable"):
        store.cache_notebook_file(new, data={"when": object()})
    with pytest.raises(CachingError):
        store.cache_notebook_bundle(NbBundleIn(executed_nb("new"), "u", data=["not", "a", "dict"]))
    assert snapshot(store.path) == before


def test_file_name_that_is_not_utf8(tmp_path, store):
    """A notebook whose file name is not UTF-8 is a clear error naming it (records hold UTF-8), changing nothing."""
    name = os.fsdecode(b"caf\xe9.ipynb")
    path = write_nb(tmp_path / "nbs" / name, executed_nb("cafe"))
    (tmp_path / "nbs" / os.fsdecode(b"r\xe9sultat.txt")).write_text("r")
    before = snapshot(store.path)
    for call in (
        lambda: store.cache_notebook_file(path),
        lambda: store.stage_notebook_file(path),
        lambda: store.cache_notebook_file(tmp_path / "nbs" / "b.ipynb", artifacts=[os.fsdecode(b"r\xe9sultat.txt")]),
        lambda: store.cache_notebook_bundle(NbBundleIn(executed_nb("x"), "u", data={"k": "\udce9"})),
    ):
        with pytest.raises(NbStoreError, match="not valid UTF-8"):
            call()
    with pytest.raises(RecordNotFoundError):  # reading it needs no UTF-8 name: it is just not cached
        store.match_cache_file(path)
    assert snapshot(store.path) == before


def test_nbformat_3_is_converted_and_keyed_like_its_v4_form(tmp_path, store):
    """An executed nbformat 3 notebook caches, matches (again and again: no random ids in its key) and stages."""
    import nbformat

    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {"name": "old"},
        "worksheets": [
            {
                "cells": [
                    {"cell_type": "heading", "level": 1, "source": "Old", "metadata": {}},
                    {
                        "cell_type": "code",
                        "input": "print(1)",
                        "language": "python",
                        "prompt_number": 1,
                        "collapsed": False,
                        "metadata": {},
                        "outputs": [{"output_type": "stream", "stream": "stdout", "text": "1\n"}],
                    },
                    {
                        "cell_type": "code",
                        "input": ["x = 2\n", "x"],
                        "language": "python",
                        "prompt_number": 2,
                        "collapsed": False,
                        "metadata": {},
                        "outputs": [{"output_type": "pyout", "prompt_number": 2, "text": "2", "metadata": {}}],
                    },
                ],
                "metadata": {},
            }
        ],
    }
    path = tmp_path / "nbs" / "old.ipynb"
    path.write_text(json.dumps(v3))
    v4 = nbformat.convert(nbformat.from_dict(v3), 4)
    record = store.cache_notebook_file(path)
    assert record.hashkey == nbstore.notebook_key(v4) == nbstore.notebook_key(v3)
    for _ in range(3):
        assert store.match_cache_file(path).pk == record.pk
    bundle = store.get_cache_bundle(record.pk)
    assert bundle.nb.nbformat == 4
    assert [c.outputs[0].get("text") for c in bundle.nb.cells] == ["1\n", None]
    assert bundle.nb.cells[1].outputs[0].data["text/plain"] == "2"
    store.stage_notebook_file(path)
    assert store.get_cache_record_of_staged(path).pk == record.pk
    pk, merged = store.merge_match_into_file(path)
    assert pk == record.pk and merged.nbformat == 4
    assert [c.id for c in merged.cells] == ["cell-0", "cell-1", "cell-2"]
    assert store.merge_match_into_file(path)[1] == merged  # the same file merges to the same notebook
    # Caching the same v3 file again stores the same object: its converted form does not change between reads.
    again = store.cache_notebook_file(path, overwrite=True)
    assert again.notebook == record.notebook
    assert store.verify().problems == ()


@pytest.mark.slow
def test_fifty_megabyte_notebook(tmp_path, store):
    """A 50 MB notebook caches, matches and reads back whole (and verify re-hashes it)."""
    nb = executed_nb("big", cells=2)
    nb["cells"][1]["outputs"][0]["text"] = "0123456789abcdef\n" * (50 * 2**20 // 17)
    path = write_nb(tmp_path / "nbs" / "big.ipynb", nb)
    assert path.stat().st_size > 50 * 2**20
    record = store.cache_notebook_file(path)
    assert store.match_cache_file(path).pk == record.pk
    bundle = store.get_cache_bundle(record.pk)
    assert bundle.nb.cells[0].outputs[0]["text"] == nb["cells"][1]["outputs"][0]["text"]
    report = store.verify()
    assert report.problems == () and report.objects_checked == 4
