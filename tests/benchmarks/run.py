"""Side-by-side benchmark of nbstore and jupyter-cache 1.0.1 (issue 6).

Run from the repository root with the project's interpreter:

    .venv/bin/python tests/benchmarks/run.py [--quick] [--json FILE] [--only NAME ...]

jupyter-cache is installed into a virtual environment of its own (default ~/.cache/nbstore-bench/jcache-venv,
reused when present), never into the project's. Every timed step runs in a fresh process (worker.py, with the
system's own interpreter); the systems take turns (A B A B ...), after a warm-up round, on the same seeded
synthetic notebooks. Timings are medians with min-max over the repetitions; ratio = jupyter-cache / nbstore.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (this folder is not a package: the harness runs as a script)

JCACHE_VERSION = "1.0.1"
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nbstore-bench" / "jcache-venv"
SEED = 20240601
VOLATILE = frozenset({"index", "lock", "tmp", "quarantine"})
SYSTEMS = ("nbstore", "jcache")
# Runs nbstore's CLI as a plain install would (no nbdime, nor the rfc3987_syntax its dependencies bring).
NO_NBDIME = (
    "import sys; sys.modules.update(nbdime=None, rfc3987_syntax=None); sys.argv[0] = 'nbstore'; "
    "from nbstore.cli import main; main()"
)
# Same versions on both sides, so that differences come from the two systems alone.
SHARED_PINS = ("nbformat", "nbclient", "jupyter_client", "ipykernel")


# Runs argv[1:] with its output discarded; prints "<wall seconds> <peak RSS KB of the children>".
LAUNCHER = """
import os, sys, time, resource
devnull = os.open(os.devnull, os.O_WRONLY)
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
_, status = os.waitpid(pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
if code:
    sys.exit(code)
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@dataclass
class Sizes:
    """How much work each workload does (full run or --quick)."""

    n_small: int = 1000
    n_large: int = 50
    n_probe: int = 200  # matches (hits and misses), bundles and merges per measurement
    n_exec: int = 8
    n_mem: int = 10_000
    reps: int = 3
    exec_reps: int = 3
    warmup: int = 1
    sleep: bool = True
    jcache_mem: bool = True
    n_docs: int = 8
    docs: bool = True  # Sphinx builds need a second jupyter-cache venv with Sphinx and MyST-NB: full runs only
    scale_ns: tuple[int, ...] = (500, 10_000, 100_000)  # stores of N cached and N staged notebooks
    n_scale_probe: int = 100  # notebooks added, staged, bundled and matched per marginal-cost measurement
    scale_rounds: int | None = None  # rounds of the scale rows, warm-up included (None: warm-up and reps)


FULL = Sizes()
QUICK = Sizes(
    n_small=40,
    n_large=3,
    n_probe=20,
    n_exec=2,
    n_mem=200,
    reps=2,
    exec_reps=2,
    warmup=1,
    sleep=False,
    docs=False,
    scale_ns=(50, 200),
    n_scale_probe=10,
    scale_rounds=1,  # a smoke run of the scale rows: one timed round, no warm-up
)


@dataclass
class Row:
    """One line of the result table: samples per side in the row's unit, and the target it is held to."""

    key: str
    label: str
    unit: str
    n: int | str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    target: str = ""
    judge: Callable[[Row, dict[str, Row]], tuple[str, bool | None]] | None = None
    note: str = ""

    def median(self, side: str) -> float | None:
        values = self.samples.get(side)
        return statistics.median(values) if values else None

    def ratio(self, num: str = "jcache", den: str = "nbstore") -> float | None:
        a, b = self.median(num), self.median(den)
        return a / b if a is not None and b else None


@dataclass
class ScaleRow:
    """One line of the scale table: samples per store size N, in the row's unit."""

    key: str
    label: str
    unit: str
    fsync: str = ""  # "on", "off" or "" (reads that write nothing durable)
    samples: dict[int, list[float]] = field(default_factory=dict)
    target: str = ""

    def median(self, n: int) -> float | None:
        values = self.samples.get(n)
        return statistics.median(values) if values else None


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    # Users' machines write bytecode caches; start-up times must include their benefit, as in real use.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def ensure_jcache_venv(venv: Path, log: Callable[[str], None]) -> Path:
    """Create (once) a throwaway venv with jupyter-cache 1.0.1 and the project's kernel stack; return its python."""
    python = venv / "bin" / "python"
    pins = []
    for name in SHARED_PINS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    wanted = " ".join([f"jupyter-cache=={JCACHE_VERSION}", *pins])
    stamp = venv / "nbstore-bench.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"installing {wanted} into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted.split()],
        check=True,
        env=_clean_env(),
    )
    stamp.write_text(wanted)
    return python


# The docs builds: MyST-NB and Sphinx at the project's versions on both sides.
DOCS_PINS = ("sphinx", "myst-nb", "myst-parser", "docutils")


def ensure_docs_venv(venv: Path, system: str, log: Callable[[str], None]) -> Path:
    """Create (once) a venv for one side of the docs builds; return its python.

    Both sides get Sphinx, MyST-NB and the kernel stack at the project's versions and nothing else (the
    project's own environment holds nbdime, whose rfc3987-syntax makes `import nbformat` a second slower):
    jupyter-cache 1.0.1 on one side, this checkout (editable, extra `sphinx`) on the other.
    """
    python = venv / "bin" / "python"
    pins = []
    for name in (*SHARED_PINS, *DOCS_PINS):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"the docs workload needs {name}: pip install -e '.[sphinx]'") from exc
    first = ["-e", f"{ROOT}[sphinx]"] if system == "nbstore" else [f"jupyter-cache=={JCACHE_VERSION}"]
    wanted = " ".join([*first, *pins])
    stamp = venv / "nbstore-bench.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"installing {wanted} into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted.split()],
        check=True,
        env=_clean_env(),
    )
    stamp.write_text(wanted)
    return python


DOCS_CONF = {
    "nbstore": (
        'extensions = ["myst_nb", "nbstore.sphinx"]\nnb_execution_mode = "cache"\n'
        'nbstore_cache_path = ".nbstore"\nnbstore_workers = 2\nexclude_patterns = ["_build"]\n'
    ),
    "jcache": (
        'import os\nextensions = ["myst_nb"]\nnb_execution_mode = "cache"\n'
        'nb_execution_cache_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".jupyter_cache")\n'
        'exclude_patterns = ["_build", ".jupyter_cache"]\n'
    ),
}


def du(path: Path, *, skip: frozenset[str] = frozenset()) -> tuple[int, int]:
    """Return (bytes of disk blocks used, apparent bytes) of a folder tree, as du and du --apparent-size count."""
    blocks = apparent = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if dirpath == str(path):
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for entry in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            st = os.lstat(entry)
            blocks += st.st_blocks * 512
            apparent += st.st_size
    return blocks, apparent


def real_notebooks(folder: Path) -> list[Path]:
    """Return the executed notebooks in folder that both systems accept, one per key (for --corpus)."""
    from nbstore.errors import NbStoreError
    from nbstore.hashing import notebook_key
    from nbstore.notebooks import check_validity, parse_notebook

    out, keys = [], set()
    for path in sorted(folder.glob("*.ipynb")):
        try:
            nb = parse_notebook(path.read_bytes(), source=str(path))
            check_validity(nb)
        except (NbStoreError, ValueError):
            continue
        code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        # jupyter-cache's validity rule: every code cell, empty or not, counts 1, 2, 3...
        if nb.get("nbformat") != 4 or [c.get("execution_count") for c in code] != list(range(1, len(code) + 1)):
            continue
        key = notebook_key(nb)
        if key not in keys:
            keys.add(key)
            out.append(path)
    if not out:
        raise SystemExit(f"no executed notebook in {folder} that both systems accept")
    return out


class Harness:
    """Prepares workloads, runs each on both systems in turn, collects rows."""

    def __init__(
        self, sizes: Sizes, work: Path, jc_python: Path, *, verbose: bool = True, corpus_dir: Path | None = None
    ) -> None:
        self.sizes = sizes
        self.corpus_dir = corpus_dir
        self.work = work
        self.python = {"nbstore": Path(sys.executable), "jcache": jc_python}
        self.docs_venvs = {system: jc_python.parents[2] / f"{system}-docs-venv" for system in SYSTEMS}
        self.bin = {"nbstore": Path(sys.executable).parent, "jcache": jc_python.parent}
        self.rows: dict[str, Row] = {}
        self.scale: dict[str, ScaleRow] = {}
        self.notes: list[str] = []
        self.fixtures: dict[str, Path] = {}
        self.verbose = verbose
        self._count = 0
        self.env = _clean_env()

    # ------------------------------------------------------------------ plumbing

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def row(self, key: str, label: str, unit: str, n: int | str = "", target: str = "", judge=None) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(key, label, unit, n, target=target, judge=judge)
        return self.rows[key]

    def add(self, key: str, side: str, value: float) -> None:
        self.rows[key].samples.setdefault(side, []).append(value)

    def fresh(self, name: str) -> Path:
        self._count += 1
        path = self.work / f"{name}-{self._count}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def worker(self, system: str, op: str, **args) -> dict:
        """Run one worker step in a new process with the system's interpreter; return its result."""
        self._count += 1
        argfile = self.work / "args" / f"{self._count}-{system}-{op}.json"
        argfile.parent.mkdir(exist_ok=True)
        argfile.write_text(json.dumps({"system": system, "op": op, **args}))
        python = self.python["nbstore" if op == "floor" else system]
        proc = subprocess.run(
            [str(python), str(HERE / "worker.py"), str(argfile)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.work,
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{system} {op} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1][len("BENCH-RESULT ") :])

    def command(self, argv: list[str]) -> tuple[float, float]:
        """Run a command to completion; return (wall seconds, peak RSS in MB of it and its children).

        A small launcher process starts the command: a child's peak RSS on Linux starts from its parent's
        at fork time, so forking from this (large) process would inflate it.
        """
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                [str(self.python["nbstore"]), "-S", "-c", LAUNCHER, *argv],
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.env,
                cwd=self.work,
            )
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{argv} failed (exit {proc.returncode}):\n{err.read().decode()[-3000:]}")
        wall, rss_kb = proc.stdout.split()[-2:]
        return float(wall), int(rss_kb) / 1024

    def rounds(self, reps: int | None = None) -> list[bool]:
        """Return one flag per round: True for warm-up rounds (run but not recorded)."""
        return [True] * self.sizes.warmup + [False] * (self.sizes.reps if reps is None else reps)

    def check(self, cond: bool, what: str) -> None:
        if not cond:
            raise RuntimeError(f"benchmark sanity check failed: {what}")

    # ------------------------------------------------------------------ corpus

    def make_corpus(self) -> None:
        """Write the seeded notebooks: small (cached, probed, missed), large, notebooks to execute."""
        s = self.sizes
        start = time.perf_counter()
        base = self.work / "corpus"
        if self.corpus_dir is not None:
            self.small = real_notebooks(self.corpus_dir)
            s.n_small = len(self.small)
            self.log(f"using {s.n_small} executed notebooks from {self.corpus_dir} as the small set")
        else:
            self.small = self.write_small(base)
        extra = range(s.n_small, s.n_small + s.n_probe)
        self.misses = corpus.write_set(base / "miss", [(f"m{i:05d}", corpus.make_small(SEED, i)) for i in extra])
        self.large = corpus.write_set(
            base / "large", [(f"l{i:03d}", corpus.make_large(SEED, i)) for i in range(s.n_large)]
        )
        self.exec_sets = {}
        for kind in ("trivial", "sleep"):
            nbs = [(f"{kind}{i}", corpus.make_exec_notebooks(kind, i)) for i in range(s.n_exec)]
            self.exec_sets[kind] = corpus.write_set(base / f"exec-{kind}", nbs)
        self.warm_exec = corpus.write_set(base / "exec-warm", [("warm", corpus.make_exec_notebooks("trivial", 99))])
        self.log(f"corpus written in {time.perf_counter() - start:.1f} s")

    def write_small(self, base: Path) -> list[Path]:
        s = self.sizes
        return corpus.write_set(base / "small", [(f"s{i:05d}", corpus.make_small(SEED, i)) for i in range(s.n_small)])

    def mem_corpus(self) -> list[Path]:
        base = self.work / "corpus" / "mem"
        if base.exists():
            return sorted(base.glob("*.ipynb"))
        nbs = [(f"x{i:05d}", corpus.make_small(SEED + 1, i)) for i in range(self.sizes.n_mem)]
        return corpus.write_set(base, nbs)

    @staticmethod
    def paths(files: list[Path]) -> list[str]:
        return [str(p) for p in files]

    # ------------------------------------------------------------------ fixtures

    def store_dir(self, system: str, name: str) -> Path:
        # Stores are siblings of the corpus folder, so nbstore records notebook paths relative to the project.
        return self.fresh(f"{system}-{name}")

    def copy_store(self, src: Path, name: str) -> Path:
        dst = self.fresh(name)
        shutil.copytree(src, dst)  # copystat keeps folder mtimes, so an nbstore index stays in sync
        return dst

    def fixture(self, system: str, name: str) -> Path:
        """Return a prepared store (building it once): cache_small, cache_large or staged."""
        key = f"{system}:{name}"
        if key not in self.fixtures:
            if name == "cache_small":
                store = self.store_dir(system, name)
                self.worker(system, "add", store=str(store), files=self.paths(self.small))
            elif name == "cache_large":
                store = self.store_dir(system, name)
                self.worker(system, "add", store=str(store), files=self.paths(self.large))
            elif name == "staged":
                store = self.copy_store(self.fixture(system, "cache_small"), f"{system}-staged")
                self.worker(system, "stage", store=str(store), files=self.paths(self.small))
            else:
                raise KeyError(name)
            self.fixtures[key] = store
        return self.fixtures[key]

    # ------------------------------------------------------------------ workloads

    def bench_add(self) -> None:
        """Cache n small and n large executed notebooks into a new store, one file at a time."""
        s = self.sizes
        for kind, files, unit_n in (("small", self.small, s.n_small), ("large", self.large, s.n_large)):
            key = f"add_{kind}"
            self.row(key, f"add {kind} notebooks (per notebook)", "ms", unit_n, "≥ 5×", judge_ratio(5))
            for warm in self.rounds():
                for system in SYSTEMS:
                    todo = files[: max(1, len(files) // 10)] if warm else files
                    store = self.store_dir(system, f"add-{kind}")
                    res = self.worker(system, "add", store=str(store), files=self.paths(todo))
                    if warm:
                        shutil.rmtree(store)
                        continue
                    self.add(key, system, 1000 * res["add"] / len(todo))
                    old = self.fixtures.get(f"{system}:cache_{kind}")
                    if old:
                        shutil.rmtree(old, ignore_errors=True)
                    self.fixtures[f"{system}:cache_{kind}"] = store
            if kind == "small":
                self.bench_disk()

    def bench_disk(self) -> None:
        """Disk use of the stores holding the n small notebooks (blocks and apparent size)."""
        n = self.sizes.n_small
        blocks = self.row("disk_blocks", "disk after small adds: blocks (du)", "MB", n, "nbstore ≤ jc", judge_ratio(1))
        apparent = self.row("disk_apparent", "disk after small adds: apparent size", "MB", n, "", None)
        kept = self.row("disk_kept", "disk after small adds: blocks without volatile files", "MB", n, "", None)
        for system in SYSTEMS:
            b, a = du(self.fixture(system, "cache_small"))
            blocks.samples[system] = [b / 1e6]
            apparent.samples[system] = [a / 1e6]
            # nbstore's index, lock and tmp/ are volatile (git-ignored, rebuilt from the records when absent).
            k, _ = du(self.fixture(system, "cache_small"), skip=VOLATILE if system == "nbstore" else frozenset())
            kept.samples[system] = [k / 1e6]

    def bench_reads(self) -> None:
        """match (hits, misses), list, get bundle and merge against stores of n small / large records."""
        s = self.sizes
        n_hit = min(s.n_probe, s.n_small)
        self.row("match_hit", "match_cache_notebook, hit (per call)", "ms", s.n_small, "≥ 10×", judge_ratio(10))
        self.row("match_miss", "match_cache_notebook, miss (per call)", "ms", s.n_small, "≥ 10×", judge_ratio(10))
        self.row("list_first", "list_cache_records, open + first call", "ms", s.n_small, "≥ 5×", judge_ratio(5))
        self.row("list_repeat", "list_cache_records, repeated call", "ms", s.n_small, "≥ 5×", judge_ratio(5))
        self.row("bundle_small", "get_cache_bundle, small (per call)", "ms", s.n_small, "≥ 2×", judge_ratio(2))
        self.row("bundle_large", "get_cache_bundle, large (per call)", "ms", s.n_large, "≥ 2×", judge_ratio(2))
        self.row("merge_small", "merge_match_into_notebook, small", "ms", s.n_small, "≥ 2×", judge_ratio(2))
        self.row("merge_large", "merge_match_into_notebook, large", "ms", s.n_large, "≥ 2×", judge_ratio(2))
        for warm in self.rounds():
            for system in SYSTEMS:
                res = self.worker(
                    system,
                    "reads",
                    small=str(self.fixture(system, "cache_small")),
                    large=str(self.fixture(system, "cache_large")),
                    hits=self.paths(self.small[:n_hit]),
                    misses=self.paths(self.misses),
                    pks=list(range(1, n_hit + 1)),
                    large_files=self.paths(self.large),
                    large_pks=list(range(1, s.n_large + 1)),
                )
                self.check(res["count"] == s.n_small, f"{system} listed {res['count']} records")
                self.check(res["hits_found"] == n_hit, f"{system} found {res['hits_found']} of {n_hit} hits")
                self.check(res["misses_found"] == 0, f"{system} matched {res['misses_found']} notebooks never cached")
                if not warm:
                    for key in ROW_KEYS_READS:
                        self.add(key, system, 1000 * res[key])

    def bench_stage(self) -> None:
        """Stage n notebooks into a store that caches them all; then ask which are unexecuted, twice."""
        s = self.sizes
        self.row("stage", "stage notebooks (per notebook)", "ms", s.n_small, "", judge_ratio(None))
        self.row("unexec_first", "list_staged_unexecuted, first call", "ms", s.n_small, "", judge_ratio(None))
        self.row("unexec_again", "list_staged_unexecuted, again (unchanged)", "ms", s.n_small, "≥ 50×", judge_ratio(50))
        for warm in self.rounds():
            for system in SYSTEMS:
                store = self.copy_store(self.fixture(system, "cache_small"), f"{system}-stage")
                todo = self.small[: max(1, len(self.small) // 10)] if warm else self.small
                res = self.worker(system, "stage", store=str(store), files=self.paths(todo))
                if warm:
                    shutil.rmtree(store)
                else:
                    self.add("stage", system, 1000 * res["stage"] / len(todo))
                    old = self.fixtures.get(f"{system}:staged")
                    if old:
                        shutil.rmtree(old, ignore_errors=True)
                    self.fixtures[f"{system}:staged"] = store
        for warm in self.rounds():
            for system in SYSTEMS:
                store = self.copy_store(self.fixture(system, "staged"), f"{system}-unexec")
                res = self.worker(system, "unexecuted", store=str(store))
                self.check(res["unexecuted"] == 0, f"{system} found {res['unexecuted']} unexecuted (expected 0)")
                shutil.rmtree(store)
                if not warm:
                    self.add("unexec_first", system, 1000 * res["first"])
                    self.add("unexec_again", system, 1000 * res["again"])

    def cli_argv(self, system: str, what: str, store: Path | None = None) -> list[str]:
        if system == "baseline":
            return [str(self.python["nbstore"]), "-c", "import typer, rich.console"]
        merge_args = ["merge", str(self.small[0]), "-o", str(self.work / f"merged-{system}.ipynb")]
        if system == "no nbdime":
            # A plain install: without nbdime's dependencies, jsonschema does not load rfc3987_syntax.
            return [str(self.python["nbstore"]), "-c", NO_NBDIME, "--cache", str(store), *merge_args]
        if system == "nbstore":
            exe = str(self.bin["nbstore"] / "nbstore")
            return {
                "help": [exe, "--help"],
                "list": [exe, "--cache", str(store), "cache", "list"],
                "merge": [exe, "--cache", str(store), *merge_args],
            }.get(what, [exe, "--cache", str(store), "status"])
        exe = str(self.bin["jcache"] / "jcache")
        return {
            "help": [exe, "--help"],
            "list": [exe, "cache", "-p", str(store), "list"],
            "status": [exe, "notebook", "-p", str(store), "list"],
            "merge": [exe, "notebook", "-p", str(store), "merge", str(self.small[0]), merge_args[-1]],
        }[what]

    def bench_cli(self) -> None:
        """Wall time of the command line: --help, cache list and status (jcache notebook list) at n records."""
        n = self.sizes.n_small
        self.row("cli_help", "CLI --help", "s", "", "≤ 1.5× import typer+rich", judge_baseline(1.5))
        self.row("cli_list", "CLI cache list", "s", n, "≥ 5×", judge_ratio(5))
        self.row("cli_status", "CLI status (jcache notebook list)", "s", n, "≥ 5× vs jcache cache list", judge_status)
        self.row("cli_status_rss", "CLI status: peak memory", "MB", n, "", None)
        self.row("cli_merge", "CLI merge one notebook (nbdime installed)", "s", n, "≤ 1.5× nbstore status", judge_merge)
        stores = {
            system: {
                "list": self.fixture(system, "cache_small"),
                "status": self.fixture(system, "staged"),
                "merge": self.fixture(system, "staged"),
            }
            for system in SYSTEMS
        }
        stores["no nbdime"] = stores["nbstore"]
        for warm in self.rounds():
            for what in ("help", "list", "status", "merge"):
                sides = {"help": ("baseline", *SYSTEMS), "merge": (*SYSTEMS, "no nbdime")}.get(what, SYSTEMS)
                for system in sides:
                    store = stores.get(system, {}).get(what)
                    wall, rss = self.command(self.cli_argv(system, what, store))
                    if not warm:
                        self.add(f"cli_{what}", system, wall)
                        if what == "status":
                            self.add("cli_status_rss", system, rss)

    def bench_memory(self) -> None:
        """Peak memory (and time) of status over n_mem staged notebooks; jupyter-cache once (it takes minutes)."""
        n = self.sizes.n_mem
        self.row("mem_status", "status: peak memory (RSS)", "MB", n, "nbstore < 200 MB", judge_memory(200))
        self.row("mem_status_time", "status: wall time", "s", n, "", judge_ratio(None))
        files = self.paths(self.mem_corpus())
        systems = SYSTEMS if self.sizes.jcache_mem else ("nbstore",)
        stores = {}
        for system in systems:
            stores[system] = self.store_dir(system, "mem")
            start = time.perf_counter()
            self.worker(system, "stage", store=str(stores[system]), files=files)
            self.log(f"{system}: staged {n} notebooks in {time.perf_counter() - start:.1f} s")
        for i, warm in enumerate(self.rounds()):
            for system in systems:
                if system == "jcache" and i != len(self.rounds()) - 1:
                    continue  # `jcache notebook list` re-reads every file: one measurement, in the last round
                wall, rss = self.command(self.cli_argv(system, "status", stores[system]))
                if not warm:
                    self.add("mem_status", system, rss)
                    self.add("mem_status_time", system, wall)

    def execute_once(self, system: str, kind: str, mode: str, files: list[str]) -> dict:
        """Run one execution measurement; a run where a notebook failed is noted and run again (twice at most)."""
        for attempt in range(3):
            if system == "floor":
                res = self.worker("nbstore", "floor", files=files)
            else:
                store = self.store_dir(system, f"exec-{kind}-{mode}")
                res = self.worker(system, "execute", store=str(store), files=files, mode=mode)
                shutil.rmtree(store, ignore_errors=True)
            if res["succeeded"] == len(files):
                return res
            note = f"{system} {mode} {kind}: a run executed {res['succeeded']}/{len(files)} notebooks"
            self.notes.append(note + (", ran again" if attempt < 2 else ""))
            self.log(note)
        self.check(False, f"{system} {mode} failed notebooks in 3 runs")
        return res

    def bench_execute(self) -> None:
        """Execute n trivial (and n one-second) notebooks: serial, 2 workers, and plain nbclient back to back."""
        n = self.sizes.n_exec
        kinds = ("trivial", "sleep") if self.sizes.sleep else ("trivial",)
        for kind in kinds:
            self.row(f"exec_{kind}_serial", f"execute {kind}, serial", "s", n, "≤ 1.1× floor", judge_exec(1.1, 1))
            self.row(
                f"exec_{kind}_parallel", f"execute {kind}, 2 workers", "s", n, "≤ 1.15× floor/2", judge_exec(1.15, 2)
            )
        rounds = self.rounds(self.sizes.exec_reps)
        for i, warm in enumerate(rounds):
            for kind in kinds:
                files = self.paths(self.warm_exec if warm else self.exec_sets[kind])
                if warm and kind != kinds[0]:
                    continue
                for system in (*SYSTEMS, "floor"):
                    modes = ("serial",) if system == "floor" else ("serial", "parallel")
                    for mode in modes:
                        res = self.execute_once(system, kind, mode, files)
                        if warm:
                            continue
                        seconds = res["floor" if system == "floor" else "execute"]
                        if system == "floor":
                            self.add(f"exec_{kind}_serial", "floor", seconds)
                            self.add(f"exec_{kind}_parallel", "floor", seconds)
                        else:
                            self.add(f"exec_{kind}_{mode}", system, seconds)
            self.log(f"execution round {i + 1}/{len(rounds)} done")

    def write_book(self, system: str) -> Path:
        """Write the book: an index and n_docs chapters, each a notebook whose code takes about a second."""
        root = self.fresh(f"book-{system}")
        src = root / "src"
        chapters = []
        for i in range(self.sizes.n_docs):
            nb = corpus.make_exec_notebooks("sleep", i)
            title = {"cell_type": "markdown", "id": "t", "metadata": {}, "source": f"# Chapter {i}\n\nSome prose."}
            nb["cells"].insert(0, title)
            mark = {"cell_type": "code", "execution_count": None, "id": "m", "metadata": {}, "outputs": []}
            nb["cells"].append(dict(mark, source=f"print('OUTPUT-' + 'MARK-{i}')"))
            chapters.append((f"chapter{i}", nb))
        corpus.write_set(src, chapters)
        toc = "\n".join(name for name, _ in chapters)
        (src / "index.md").write_text(f"# Book\n\n```{{toctree}}\n{toc}\n```\n")
        (src / "conf.py").write_text(DOCS_CONF[system])
        return root

    def sphinx_build(self, system: str, root: Path) -> float:
        """Build the book's HTML with every document read (-E); return the wall seconds."""
        argv = [str(self.docs_python[system]), "-m", "sphinx", "-b", "html", "-q", "-E"]
        wall, _ = self.command([*argv, str(root / "src"), str(root / "out")])
        for i in range(self.sizes.n_docs):
            page = (root / "out" / f"chapter{i}.html").read_text(encoding="utf-8")
            # The marker is split in the source: whole, it can only be the cell's output.
            self.check(f"OUTPUT-MARK-{i}" in page, f"{system}: chapter{i} was built without its outputs")
        return wall

    def bench_docs(self) -> None:
        """Sphinx builds of a book of notebooks: nbstore.sphinx against MyST-NB's cache mode on jupyter-cache."""
        if not self.sizes.docs:
            return
        n = self.sizes.n_docs
        self.docs_python = {s: ensure_docs_venv(self.docs_venvs[s], s, self.log) for s in SYSTEMS}
        self.row("docs_cold", "Sphinx build, cold (empty cache)", "s", n, "≥ 1.25×", judge_ratio(1.25))
        self.row("docs_warm", "Sphinx build -E, warm (all cached)", "s", n, "≥ 1× (no slower)", judge_ratio(1.0))
        for warm in self.rounds():
            for system in SYSTEMS:
                root = self.write_book(system)
                cold = self.sphinx_build(system, root)
                again = self.sphinx_build(system, root)
                shutil.rmtree(root, ignore_errors=True)
                if not warm:
                    self.add("docs_cold", system, cold)
                    self.add("docs_warm", system, again)

    # ------------------------------------------------------------------ scale (issue 10)

    def srow(self, key: str, label: str, unit: str, fsync: str = "", target: str = "") -> ScaleRow:
        if key not in self.scale:
            self.scale[key] = ScaleRow(key, label, unit, fsync, target=target)
        return self.scale[key]

    def sadd(self, key: str, n: int, value: float) -> None:
        self.scale[key].samples.setdefault(n, []).append(value)

    def no_fsync_prefix(self) -> tuple[list[str], dict]:
        """How a fsync-off worker runs: under eatmydata when installed, else with os.fsync patched in-process."""
        eat = shutil.which("eatmydata")
        return ([eat], {}) if eat else ([], {"no_fsync": True})

    def scale_worker(self, op: str, *, fsync: bool = True, **args) -> dict:
        """Run one nbstore worker step for the scale rows (fsync off: under eatmydata, or patched)."""
        prefix, extra = ([], {}) if fsync else self.no_fsync_prefix()
        self._count += 1
        argfile = self.work / "args" / f"{self._count}-scale-{op}.json"
        argfile.parent.mkdir(exist_ok=True)
        argfile.write_text(json.dumps({"system": "nbstore", "op": op, **args, **extra}))
        proc = subprocess.run(
            [*prefix, str(self.python["nbstore"]), str(HERE / "worker.py"), str(argfile)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.work,
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"scale {op} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1][len("BENCH-RESULT ") :])

    def grow_scale_store(self, n: int) -> tuple[Path, Path, list[Path]]:
        """Write n small notebooks and grow a store caching and staging all of them through the API (fsync off).

        Returns the store, a JSON file holding its n cache records (the floor of open + list), and
        n_scale_probe more notebooks never cached (the marginal adds).
        """
        folder = self.work / "corpus" / f"scale-{n}"
        corpus.write_set(folder, [(f"n{i:06d}", corpus.make_small(SEED + 2, i)) for i in range(n)])
        probe = self.sizes.n_scale_probe
        extra = corpus.write_set(
            self.work / "corpus" / f"scale-{n}-new",
            [(f"p{i:06d}", corpus.make_small(SEED + 3, i)) for i in range(probe)],
        )
        store = self.fresh(f"scale-{n}")
        start = time.perf_counter()
        res = self.scale_worker("grow", store=str(store), folder=str(folder), fsync=False)
        self.check(res["cached"] == n and res["staged"] == n and res["current"], f"grown store at {n}: {res}")
        self.log(f"scale {n}: grew the store in {time.perf_counter() - start:.0f} s (add {res['add']:.0f} s)")
        floor = self.work / f"scale-{n}-records.json"
        records = []
        for path in sorted((store / "cache").iterdir()):
            records.append(json.loads(path.read_bytes()))
        floor.write_text(json.dumps(records))
        return store, floor, extra

    def bench_scale(self) -> None:
        """Cost against store size N (N cached + N staged notebooks): marginal writes and reads, open, CLI, memory."""
        s = self.sizes
        for fs in ("on", "off"):
            self.srow(f"add_{fs}", "add a notebook (cache_notebook_file)", "ms", fs, "≤ 1.5× N=500 (fsync off)")
            self.srow(f"stage_{fs}", "stage a notebook", "ms", fs, "≤ 1.5× N=500 (fsync off)")
            self.srow(f"bundle_{fs}", "get_cache_bundle", "ms", fs, "≤ 1.5× N=500 (fsync off)")
            self.srow(f"match_{fs}", "match_cache_notebook", "ms", fs, "≤ 1.5× N=500 (fsync off)")
        self.srow("list_first", "open + first list_cache_records (fresh process)", "ms", "", "≤ 4× json.load floor")
        self.srow("list_floor", "floor: json.load of one file of the N records", "ms", "")
        self.srow("list_ratio", "open + first list ÷ floor", "×", "", "≤ 4×")
        self.srow("cli_status", "CLI status", "s", "", "≤ 3× import typer+rich")
        self.srow("cli_list", "CLI cache list", "s", "", "≤ 3× import typer+rich")
        self.srow("cli_match", "CLI match one notebook", "s", "", "≤ 1.3× N=500")
        self.srow("cli_baseline", 'baseline: python -c "import typer, rich.console"', "s", "")
        self.srow("cli_status_ratio", "CLI status ÷ baseline", "×", "", "≤ 3×")
        self.srow("cli_list_ratio", "CLI cache list ÷ baseline", "×", "", "≤ 3×")
        self.srow("status_rss", "CLI status: peak memory (RSS)", "MB", "", "< 250 MB at 100,000")
        self.srow("disk_blocks", "disk: store blocks (du)", "MB", "")
        self.srow("disk_apparent", "disk: store apparent size", "MB", "")
        exe = str(self.bin["nbstore"] / "nbstore")
        for n in s.scale_ns:
            store, floor, extra = self.grow_scale_store(n)
            blocks, apparent = du(store)
            self.sadd("disk_blocks", n, blocks / 1e6)
            self.sadd("disk_apparent", n, apparent / 1e6)
            hits = sorted((self.work / "corpus" / f"scale-{n}").glob("*.ipynb"))[: s.n_scale_probe]
            rounds = self.rounds() if s.scale_rounds is None else [False] * s.scale_rounds
            for i, warm in enumerate(rounds):
                for fs in ("on", "off"):
                    res = self.scale_worker(
                        "scale_ops",
                        fsync=fs == "on",
                        store=str(store),
                        new=self.paths(extra),
                        hits=self.paths(hits),
                        seed=SEED + i,
                    )
                    self.check(res["count"] == n and res["found"] == len(hits), f"scale ops at {n}: {res}")
                    if not warm:
                        for op in ("add", "stage", "bundle", "match"):
                            self.sadd(f"{op}_{fs}", n, 1000 * res[op])
                first = self.scale_worker("list_first", store=str(store))
                base = self.scale_worker("json_floor", file=str(floor))
                self.check(first["count"] == n and base["count"] == n, f"list at {n}: {first} {base}")
                walls = {}
                for what, argv in (
                    ("cli_baseline", [str(self.python["nbstore"]), "-c", "import typer, rich.console"]),
                    ("cli_status", [exe, "--cache", str(store), "status"]),
                    ("cli_list", [exe, "--cache", str(store), "cache", "list"]),
                    ("cli_match", [exe, "--cache", str(store), "match", str(hits[-1])]),
                ):
                    walls[what], rss = self.command(argv)
                    if what == "cli_status" and not warm:
                        self.sadd("status_rss", n, rss)
                if warm:
                    continue
                self.sadd("list_first", n, 1000 * first["seconds"])
                self.sadd("list_floor", n, 1000 * base["seconds"])
                self.sadd("list_ratio", n, first["seconds"] / base["seconds"])
                for what, wall in walls.items():
                    self.sadd(what, n, wall)
                self.sadd("cli_status_ratio", n, walls["cli_status"] / walls["cli_baseline"])
                self.sadd("cli_list_ratio", n, walls["cli_list"] / walls["cli_baseline"])
            self.log(f"scale {n}: measured")
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(self.work / "corpus" / f"scale-{n}", ignore_errors=True)
            floor.unlink()

    def bench_remote(self) -> None:
        """push/pull of the n small cached notebooks to a file:// remote and to a local S3 server (moto)."""
        n = self.sizes.n_small
        for target, where in (("file", "file://"), ("s3", "S3 (moto on 127.0.0.1)")):
            for direction in ("push", "pull"):
                label = f"{direction} {'to' if direction == 'push' else 'from'} {where} (per record)"
                self.row(f"remote_{direction}_{target}", label, "ms", n)
        source = self.fixture("nbstore", "cache_small")
        with moto_server(self.bin["nbstore"]) as endpoint:
            for i, warm in enumerate(self.rounds()):
                for target in ("file", "s3"):
                    if target == "file":
                        url = f"file://{self.fresh('remote-file')}"
                    else:
                        url = f"s3://nbstore-bench-{self._count}-{i}/store"
                    common = {"url": url, "endpoint": endpoint}
                    pushed = self.worker("nbstore", "remote", store=str(source), direction="push", **common)
                    dest = self.fresh("pulled")
                    pulled = self.worker("nbstore", "remote", store=str(dest), direction="pull", **common)
                    self.check(pushed["records"] == n and pulled["records"] == n, f"{target}: {pushed} {pulled}")
                    shutil.rmtree(dest, ignore_errors=True)
                    if not warm:
                        self.add(f"remote_push_{target}", "nbstore", pushed["seconds"] * 1000 / n)
                        self.add(f"remote_pull_{target}", "nbstore", pulled["seconds"] * 1000 / n)
                self.log(f"remote round {i + 1}/{len(self.rounds())} done")


@contextlib.contextmanager
def moto_server(bin_dir: Path):
    """Run moto's S3 server on a free port of 127.0.0.1 for the block; yield its endpoint URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------- targets


def judge_ratio(minimum: float | None):
    """Target: jupyter-cache's median over nbstore's is at least minimum (None: reported only)."""

    def judge(row: Row, rows: dict[str, Row]) -> tuple[str, bool | None]:
        ratio = row.ratio()
        if ratio is None:
            return "", None
        return f"{ratio:.1f}×", None if minimum is None else ratio >= minimum

    return judge


def judge_baseline(maximum: float):
    """Target: nbstore's median is within maximum × the baseline's."""

    def judge(row: Row, rows: dict[str, Row]) -> tuple[str, bool | None]:
        nb, base = row.median("nbstore"), row.median("baseline")
        if nb is None or not base:
            return "", None
        ratio = row.ratio()
        text = f"{nb / base:.2f}× baseline" + (f"; jc/nb {ratio:.1f}×" if ratio else "")
        return text, nb / base <= maximum

    return judge


def judge_status(row: Row, rows: dict[str, Row]) -> tuple[str, bool | None]:
    """Target: nbstore status is 5x faster than `jcache cache list` (the issue's yardstick)."""
    nb, jc_list = row.median("nbstore"), rows["cli_list"].median("jcache") if "cli_list" in rows else None
    if not nb or jc_list is None:
        return "", None
    ratio = row.ratio()
    return f"{jc_list / nb:.1f}× vs cache list; {ratio:.1f}× vs notebook list", jc_list / nb >= 5


def judge_merge(row: Row, rows: dict[str, Row]) -> tuple[str, bool | None]:
    """Target: `nbstore merge` takes at most 1.5x `nbstore status` on the same store (no nbformat import)."""
    nb, status = row.median("nbstore"), rows["cli_status"].median("nbstore") if "cli_status" in rows else None
    if not nb or not status:
        return "", None
    return f"{nb / status:.2f}× status", nb / status <= 1.5


def judge_exec(maximum: float, workers: int):
    """Target: nbstore within maximum × (floor / workers), and never slower than jupyter-cache."""

    def judge(row: Row, rows: dict[str, Row]) -> tuple[str, bool | None]:
        nb, floor, jc = row.median("nbstore"), row.median("floor"), row.median("jcache")
        if nb is None or not floor:
            return "", None
        over = nb / (floor / workers)
        text = f"{over:.2f}× floor" + ("" if workers == 1 else "/2") + (f"; jc/nb {jc / nb:.2f}×" if jc else "")
        return text, over <= maximum and (jc is None or nb <= jc)

    return judge


def judge_memory(limit: float):
    def judge(row: Row, rows: dict[str, Row]) -> tuple[str, bool | None]:
        nb = row.median("nbstore")
        return ("", None) if nb is None else (f"{nb:.0f} MB", nb < limit)

    return judge


# ---------------------------------------------------------------------- output


def _num(value: float) -> str:
    """Three significant digits, without an exponent."""
    if value == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


def _fmt(values: list[float] | None) -> str:
    if not values:
        return "—"
    med = _num(statistics.median(values))
    return med if len(values) == 1 else f"{med} ({_num(min(values))}–{_num(max(values))})"


def table(rows: list[Row]) -> str:
    """Render rows as a Markdown table."""
    head = ["workload", "n", "unit", "nbstore", "jupyter-cache", "other", "jc / nb", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        extra = [s for s in row.samples if s not in SYSTEMS]
        other = "; ".join(f"{s} {_fmt(row.samples[s])}" for s in extra)
        ratio = row.ratio()
        text, ok = row.judge(row, {r.key: r for r in rows}) if row.judge else ("", None)
        verdict = "" if ok is None else ("met" if ok else "**missed**")
        cells = [
            row.label,
            str(row.n),
            row.unit,
            _fmt(row.samples.get("nbstore")),
            _fmt(row.samples.get("jcache")),
            other,
            f"{ratio:.1f}×" if ratio else "",
            f"{row.target} {text}".strip(),
            verdict,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_table(rows: list[ScaleRow], ns: tuple[int, ...]) -> str:
    """Render the scale rows as a Markdown table: one column per store size N, and each N's ratio to the smallest."""
    first = ns[0]
    head = ["workload", "unit", "fsync", *(f"N={n:,}" for n in ns), *(f"{n:,} ÷ {first:,}" for n in ns[1:]), "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        growth = []
        for n in ns[1:]:
            a, b = row.median(n), row.median(first)
            growth.append(f"{a / b:.2f}×" if a is not None and b else "")
        cells = [row.label, row.unit, row.fsync or "—", *(_fmt(row.samples.get(n)) for n in ns), *growth, row.target]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(rows: list[Row], meta: dict) -> dict:
    """Return the results as plain data: the same numbers as the table."""
    out = []
    by_key = {r.key: r for r in rows}
    for row in rows:
        text, ok = row.judge(row, by_key) if row.judge else ("", None)
        out.append(
            {
                "key": row.key,
                "label": row.label,
                "n": row.n,
                "unit": row.unit,
                "samples": row.samples,
                "median": {s: row.median(s) for s in row.samples},
                "min": {s: min(v) for s, v in row.samples.items() if v},
                "max": {s: max(v) for s, v in row.samples.items() if v},
                "ratio_jcache_over_nbstore": row.ratio(),
                "target": row.target,
                "judgement": text,
                "met": ok,
            }
        )
    return {"meta": meta, "rows": out}


def machine() -> str:
    """Describe the machine: CPU model and count, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} × {cpu}{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


ROW_KEYS_READS = (
    "match_hit",
    "match_miss",
    "list_first",
    "list_repeat",
    "bundle_small",
    "bundle_large",
    "merge_small",
    "merge_large",
)

WORKLOADS = {
    "add": "bench_add",
    "reads": "bench_reads",
    "stage": "bench_stage",
    "cli": "bench_cli",
    "memory": "bench_memory",
    "execute": "bench_execute",
    "docs": "bench_docs",
    "remote": "bench_remote",
    "scale": "bench_scale",
}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen workloads, print the table and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="small sizes, no 1 s notebooks (for iterating and the smoke test)"
    )
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--only", nargs="+", choices=sorted(WORKLOADS), help="run only these workload groups")
    p.add_argument("--reps", type=int, help="timed repetitions per workload (default 3; --quick 2)")
    p.add_argument("--warmup", type=int, help="warm-up rounds before them (default 1)")
    p.add_argument(
        "--no-jcache-mem", action="store_true", help="skip jupyter-cache in the 10,000-notebook memory workload"
    )
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"jupyter-cache's venv (default {DEFAULT_VENV})")
    p.add_argument("--workdir", type=Path, help="keep the stores and corpus here (default: a removed temp folder)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--corpus",
        type=Path,
        help="use the executed notebooks in this folder (e.g. ../shared/corpus) instead of the synthetic small set",
    )
    p.add_argument(
        "--scale-ns",
        type=int,
        nargs="+",
        help="store sizes N of the scale rows (default 500 10000 100000; --quick 50 200)",
    )
    args = p.parse_args(argv)

    sizes = Sizes(**vars(QUICK if args.quick else FULL))
    if args.reps is not None:
        sizes.reps = sizes.exec_reps = args.reps
    if args.warmup is not None:
        sizes.warmup = args.warmup
    sizes.jcache_mem = not args.no_jcache_mem
    if args.scale_ns:
        sizes.scale_ns = tuple(sorted(args.scale_ns))
    if args.only and "docs" in args.only:
        sizes.docs = True
    started = time.perf_counter()
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    jc_python = ensure_jcache_venv(args.venv, log)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nbstore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    harness = Harness(
        sizes, work, jc_python, verbose=not args.quiet, corpus_dir=args.corpus.resolve() if args.corpus else None
    )
    errors: list[str] = []
    try:
        harness.make_corpus()
        groups = args.only or list(WORKLOADS)
        for name in WORKLOADS:
            if name in groups:
                t0 = time.perf_counter()
                try:
                    getattr(harness, WORKLOADS[name])()
                except Exception as exc:  # one broken group must not lose the others' numbers
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    harness.log(f"{name} FAILED: {exc}")
                harness.log(f"{name}: {time.perf_counter() - t0:.0f} s")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    rows = list(harness.rows.values())
    jc_version = subprocess.run(
        [str(jc_python), "-c", "import jupyter_cache; print(jupyter_cache.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "jupyter_cache": jc_version,
        "nbstore": metadata.version("nbstore-cache"),
        "sizes": vars(sizes),
        "corpus": str(args.corpus) if args.corpus else "synthetic",
        "seconds": round(time.perf_counter() - started, 1),
        "errors": errors,
        "notes": harness.notes,
        "command": " ".join(["python", "tests/benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "fsync_off": "eatmydata" if shutil.which("eatmydata") else "os.fsync patched out in the worker",
    }
    print(f"\nnbstore benchmark — {meta['date']} — {meta['machine']}")
    print(
        f"jupyter-cache {jc_version} vs nbstore {meta['nbstore']}; {sizes.reps} runs ({sizes.exec_reps} for execution)"
        f" after {sizes.warmup} warm-up;"
    )
    print(f"medians (min–max); jc / nb = jupyter-cache ÷ nbstore (higher is better for nbstore); {meta['seconds']} s\n")
    if rows:
        print(table(rows))
    scale_rows = list(harness.scale.values())
    if scale_rows:
        print(f"\nCost against store size N (N cached + N staged notebooks); fsync off via {meta['fsync_off']}\n")
        print(scale_table(scale_rows, sizes.scale_ns))
    if args.json:
        doc = to_json(rows, meta)
        doc["scale"] = [
            {
                "key": r.key,
                "label": r.label,
                "unit": r.unit,
                "fsync": r.fsync,
                "target": r.target,
                "samples": {str(n): v for n, v in r.samples.items()},
                "median": {str(n): r.median(n) for n in r.samples},
            }
            for r in scale_rows
        ]
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    for note in harness.notes:
        print(f"note: {note}")
    for error in errors:
        print(f"\nFAILED {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
