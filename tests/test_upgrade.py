"""Upgrades: a committed store of format 1 opens, lists, matches, reads and verifies; unknown formats are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import nbstore
from nbstore import StoreFormatError
from tests.storetools import record_files, snapshot

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def copied(tmp_path) -> Path:
    """A copy of the format-1 store fixture (with its notebooks) in tmp_path; the fixture itself is never touched."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "project"))


def test_fixture_is_a_committed_format_1_store():
    """The fixture holds what a commit of a format-1 store holds: settings, sidecars, objects, no volatile files."""
    store = FIXTURE / ".nbstore"
    assert json.loads((store / "nbstore.json").read_text()) == {"cache_limit": 500, "format": 1}
    assert not (store / "index").exists() and not (store / "lock").exists() and not (store / "tmp").exists()
    assert sorted(p.name for p in (store / "cache").iterdir()) == sorted(
        f"{r['hashkey']}.json" for r in EXPECTED["cache"]
    )


def test_format_1_store_opens_lists_and_reads(copied):
    """Every record of the fixture is listed with its pk, key, URI, data and time, and reads back whole."""
    cache = nbstore.get_cache(copied / ".nbstore")
    assert cache.get_cache_limit() == EXPECTED["cache_limit"]
    records = cache.list_cache_records()
    assert [
        {"pk": r.pk, "hashkey": r.hashkey, "uri": r.uri, "data": r.data, "description": r.description} for r in records
    ] == [{k: e[k] for k in ("pk", "hashkey", "uri", "data", "description")} for e in EXPECTED["cache"]]
    assert [r.created.isoformat() for r in records] == [e["created"] for e in EXPECTED["cache"]]
    for rec, exp in zip(records, EXPECTED["cache"], strict=True):
        bundle = cache.get_cache_bundle(rec.pk)
        source = json.loads((copied / exp["uri"]).read_text(encoding="utf-8"))
        cells = [c for s in source.get("worksheets", [source]) for c in s["cells"] if c["cell_type"] == "code"]
        assert len(bundle.nb.cells) == len(cells)
        assert bundle.nb.cells[0].outputs[0]["text"] == cells[0]["outputs"][0]["text"]
        assert {p.as_posix(): bundle.artifacts.read(p) for p in bundle.artifacts.relative_paths} == {
            name: (copied / "notebooks" / name).read_bytes() for name in exp["artifacts"]
        }


def test_format_1_store_matches_by_the_same_key_rule(copied):
    """Each fixture notebook file matches its record: the key rule of format 1 is unchanged."""
    cache = nbstore.get_cache(copied / ".nbstore")
    for exp in EXPECTED["cache"]:
        path = copied / exp["uri"]
        assert nbstore.notebook_key(json.loads(path.read_text(encoding="utf-8"))) == exp["hashkey"]
        assert cache.match_cache_file(path).pk == exp["pk"]
        pk, merged = cache.merge_match_into_file(path)
        assert pk == exp["pk"] and merged.nbformat == 4


def test_format_1_store_staging_resolves_in_its_new_place(copied):
    """Stage records (stored relative to the project) resolve inside the copy, with assets and current keys."""
    cache = nbstore.get_cache(copied / ".nbstore")
    staged = cache.list_staged_records()
    assert [(r.pk, r.uri, list(r.assets)) for r in staged] == [
        (e["pk"], str(copied / e["uri"]), [str(copied / a) for a in e["assets"]]) for e in EXPECTED["stage"]
    ]
    keys = cache.staged_keys()
    assert keys[1] == EXPECTED["cache"][0]["hashkey"]
    assert [r.uri for r in cache.list_staged_unexecuted()] == [str(copied / "notebooks" / "gamma.ipynb")]
    assert cache.get_cache_record_of_staged(1).pk == 1
    assert cache.get_staged_notebook(1).nb.cells


def test_format_1_store_verifies_clean_and_takes_new_records(copied):
    """The fixture verifies clean, gc finds nothing to free, and a new record gets the next pk."""
    cache = nbstore.get_cache(copied / ".nbstore")
    report = cache.verify()
    assert report.problems == () and report.objects_checked == 4 and report.records_checked == 5
    assert cache.gc().removed == ()
    nb = json.loads((copied / "notebooks" / "beta.ipynb").read_text(encoding="utf-8"))
    nb["cells"][1]["source"] = "print('new')"
    assert cache.cache_notebook_bundle(nbstore.NbBundleIn(nb, "notebooks/new.ipynb")).pk == 5


def test_index_written_by_format_1_is_read(copied):
    """An index file as format 1 wrote it, next to the store, gives the same answers as the sidecars."""
    shutil.copy(copied / "index-v1", copied / ".nbstore" / "index")
    cache = nbstore.get_cache(copied / ".nbstore")
    assert [(r.pk, r.hashkey) for r in cache.list_cache_records()] == [
        (e["pk"], e["hashkey"]) for e in EXPECTED["cache"]
    ]
    assert cache.verify().problems == ()


def test_read_only_use_of_the_fixture_changes_no_committed_file(copied):
    """Opening, listing, matching, reading and verifying the copy changes none of its committed files."""
    before = record_files(copied / ".nbstore")
    cache = nbstore.get_cache(copied / ".nbstore")
    for rec in cache.list_cache_records():
        cache.get_cache_bundle(rec.pk)
    cache.staged_keys()
    cache.verify()
    assert record_files(copied / ".nbstore") == before


@pytest.mark.parametrize("fmt", [2, 99, "1", None])
def test_unknown_format_is_refused_and_nothing_changes(copied, fmt):
    """A store naming a format this version does not know is a StoreFormatError from every call; no file changes."""
    config = copied / ".nbstore" / "nbstore.json"
    config.write_text(json.dumps({"cache_limit": 500, "format": fmt}) + "\n")
    before = snapshot(copied)
    cache = nbstore.get_cache(copied / ".nbstore")
    calls = [
        cache.list_cache_records,
        cache.list_staged_records,
        lambda: cache.get_cache_bundle(1),
        lambda: cache.match_cache_file(copied / "notebooks" / "alpha.ipynb"),
        lambda: cache.cache_notebook_file(copied / "notebooks" / "beta.ipynb", overwrite=True),
        lambda: cache.stage_notebook_file(copied / "notebooks" / "beta.ipynb"),
        lambda: cache.remove_cache(1),
        cache.gc,
        cache.verify,
        lambda: cache.verify(repair=True),
    ]
    for call in calls:
        with pytest.raises(StoreFormatError) as info:
            call()
        assert "format" in str(info.value)
    assert snapshot(copied) == before
