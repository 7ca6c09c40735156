"""Many processes writing one store at once: nothing is lost, no pk is given twice, verify stays clean."""

from __future__ import annotations

import json
import subprocess

import pytest

import nbstore
from tests.storetools import start_worker, wait_for_line

pytestmark = pytest.mark.slow


def _run_all(procs: list[subprocess.Popen], go) -> list[str]:
    """Release the workers at once, wait for all, and return their stdouts (failing on any error)."""
    for proc in procs:
        wait_for_line(proc, "ready")
    go.touch()
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, f"worker failed:\n{out}\n{err}"
            outs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outs


def test_four_writers_fifty_notebooks_each(tmp_path):
    """Four processes caching 50 distinct notebooks each at once leave exactly 200 records with 200 distinct pks."""
    store = tmp_path / "store"
    go = tmp_path / "go"
    procs = [start_worker("cache", str(store), str(tmp_path / f"nbs{w}"), f"w{w}", "50", str(go)) for w in range(4)]
    outs = _run_all(procs, go)

    returned = {}
    for out in outs:
        for line in out.splitlines():
            _, key, pk = line.split()
            returned[key] = int(pk)
    assert len(returned) == 200

    cache = nbstore.get_cache(store)
    records = cache.list_cache_records()
    assert len(records) == 200
    assert len({r.pk for r in records}) == 200
    assert sorted(r.pk for r in records) == list(range(1, 201))
    # Every caller was told the pk its record still has.
    assert {r.hashkey: r.pk for r in records} == returned
    for record in records[::20]:
        assert cache.get_cache_bundle(record.pk).record.hashkey == record.hashkey
    report = cache.verify()
    assert report.ok, report.problems
    assert report.problems == ()
    assert report.records_checked == 200


def test_writers_mixing_cache_stage_discard_remove(tmp_path):
    """Four processes mixing cache, stage, discard, remove and reads end with exactly the records each expects."""
    store = tmp_path / "store"
    go = tmp_path / "go"
    procs = [
        start_worker("mixed", str(store), str(tmp_path / f"nbs{w}"), f"m{w}", "40", str(100 + w), str(go))
        for w in range(4)
    ]
    outs = _run_all(procs, go)

    want_cache: dict[str, int] = {}
    want_stage: set[str] = set()
    for out in outs:
        result = json.loads(out.splitlines()[-1])
        want_cache.update(result["cache"])
        want_stage.update(result["stage"])
    assert want_cache and want_stage  # the seeds exercise every kind of call

    cache = nbstore.get_cache(store)
    records = cache.list_cache_records()
    assert {r.hashkey: r.pk for r in records} == want_cache
    staged = cache.list_staged_records()
    assert {r.uri for r in staged} == want_stage
    assert len({r.pk for r in staged}) == len(staged)
    report = cache.verify()
    assert report.problems == ()
    # Nothing a removed record used is left behind once gc has run, and gc keeps all that is used.
    cache.gc(min_temp_age=0)
    assert cache.verify().problems == ()
    for record in records:
        assert cache.get_cache_bundle(record.pk).record.hashkey == record.hashkey


def test_readers_see_whole_records_while_writers_write(tmp_path):
    """A process listing and reading while three others write never sees a half-written record or object."""
    store = tmp_path / "store"
    go = tmp_path / "go"
    procs = [start_worker("cache", str(store), str(tmp_path / f"nbs{w}"), f"r{w}", "40", str(go)) for w in range(3)]
    reader = start_worker("reader", str(store), str(go), "120")
    outs = _run_all([*procs, reader], go)
    summary = json.loads(outs[-1].splitlines()[-1])
    assert summary["errors"] == [], sorted(set(summary["errors"]))[:5]
    assert summary["reads"] > 0
    assert len(nbstore.get_cache(store).list_cache_records()) == 120


def test_gc_verify_and_repair_running_alongside_writers_lose_nothing(tmp_path):
    """gc, verify and verify(repair=True) looping while three processes write find no problem and lose nothing."""
    store = tmp_path / "store"
    go = tmp_path / "go"
    procs = [start_worker("cache", str(store), str(tmp_path / f"nbs{w}"), f"g{w}", "50", str(go)) for w in range(3)]
    maint = start_worker("maint", str(store), str(go), "60")
    outs = _run_all([*procs, maint], go)
    summary = json.loads(outs[-1].splitlines()[-1])
    assert summary["problems"] == []
    returned = {}
    for out in outs[:-1]:
        for line in out.splitlines():
            _, key, pk = line.split()
            returned[key] = int(pk)
    cache = nbstore.get_cache(store)
    assert {r.hashkey: r.pk for r in cache.list_cache_records()} == returned
    assert len(returned) == 150
    assert cache.verify().problems == ()
    for record in cache.list_cache_records():
        assert cache.get_cache_bundle(record.pk).nb.cells
