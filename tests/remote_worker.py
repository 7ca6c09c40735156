"""A separate process for the remote tests: fill a store, wait for the start signal, push (announcing progress).

Usage: python -m tests.remote_worker STORE URL FIRST COUNT START_FILE [STALL]
Caches notebooks FIRST .. FIRST+COUNT-1 (each with one artifact) into STORE, waits until START_FILE exists,
pushes to URL and prints one JSON line per progress step, then "done <records>". With STALL "PHASE:N" the push
stops (sleeping, for the test to kill it) once N files of that phase are written, mid-way through the push.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from nbstore import NbArtifacts, NbBundleIn, NbStore, push_remote
from tests.conftest import make_nb


def fill(store: NbStore, first: int, count: int, folder: Path) -> None:
    """Cache notebooks first..first+count-1, each with an artifact file unique to it."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + count):
        art = folder / f"out{i}.txt"
        art.write_text(f"artifact of notebook {i}\n" * 20)
        bundle = NbBundleIn(make_nb([f"x = {i}"]), f"nb{i}.ipynb", NbArtifacts([art], in_folder=folder))
        store.cache_notebook_bundle(bundle)


def main() -> None:
    store_path, url, first, count, start = sys.argv[1:6]
    stall_phase, _, stall_at = (sys.argv[6] if len(sys.argv) > 6 else "").partition(":")
    store = NbStore(store_path)
    fill(store, int(first), int(count), Path(store_path).parent / f"arts-{first}")
    print("ready", flush=True)
    while not os.path.exists(start):
        time.sleep(0.01)

    def progress(phase: str, done: int, total: int) -> None:
        # One write per line: the killing test parses whole lines only.
        sys.stdout.write(json.dumps({"phase": phase, "done": done, "total": total}) + "\n")
        sys.stdout.flush()
        if phase == stall_phase and done >= int(stall_at):
            time.sleep(3600)

    report = push_remote(store, url, on_progress=progress)
    print(f"done {len(report.records)}", flush=True)


if __name__ == "__main__":
    main()
