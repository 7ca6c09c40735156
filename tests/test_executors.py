"""Executors on real ipykernel kernels: what runs, what is cached, how failures are told apart and reported."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from nbstore import get_cache
from nbstore.executors import (
    ExecutionEvent,
    list_executors,
    load_executor,
)
from nbstore.hashing import notebook_key
from tests.conftest import make_nb, write_nb
from tests.executortools import code_nb, log_line, process_guard

pytestmark = pytest.mark.kernel


@pytest.fixture
def guard():
    """Fail the test if a worker or kernel it started outlives it (and kill such a survivor)."""
    with process_guard() as marker:
        yield marker


# ---------------------------------------------------------------------------------------------- the zoo
# One parallel run over notebooks that each end a different way: the tests below check one property each.


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Run local-parallel (2 workers, timeout 2 s) once over a set of notebooks that end in every way."""
    root = tmp_path_factory.mktemp("zoo")
    log = root / "runs.log"
    nbs = root / "nbs"
    paths = {
        "ok": code_nb(nbs / "ok.ipynb", log_line(log, "ok"), "a = 1", "print(a + 1)"),
        "oops": code_nb(nbs / "oops.ipynb", "print('before')", "raise Exception('oopsie!')", "print('never')"),
        "hang": code_nb(nbs / "hang.ipynb", "import time\ntime.sleep(120)"),
        # IPython's display raises a chained error here, and the kernel's reply then says 'NoneType: None'.
        "noimage": code_nb(nbs / "noimage.ipynb", "from IPython.display import Image\nImage('no-such.png')"),
        "bare": code_nb(nbs / "bare.ipynb", "assert 1 == 2"),
        "slow_ok": code_nb(nbs / "slow_ok.ipynb", "import time\ntime.sleep(2.5)", meta={"execution": {"timeout": 30}}),
        "allowed": code_nb(
            nbs / "allowed.ipynb", "1 / 0", "print('went on')", meta={"execution": {"allow_errors": True}}
        ),
        "tagged": code_nb(
            nbs / "tagged.ipynb", "raise ValueError('expected')", "print('went on')", tags={0: ["raises-exception"]}
        ),
        "die": code_nb(nbs / "die.ipynb", "import os\nos._exit(1)", "print('never')"),
        "nokernel": code_nb(nbs / "nokernel.ipynb", "1", kernel="no-such-kernel-nbstore"),
        "badmeta": code_nb(nbs / "badmeta.ipynb", "1", meta={"execution": {"timeout": "soon"}}),
        "loud": code_nb(nbs / "loud.ipynb", "for i in range(50):\n    print('y' * 100_000)"),
        "missing": code_nb(nbs / "missing.ipynb", "print('gone')"),
        "garbled": code_nb(nbs / "garbled.ipynb", "print('garbled')"),
    }
    # The same code as ok.ipynb (only its markdown differs): one run must serve both.
    twin = make_nb([log_line(log, "ok"), "a = 1", "print(a + 1)"], executed=False)
    twin["cells"][0]["source"] = "# a twin with other prose"
    paths["twin"] = write_nb(nbs / "twin.ipynb", twin)

    cache = get_cache(root / ".nbstore")
    pks = {name: cache.stage_notebook_file(path).pk for name, path in paths.items()}
    keys_before = {name: notebook_key(json.loads(path.read_text())) for name, path in paths.items()}
    cache.set_staged_traceback(pks["ok"], "an old failure")
    paths["missing"].unlink()
    paths["garbled"].write_text("{ not json")
    events: list[ExecutionEvent] = []
    executor = load_executor("local-parallel", cache=cache)
    with process_guard():
        result = executor.run_and_cache(timeout=2, workers=2, on_event=events.append)
    outcomes = {o.pk: o for o in result.outcomes}
    by_name = {name: outcomes[pk] for name, pk in pks.items()}
    return {
        "cache": cache,
        "result": result,
        "events": events,
        "paths": paths,
        "pks": pks,
        "out": by_name,
        "log": log,
        "keys": keys_before,
        "executor": executor,
    }


def _status(zoo) -> dict[str, str]:
    return {name: o.status for name, o in zoo["out"].items()}


@pytest.mark.slow
class TestOneParallelRun:
    """Properties of one local-parallel run over the zoo (one notebook per way of ending)."""

    def test_zoo_statuses(self, zoo):
        """Each notebook ends as its kind says: cell errors and timeouts 'excepted'; cannot-run 'errored'."""
        assert _status(zoo) == {
            "ok": "succeeded",
            "twin": "succeeded",
            "slow_ok": "succeeded",
            "allowed": "succeeded",
            "tagged": "succeeded",
            "loud": "succeeded",
            "oops": "excepted",
            "hang": "excepted",
            "noimage": "excepted",
            "bare": "excepted",
            "die": "errored",
            "nokernel": "errored",
            "badmeta": "errored",
            "missing": "errored",
            "garbled": "errored",
        }

    def test_result_lists_uris_like_the_seed(self, zoo):
        """The result equals the seed's dict of absolute URIs, in stage order."""
        result, paths, pks = zoo["result"], zoo["paths"], zoo["pks"]
        by_pk = sorted(pks, key=pks.get)
        expected = {
            status: [str(paths[n]) for n in by_pk if zoo["out"][n].status == status]
            for status in ("succeeded", "excepted", "errored")
        }
        assert result == expected
        assert [o.pk for o in result.outcomes] == sorted(pks.values())

    def test_success_is_cached_with_seconds_under_the_pre_run_key(self, zoo):
        """A success is cached with data['execution_seconds'] under the key of the notebook as staged."""
        cache, out = zoo["cache"], zoo["out"]
        record = cache.get_cache_record(out["ok"].cache_pk)
        assert record.hashkey == zoo["keys"]["ok"]
        assert set(record.data) == {"execution_seconds"} and record.data["execution_seconds"] > 0
        assert record.data["execution_seconds"] == pytest.approx(out["ok"].seconds)
        bundle = cache.get_cache_bundle(record.pk)
        outputs = [c["outputs"] for c in bundle.nb.cells]
        assert outputs[-1][0]["text"] == "2\n"
        assert bundle.nb.metadata["language_info"]["name"] == "python"
        assert cache.match_cache_file(zoo["paths"]["ok"]).pk == record.pk

    def test_success_clears_the_old_traceback(self, zoo):
        """A success clears the traceback that an earlier failure left on the stage record."""
        assert zoo["cache"].get_staged_record(zoo["pks"]["ok"]).traceback == ""

    def test_a_notebook_staged_twice_is_one_run(self, zoo):
        """Two stage records with the same code share one run and one cache record."""
        out = zoo["out"]
        assert zoo["log"].read_text().splitlines().count("ok") == 1
        assert out["twin"].cache_pk == out["ok"].cache_pk
        assert "same code as" in out["twin"].reason

    def test_exception_traceback_names_the_exception(self, zoo):
        """A raising cell makes the run 'excepted'; the stage record's traceback names 'Exception: oopsie!'."""
        cache, pk = zoo["cache"], zoo["pks"]["oops"]
        traceback = cache.get_staged_record(pk).traceback
        assert "Exception: oopsie!" in traceback and "\x1b[" not in traceback
        assert "raise Exception('oopsie!')" in traceback
        assert zoo["out"]["oops"].reason == "Exception: oopsie! (cell 3)"  # cell 1 is markdown
        assert cache.get_cache_record_of_staged(pk) is None

    def test_reason_names_the_exception_the_cell_raised(self, zoo):
        """The one-line reason names the cell's own exception, even when the kernel's reply does not."""
        assert zoo["out"]["noimage"].reason.startswith("FileNotFoundError: No such file or directory: 'no-such.png'")
        assert zoo["out"]["bare"].reason == "AssertionError (cell 2)"

    def test_timeout_is_excepted(self, zoo):
        """A cell that outlives the timeout ends the run as 'excepted', saying so."""
        out = zoo["out"]["hang"]
        assert out.reason == "cell 2 timed out after 2 s"
        assert "timed out" in zoo["cache"].get_staged_record(zoo["pks"]["hang"]).traceback

    def test_metadata_overrides_timeout_and_allow_errors(self, zoo):
        """metadata.execution.timeout / allow_errors override the run's options for that notebook."""
        cache, out = zoo["cache"], zoo["out"]
        assert out["slow_ok"].seconds > 2
        allowed = cache.get_cache_bundle(out["allowed"].cache_pk).nb
        assert allowed.cells[0].outputs[0]["ename"] == "ZeroDivisionError"
        assert allowed.cells[1].outputs[0]["text"] == "went on\n"

    def test_bad_metadata_is_errored_with_reason(self, zoo):
        """An execution option of the wrong type stops that notebook with a reason naming the option."""
        assert "metadata.execution.timeout" in zoo["out"]["badmeta"].reason

    def test_raises_exception_tag(self, zoo):
        """A cell tagged raises-exception may raise: the run goes on and is cached."""
        nb = zoo["cache"].get_cache_bundle(zoo["out"]["tagged"].cache_pk).nb
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].outputs[0]["ename"] == "ValueError"
        assert code[1].outputs[0]["text"] == "went on\n"

    def test_kernel_death_is_errored(self, zoo):
        """A kernel that dies (os._exit in a cell) ends as 'errored' with the reason recorded."""
        out = zoo["out"]["die"]
        assert out.reason.startswith("the kernel died (exit code 1)") and "cell 2" in out.reason
        assert zoo["cache"].get_staged_record(zoo["pks"]["die"]).traceback == out.reason

    def test_unknown_kernel_is_errored(self, zoo):
        """A kernelspec naming no installed kernel is 'errored', naming the kernel and the installed ones."""
        reason = zoo["out"]["nokernel"].reason
        assert "'no-such-kernel-nbstore' is not installed" in reason and "python3" in reason

    def test_missing_and_unreadable_notebooks_are_errored(self, zoo):
        """A staged file that is gone or not a notebook is 'errored' with the read error as reason."""
        out, cache = zoo["out"], zoo["cache"]
        assert "not found" in out["missing"].reason
        assert "invalid JSON" in out["garbled"].reason
        assert cache.get_staged_record(zoo["pks"]["garbled"]).traceback == out["garbled"].reason

    def test_megabytes_of_output_are_cached(self, zoo):
        """A notebook printing 5 MB succeeds and its output is cached whole."""
        nb = zoo["cache"].get_cache_bundle(zoo["out"]["loud"].cache_pk).nb
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert len(text) == 50 * 100_001

    def test_events_bracket_every_outcome(self, zoo):
        """Every outcome has one 'start' then one 'end' event carrying its status, index and the total."""
        events, result = zoo["events"], zoo["result"]
        total = len(result.outcomes)
        for outcome in result.outcomes:
            mine = [e for e in events if e.pk == outcome.pk]
            assert [e.kind for e in mine] == ["start", "end"]
            assert mine[1].status == outcome.status and mine[1].seconds == outcome.seconds
            assert mine[1].reason == outcome.reason and mine[0].total == total and mine[0].uri == outcome.uri
        assert sorted({e.index for e in events}) == list(range(total))

    def test_rerun_runs_nothing(self, zoo, guard):
        """A second run over the same staged set runs only what failed; the successes match as they are."""
        cache = zoo["cache"]
        assert {r.pk for r in cache.list_staged_unexecuted()} == {
            zoo["pks"][n] for n, s in _status(zoo).items() if s != "succeeded"
        }
        ok_only = [zoo["pks"][n] for n in ("ok", "twin", "loud", "tagged")]
        result = zoo["executor"].run_and_cache(filter_pks=ok_only)
        assert result == {"succeeded": [], "excepted": [], "errored": []}
        assert zoo["log"].read_text().splitlines().count("ok") == 1


# ---------------------------------------------------------------------------------------------- selection


@pytest.fixture
def trio(tmp_path):
    """Three quick notebooks staged in a store, each logging its runs to runs.log."""
    log = tmp_path / "runs.log"
    paths = [code_nb(tmp_path / f"nb{i}.ipynb", log_line(log, f"nb{i}")) for i in range(1, 4)]
    cache = get_cache(tmp_path / ".nbstore")
    for path in paths:
        cache.stage_notebook_file(path)
    return cache, paths, log


def _runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.slow
def test_filter_by_pk_and_uri(trio, guard, monkeypatch):
    """filter_pks and filter_uris (absolute or relative) limit the run to those staged notebooks."""
    cache, paths, log = trio
    executor = load_executor("local-serial", cache=cache)
    assert executor.run_and_cache(filter_pks=[2]) == {"succeeded": [str(paths[1])], "excepted": [], "errored": []}
    monkeypatch.chdir(paths[0].parent)
    result = executor.run_and_cache(filter_uris=[paths[2].name])
    assert result["succeeded"] == [str(paths[2])]
    assert sorted(_runs(log)) == ["nb2", "nb3"]
    assert [r.pk for r in cache.list_staged_unexecuted()] == [1]


def test_filter_naming_nothing_staged_warns(trio, caplog):
    """A filter naming no staged notebook runs nothing and says so in the log."""
    cache, _, log = trio
    with caplog.at_level(logging.WARNING, logger="nbstore.executors"):
        result = load_executor("local-serial", cache=cache).run_and_cache(filter_uris=["elsewhere.ipynb"])
    assert result.outcomes == () and not log.exists()
    assert "elsewhere.ipynb" in caplog.text


@pytest.mark.slow
def test_force_runs_again_and_replaces_the_record(trio, guard):
    """force runs cached notebooks again and replaces their record; without it nothing runs."""
    cache, paths, log = trio
    executor = load_executor("local-serial", cache=cache)
    executor.run_and_cache(filter_pks=[1])
    first = cache.match_cache_file(paths[0])
    assert executor.run_and_cache(filter_pks=[1]).outcomes == ()
    result = executor.run_and_cache(filter_pks=[1], force=True)
    assert result["succeeded"] == [str(paths[0])]
    assert _runs(log) == ["nb1", "nb1"]
    again = cache.match_cache_file(paths[0])
    assert again.hashkey == first.hashkey and again.pk == result.outcomes[0].cache_pk != first.pk
    assert len(cache.list_cache_records()) == 1


def test_seed_logging_messages(trio, guard, caplog):
    """The executor logs the seed's 'Executing:' and 'Execution Succeeded:'/'Execution Failed:' messages."""
    cache, paths, _ = trio
    code_nb(paths[1], "raise Exception('oopsie!')")
    with caplog.at_level(logging.INFO, logger="nbstore.executors"):
        load_executor("local-serial", cache=cache).run_and_cache(filter_pks=[1, 2])
    messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name == "nbstore.executors.base"]
    assert ("nbstore.executors.base", "INFO", f"Executing: {paths[0]}") in messages
    assert ("nbstore.executors.base", "INFO", f"Execution Succeeded: {paths[0]}") in messages
    assert ("nbstore.executors.base", "ERROR", f"Execution Failed: {paths[1]}") in messages


# ---------------------------------------------------------------------------------------------- where it runs


def _asset_notebook(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "input.txt").write_text("21")
    (folder / "data" / "mod.py").write_text("VALUE = 2\n")
    (folder / "data" / "keep.txt").write_text("unchanged")
    return code_nb(
        folder / "calc.ipynb",
        "import os, sys\nsys.path.insert(0, 'data')\nimport mod",
        "n = int(open('data/input.txt').read()) * mod.VALUE\nprint(n)",
        "os.makedirs('out', exist_ok=True)\nopen('out/result.txt', 'w').write(str(n))",
        "open('data/input.txt', 'a').write('!')",
        "open('here.txt', 'w').write(os.getcwd())",
    )


@pytest.mark.parametrize("name", ["temp-serial", "temp-parallel"])
def test_temp_executors_copy_assets_and_keep_new_files(tmp_path, guard, name):
    """temp-* run in a fresh folder with the assets and cache each new or changed file as an artifact."""
    path = _asset_notebook(tmp_path / "project")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    cache = get_cache(tmp_path / ".nbstore")
    assets = ["data/input.txt", "data/mod.py", "data/keep.txt"]
    cache.stage_notebook_file(path, assets=assets)
    result = load_executor(name, cache=cache).run_and_cache(workers=2)
    assert result["succeeded"] == [str(path)], result.outcomes
    record = cache.get_cache_record(result.outcomes[0].cache_pk)
    assert sorted(record.artifacts) == ["data/input.txt", "here.txt", "out/result.txt"]
    bundle = cache.get_cache_bundle(record.pk)
    assert bundle.artifacts.read("out/result.txt") == b"42"
    assert bundle.artifacts.read("data/input.txt") == b"21!"
    assert bundle.artifacts.read("here.txt").decode() != str(path.parent)
    # The notebook's own folder is untouched.
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if ".nbstore" not in p.parts) == (
        before
    )


def test_local_executor_runs_in_the_notebook_folder(tmp_path, guard):
    """local-* run each notebook in its own folder and cache no artifacts."""
    path = _asset_notebook(tmp_path / "project")
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(path)
    result = load_executor("local-serial", cache=cache).run_and_cache()
    assert result["succeeded"] == [str(path)]
    assert (path.parent / "here.txt").read_text() == str(path.parent)
    assert (path.parent / "out" / "result.txt").read_text() == "42"
    assert cache.get_cache_record(result.outcomes[0].cache_pk).artifacts == {}


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["print('done')", "raise Exception('oopsie!')"])
def test_processes_a_notebook_leaves_are_stopped(tmp_path, guard, ending):
    """A subprocess a notebook starts and leaves running is stopped with its kernel, success or failure."""
    path = code_nb(tmp_path / "spawn.ipynb", "import subprocess\nchild = subprocess.Popen(['sleep', '300'])", ending)
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(path)
    result = load_executor("local-serial", cache=cache).run_and_cache()
    assert result.outcomes[0].status == ("succeeded" if "done" in ending else "excepted")
    # The guard fails the test if the `sleep` outlives the run.


def test_temp_executor_missing_asset_is_errored(tmp_path, guard):
    """An asset deleted after staging makes a temp-* run 'errored' with a reason naming it."""
    path = _asset_notebook(tmp_path / "project")
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(path, assets=["data/input.txt"])
    (path.parent / "data" / "input.txt").unlink()
    result = load_executor("temp-serial", cache=cache).run_and_cache()
    assert result["errored"] == [str(path)]
    assert "input.txt" in result.outcomes[0].reason


@pytest.mark.slow
def test_worker_crash_is_errored_and_others_run(tmp_path, guard):
    """A worker that dies mid-notebook makes that notebook 'errored'; the other notebooks still run."""
    killer = code_nb(tmp_path / "killer.ipynb", "import os, signal\nos.kill(int(os.environ['JPY_PARENT_PID']), 9)")
    fine = [code_nb(tmp_path / f"fine{i}.ipynb", f"print({i})") for i in range(2)]
    cache = get_cache(tmp_path / ".nbstore")
    for path in [killer, *fine]:
        cache.stage_notebook_file(path)
    result = load_executor("local-parallel", cache=cache).run_and_cache(workers=2)
    assert result == {"succeeded": [str(p) for p in fine], "excepted": [], "errored": [str(killer)]}
    reason = result.outcomes[0].reason
    assert "worker process died" in reason and "signal 9" in reason
    assert cache.get_staged_record(1).traceback == reason


# ---------------------------------------------------------------------------------------------- the seed


def test_seed_execution_section(tmp_path, guard, monkeypatch, caplog):
    """The seed's Execution section runs as shown with nbstore in place of jupyter_cache."""
    from nbstore.utils import tabulate_cache_records, tabulate_stage_records

    basic = make_nb(["a=1\nprint(a)"], meta={"test_name": "notebook1"}, executed=False)
    write_nb(tmp_path / "example_nbs" / "basic.ipynb", basic)
    write_nb(tmp_path / "example_nbs" / "basic_failing.ipynb", make_nb(["raise Exception('oopsie!')"], executed=False))
    monkeypatch.chdir(tmp_path)

    cache = get_cache(".jupyter_cache")
    cache.clear_cache()
    cache.stage_notebook_file(Path("example_nbs", "basic.ipynb"))
    assert repr(cache.stage_notebook_file(Path("example_nbs", "basic_failing.ipynb"))) == "NbStageRecord(pk=2)"
    table = tabulate_stage_records(cache.list_staged_records(), path_length=2, cache=cache)
    assert "example_nbs/basic_failing.ipynb" in table

    assert "basic" in [ep.name for ep in list_executors()]
    executor = load_executor("basic", cache=cache)
    assert repr(executor) == f"LocalSerialExecutor(cache=NbStore('{tmp_path / '.jupyter_cache'}'))"
    with caplog.at_level(logging.INFO):
        result = executor.run_and_cache()
    basic_uri = str(tmp_path / "example_nbs" / "basic.ipynb")
    failing_uri = str(tmp_path / "example_nbs" / "basic_failing.ipynb")
    assert result == {"succeeded": [basic_uri], "excepted": [failing_uri], "errored": []}
    assert [r.getMessage() for r in caplog.records if r.name == "nbstore.executors.base"][:4] == [
        f"Executing: {basic_uri}",
        f"Execution Succeeded: {basic_uri}",
        f"Executing: {failing_uri}",
        f"Execution Failed: {failing_uri}",
    ]

    assert repr(cache.list_cache_records()) == "[NbCacheRecord(pk=1)]"
    info = cache.get_cache_record(1).to_dict()
    assert info["uri"] == basic_uri and list(info["data"]) == ["execution_seconds"]
    assert "Exception: oopsie!" in cache.get_staged_record(2).traceback

    stage_table = tabulate_stage_records(cache.list_staged_records(), path_length=2, cache=cache).splitlines()
    assert "Cache ID" in stage_table[0]
    assert stage_table[2].split()[0] == "2" and stage_table[3].split()[0] == "1"
    assert stage_table[3].split()[-1] == "1" and len(stage_table[2].split()) < len(stage_table[3].split())
    cache_table = tabulate_cache_records(cache.list_cache_records(), path_length=1, hashkeys=True)
    assert "basic.ipynb" in cache_table and info["hashkey"] in cache_table


def test_copied_notebook_folder_still_matches(tmp_path, guard):
    """What the run writes into the notebook (timings, language_info) never stops the source from matching."""
    path = code_nb(tmp_path / "a" / "nb.ipynb", "x = 1", "x")
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(path)
    pk = load_executor("local-serial", cache=cache).run_and_cache().outcomes[0].cache_pk
    copy = tmp_path / "b" / "nb.ipynb"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert cache.match_cache_file(copy).pk == pk
    merged_pk, merged = cache.merge_match_into_file(copy)
    assert merged_pk == pk and merged.cells[-1].outputs[0]["data"]["text/plain"] == "1"


@pytest.mark.slow
def test_a_kernel_slow_to_exit_does_not_hold_up_the_run(tmp_path, guard):
    """Once every result is stored, a kernel that lingers on exit is killed instead of waited for."""
    marker = tmp_path / "exited-by-itself"
    # atexit runs last-registered first: the kernel sleeps 3 s on its way out, then leaves a marker.
    linger = f"import atexit, pathlib, time\natexit.register(pathlib.Path({str(marker)!r}).touch)\n"
    linger += "atexit.register(time.sleep, 3)"
    path = code_nb(tmp_path / "linger.ipynb", linger, "print(1)")
    cache = get_cache(tmp_path / ".nbstore")
    cache.stage_notebook_file(path)
    result = load_executor("local-serial", cache=cache).run_and_cache()
    assert result["succeeded"] == [str(path)]
    assert cache.match_cache_file(path).pk == result.outcomes[0].cache_pk
    time.sleep(4)  # had the kernel been left to finish its exit, the marker would exist by now
    assert not marker.exists()
