"""verify and gc on real stores: what each reports, what repair changes, and what neither may touch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

import nbstore
from nbstore import GcReport, Problem, StoreCorruptError, StoreFormatError, StoreNotFoundError, VerifyReport
from nbstore.layout import temp_name
from nbstore.store.fsio import HOST_TAG
from tests.storetools import executed_nb, record_files, snapshot, write_nb


@pytest.fixture
def store(tmp_path):
    """A store with three cached notebooks (two sharing an artifact) and two staged ones."""
    cache = nbstore.get_cache(tmp_path / "store")
    folder = tmp_path / "nbs"
    (folder / "shared.txt").parent.mkdir(parents=True)
    (folder / "shared.txt").write_text("shared")
    for i in range(3):
        write_nb(folder / f"n{i}.ipynb", executed_nb(f"n{i}"))
        cache.cache_notebook_file(folder / f"n{i}.ipynb", artifacts=["shared.txt"] if i < 2 else [])
    cache.stage_notebook_file(folder / "n0.ipynb")
    cache.stage_notebook_file(folder / "n1.ipynb")
    return cache


def _orphan(cache: nbstore.NbStore, data: bytes) -> str:
    """Put an object no record refers to (what an interrupted or refused add leaves) and return its path."""
    oid = hashlib.sha256(data).hexdigest()
    path = cache.layout.object_path(oid)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return f"objects/{oid[:2]}/{oid[2:]}"


def _old(path, age: float = 7200.0) -> None:
    t = time.time() - age
    os.utime(path, (t, t))


def test_reports_are_frozen_and_exported():
    """Problem, VerifyReport and GcReport are frozen dataclasses exported by nbstore."""
    for cls in (Problem, VerifyReport, GcReport):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        assert cls.__name__ in nbstore.__all__
    report = VerifyReport((Problem("index", "index", "x", repaired=True),), 0, 0)
    assert report.ok
    assert not VerifyReport((Problem("index", "index", "x"),), 0, 0).ok
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.objects_checked = 1


def test_clean_store_verifies_clean_and_counts_everything(store):
    """A sound store has no problem; verify counts every object and every record it checked."""
    report = store.verify()
    assert report.problems == () and report.ok
    assert report.objects_checked == 4  # three notebooks and one shared artifact
    assert report.records_checked == 5  # three cache records and two stage records


def test_verify_without_repair_changes_nothing(store):
    """verify (no repair) on a damaged store reports every problem and leaves every byte as it was."""
    rec = store.get_cache_record(1)
    path = store.layout.object_path(rec.notebook)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b" ")
    store.layout.cache_sidecar(store.get_cache_record(3).hashkey).write_text("{")
    (store.path / "tmp" / "x.tmp").write_bytes(b"partial")
    _old(store.path / "tmp" / "x.tmp")
    _orphan(store, b"stray bytes")
    (store.path / "objects" / "README").write_text("not an object")
    before = snapshot(store.path)
    report = store.verify()
    assert {p.kind for p in report.problems} == {
        "corrupt-object",
        "damaged-record",
        "unreadable-record",
        "stale-temp",
        "stray-file",
    }
    assert not any(p.repaired for p in report.problems)
    assert snapshot(store.path) == before


def test_repair_fixes_everything_it_reports_and_is_idempotent(store):
    """After verify(repair=True) the store verifies clean, and a second repair finds nothing to do."""
    store.layout.object_path(store.get_cache_record(3).notebook).unlink()
    (store.path / "tmp" / "x.tmp").write_bytes(b"partial")
    _old(store.path / "tmp" / "x.tmp")
    (store.path / "objects" / "README").write_text("not an object")
    report = store.verify(repair=True)
    assert report.ok and len(report.problems) == 3
    assert {p.kind for p in report.problems} == {"damaged-record", "stale-temp", "stray-file"}
    assert [r.pk for r in store.list_cache_records()] == [1, 2]
    assert store.verify(repair=True).problems == ()
    assert (store.path / "quarantine").is_dir()


def test_young_temp_files_are_left_to_their_writer(store):
    """A temp file younger than min_temp_age may belong to a live writer: verify ignores it and gc keeps it."""
    young = store.path / "tmp" / "young.tmp"
    young.write_bytes(b"being written")
    old = store.path / "tmp" / "old.tmp"
    old.write_bytes(b"left by a crash")
    _old(old)
    assert [p.path for p in store.verify().problems] == ["tmp/old.tmp"]
    report = store.gc()
    assert report.removed == ("tmp/old.tmp",) and report.bytes_freed == len(b"left by a crash")
    assert young.exists()
    assert store.gc(min_temp_age=0).removed == ("tmp/young.tmp",)


def test_temp_files_of_an_exited_writer_are_leftovers_at_once(store):
    """A young temp file whose writer (named in it) has exited is reported and removed; others wait to age."""
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(exited.stdout)
    tmp = store.path / "tmp"
    orphan = tmp / temp_name("k.json", HOST_TAG, dead, "0badf00d")
    mine = tmp / temp_name("k.json", HOST_TAG, os.getpid(), "0badf00d")
    elsewhere = tmp / temp_name("k.json", "0" * 8, dead, "0badf00d")  # another machine's pid tells nothing here
    for path in (orphan, mine, elsewhere):
        path.write_bytes(b"partial")
    problems = store.verify().problems
    assert [(p.kind, p.path) for p in problems] == [("stale-temp", f"tmp/{orphan.name}")]
    assert f"pid {dead}, has exited" in problems[0].detail
    assert store.gc().removed == (f"tmp/{orphan.name}",)
    assert mine.exists() and elsewhere.exists()


def test_gc_removes_only_unreferenced_objects(store):
    """gc removes objects no record uses (reporting paths and bytes); dry_run reports the same and removes nothing."""
    orphan = _orphan(store, b"x" * 1000)
    keep = record_files(store.path)
    del keep[orphan]
    dry = store.gc(dry_run=True)
    assert dry == GcReport(removed=(orphan,), bytes_freed=1000, dry_run=True)
    assert (store.path / orphan).exists()
    real = store.gc()
    assert real == GcReport(removed=(orphan,), bytes_freed=1000, dry_run=False)
    assert record_files(store.path) == keep
    assert store.gc().removed == ()
    assert store.verify().problems == ()


def test_gc_after_remove_keeps_shared_objects(store):
    """After a record is removed, gc keeps every object a remaining record still uses (a shared artifact)."""
    store.remove_cache(1)
    store.gc()
    assert store.verify().problems == ()
    assert store.get_cache_bundle(2).artifacts.read("shared.txt") == b"shared"


def test_gc_refuses_while_a_record_file_is_unreadable(store):
    """gc removes nothing while a cache record file cannot be parsed (it might need any object), and says so."""
    rec = store.get_cache_record(1)
    store.layout.cache_sidecar(rec.hashkey).write_text("{ damaged")
    _orphan(store, b"collectable")
    before = snapshot(store.path)
    with pytest.raises(StoreCorruptError, match=f"cache/{rec.hashkey}.json.*verify --repair"):
        store.gc()
    assert snapshot(store.path) == before
    assert store.verify(repair=True).ok  # the index still holds the record: it is written back
    assert len(store.gc().removed) == 1
    assert store.get_cache_bundle(1).nb.cells


def test_gc_keeps_objects_named_by_quarantined_records(store):
    """gc never removes an object that a record file in quarantine/ still names."""
    rec = store.get_cache_record(3)
    quarantined = store.path / "quarantine" / "by-hand" / "cache"
    quarantined.mkdir(parents=True)
    os.replace(store.layout.cache_sidecar(rec.hashkey), quarantined / f"{rec.hashkey}.json")
    assert store.gc().removed == ()
    assert store.layout.object_path(rec.notebook).exists()
    assert [r.pk for r in store.list_cache_records()] == [1, 2]


def test_duplicate_pks_are_reported_then_renumbered_deterministically(store):
    """Two records with one pk: verify names the later one; repair renumbers it and keeps the earlier pk."""
    rec1, rec2 = store.get_cache_record(1), store.get_cache_record(2)
    sidecar = store.layout.cache_sidecar(rec2.hashkey)
    data = json.loads(sidecar.read_text())
    data["pk"] = 1  # as two branches that each gave pk 1 leave it after a merge
    sidecar.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (store.path / "index").unlink()
    before = snapshot(store.path)
    report = store.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("duplicate-pk", f"cache/{rec2.hashkey}.json")]
    assert "repair renumbers it to 4" in report.problems[0].detail
    assert snapshot(store.path) == before
    repaired = store.verify(repair=True)
    assert repaired.ok and "renumbered to 4" in repaired.problems[0].detail
    assert store.match_cache_key(rec1.hashkey).pk == 1
    assert store.match_cache_key(rec2.hashkey).pk == 4
    assert store.verify().problems == ()


def test_damaged_settings_are_reported_and_rewritten(store):
    """An unreadable nbstore.json is a config problem; repair rewrites default settings; gc refuses meanwhile."""
    (store.path / "nbstore.json").write_text("{ not json")
    report = store.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("config", "nbstore.json")]
    with pytest.raises(StoreFormatError, match="damaged"):
        store.gc()
    assert store.verify(repair=True).ok
    assert json.loads((store.path / "nbstore.json").read_text()) == {"cache_limit": 1000, "format": 1}
    assert [r.pk for r in store.list_cache_records()] == [1, 2, 3]


def test_newer_format_is_refused_and_left_alone(store):
    """verify, repair and gc on a store of an unknown (newer) format raise StoreFormatError and change nothing."""
    (store.path / "nbstore.json").write_text('{"cache_limit": 1000, "format": 2}\n')
    _orphan(store, b"would be collected")
    before = snapshot(store.path)
    for call in (store.verify, lambda: store.verify(repair=True), store.gc):
        with pytest.raises(StoreFormatError, match="format 2"):
            call()
    assert snapshot(store.path) == before


def test_missing_store_is_store_not_found(tmp_path):
    """verify and gc on a folder that holds no store raise StoreNotFoundError naming it."""
    for folder in (tmp_path / "absent", tmp_path):
        with pytest.raises(StoreNotFoundError, match="no nbstore store"):
            nbstore.get_cache(folder).verify()
        with pytest.raises(StoreNotFoundError):
            nbstore.get_cache(folder).gc()
