"""The executor API without kernels: loading by entry point, options, and the result mapping."""

from __future__ import annotations

import json
import sys

import pytest

from nbstore import get_cache
from nbstore.errors import ExecutionError, ExecutorNotFoundError
from nbstore.executors import ExecutionResult, NotebookOutcome, list_executors, load_executor
from tests.conftest import make_nb


def test_list_executors_names_the_shipped_ones():
    """list_executors returns the entry points of the five shipped executors."""
    names = [ep.name for ep in list_executors()]
    assert set(names) >= {"basic", "local-serial", "temp-serial", "local-parallel", "temp-parallel"}
    assert names == sorted(names)


def test_load_executor_repr_and_kind(tmp_path):
    """load_executor binds the named class to the cache; its repr names both, as the seed shows."""
    cache = get_cache(tmp_path / ".nbstore")
    executor = load_executor("basic", cache=cache)
    assert repr(executor) == f"LocalSerialExecutor(cache=NbStore('{tmp_path / '.nbstore'}'))"
    assert type(load_executor("temp-parallel", cache=cache)).__name__ == "TempParallelExecutor"
    assert load_executor("local-parallel", cache=cache).worker_count(3) == 3
    assert load_executor("temp-serial", cache=cache).worker_count(3) == 1


def test_unknown_executor_names_the_known_ones(tmp_path):
    """An unknown name raises ExecutorNotFoundError (a KeyError) listing the installed executors."""
    with pytest.raises(ExecutorNotFoundError) as info:
        load_executor("nope", cache=get_cache(tmp_path / ".nbstore"))
    assert isinstance(info.value, KeyError)
    assert "'nope'" in str(info.value) and "local-parallel" in str(info.value)


def test_bad_options_are_refused(tmp_path):
    """A non-positive worker count or a non-numeric timeout is a ValueError before anything runs."""
    executor = load_executor("local-parallel", cache=get_cache(tmp_path / ".nbstore"))
    with pytest.raises(ValueError, match="workers"):
        executor.run_and_cache(workers=0)
    with pytest.raises(ValueError, match="timeout"):
        executor.run_and_cache(timeout="soon")


def test_nothing_staged_runs_nothing(tmp_path):
    """With nothing staged the result is the seed's empty dict and no worker starts."""
    result = load_executor("local-parallel", cache=get_cache(tmp_path / ".nbstore")).run_and_cache()
    assert result == {"succeeded": [], "excepted": [], "errored": []}
    assert result.outcomes == ()


def test_result_is_a_read_only_mapping():
    """ExecutionResult indexes, compares and prints like the seed's dict and keeps the outcomes."""
    outcomes = (
        NotebookOutcome(1, "/a.ipynb", "succeeded", 1.0, 7),
        NotebookOutcome(2, "/b.ipynb", "excepted", 0.5, None, "Exception: x (cell 1)"),
    )
    result = ExecutionResult(outcomes)
    expected = {"succeeded": ["/a.ipynb"], "excepted": ["/b.ipynb"], "errored": []}
    assert result == expected and dict(result) == expected and repr(result) == repr(expected)
    assert result["excepted"] == ["/b.ipynb"] and result.errored == [] and list(result) == list(expected)
    with pytest.raises(KeyError):
        result["skipped"]
    assert result != {"succeeded": [], "excepted": [], "errored": []}


def test_workers_that_cannot_start_make_notebooks_errored(tmp_path, monkeypatch):
    """If worker processes die on start, the run gives up after a few tries and reports every notebook errored."""
    from nbstore.executors import pool
    from tests.conftest import make_nb, write_nb

    monkeypatch.setattr(pool, "WORKER_CODE", "import sys; sys.exit(3)  # {root!r}")
    cache = get_cache(tmp_path / ".nbstore")
    paths = [write_nb(tmp_path / f"nb{i}.ipynb", make_nb(["1"], executed=False)) for i in range(3)]
    for path in paths:
        cache.stage_notebook_file(path)
    result = load_executor("local-parallel", cache=cache).run_and_cache(workers=2)
    assert result == {"succeeded": [], "excepted": [], "errored": [str(p) for p in paths]}
    assert all("no worker process could be started" in o.reason for o in result.outcomes)
    assert cache.get_staged_record(1).traceback == result.outcomes[0].reason


def test_parallel_workers_default_to_the_usable_cpus(tmp_path):
    """Parallel executors default to one worker per CPU this process may use; serial ones to one."""
    import os

    cache = get_cache(tmp_path / ".nbstore")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert load_executor("local-parallel", cache=cache).worker_count() == usable
    assert load_executor("basic", cache=cache).worker_count() == 1


@pytest.mark.parametrize("name", ["local-serial", "local-parallel"])
def test_a_worker_that_cannot_start_is_an_execution_error(tmp_path, monkeypatch, name):
    """When no worker process can be started the run raises ExecutionError naming why, and records nothing."""
    nb = tmp_path / "a.ipynb"
    nb.write_text(json.dumps(make_nb(["print(1)"], executed=False)))
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(nb)
    missing = tmp_path / "no-such-python"
    monkeypatch.setattr(sys, "executable", str(missing))
    with pytest.raises(ExecutionError, match=f"cannot start a worker process with {missing}: No such file"):
        load_executor(name, cache=cache).run_and_cache()
    assert cache.list_cache_records() == []
    assert [r.traceback for r in cache.list_staged_records()] == [""]
