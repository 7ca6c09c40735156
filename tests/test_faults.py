"""Faults: a full disk, a read-only store, damaged objects, index lines and sidecars, stale and busy locks."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import nbstore
from nbstore import StoreBusyError, StoreCorruptError, StoreFormatError, StoreWriteError
from nbstore.indexfile import frame
from nbstore.store.locking import store_lock
from tests.storetools import WORKER, executed_nb, record_files, snapshot, start_worker, wait_for_line, write_nb


@pytest.fixture
def filled(tmp_path):
    """A store with three cached notebooks (one with artifacts) and one staged notebook."""
    store = nbstore.get_cache(tmp_path / "store")
    folder = tmp_path / "nbs"
    for i in range(3):
        write_nb(folder / f"n{i}.ipynb", executed_nb(f"n{i}", cells=2))
    (folder / "fig.bin").write_bytes(b"figure bytes" * 100)
    store.cache_notebook_file(folder / "n0.ipynb")
    store.cache_notebook_file(folder / "n1.ipynb", artifacts=["fig.bin"], data={"a": 1})
    store.cache_notebook_file(folder / "n2.ipynb")
    store.stage_notebook_file(folder / "n0.ipynb")
    return store


def _records(store: nbstore.NbStore) -> dict:
    """Return every cache record's public fields and its notebook's outputs, by hashkey."""
    fresh = nbstore.get_cache(store.path)
    out = {}
    for rec in fresh.list_cache_records():
        bundle = fresh.get_cache_bundle(rec.pk)
        arts = {p.as_posix(): bundle.artifacts.read(p) for p in bundle.artifacts.relative_paths}
        public = {k: v for k, v in rec.to_dict().items() if k != "accessed"}
        out[rec.hashkey] = (public, [c.outputs for c in bundle.nb.cells], arts)
    return out


# ---------------------------------------------------------------------- a full disk


def _fd_in(fd: int, folder: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(f"{folder}/")
    except OSError:
        return False


class _DiskFull:
    """Fault injection: os.write into files under `folder` fails with ENOSPC once `budget` bytes are written."""

    def __init__(self, folder: Path, budget: int) -> None:
        self.folder, self.budget, self.written = folder, budget, 0
        self.real = os.write

    def __call__(self, fd: int, data) -> int:
        if not _fd_in(fd, self.folder):
            return self.real(fd, data)
        room = self.budget - self.written
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real(fd, bytes(data[:room]))  # a short write, as a filling disk gives
        self.written += n
        return n


def test_disk_full_at_every_stage_of_an_add_loses_nothing(tmp_path, filled, monkeypatch):
    """ENOSPC at each point of an add is a clear StoreWriteError; no other record changes; a retry succeeds."""
    folder = tmp_path / "nbs"
    new = write_nb(folder / "new.ipynb", executed_nb("new", cells=3, output_bytes=50_000))
    (folder / "big.bin").write_bytes(os.urandom(30_000))

    # Measure what a successful add writes, on a copy, to spread the failures over the whole write path.
    probe = tmp_path / "probe"
    shutil.copytree(filled.path, probe)
    counter = _DiskFull(probe, 1 << 40)
    monkeypatch.setattr(os, "write", counter)
    nbstore.get_cache(probe).cache_notebook_file(new, artifacts=["big.bin"])
    monkeypatch.setattr(os, "write", counter.real)
    total = counter.written
    assert total > 80_000

    before_files = record_files(filled.path)
    before = _records(filled)
    outcomes = set()
    for budget in sorted({0, 1, 100, total // 4, total // 2, 3 * total // 4, total - 200, total - 1}):
        disk = _DiskFull(filled.path, budget)
        monkeypatch.setattr(os, "write", disk)
        try:
            nbstore.get_cache(filled.path).cache_notebook_file(new, artifacts=["big.bin"])
            outcomes.add("stored")
        except StoreWriteError as exc:
            assert "no space left on device" in str(exc)
            assert str(filled.path) in str(exc)
            assert exc.errno == errno.ENOSPC
            outcomes.add("refused")
        finally:
            monkeypatch.setattr(os, "write", disk.real)
        after = _records(filled)
        # The failed add either left no trace in the records, or (if it failed after its record was durable,
        # while appending to the index) its record is whole; every earlier record is exactly as it was.
        assert {k: v for k, v in after.items() if k in before} == before
        assert set(after) - set(before) <= {nbstore.notebook_key(json.loads(new.read_text()))}
        for key in set(after) - set(before):
            nbstore.get_cache(filled.path).remove_cache(after[key][0]["pk"])
        store = nbstore.get_cache(filled.path)
        report = store.verify()
        assert report.ok, (budget, report.problems)
        store.gc(min_temp_age=0)
        assert record_files(filled.path) == before_files, f"budget {budget}: committed files changed"
    assert "refused" in outcomes
    record = nbstore.get_cache(filled.path).cache_notebook_file(new, artifacts=["big.bin"])
    assert (
        nbstore.get_cache(filled.path).get_cache_bundle(record.pk).artifacts.read("big.bin")
        == (folder / "big.bin").read_bytes()
    )


# ---------------------------------------------------------------------- a read-only store


def _run_read_only(store: Path, notebook: Path) -> tuple[dict, str]:
    """Run the read-only worker with the store folder read-only: chmod, or a read-only bind mount as root."""
    args = [sys.executable, str(WORKER), "readonly", str(store), str(notebook)]
    if os.geteuid() != 0:
        for path in [store, *store.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        finally:
            for path in [store, *store.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        how = "chmod"
    else:
        # Root ignores permission bits: mount the folder read-only in a private mount namespace instead.
        script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" || exit 99; shift; exec "$@"'
        wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(store), *args]
        proc = None
        if shutil.which("unshare") is not None:
            proc = subprocess.run(wrapped, capture_output=True, text=True, timeout=120)
            how = "read-only bind mount"
        if proc is None or proc.returncode == 99 or "unshare:" in proc.stderr:
            # No mount namespace here (a container without CAP_SYS_ADMIN): the worker injects EROFS into
            # every file-changing call under the store instead, which is what a read-only mount returns.
            env = dict(os.environ, NBSTORE_TEST_INJECT_READ_ONLY="1")
            proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
            how = "EROFS fault injection"
    assert proc.returncode == 0, f"{how}: {proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.splitlines()[-1]), how


def test_read_only_store_serves_reads_and_refuses_writes_clearly(tmp_path, filled):
    """On a read-only store folder, reads and verify work; each write is a StoreWriteError; nothing changes."""
    nb_path = tmp_path / "nbs" / "n1.ipynb"
    filled.list_cache_records()  # the index is current, as after any ordinary run
    before = snapshot(filled.path)
    result, how = _run_read_only(filled.path, nb_path)
    assert result["pks"] == [1, 2, 3]
    assert result["match"] == 2 and result["bundle_cells"] == 2
    assert list(result["staged_keys"]) == ["1"]
    assert result["verify_ok"] is True and result["verify_objects"] == 4
    for name in ("cache", "remove", "stage", "limit", "repair", "gc"):
        assert result[name].startswith("StoreWriteError: "), (how, name, result[name])
        assert "read-only" in result[name].lower() or "permission denied" in result[name].lower(), result[name]
    assert snapshot(filled.path) == before


def test_read_only_store_with_a_stale_index_still_reads(tmp_path, filled):
    """A read-only store whose index is stale or missing is read from its sidecars, without writing."""
    nb_path = tmp_path / "nbs" / "n1.ipynb"
    (filled.path / "index").unlink()
    before = snapshot(filled.path)
    result, _how = _run_read_only(filled.path, nb_path)
    assert result["pks"] == [1, 2, 3] and result["match"] == 2
    assert snapshot(filled.path) == before


# ---------------------------------------------------------------------- damaged objects


@pytest.mark.parametrize("which", ["notebook", "artifact"])
def test_altered_object_is_named_and_repair_quarantines_only_its_record(tmp_path, filled, which):
    """An object whose bytes changed is a StoreCorruptError naming it; repair moves its record aside, no other."""
    rec = filled.get_cache_record(2)
    oid = rec.notebook if which == "notebook" else rec.artifacts["fig.bin"]
    path = filled.layout.object_path(oid)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    sidecar = filled.layout.cache_sidecar(rec.hashkey)
    sidecar_bytes = sidecar.read_bytes()

    store = nbstore.get_cache(filled.path)
    assert [r.pk for r in store.list_cache_records()] == [1, 2, 3]  # listing does not read objects
    with pytest.raises(StoreCorruptError, match=f"object {oid} is corrupt"):
        bundle = store.get_cache_bundle(2)
        bundle.artifacts.read("fig.bin")
    for pk in (1, 3):
        assert store.get_cache_bundle(pk).nb.cells

    report = store.verify()
    assert not report.ok
    kinds = {(p.kind, p.path) for p in report.problems}
    assert kinds == {
        ("corrupt-object", f"objects/{oid[:2]}/{oid[2:]}"),
        ("damaged-record", f"cache/{rec.hashkey}.json"),
    }
    assert all(oid in p.detail or p.kind == "corrupt-object" for p in report.problems)

    untouched = {k: v for k, v in record_files(filled.path).items() if rec.hashkey not in k and oid[2:] not in k}
    repaired = store.verify(repair=True)
    assert repaired.ok and all(p.repaired for p in repaired.problems)
    assert [r.pk for r in store.list_cache_records()] == [1, 3]
    after = record_files(filled.path)
    assert {k: v for k, v in after.items() if k in untouched} == untouched
    # Nothing is deleted: the record and the damaged object wait in quarantine.
    quarantined = {p.name: p for p in (filled.path / "quarantine").rglob("*") if p.is_file()}
    assert quarantined[f"{rec.hashkey}.json"].read_bytes() == sidecar_bytes
    assert quarantined[oid[2:]].read_bytes() == bytes(data)
    assert store.verify().problems == ()


def test_missing_object_is_reported_and_repaired(tmp_path, filled):
    """A record whose object was deleted is reported by verify and moved to quarantine by repair."""
    rec = filled.get_cache_record(3)
    filled.layout.object_path(rec.notebook).unlink()
    store = nbstore.get_cache(filled.path)
    with pytest.raises(StoreCorruptError, match=f"object {rec.notebook} is missing"):
        store.get_cache_bundle(3)
    report = store.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("damaged-record", f"cache/{rec.hashkey}.json")]
    assert "missing" in report.problems[0].detail and "pk 3" in report.problems[0].detail
    assert store.verify(repair=True).ok
    assert [r.pk for r in store.list_cache_records()] == [1, 2]


# ---------------------------------------------------------------------- damaged index


def test_index_torn_mid_line_is_recovered(tmp_path, filled):
    """An index cut off inside its last line loses no record; verify names it; any open repairs it."""
    index = filled.path / "index"
    data = index.read_bytes()
    index.write_bytes(data[: len(data) - 30])
    store = nbstore.get_cache(filled.path)
    report = store.verify()
    assert [p.kind for p in report.problems] == ["index"]
    assert "torn or garbled" in report.problems[0].detail
    assert [r.pk for r in store.list_cache_records()] == [1, 2, 3]
    assert store.verify().problems == ()


def test_garbled_index_line_never_hides_a_record(tmp_path, filled):
    """A byte flipped inside a middle index line (the folders unchanged) hides no record from a reader."""
    index = filled.path / "index"
    lines = index.read_bytes().split(b"\n")
    target = next(i for i, line in enumerate(lines) if b'"op":"put"' in line and b'"kind":"cache"' in line)
    line = bytearray(lines[target])
    line[40] ^= 0x20
    lines[target] = bytes(line)
    index.write_bytes(b"\n".join(lines))
    expected = {r.hashkey: r.pk for r in filled.list_cache_records()}
    store = nbstore.get_cache(filled.path)
    report = store.verify()
    assert [p.kind for p in report.problems] == ["index"]
    assert "1 torn or garbled line" in report.problems[0].detail
    assert {r.hashkey: r.pk for r in store.list_cache_records()} == expected
    assert nbstore.get_cache(filled.path).verify().problems == ()
    # The next writer gets a fresh pk too.
    rec = store.cache_notebook_file(write_nb(tmp_path / "nbs" / "x.ipynb", executed_nb("x")))
    assert rec.pk == 4


def test_index_out_of_step_with_sidecars_is_found_and_repaired(tmp_path, filled):
    """An index that claims to be current but disagrees with the sidecars is reported, and repair rebuilds it."""
    sidecar = filled.layout.cache_sidecar(filled.get_cache_record(1).hashkey)
    rec = json.loads(sidecar.read_text())
    rec["description"] = "edited by hand"
    st = sidecar.parent.stat()
    sidecar.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    os.utime(sidecar.parent, ns=(st.st_atime_ns, st.st_mtime_ns))  # an edit in place leaves the folder's mtime
    store = nbstore.get_cache(filled.path)
    report = store.verify()
    assert [(p.kind, p.detail) for p in report.problems] == [
        ("index", f"cache record {rec['hashkey']} differs from its sidecar")
    ]
    assert store.verify(repair=True).ok
    assert store.get_cache_record(1).description == "edited by hand"
    assert store.verify().problems == ()


# ---------------------------------------------------------------------- damaged sidecars


def test_sidecar_with_invalid_json_is_restored_from_the_index(tmp_path, filled):
    """A sidecar overwritten with invalid JSON is named by verify, and repair writes back the index's copy."""
    rec = filled.get_cache_record(2)
    sidecar = filled.layout.cache_sidecar(rec.hashkey)
    good = sidecar.read_bytes()
    sidecar.write_bytes(b'{"pk": 2, "hashkey": ')
    store = nbstore.get_cache(filled.path)
    assert store.get_cache_bundle(2).record.hashkey == rec.hashkey  # still served from the index
    report = store.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("unreadable-record", f"cache/{rec.hashkey}.json")]
    assert "index holds its last good copy" in report.problems[0].detail
    assert store.verify(repair=True).ok
    assert sidecar.read_bytes() == good
    assert store.verify().problems == ()


def test_sidecar_with_invalid_json_and_no_index_is_skipped_named_and_quarantined(tmp_path, filled, caplog):
    """With no index to restore from, an unreadable sidecar is skipped with a warning naming it, then quarantined."""
    rec = filled.get_cache_record(2)
    sidecar = filled.layout.cache_sidecar(rec.hashkey)
    sidecar.write_bytes(b"\x00garbage")
    stage_sidecar = next((filled.path / "stage").iterdir())
    stage_sidecar.write_text("[1, 2]")
    (filled.path / "index").unlink()
    with caplog.at_level(logging.WARNING):
        store = nbstore.get_cache(filled.path)
        assert [r.pk for r in store.list_cache_records()] == [1, 3]
    assert f"{rec.hashkey}.json" in caplog.text and "nbstore verify" in caplog.text
    report = store.verify()
    assert sorted(p.path for p in report.problems if p.kind == "unreadable-record") == sorted(
        [f"cache/{rec.hashkey}.json", f"stage/{stage_sidecar.name}"]
    )
    untouched = {k: v for k, v in record_files(filled.path).items() if rec.hashkey not in k and "stage/" not in k}
    assert store.verify(repair=True).ok
    assert {k: v for k, v in record_files(filled.path).items() if k in untouched} == untouched
    assert store.verify().problems == ()
    moved = [p for p in (filled.path / "quarantine").rglob("*.json")]
    assert sorted(p.read_bytes() for p in moved) == sorted([b"\x00garbage", b"[1, 2]"])


# ---------------------------------------------------------------------- locks


def test_lock_left_by_a_killed_process_does_not_block(tmp_path, filled, monkeypatch):
    """A process SIGKILLed while holding the lock releases it: the next writer proceeds at once."""
    holder = start_worker("holdlock", str(filled.path))
    try:
        wait_for_line(holder, "locked")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (filled.path / "lock").exists()
    monkeypatch.setenv("NBSTORE_LOCK_TIMEOUT", "5")
    rec = nbstore.get_cache(filled.path).cache_notebook_file(write_nb(tmp_path / "x.ipynb", executed_nb("x")))
    assert rec.pk == 4


@pytest.mark.slow  # reads wait up to 5 s to record an access time before serving without it
def test_lock_held_by_a_live_process_is_store_busy(tmp_path, filled, monkeypatch):
    """While another process holds the lock, a writer fails with StoreBusyError saying "store busy"; reads work."""
    holder = start_worker("holdlock", str(filled.path))
    try:
        wait_for_line(holder, "locked")
        monkeypatch.setenv("NBSTORE_LOCK_TIMEOUT", "0.3")
        store = nbstore.get_cache(filled.path)
        before = record_files(filled.path)
        with pytest.raises(StoreBusyError, match="store busy") as info:
            store.cache_notebook_file(write_nb(tmp_path / "x.ipynb", executed_nb("x")))
        assert str(filled.path / "lock") in str(info.value) and "NBSTORE_LOCK_TIMEOUT" in str(info.value)
        assert isinstance(info.value, TimeoutError)
        assert [r.pk for r in store.list_cache_records()] == [1, 2, 3]
        assert store.get_cache_bundle(1).nb.cells
        with pytest.raises(StoreBusyError):
            store.verify(repair=True)
        # No record changed; only the new notebook's object, written before the lock was asked for, is extra.
        extra = {k: v for k, v in record_files(filled.path).items() if k not in before}
        assert [k.split("/")[0] for k in extra] == ["objects"]
        assert {k: v for k, v in record_files(filled.path).items() if k in before} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert nbstore.get_cache(filled.path).gc().removed == tuple(extra)
    assert record_files(filled.path) == before
    assert nbstore.get_cache(filled.path).cache_notebook_file(tmp_path / "x.ipynb").pk == 4


# ---------------------------------------------------------------------- a store being created


def test_store_being_created_reads_as_empty_not_foreign(tmp_path):
    """A folder holding only what store creation makes before nbstore.json is an empty store, not a foreign one."""
    root = tmp_path / "store"
    for name in ("objects", "cache", "stage", "tmp"):
        (root / name).mkdir(parents=True)
    (root / "lock").touch()
    (root / ".gitignore").write_text("/index\n")
    assert nbstore.get_cache(root).list_cache_records() == []
    (root / "objects" / "ab").mkdir()
    with pytest.raises(StoreFormatError, match="not an nbstore store"):
        nbstore.get_cache(root).list_cache_records()


def test_index_replaced_under_a_reader_by_a_file_with_the_same_inode(tmp_path, filled):
    """A reader whose index is replaced by a file that reuses the inode number (ext4 does) re-reads it whole."""
    index = filled.path / "index"
    reader = nbstore.get_cache(filled.path)
    assert len(reader.list_cache_records()) == 3
    offset = index.stat().st_size
    other = nbstore.get_cache(filled.path)
    for i in range(8):
        other.cache_notebook_file(write_nb(tmp_path / "more" / f"m{i}.ipynb", executed_nb(f"more{i}")))
    os.link(index, tmp_path / "old-index")  # keep the reader's inode, to put it back in place below
    with store_lock(filled.layout.lock):
        other.rebuild_index()
    compact = index.read_bytes().splitlines(keepends=True)
    os.replace(tmp_path / "old-index", index)
    assert sum(map(len, compact)) > offset + 200
    # Rewrite the compacted index into the reader's old inode, with a line ending exactly where the reader
    # stopped: the worst case of a recycled inode (a misaligned one shows up as a garbled line).
    head, used = [], 0
    while used + len(compact[len(head)]) <= offset - 60:
        used += len(compact[len(head)])
        head.append(compact[len(head)])
    pad = frame({"op": "pad", "x": ""})
    pad = frame({"op": "pad", "x": "p" * (offset - used - len(pad))})
    crafted = b"".join(head) + pad + b"".join(compact[len(head) :])
    assert len(b"".join(head) + pad) == offset
    with open(index, "r+b") as fh:
        fh.write(crafted)
        fh.truncate()
    assert len(reader.list_cache_records()) == 11
    assert reader.cache_notebook_file(write_nb(tmp_path / "last.ipynb", executed_nb("last"))).pk == 12
