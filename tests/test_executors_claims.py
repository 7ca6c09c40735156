"""Per-key claims: one process runs a key at a time, and a waiter learns how the holder's run ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from nbstore import get_cache
from nbstore.errors import StoreWriteError
from nbstore.executors import load_executor
from nbstore.hashing import notebook_key
from nbstore.store.locking import CLAIMS_DIR, try_claim
from tests.executortools import code_nb, log_line, process_guard

KEY = "0123456789abcdef0123456789abcdef"


def test_claim_is_exclusive_until_released(tmp_path):
    """A held claim makes try_claim return None; after release it can be taken again."""
    first = try_claim(tmp_path, KEY)
    assert first is not None and first.previous is None
    assert try_claim(tmp_path, KEY) is None
    first.release()
    second = try_claim(tmp_path, KEY)
    assert second is not None
    second.release()


def test_next_holder_reads_the_outcome(tmp_path):
    """What a holder records with finish() is what the next holder finds in previous."""
    with try_claim(tmp_path, KEY) as claim:
        claim.finish("excepted", "Exception: oopsie!")
    with try_claim(tmp_path, KEY) as claim:
        previous = claim.previous
    assert previous["status"] == "excepted" and previous["reason"] == "Exception: oopsie!"
    assert previous["finished"] > 0 and isinstance(previous["pid"], int)
    with try_claim(tmp_path, KEY) as claim:
        assert "status" not in claim.previous  # released without finish: no outcome


def test_claim_of_a_killed_holder_is_free(tmp_path):
    """A process killed while holding a claim releases it (the kernel drops its flock)."""
    code = (
        "import sys, time; from pathlib import Path; from nbstore.store.locking import try_claim;"
        f"c = try_claim(Path(sys.argv[1]), {KEY!r}); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert try_claim(tmp_path, KEY) is None
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    claim = try_claim(tmp_path, KEY)
    assert claim is not None
    claim.release()


def test_claims_folder_ignores_itself(tmp_path):
    """The claims folder holds a .gitignore of '*', so stores made before it existed do not commit it."""
    try_claim(tmp_path, KEY).release()
    assert (tmp_path / CLAIMS_DIR / ".gitignore").read_text() == "*\n"
    store = get_cache(tmp_path / "store")
    store.change_cache_limit(5)
    assert "/claims/" in (tmp_path / "store" / ".gitignore").read_text().splitlines()


def test_bad_key_or_unwritable_folder(tmp_path):
    """A claim needs a notebook key (no paths) and a writable store folder."""
    with pytest.raises(ValueError):
        try_claim(tmp_path, "../../etc/passwd")
    (tmp_path / CLAIMS_DIR).write_text("not a folder")
    with pytest.raises(StoreWriteError):
        try_claim(tmp_path, KEY)


@pytest.mark.kernel
def test_run_waits_for_claims_held_elsewhere(tmp_path):
    """A key claimed elsewhere is waited for: its recorded outcome is taken, or it is run if none was recorded."""
    log = tmp_path / "runs.log"
    done_elsewhere = code_nb(tmp_path / "a.ipynb", log_line(log, "a"))
    abandoned = code_nb(tmp_path / "b.ipynb", log_line(log, "b"))
    store = tmp_path / ".nbstore"
    cache = get_cache(store)
    for path in (done_elsewhere, abandoned):
        cache.stage_notebook_file(path)
    claims = [try_claim(store, notebook_key(json.loads(p.read_text()))) for p in (done_elsewhere, abandoned)]

    def other_process_finishes() -> None:
        time.sleep(1)
        claims[0].finish("excepted", "Exception: elsewhere")
        for claim in claims:
            claim.release()

    thread = threading.Thread(target=other_process_finishes)
    thread.start()
    try:
        with process_guard():
            result = load_executor("local-serial", cache=cache).run_and_cache()
    finally:
        thread.join()
    assert result == {"succeeded": [str(abandoned)], "excepted": [str(done_elsewhere)], "errored": []}
    assert "another process" in result.outcomes[0].reason and "Exception: elsewhere" in result.outcomes[0].reason
    assert log.read_text().splitlines() == ["b"]


def _age(path, seconds: float = 7200.0) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_gc_removes_idle_claims_of_runs_long_over(tmp_path):
    """gc removes a claim no one holds once it is old, and keeps held or recent ones; dry runs keep all."""
    store = get_cache(tmp_path / ".nbstore")
    store.change_cache_limit(10)  # creates the store
    keys = ["a" * 32, "b" * 32, "c" * 32]
    for key in keys:
        try_claim(store.path, key).release()
    claims = store.path / CLAIMS_DIR
    _age(claims / keys[0])
    _age(claims / keys[1])
    held = try_claim(store.path, keys[1])
    try:
        assert store.gc(dry_run=True).removed == (f"{CLAIMS_DIR}/{keys[0]}",)
        assert (claims / keys[0]).exists()
        report = store.gc()
        assert report.removed == (f"{CLAIMS_DIR}/{keys[0]}",) and report.bytes_freed > 0
        assert sorted(p.name for p in claims.iterdir() if p.name != ".gitignore") == keys[1:]
    finally:
        held.release()
    assert try_claim(store.path, keys[0]) is not None  # a removed claim is simply made again


def test_a_claim_removed_between_open_and_lock_is_taken_afresh(tmp_path, monkeypatch):
    """If gc unlinks a claim file after try_claim opened it, try_claim claims the file now at the path."""
    import portalocker

    from nbstore.store import locking

    real_lock = portalocker.lock
    path = tmp_path / CLAIMS_DIR / KEY
    with try_claim(tmp_path, KEY) as old:
        old.finish("excepted", "old")  # an old outcome in the file gc will remove
    size = path.stat().st_size
    raced = []

    def lock_after_gc(fh, flags):
        if not raced:
            raced.append(True)
            assert locking.idle_claims(tmp_path, 0, remove=True) == [(path, size)]
        return real_lock(fh, flags)

    monkeypatch.setattr(portalocker, "lock", lock_after_gc)
    claim = try_claim(tmp_path, KEY)
    assert claim is not None and raced
    assert claim.previous is None  # the new file, not the removed one with its old outcome
    assert path.exists() and os.stat(path).st_ino == os.fstat(claim._fh.fileno()).st_ino
    assert try_claim(tmp_path, KEY) is None  # and it is held
    claim.release()
