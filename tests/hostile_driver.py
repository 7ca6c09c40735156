"""Run every everyday command and the artifact APIs on one (tampered) store; print what happened as JSON.

Run as `python hostile_driver.py JOBS.json`; each job names a project folder (holding `.nbstore`, a.ipynb, b.ipynb,
c.ipynb). tests/test_hostile.py starts it under an address-space limit and judges the results. Commands run in
this one process (as `nbstore ...` would run them) to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path


def run_cli(args: list[str]) -> dict:
    """Run one nbstore command in-process; return its exit status and output."""
    from nbstore.cli.app import app

    # Text streams with a byte buffer underneath, as a real stdout has (cat-artifact writes bytes).
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = app(args=args, prog_name="nbstore", standalone_mode=False)
    except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
        code = f"escaped {type(exc).__name__}: {exc}"
        err.write(traceback.format_exc())
    out.flush()
    err.flush()
    text = {
        name: stream.buffer.getvalue().decode("utf-8", "backslashreplace")
        for name, stream in (("stdout", out), ("stderr", err))
    }
    return {"cmd": " ".join(args), "code": code, **text}


def run_api(name: str, func) -> dict:
    """Run one API call; an NbStoreError is a clear refusal, anything else escaped."""
    from nbstore import NbStoreError

    try:
        value = func()
        return {"cmd": f"api {name}", "code": 0, "stdout": repr(value)[:2000], "stderr": ""}
    except NbStoreError as exc:
        return {"cmd": f"api {name}", "code": 1, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}"}
    except BaseException as exc:  # noqa: BLE001
        return {"cmd": f"api {name}", "code": f"escaped {type(exc).__name__}: {exc}", "stdout": "", "stderr": ""}


def run_case(out: Path, execute_all: bool) -> list[dict]:
    """Run the commands and API calls in the current folder (a project with a store); return their results."""
    import time

    import nbstore

    results = []
    read_only = [
        ["verify"],  # first: status rebuilds a tampered index (volatile state), healing what verify should see
        ["status"],
        ["status", "--json"],
        ["stage", "list"],
        ["stage", "show", "1"],
        ["cache", "list"],
        ["cache", "list", "--json"],
        ["cache", "show", "1"],
        ["cache", "show", "2"],
        ["match", "a.ipynb", "b.ipynb"],
        ["merge", "a.ipynb", "-o", str(out / "merged.ipynb")],
        ["cache", "cat-artifact", "1", "out.csv"],
        ["verify", "--json"],
        ["gc", "--dry-run"],
    ]

    def timed(args):
        start = time.perf_counter()
        result = run_cli(args)
        result["seconds"] = time.perf_counter() - start
        return result

    results += [timed(args) for args in read_only]

    def bundle_write_to():
        return nbstore.get_cache(".nbstore").get_cache_bundle(1).artifacts.write_to(out / "written")

    def temppath():
        with nbstore.get_cache(".nbstore").cache_artefacts_temppath(1) as folder:
            return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))

    def every_bundle():
        cache = nbstore.get_cache(".nbstore")
        got = []
        for record in cache.list_cache_records():
            bundle = cache.get_cache_bundle(record.pk)
            got.append((record.pk, len(bundle.nb.cells), [p.as_posix() for p in bundle.artifacts.relative_paths]))
        return got

    for name, func in (
        ("bundle-write_to", bundle_write_to),
        ("cache_artefacts_temppath", temppath),
        ("every-bundle", every_bundle),
        ("list_staged_unexecuted", lambda: nbstore.get_cache(".nbstore").list_staged_unexecuted()),
    ):
        start = time.perf_counter()
        results.append(run_api(name, func))
        results[-1]["seconds"] = time.perf_counter() - start
    writes = [
        # Everything staged, or (to spare a kernel start per case) just b, which the tampering leaves a hit.
        ["execute", "--executor", "local-serial", *([] if execute_all else ["b.ipynb"])],
        ["stage", "add", "a.ipynb"],
        ["cache", "add", "c.ipynb"],
        ["gc"],
        ["verify", "--repair"],
        ["verify"],
        ["status"],
        ["clear", "--yes"],
        ["verify"],
    ]
    results += [timed(args) for args in writes]
    return results


def main(jobs_file: str) -> None:
    """Run every job of the JSON list in jobs_file: {"project", "out", "result", "execute_all"} each."""
    # One process for every case: importing nbformat and Typer once, not once per tampered store.
    for job in json.loads(Path(jobs_file).read_text()):
        os.chdir(job["project"])
        results = run_case(Path(job["out"]), job["execute_all"])
        Path(job["result"]).write_text(json.dumps(results), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
