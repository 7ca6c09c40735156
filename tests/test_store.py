"""The store's API on real files: caching, matching, staging, limits, persistence and bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from nbstore import (
    ArtifactPathError,
    CachingError,
    NbBundleIn,
    NbValidityError,
    NotebookNotFoundError,
    NotebookReadError,
    RecordNotFoundError,
    StoreFormatError,
    get_cache,
    notebook_key,
)
from nbstore.bundles import NbArtifacts
from tests.conftest import make_nb, tree_listing, write_nb


def test_get_cache_creates_nothing_until_a_write(tmp_path):
    """Opening and reading a missing store creates no folder; its repr names the absolute path."""
    cache = get_cache(tmp_path / "c")
    assert repr(cache) == f"NbStore('{tmp_path / 'c'}')"
    assert cache.list_cache_records() == [] and cache.list_staged_records() == []
    assert not (tmp_path / "c").exists()


def test_cache_file_record_and_persistence(tmp_path, store):
    """A cached file gets pk 1, the seed's record fields, and is found again by a new store object."""
    nb_path = write_nb(tmp_path / "nbs" / "a.ipynb", make_nb(["a=1\nprint(a)"], meta={"test_name": "t"}))
    record = store.cache_notebook_file(nb_path, data={"x": 1})
    assert repr(record) == "NbCacheRecord(pk=1)"
    as_dict = record.to_dict()
    assert list(as_dict) == ["hashkey", "description", "created", "uri", "pk", "data", "accessed"]
    assert as_dict["uri"] == str(nb_path) and as_dict["data"] == {"x": 1}
    assert as_dict["hashkey"] == notebook_key(make_nb(["a=1\nprint(a)"]))
    again = get_cache(store.path)
    assert again.list_cache_records()[0].to_dict() == as_dict
    bundle = again.get_cache_bundle(1)
    assert (
        repr(bundle) == "NbBundleOut(nb=Notebook(cells=1), record=NbCacheRecord(pk=1), artifacts=NbArtifacts(paths=0))"
    )
    assert bundle.nb.cells[0].outputs[0].text == "out 1\n"
    assert bundle.nb.metadata.test_name == "t"


def test_duplicate_is_refused_and_overwrite_replaces(tmp_path, store):
    """Caching the same code twice is a CachingError; overwrite=True replaces the record with a new pk."""
    nb_path = write_nb(tmp_path / "a.ipynb", make_nb(["x"]))
    store.cache_notebook_file(nb_path)
    with pytest.raises(CachingError, match="already exists in cache and overwrite=False"):
        store.cache_notebook_file(nb_path)
    record = store.cache_notebook_file(nb_path, overwrite=True)
    assert record.pk == 2
    assert [r.pk for r in store.list_cache_records()] == [2]


def test_match_notebook_and_file(tmp_path, store):
    """Matching ignores markdown edits and names the hashkey when code differs."""
    nb = make_nb(["a=1"])
    nb_path = write_nb(tmp_path / "a.ipynb", nb)
    store.cache_notebook_file(nb_path)
    nb["cells"][0]["source"] = "changed text"
    assert store.match_cache_notebook(nb).pk == 1
    assert store.match_cache_file(nb_path).pk == 1
    nb["cells"][1]["source"] = "changed code"
    with pytest.raises(KeyError) as info:
        store.match_cache_notebook(nb)
    assert str(info.value) == repr(f"Cache record not found for NB with hashkey: {notebook_key(nb)}")


def test_validity_check(tmp_path, store):
    """An unexecuted notebook is refused with check_validity and accepted without it."""
    nb_path = write_nb(tmp_path / "a.ipynb", make_nb(["x"], executed=False))
    with pytest.raises(NbValidityError):
        store.cache_notebook_file(nb_path)
    assert store.cache_notebook_file(nb_path, check_validity=False).pk == 1


def test_remove_and_pks_are_not_reused(tmp_path, store):
    """Removing a record frees its objects; the next record gets a new pk; a missing pk is a KeyError."""
    a = store.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["a"])))
    b = store.cache_notebook_file(write_nb(tmp_path / "b.ipynb", make_nb(["b"])))
    store.remove_cache(b.pk)
    assert not store.layout.object_path(b.notebook).exists()
    assert store.layout.object_path(a.notebook).exists()
    c = store.cache_notebook_file(write_nb(tmp_path / "c.ipynb", make_nb(["c"])))
    assert c.pk == 3
    with pytest.raises(RecordNotFoundError):
        store.remove_cache(2)
    with pytest.raises(KeyError):
        store.get_cache_record(99)


def test_clear_cache_wipes_records_and_settings(tmp_path, store):
    """clear_cache removes every record and resets the cache limit."""
    store.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["a"])))
    store.stage_notebook_file(tmp_path / "a.ipynb")
    store.change_cache_limit(5)
    store.clear_cache()
    assert store.list_cache_records() == [] and store.list_staged_records() == []
    assert get_cache(store.path).get_cache_limit() == 1000
    assert list((store.path / "objects").iterdir()) == []


def test_cache_limit_evicts_least_recently_accessed(tmp_path, store):
    """Past the limit, the least recently accessed record goes; reading a bundle counts as access."""
    store.change_cache_limit(2)
    assert get_cache(store.path).get_cache_limit() == 2
    r1 = store.cache_notebook_file(write_nb(tmp_path / "1.ipynb", make_nb(["1"])))
    r2 = store.cache_notebook_file(write_nb(tmp_path / "2.ipynb", make_nb(["2"])))
    time.sleep(0.01)
    store.get_cache_bundle(r1.pk)  # r1 is now more recent than r2
    r3 = store.cache_notebook_file(write_nb(tmp_path / "3.ipynb", make_nb(["3"])))
    assert {r.pk for r in store.list_cache_records()} == {r1.pk, r3.pk}
    assert store.get_cache_record(r1.pk).accessed > store.get_cache_record(r1.pk).created
    store.change_cache_limit(1)
    assert len(store.list_cache_records()) == 1
    assert r2.pk not in {r.pk for r in store.list_cache_records()}
    with pytest.raises(ValueError):
        store.change_cache_limit(0)


def test_artifacts_are_stored_once_and_read_back(tmp_path, store):
    """Artifacts are content-addressed (identical files stored once) and come back at their relative paths."""
    folder = tmp_path / "nb"
    (folder / "out").mkdir(parents=True)
    (folder / "out" / "a.txt").write_bytes(b"same bytes")
    (folder / "b.txt").write_bytes(b"same bytes")
    nb_path = write_nb(folder / "n.ipynb", make_nb(["x"]))
    record = store.cache_notebook_file(nb_path, artifacts=[folder / "out" / "a.txt", "b.txt"])
    assert set(record.artifacts) == {"out/a.txt", "b.txt"}
    assert len(set(record.artifacts.values())) == 1
    bundle = store.get_cache_bundle(record.pk)
    assert {p.as_posix(): h.read() for p, h in bundle.artifacts} == {"b.txt": b"same bytes", "out/a.txt": b"same bytes"}
    with store.cache_artefacts_temppath(record.pk) as tmp:
        assert (tmp / "out" / "a.txt").read_bytes() == b"same bytes"
    assert not tmp.exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "missing"])
def test_artifact_outside_the_folder_is_refused(tmp_path, store, kind):
    """An artifact path that escapes the notebook folder (or is missing) is an error and changes nothing."""
    folder = tmp_path / "nb"
    nb_path = write_nb(folder / "n.ipynb", make_nb(["x"]))
    store.cache_notebook_file(write_nb(tmp_path / "other.ipynb", make_nb(["other"])))
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    artifact = {
        "dotdot": Path("../secret.txt"),
        "absolute": outside,
        "symlink": folder / "link.txt",
        "missing": folder / "nope.txt",
    }[kind]
    if kind == "symlink":
        os.symlink(outside, folder / "link.txt")
    before = tree_listing(store.path)
    expected = NotebookNotFoundError if kind == "missing" else ArtifactPathError
    with pytest.raises(expected):
        store.cache_notebook_file(nb_path, artifacts=[artifact])
    assert tree_listing(store.path) == before


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not json at all", NotebookReadError),
        (b'{"a": 1}', NotebookReadError),
        (b'{"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}', NotebookReadError),
        (b"\x80\x81\x82", NotebookReadError),
        (None, NotebookNotFoundError),
    ],
)
def test_bad_notebook_files_change_nothing(tmp_path, store, content, error):
    """A file that is not a readable notebook (or is missing) gives a clear error and leaves the store as it was."""
    store.cache_notebook_file(write_nb(tmp_path / "ok.ipynb", make_nb(["ok"])))
    store.stage_notebook_file(tmp_path / "ok.ipynb")
    bad = tmp_path / "bad.ipynb"
    if content is not None:
        bad.write_bytes(content)
    before = tree_listing(store.path)
    for call in (store.cache_notebook_file, store.stage_notebook_file, store.match_cache_file):
        with pytest.raises(error) as info:
            call(bad)
        assert "bad.ipynb" in str(info.value)
    assert tree_listing(store.path) == before


def test_unknown_records_are_key_errors(tmp_path, store):
    """A pk or URI that does not exist is a KeyError naming it, for cache and stage alike."""
    store.stage_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["a"])))
    for call, arg in [
        (store.get_cache_record, 5),
        (store.get_cache_bundle, 5),
        (store.get_staged_record, 9),
        (store.get_staged_record, str(tmp_path / "nope.ipynb")),
        (store.discard_staged_notebook, 9),
    ]:
        with pytest.raises(KeyError) as info:
            call(arg)
        assert str(arg).split("/")[-1] in str(info.value)


def test_merge_match_into_file(tmp_path, store):
    """Merging puts the cached outputs into the notebook as it is now; markdown stays as edited."""
    executed = make_nb(["a=1", "print(2)"])
    store.cache_notebook_file(write_nb(tmp_path / "exec.ipynb", executed))
    plain = make_nb(["a=1", "print(2)"], executed=False)
    plain["cells"][0]["source"] = "new words"
    path = write_nb(tmp_path / "plain.ipynb", plain)
    pk, merged = store.merge_match_into_file(path)
    assert pk == 1
    assert merged.cells[0].source == "new words"
    assert [c.execution_count for c in merged.cells[1:]] == [1, 2]
    assert merged.cells[2].outputs[0]["text"] == "out 2\n"
    pk2, merged2 = store.merge_match_into_notebook(plain)
    assert pk2 == 1 and merged2 == merged
    plain["cells"][1]["source"] = "other"
    with pytest.raises(KeyError):
        store.merge_match_into_notebook(plain)


def test_diff_with_cache(tmp_path, store):
    """The text diff has the seed's header and shows the changed source."""
    pytest.importorskip("nbdime", reason="nbdime is the [diff] extra; dev installs it")
    store.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["a=1\nprint(a)"])))
    other = make_nb(["change some source code"])
    text = store.diff_nbnode_with_cache(1, other, as_str=True)
    assert text.startswith("nbdiff\n--- cached pk=1\n+++ other: \n")
    assert "+change some source code" in text and "-a=1" in text
    assert "\x1b[" not in text
    path = write_nb(tmp_path / "b.ipynb", other)
    assert store.diff_nbfile_with_cache(1, path, as_str=True).splitlines()[2] == f"+++ other: {path}"
    assert isinstance(store.diff_nbnode_with_cache(1, other), list)


def test_staging(tmp_path, store):
    """Staging records a notebook once, keeps assets, and tells whether it is cached as it is now."""
    folder = tmp_path / "nbs"
    path = write_nb(folder / "a.ipynb", make_nb(["a"]))
    (folder / "data.csv").write_text("1,2\n")
    record = store.stage_notebook_file(path, assets=["data.csv"])
    assert repr(record) == "NbStageRecord(pk=1)"
    assert list(record.to_dict()) == ["assets", "traceback", "pk", "uri", "created"]
    assert record.uri == str(path) and record.assets == (str(folder / "data.csv"),)
    assert store.stage_notebook_file(path, assets=["data.csv"]).pk == 1
    assert len(store.list_staged_records()) == 1
    assert store.get_staged_record(str(path)).pk == 1
    assert store.get_cache_record_of_staged(1) is None
    assert store.list_staged_unexecuted() == [record]
    store.cache_notebook_file(path)
    assert store.get_cache_record_of_staged(str(path)).pk == 1
    assert store.list_staged_unexecuted() == []
    bundle = store.get_staged_notebook(1)
    assert bundle.nb.cells[1].source == "a" and bundle.uri == str(path)
    assert [p.name for p in bundle.artifacts.paths] == ["data.csv"]
    store.discard_staged_notebook(str(path))
    assert store.list_staged_records() == []


def test_a_changed_staged_file_is_rehashed(tmp_path, store):
    """The size/mtime cache never trusts a file that changed: an edit makes it outdated at once."""
    path = write_nb(tmp_path / "a.ipynb", make_nb(["a"]))
    store.stage_notebook_file(path)
    store.cache_notebook_file(path)
    assert store.list_staged_unexecuted() == []
    write_nb(path, make_nb(["b"]))  # same size, possibly the same mtime tick
    assert [r.pk for r in store.list_staged_unexecuted()] == [1]
    os.unlink(path)
    assert store.staged_keys() == {1: None}


def test_staged_asset_outside_is_refused(tmp_path, store):
    """An asset outside the notebook's folder is refused and nothing is staged."""
    path = write_nb(tmp_path / "nbs" / "a.ipynb", make_nb(["a"]))
    (tmp_path / "x.csv").write_text("x")
    with pytest.raises(ArtifactPathError):
        store.stage_notebook_file(path, assets=["../x.csv"])
    assert store.list_staged_records() == []


def test_committed_store_moves_with_its_folder(tmp_path):
    """Staged paths inside the store's parent are stored relative, so a copied tree works at its new place."""
    repo = tmp_path / "repo"
    path = write_nb(repo / "docs" / "a.ipynb", make_nb(["a"]))
    cache = get_cache(repo / ".nbstore")
    cache.stage_notebook_file(path)
    cache.cache_notebook_file(path)
    sidecar = next((repo / ".nbstore" / "stage").glob("*.json"))
    assert json.loads(sidecar.read_text())["uri"] == "docs/a.ipynb"
    moved = tmp_path / "elsewhere"
    shutil.copytree(repo, moved)
    clone = get_cache(moved / ".nbstore")
    assert clone.get_staged_record(1).uri == str(moved / "docs" / "a.ipynb")
    assert clone.get_cache_record_of_staged(1).pk == 1


def test_layout_on_disk(tmp_path, store):
    """Sidecars are deterministic JSON, objects are read-only and named by their hash, volatile files are ignored."""
    record = store.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["a"])), data={"b": 1, "a": 2})
    root = store.path
    sidecar = root / "cache" / f"{record.hashkey}.json"
    text = sidecar.read_text()
    assert text.endswith("}\n") and json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n" == text
    obj = root / "objects" / record.notebook[:2] / record.notebook[2:]
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    from nbstore.hashing import object_id

    assert object_id(obj.read_bytes()) == record.notebook
    assert json.loads((root / "nbstore.json").read_text()) == {"cache_limit": 1000, "format": 1}
    ignored = (root / ".gitignore").read_text()
    for name in ("/index", "/lock", "/tmp/"):
        assert name in ignored
    assert (root / ".gitattributes").read_text() == "* -text\n"


def test_index_is_rebuilt_from_sidecars(tmp_path, store):
    """Deleting or garbling the index loses nothing: it is rebuilt from the sidecars."""
    for i in range(3):
        store.cache_notebook_file(write_nb(tmp_path / f"{i}.ipynb", make_nb([str(i)])))
    expected = [r.to_dict()["hashkey"] for r in store.list_cache_records()]
    os.unlink(store.path / "index")
    assert [r.hashkey for r in get_cache(store.path).list_cache_records()] == expected
    with open(store.path / "index", "ab") as fh:
        fh.write(b"deadbeef {garbage\n")
    fresh = get_cache(store.path)
    assert [r.hashkey for r in fresh.list_cache_records()] == expected
    assert fresh.cache_notebook_file(write_nb(tmp_path / "n.ipynb", make_nb(["n"]))).pk == 4


def test_unknown_format_and_foreign_folders_are_refused(tmp_path, store):
    """A newer store format, or a folder that is not a store, is refused with a clear error."""
    store.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["a"])))
    (store.path / "nbstore.json").write_text('{"format": 99, "cache_limit": 1000}\n')
    with pytest.raises(StoreFormatError, match="format 99"):
        get_cache(store.path).list_cache_records()
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    with pytest.raises(StoreFormatError, match="not an nbstore store"):
        get_cache(foreign).cache_notebook_file(tmp_path / "a.ipynb")
    with pytest.raises(StoreFormatError):
        get_cache(foreign).clear_cache()
    assert (foreign / "important.txt").read_text() == "keep me"


def test_bundle_with_explicit_artifacts_and_data(tmp_path, store):
    """cache_notebook_bundle stores data and NbArtifacts, and refuses data that is not JSON."""
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "r.bin").write_bytes(b"\x00\x01")
    bundle = NbBundleIn(make_nb(["z"]), uri="u", artifacts=NbArtifacts(["r.bin"], in_folder=folder), data={"k": [1]})
    record = store.cache_notebook_bundle(bundle)
    assert record.data == {"k": [1]} and store.get_cache_bundle(record.pk).artifacts.read("r.bin") == b"\x00\x01"
    with pytest.raises(CachingError, match="not JSON-serialisable"):
        store.cache_notebook_bundle(NbBundleIn(make_nb(["y"]), data={"k": object()}))


def test_reads_alone_keep_the_index_compact(tmp_path, store, monkeypatch):
    """Access times appended by reads trigger the same index compaction as writes, keeping the latest time."""
    import nbstore.store.folder as folder_module

    monkeypatch.setattr(folder_module, "_COMPACT_FLOOR", 2000)
    record = store.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["x = 1"])))
    index = store.path / "index"
    for _ in range(200):
        last = store.get_cache_bundle(record.pk).record.accessed
    # 200 access times take over 20 KB uncompacted; compacted, the index stays within 2x its snapshot + the floor.
    assert index.stat().st_size < 3 * index.read_bytes().split(b"\n")[1].__len__() + 2000 + 500
    fresh = get_cache(store.path)
    assert fresh.get_cache_record(record.pk).accessed == last


def test_a_bundle_read_racing_a_removal_is_not_found_not_corrupt(tmp_path, monkeypatch):
    """A record removed elsewhere between its lookup and its read is 'not found', not 'corrupt'."""
    import nbstore.store.cache as cache_module

    reader = get_cache(tmp_path / "store")
    record = reader.cache_notebook_file(write_nb(tmp_path / "a.ipynb", make_nb(["x = 1"])))
    reader.list_cache_records()
    other = get_cache(tmp_path / "store")  # another process, as far as the reader's state goes
    real_read = cache_module.read_object
    raced = []

    def read_after_the_removal(layout, oid, **kwargs):
        if not raced:
            raced.append(oid)
            other.remove_cache(record.pk)  # outside a git work tree its objects go with it
        return real_read(layout, oid, **kwargs)

    monkeypatch.setattr(cache_module, "read_object", read_after_the_removal)
    with pytest.raises(RecordNotFoundError):
        reader.get_cache_bundle(record.pk)
    assert raced and not reader.layout.object_path(raced[0]).exists()
