"""Large stores: compaction is amortised and exact, the snapshot is checked, listings and match need no replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import nbstore
import nbstore.store.folder as folder_module
from nbstore.cli import render
from nbstore.indexfile import frame, load
from nbstore.layout import stage_name
from nbstore.store import rows as rows_module
from tests.storetools import executed_nb, write_nb

ROOT = Path(__file__).resolve().parents[1]


def _grow(store: nbstore.NbStore, folder: Path, n: int, *, start: int = 0) -> list[Path]:
    """Cache n small executed notebooks, one file at a time, and stage every other one."""
    paths = []
    for i in range(start, start + n):
        path = write_nb(folder / f"nb{i:05d}.ipynb", executed_nb(f"grow-{i}"))
        store.cache_notebook_file(path, data={"execution_seconds": i / 1000})
        if i % 2 == 0:
            store.stage_notebook_file(path)
        paths.append(path)
    return paths


def _tables(state) -> tuple:
    return state.cache, state.stage, state.touched, state.hashes, state.high_water


@pytest.mark.slow
def test_a_store_grown_to_thousands_of_records_compacts_amortised_and_verifies_clean(tmp_path, monkeypatch):
    """3000 adds and 1500 stages: compactions write at most 3 bytes per byte appended, never re-read, verify clean."""
    # What is under test is the index's algorithm, not the disk: fsync off, as the benchmark's algorithm rows.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(folder_module, "_COMPACT_FLOOR", 16 * 1024)  # compact often: dozens of rewrites
    appended, compacted, loads = [], [], []
    real_append, real_write_index = folder_module.append_bytes, folder_module.StoreFolder._write_index
    real_load = folder_module.load
    monkeypatch.setattr(
        folder_module, "append_bytes", lambda path, data: (appended.append(len(data)), real_append(path, data))[1]
    )

    def write_index(self, state, **kwargs):
        real_write_index(self, state, **kwargs)
        compacted.append(os.path.getsize(self.layout.index))

    monkeypatch.setattr(folder_module.StoreFolder, "_write_index", write_index)
    monkeypatch.setattr(folder_module, "load", lambda data: (loads.append(len(data)), real_load(data))[1])
    store = nbstore.get_cache(tmp_path / "store")
    store.change_cache_limit(10**6)
    _grow(store, tmp_path / "nbs", 3000)

    assert len(compacted) >= 10
    assert sum(compacted) <= 3 * sum(appended)
    # The writer keeps what it wrote: the index is read from its start only when the store is first opened.
    assert len(loads) <= 1
    index = (store.path / "index").read_bytes()
    header = json.loads(index.split(b"\n", 1)[0][9:])
    assert len(index) <= header["base"] * 1.5 + 16 * 1024 + 2000
    fresh = nbstore.get_cache(store.path)
    state = fresh._read_index()
    assert fresh._current(state)
    scanned, problems, _ = fresh._scan_sidecars(state)
    assert problems == [] and _tables(scanned)[:2] == _tables(state)[:2]
    assert len(state.cache) == 3000 and len(state.stage) == 1500
    assert fresh.verify().problems == ()
    assert [r.pk for r in fresh.list_cache_records()] == list(range(1, 3001))


def test_snapshot_state_equals_the_replayed_log(tmp_path, monkeypatch):
    """After a compaction, the snapshot plus the log's tail gives what a line-by-line replay gave before it."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is test_crash's business; this is about content
    monkeypatch.setattr(folder_module, "_COMPACT_FLOOR", 2000)
    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 12)
    store.get_cache_bundle(3)
    store.set_staged_traceback(paths[0], "Traceback: boom")
    store.remove_cache(5)
    store.discard_staged_notebook(paths[2])
    before = _tables(nbstore.get_cache(store.path)._read_index())
    store._write_index(store._state_in_sync())
    data = (store.path / "index").read_bytes()
    assert data.split(b"\n")[1].startswith(b"~"), "the compacted index starts with a snapshot line"
    state, end = load(data)
    assert end == len(data) and state.bad_lines == 0
    assert _tables(state) == before
    assert state.tracebacks == {stage_name(store._stored_uri(paths[0].resolve())): "Traceback: boom"}
    again = nbstore.get_cache(store.path)
    assert [r.pk for r in again.list_cache_records()] == [pk for pk in range(1, 13) if pk != 5]
    assert again.list_staged_records()[0].traceback == "Traceback: boom"


@pytest.mark.parametrize(
    "damage",
    ["flip", "shape", "truncate"],
    ids=["garbled-snapshot", "wrong-shape-snapshot", "torn-snapshot"],
)
def test_a_damaged_snapshot_is_never_trusted(tmp_path, damage):
    """A garbled, torn or ill-shaped snapshot line makes the index untrusted: it is rebuilt and loses nothing."""
    store = nbstore.get_cache(tmp_path / "store")
    _grow(store, tmp_path / "nbs", 6)
    store._write_index(store._state_in_sync())
    index = store.path / "index"
    head, snap, rest = index.read_bytes().split(b"\n", 2)
    if damage == "flip":
        snap = snap.replace(b'"pk":3', b'"pk":9')
    elif damage == "shape":
        body = json.dumps({"cache": [], "stage": {}, "touched": {}, "tracebacks": {}, "hashes": {}, "hw": {}}).encode()
        snap = b"~%08x %s" % (zlib.crc32(body), body)
    else:
        snap = snap[: len(snap) // 2]
    index.write_bytes(head + b"\n" + snap + b"\n" + rest)
    fresh = nbstore.get_cache(store.path)
    assert not fresh._current(load(index.read_bytes())[0])
    assert [r.pk for r in fresh.list_cache_records()] == [1, 2, 3, 4, 5, 6]
    assert nbstore.get_cache(store.path).verify().problems == ()


def test_an_index_without_a_snapshot_still_opens_and_is_compacted_by_the_next_write(tmp_path):
    """An index written line by line (as version 0.1.0 wrote it) is replayed; the next write gives it a snapshot."""
    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 4)
    state = store._state_in_sync()
    lines = [frame({"op": "header", "format": 1, "id": "0123456789abcdef"})]
    lines += [frame({"op": "hw", "kind": k, "pk": state.high_water[k]}) for k in ("cache", "stage")]
    lines += [frame({"op": "put", "kind": "cache", "name": n, "rec": r}) for n, r in sorted(state.cache.items())]
    lines += [frame({"op": "put", "kind": "stage", "name": n, "rec": r}) for n, r in sorted(state.stage.items())]
    lines += [frame({"op": "sync", "fp": store._fingerprint()})] * 5000  # bloated, as 0.1.0 let it grow
    (store.path / "index").write_bytes(b"".join(lines))
    old = nbstore.get_cache(store.path)
    assert old._current(old._read_index()) and len(old.list_cache_records()) == 4
    old.stage_notebook_file(paths[1])
    data = (store.path / "index").read_bytes()
    assert data.split(b"\n")[1].startswith(b"~") and len(data) < 20_000
    assert len(nbstore.get_cache(store.path).list_staged_records()) == 3


def test_match_reads_only_the_record_its_key_names(tmp_path, monkeypatch):
    """With the index current, `nbstore match` never loads the index; when it is not, it rebuilds and answers."""
    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 5)
    missing = write_nb(tmp_path / "other.ipynb", executed_nb("never cached"))

    def no_replay(data):
        raise AssertionError("match replayed the index")

    monkeypatch.setattr(folder_module, "load", no_replay)
    fresh = nbstore.get_cache(store.path)
    key = nbstore.notebook_key(json.loads(paths[3].read_text()))
    assert rows_module.match_pk(fresh, key) == 4
    with pytest.raises(KeyError, match="hashkey"):
        rows_module.match_pk(fresh, nbstore.notebook_key(json.loads(missing.read_text())))
    monkeypatch.undo()
    # A record file changed behind the index's back (a git checkout): the full path rebuilds and answers.
    (store.path / "index").unlink()
    assert rows_module.match_pk(nbstore.get_cache(store.path), key) == 4
    out = subprocess.run(
        [sys.executable, "-m", "nbstore", "--cache", str(store.path), "match", str(paths[3]), str(missing)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 1 and out.stdout == f"4\t{paths[3]}\n"
    assert "no cached notebook matches it" in out.stderr


def test_plain_rows_agree_with_the_records(tmp_path):
    """The cache list and status tables built from plain rows equal those built from record objects."""
    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 6)
    store.get_cache_bundle(2)
    store.set_staged_traceback(paths[4], "boom")
    write_nb(paths[4], executed_nb("edited since its failed run"))
    paths[2].unlink()
    rows = rows_module.cache_rows(store)
    records = store.list_cache_records()
    assert render.cache_rows_table(rows).plain_lines() == render.cache_table(records).plain_lines()
    assert [(r["pk"], r["accessed"]) for r in rows] == [
        (r.pk, r.accessed.isoformat(timespec="microseconds")) for r in records
    ]
    status = {r["pk"]: r for r in rows_module.status_rows(store)}
    assert [status[pk]["status"] for pk in sorted(status)] == ["up to date", "missing file", "failed"]
    assert status[1]["last_run"] == render.iso_time(records[0].created) and status[1]["seconds"] == 0.0
    assert status[1]["uri"] == str(paths[0].resolve())


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe"])
def test_local_time_of_text_equals_the_datetime_conversion(zone, monkeypatch):
    """Listing times converted with the per-hour offset equal datetime's own conversion, across DST changes."""
    import time
    from datetime import datetime, timedelta

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    render._utc_offset.cache_clear()
    try:
        moment = datetime(2026, 3, 27, 0, 0, 0, 123456)
        for step in range(0, 24 * 12 * 4):
            value = moment + timedelta(minutes=5 * step, seconds=step % 60)
            text = value.isoformat(timespec="microseconds")
            assert render.local_time(text) == render.local_time(value), (zone, text)
            assert render.local_time(text + "Z") == render.local_time(value)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        render._utc_offset.cache_clear()


def test_loading_from_a_bytearray_gives_the_same_state_and_frees_the_file_bytes(tmp_path):
    """load() of the index as a bytearray builds the state bytes give, and empties the bytearray (its memory)."""
    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 6)
    store._write_index(store._state_in_sync())
    store.set_staged_traceback(paths[0], "boom")  # a log line after the snapshot
    data = (store.path / "index").read_bytes()
    buf = bytearray(data)
    state, end = load(buf)
    expected, expected_end = load(data)
    assert len(buf) == 0 and end == expected_end == len(data)
    assert _tables(state) == _tables(expected) and state.tracebacks == expected.tracebacks
    assert state.bad_lines == expected.bad_lines == 0 and state.header == expected.header


def test_a_stat_cache_entry_of_the_earlier_list_form_is_honoured_and_rewritten_as_text(tmp_path, monkeypatch):
    """An index entry [size, mtime, ctime, inode, facts, hashed] (0.1.0's) spares the read and becomes the text form."""
    from nbstore.store import cache as cache_module

    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 2)
    os.utime(paths[0], ns=(10**18, 10**18))  # modified long before it is hashed: not a racy entry
    store.staged_key_infos()
    state = store._state_in_sync()
    name = stage_name(store._stored_uri(paths[0].resolve()))
    text = state.hashes[name]
    assert isinstance(text, str)
    size, mtime, ctime, ino, hashed, key1, digest, x, tail = text.split(" ", 8)
    kernel, depends, env = json.loads(tail)
    facts = {"k": key1, "n": digest, "x": x == "1", "d": depends, "e": env, "K": kernel}
    old = [int(size), int(mtime), int(ctime), int(ino), facts, int(hashed)]
    with store.path.joinpath("index").open("ab") as f:
        f.write(frame({"op": "hash", "kind": "stage", "name": name, "stat": old}))
        f.write(frame({"op": "sync", "fp": store._fingerprint()}))
    fresh = nbstore.get_cache(store.path)
    assert fresh._state_in_sync().hashes[name] == old
    real = cache_module._read_with

    def no_read(path, reader):
        assert Path(path) != paths[0], "an unchanged notebook with a stat-cache entry was read again"
        return real(path, reader)

    monkeypatch.setattr(cache_module, "_read_with", no_read)
    infos = fresh.staged_key_infos()
    assert infos[1].key == fresh.get_cache_record(1).hashkey
    assert nbstore.get_cache(store.path)._state_in_sync().hashes[name] == text


def test_a_status_table_past_the_lazy_threshold_draws_what_the_held_table_draws(monkeypatch):
    """A status table that makes its cells as it draws prints the same lines, styles and widths as one holding them."""
    rows = [
        rows_module.StatusRow(1, "/x/ä wide 表.ipynb", "up to date", 7, "2026-03-27T01:02:03.000004Z", 0.5, ""),
        rows_module.StatusRow(12, "/x/b\x1b[31m.ipynb", "outdated", None, None, None, "code changed"),
        rows_module.StatusRow(123, "/x/c.ipynb", "failed", None, None, None, ""),
    ]
    held = render.status_table(rows)
    monkeypatch.setattr(render, "LAZY_ROWS", 2)
    lazy = render.status_table(rows)
    assert isinstance(lazy, render.LazyGrid) and not isinstance(held, render.LazyGrid)
    assert lazy.plain_lines() == held.plain_lines()
    assert [(line.plain, line.spans) for line in lazy.lines()] == [(line.plain, line.spans) for line in held.lines()]
    assert "\x1b" not in "".join(lazy.plain_lines())


def _parts_load(data: bytes):
    """load_by_parts over an index file's bytes, as _read_index calls it."""
    from nbstore.indexfile import load_by_parts, parse_lines

    head_end = data.find(b"\n") + 1
    header = parse_lines(data[:head_end])[0][0]
    return load_by_parts(header, head_end, len(data), lambda offset, length: data[offset : offset + length])


def test_a_snapshot_read_piece_by_piece_equals_the_one_parse(tmp_path, monkeypatch):
    """Read a piece at a time (pieces of 3 entries), the snapshot and its log give what one parse of the file gives."""
    import nbstore.indexfile as indexfile

    monkeypatch.setattr(indexfile, "_PIECE_ENTRIES", 3)
    monkeypatch.setattr(indexfile, "_TAIL_BLOCK", 64)  # the log after it read in blocks that cut its lines
    store = nbstore.get_cache(tmp_path / "store")
    paths = _grow(store, tmp_path / "nbs", 10)
    store.get_cache_bundle(4)
    store._write_index(store._state_in_sync())
    store.set_staged_traceback(paths[2], "boom")  # log lines after the snapshot
    store.remove_cache(2)
    store.get_cache_bundle(5)
    data = (store.path / "index").read_bytes()
    header = json.loads(data.split(b"\n", 1)[0][9:])
    assert [len(lengths) for lengths in header["parts"]][:2] == [5, 3]  # 10 cached: 4 pieces and '}'; 5 staged
    by_parts, end = _parts_load(data)
    whole, whole_end = load(data)
    assert end == whole_end == len(data)
    torn, torn_end = _parts_load(data + b'0badc0de {"op":"touch"')  # a line still being appended is left
    assert torn_end == len(data) and _tables(torn) == _tables(whole) and torn.bad_lines == 0
    assert _tables(by_parts) == _tables(whole) and by_parts.tracebacks == whole.tracebacks
    assert by_parts.header == whole.header and by_parts.fingerprint == whole.fingerprint and by_parts.bad_lines == 0
    # Cut or damaged anywhere in the snapshot, the pieces are refused (and the one parse refuses it too).
    snap_start = data.find(b"\n") + 1
    snap_end = data.find(b"\n", snap_start) + 1
    for at in range(snap_start, snap_end - 1, max(1, (snap_end - snap_start) // 40)):
        flipped = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
        assert _parts_load(flipped) is None, at
    assert _parts_load(data[: snap_end - 5]) is None
    fresh = nbstore.get_cache(store.path)
    assert [r.pk for r in fresh.list_cache_records()] == [1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert fresh.verify().problems == ()


def test_a_fresh_open_reads_the_snapshot_by_pieces_and_a_damaged_one_the_old_way(tmp_path, monkeypatch):
    """A compacted index opens without reading the file whole; with a damaged piece it is read whole and rebuilt."""
    store = nbstore.get_cache(tmp_path / "store")
    _grow(store, tmp_path / "nbs", 6)
    store._write_index(store._state_in_sync())
    whole = []
    real_load = folder_module.load
    monkeypatch.setattr(folder_module, "load", lambda data: (whole.append(len(data)), real_load(data))[1])
    assert [r.pk for r in nbstore.get_cache(store.path).list_cache_records()] == [1, 2, 3, 4, 5, 6]
    assert whole == []
    index = store.path / "index"
    data = index.read_bytes()
    index.write_bytes(data.replace(b'"pk":3', b'"pk":8', 1))
    fresh = nbstore.get_cache(store.path)
    assert [r.pk for r in fresh.list_cache_records()] == [1, 2, 3, 4, 5, 6]
    assert len(whole) >= 1 and fresh.verify().problems == ()
