"""Executor behaviour a newcomer trips over (issue 11): cell timestamps, asset folders."""

from __future__ import annotations

import pytest

from nbstore import get_cache
from nbstore.executors import load_executor
from tests.executortools import code_nb, process_guard

pytestmark = pytest.mark.kernel


def test_record_timing_off_by_default_and_on_when_asked(tmp_path):
    """A default run caches cells without metadata.execution; record_timing=True stamps each code cell."""
    with process_guard():
        store = get_cache(tmp_path / ".nbstore")
        store.stage_notebook_file(code_nb(tmp_path / "nb.ipynb", "a = 1", "print(a)"))
        executor = load_executor("local-serial", cache=store)
        assert executor.run_and_cache().succeeded
        cells = store.get_cache_bundle(1).nb.cells
        assert [c.metadata.get("execution") for c in cells if c.cell_type == "code"] == [None, None]
        assert executor.run_and_cache(force=True, record_timing=True).succeeded
        (record,) = store.list_cache_records()
        code = [c for c in store.get_cache_bundle(record.pk).nb.cells if c.cell_type == "code"]
        assert all("shell.execute_reply" in c.metadata["execution"] for c in code), code


def test_asset_folder_is_copied_for_a_temp_run(tmp_path):
    """A folder staged as an asset reaches a temp-serial run with every file below it, nested ones included."""
    data = tmp_path / "book" / "data"
    (data / "deep").mkdir(parents=True)
    (data / "a.txt").write_text("alpha")
    (data / "deep" / "b.txt").write_text("beta")
    nb = code_nb(tmp_path / "book" / "nb.ipynb", "print(open('data/a.txt').read() + open('data/deep/b.txt').read())")
    with process_guard():
        store = get_cache(tmp_path / ".nbstore")
        staged = store.stage_notebook_file(nb, assets=[data])
        assert staged.assets == (str(data),)
        result = load_executor("temp-serial", cache=store).run_and_cache()
        assert result.succeeded, result.outcomes
        (cell,) = [c for c in store.get_cache_bundle(1).nb.cells if c.cell_type == "code"]
        assert cell.outputs[0]["text"] == "alphabeta\n"
        # The run's record names the notebook relative to the store's folder on disk, absolute through the API.
        (sidecar,) = (tmp_path / ".nbstore" / "cache").glob("*.json")
        assert '"uri": "book/nb.ipynb"' in sidecar.read_text() and store.get_cache_record(1).uri == str(nb)
