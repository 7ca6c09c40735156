"""Per-key claims: one process runs a key at a time, and a waiter learns how the holder's run ended."""

from __future__ import annotations

import json
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
