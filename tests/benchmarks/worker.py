"""One timed benchmark step, run in its own process by either system's interpreter.

Usage: python worker.py ARGS.json — the JSON names the system ("nbstore" or "jcache"), the operation and its
inputs. The worker imports only the standard library, nbformat/nbclient and the system under test, does its
untimed setup, times the operation with perf_counter and prints one line "BENCH-RESULT {json}".
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path


class NbstoreSide:
    """The operations, spelled with nbstore's API."""

    @staticmethod
    def preload() -> None:
        import nbformat  # noqa: F401

        import nbstore  # noqa: F401

    def __init__(self, store: str) -> None:
        import nbstore

        self.cache = nbstore.get_cache(store)

    def add(self, path: str) -> None:
        self.cache.cache_notebook_file(path)

    def stage(self, path: str) -> None:
        self.cache.stage_notebook_file(path)

    def match(self, nb) -> bool:
        try:
            self.cache.match_cache_notebook(nb)
        except KeyError:
            return False
        return True

    def list_records(self) -> int:
        return len(self.cache.list_cache_records())

    def bundle(self, pk: int) -> int:
        return len(self.cache.get_cache_bundle(pk).nb["cells"])

    def merge(self, nb) -> int:
        return self.cache.merge_match_into_notebook(nb)[0]

    def unexecuted(self) -> int:
        return len(self.cache.list_staged_unexecuted())

    def execute(self, mode: str):
        from nbstore.executors import load_executor

        name = "local-serial" if mode == "serial" else "local-parallel"
        workers = None if mode == "serial" else 2
        return load_executor(name, cache=self.cache).run_and_cache(timeout=60, workers=workers)


class JcacheSide:
    """The same operations, spelled with jupyter-cache 1.0.1's API."""

    @staticmethod
    def preload() -> None:
        import jupyter_cache.cache.main  # noqa: F401
        import nbformat  # noqa: F401

    def __init__(self, store: str) -> None:
        from jupyter_cache import get_cache

        self.cache = get_cache(store)

    def add(self, path: str) -> None:
        self.cache.cache_notebook_file(path)

    def stage(self, path: str) -> None:
        self.cache.add_nb_to_project(path)

    def match(self, nb) -> bool:
        try:
            self.cache.match_cache_notebook(nb)
        except KeyError:
            return False
        return True

    def list_records(self) -> int:
        return len(self.cache.list_cache_records())

    def bundle(self, pk: int) -> int:
        return len(self.cache.get_cache_bundle(pk).nb["cells"])

    def merge(self, nb) -> int:
        return self.cache.merge_match_into_notebook(nb)[0]

    def unexecuted(self) -> int:
        return len(self.cache.list_unexecuted())

    def execute(self, mode: str):
        from jupyter_cache.executors import load_executor

        name = "local-serial" if mode == "serial" else "local-parallel"
        return load_executor(name, cache=self.cache).run_and_cache(timeout=60)


def _read_nbs(paths: list[str]) -> list:
    import nbformat

    return [nbformat.read(p, as_version=4) for p in paths]


def _timed(fn, items) -> tuple[float, list]:
    out = []
    start = time.perf_counter()
    for item in items:
        out.append(fn(item))
    return time.perf_counter() - start, out


def _succeeded(result) -> int:
    # nbstore's and jupyter-cache's run results both list succeeded URIs.
    return len(getattr(result, "succeeded", []) or [])


def _no_fsync() -> None:
    """Make fsync a no-op in this process (the fsync-off rows, when eatmydata is not installed)."""
    import os

    os.fsync = lambda fd: None


def grow(args: dict) -> dict:
    """Cache every notebook of a folder, then stage every one, through the API (fsync off: this is setup)."""
    import nbstore

    _no_fsync()
    files = sorted(Path(args["folder"]).glob("*.ipynb"))
    cache = nbstore.get_cache(args["store"])
    cache.change_cache_limit(10**9)
    start = time.perf_counter()
    for path in files:
        cache.cache_notebook_file(path)
    added = time.perf_counter() - start
    for path in files:
        cache.stage_notebook_file(path)
    staged = time.perf_counter() - start - added
    # The store as a fresh process sees it: as many records as notebooks, and its index current.
    fresh = nbstore.get_cache(args["store"])
    state = fresh._read_index()
    return {
        "add": added,
        "stage": staged,
        "cached": len(state.cache),
        "staged": len(state.stage),
        "current": fresh._current(state),
    }


def scale_ops(args: dict) -> dict:
    """Marginal costs in a large store: add and stage new notebooks, bundle and match old ones; then undo."""
    import random

    import nbformat

    import nbstore

    if args.get("no_fsync"):
        _no_fsync()
    cache = nbstore.get_cache(args["store"])
    count = len(cache.list_cache_records())  # opens the store outside the clock
    hits = [nbformat.read(p, as_version=4) for p in args["hits"]]
    pks = random.Random(args["seed"]).sample(range(1, count + 1), len(args["hits"]))
    out = {"count": count}
    t, records = _timed(cache.cache_notebook_file, args["new"])
    out["add"] = t / len(args["new"])
    t, staged = _timed(cache.stage_notebook_file, args["new"])
    out["stage"] = t / len(args["new"])
    t, bundles = _timed(cache.get_cache_bundle, pks)
    out["bundle"] = t / len(pks)
    t, found = _timed(cache.match_cache_notebook, hits)
    out["match"] = t / len(hits)
    out["found"] = sum(1 for r in found if r is not None)
    for record, stage in zip(records, staged, strict=True):
        cache.discard_staged_notebook(stage.pk)
        cache.remove_cache(record.pk)
    return out


def list_first(args: dict) -> dict:
    """A fresh process's open of the store and first list_cache_records (imports before the clock)."""
    import nbstore

    start = time.perf_counter()
    n = len(nbstore.get_cache(args["store"]).list_cache_records())
    return {"seconds": time.perf_counter() - start, "count": n}


def json_floor(args: dict) -> dict:
    """The floor of open + list: json.load of one file holding the records."""
    start = time.perf_counter()
    with open(args["file"], "rb") as f:
        n = len(json.load(f))
    return {"seconds": time.perf_counter() - start, "count": n}


def run(args: dict) -> dict:
    """Run one operation and return its measurements (seconds) and checks."""
    op = args["op"]
    files = args.get("files", [])
    scale = {"grow": grow, "scale_ops": scale_ops, "list_first": list_first, "json_floor": json_floor}
    if op in scale:
        return scale[op](args)
    if op == "floor":
        return floor(files)
    side_cls = NbstoreSide if args["system"] == "nbstore" else JcacheSide
    if op == "reads":
        return reads(side_cls, args)
    if op == "remote":
        return remote(args)
    side = side_cls(args["store"])
    if op in ("add", "stage"):
        seconds, _ = _timed(getattr(side, op), files)
        return {op: seconds, "n": len(files)}
    if op == "unexecuted":
        t_first, first = _timed(lambda _: side.unexecuted(), [0])
        t_again, again = _timed(lambda _: side.unexecuted(), [0])
        return {"first": t_first, "again": t_again, "unexecuted": sum(first) + sum(again)}
    if op == "execute":
        import nbclient  # noqa: F401  (imported before the clock starts, as the floor's are)

        for path in files:
            side.stage(path)
        start = time.perf_counter()
        result = side.execute(args["mode"])
        seconds = time.perf_counter() - start
        return {"execute": seconds, "succeeded": _succeeded(result), "n": len(files)}
    raise SystemExit(f"unknown op {op!r}")


def reads(side_cls, args: dict) -> dict:
    """Time the read paths in one process, as a docs build uses them: list, match, bundle, merge."""
    out: dict = {}
    side_cls.preload()  # imports stay outside the clock: "first" is opening the store and one call
    start = time.perf_counter()
    side = side_cls(args["small"])
    out["count"] = side.list_records()
    out["list_first"] = time.perf_counter() - start
    t, _ = _timed(lambda _: side.list_records(), range(10))
    out["list_repeat"] = t / 10
    hits, misses = _read_nbs(args["hits"]), _read_nbs(args["misses"])
    t, found = _timed(side.match, hits)
    out["match_hit"], out["hits_found"] = t / len(hits), sum(found)
    t, found = _timed(side.match, misses)
    out["match_miss"], out["misses_found"] = t / len(misses), sum(found)
    t, _ = _timed(side.bundle, args["pks"])
    out["bundle_small"] = t / len(args["pks"])
    t, _ = _timed(side.merge, hits)
    out["merge_small"] = t / len(hits)
    large = side_cls(args["large"])
    large_nbs = _read_nbs(args["large_files"])
    large.match(large_nbs[-1])  # opens the second store outside the clock
    t, _ = _timed(large.bundle, args["large_pks"])
    out["bundle_large"] = t / len(args["large_pks"])
    t, _ = _timed(large.merge, large_nbs)
    out["merge_large"] = t / len(large_nbs)
    return out


def remote(args: dict) -> dict:
    """Push the store to the URL, or pull the URL into a new store (imports and bucket made before the clock)."""
    import os

    os.environ.update({k: "testing" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")})
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    import fsspec

    import nbstore
    from nbstore.remote import pull_remote, push_remote

    fsspec.config.conf["s3"] = {"endpoint_url": args["endpoint"]}
    fs, root = fsspec.core.url_to_fs(args["url"])
    if args["url"].startswith("s3://") and args["direction"] == "push":
        fs.mkdir(root.split("/")[0])
    store = nbstore.get_cache(args["store"])
    action = push_remote if args["direction"] == "push" else pull_remote
    start = time.perf_counter()
    report = action(store, args["url"])
    seconds = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"{args['direction']} refused: {report.problems[:3]}")
    return {"seconds": seconds, "records": len(report.records), "objects": report.objects}


def floor(files: list[str]) -> dict:
    """Run the notebooks back to back with plain nbclient: the cost of execution itself."""
    import nbclient
    import nbformat

    start = time.perf_counter()
    for path in files:
        nb = nbformat.read(path, as_version=4)
        nbclient.execute(nb, cwd=str(Path(path).parent), timeout=60, kernel_name="python3")
    return {"floor": time.perf_counter() - start, "succeeded": len(files), "n": len(files)}


def main() -> None:
    """Read the JSON arguments file named on the command line, run, print the result line."""
    logging.basicConfig(level=logging.WARNING)
    args = json.loads(Path(sys.argv[1]).read_text())
    result = run(args)
    print("BENCH-RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
