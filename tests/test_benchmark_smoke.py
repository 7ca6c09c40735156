"""The benchmark harness (tests/benchmarks/run.py) runs start to finish on a tiny corpus, so it cannot rot."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every workload row the harness must produce, and the systems each row must have numbers for.
EXPECTED_ROWS = {
    "add_small": ("nbstore", "jcache"),
    "add_large": ("nbstore", "jcache"),
    "disk_blocks": ("nbstore", "jcache"),
    "disk_apparent": ("nbstore", "jcache"),
    "disk_kept": ("nbstore", "jcache"),
    "match_hit": ("nbstore", "jcache"),
    "match_miss": ("nbstore", "jcache"),
    "list_first": ("nbstore", "jcache"),
    "list_repeat": ("nbstore", "jcache"),
    "bundle_small": ("nbstore", "jcache"),
    "bundle_large": ("nbstore", "jcache"),
    "merge_small": ("nbstore", "jcache"),
    "merge_large": ("nbstore", "jcache"),
    "stage": ("nbstore", "jcache"),
    "unexec_first": ("nbstore", "jcache"),
    "unexec_again": ("nbstore", "jcache"),
    "cli_help": ("nbstore", "jcache", "baseline"),
    "cli_list": ("nbstore", "jcache"),
    "cli_status": ("nbstore", "jcache"),
    "cli_status_rss": ("nbstore", "jcache"),
    "cli_merge": ("nbstore", "jcache", "no nbdime"),
    "mem_status": ("nbstore", "jcache"),
    "mem_status_time": ("nbstore", "jcache"),
    "exec_trivial_serial": ("nbstore", "jcache", "floor"),
    "exec_trivial_parallel": ("nbstore", "jcache", "floor"),
    "remote_push_file": ("nbstore",),
    "remote_pull_file": ("nbstore",),
    "remote_push_s3": ("nbstore",),
    "remote_pull_s3": ("nbstore",),
}

# Every row of the scale table, each with a number for both store sizes of --quick.
EXPECTED_SCALE = {
    *(f"{op}_{fs}" for op in ("add", "stage", "bundle", "match") for fs in ("on", "off")),
    "list_first",
    "list_floor",
    "list_ratio",
    "cli_status",
    "cli_list",
    "cli_match",
    "cli_baseline",
    "cli_status_ratio",
    "cli_list_ratio",
    "status_rss",
    "disk_blocks",
    "disk_apparent",
}


@pytest.mark.slow
@pytest.mark.kernel
def test_harness_runs_every_workload_on_both_systems(tmp_path):
    """A --quick run exits 0 and reports a positive number for every workload, system and baseline."""
    out = tmp_path / "bench.json"
    argv = [
        sys.executable,
        str(ROOT / "tests" / "benchmarks" / "run.py"),
        "--quick",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--quiet",
        "--json",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
    ]
    # Its own session, so that whatever the harness started is stopped with it if the test fails.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=280)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["meta"]["errors"] == []
    assert result["meta"]["jupyter_cache"] == "1.0.1"
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == set(EXPECTED_ROWS)
    for key, systems in EXPECTED_ROWS.items():
        samples = rows[key]["samples"]
        assert set(samples) == set(systems), key
        for system in systems:
            assert samples[system], (key, system)
            assert all(math.isfinite(v) and v > 0 for v in samples[system]), (key, system, samples[system])
        assert rows[key]["met"] in (True, False, None)
    assert "| add small notebooks (per notebook) |" in stdout
    scale = {row["key"]: row for row in result["scale"]}
    assert set(scale) == EXPECTED_SCALE
    sizes = [str(n) for n in result["meta"]["sizes"]["scale_ns"]]
    assert len(sizes) == 2
    for key, row in scale.items():
        assert set(row["samples"]) == set(sizes), key
        for values in row["samples"].values():
            assert values and all(math.isfinite(v) and v > 0 for v in values), (key, values)
    assert "| open + first list_cache_records (fresh process) |" in stdout
