"""jupyter-cache 1.0's project API on NbStore: the same stage records and store under the 1.0 names."""

from __future__ import annotations

import pickle

import pytest

from nbstore import NbProjectRecord, NbStageRecord, ReaderNotFoundError, get_cache
from nbstore.base import CacheBundleIn, CacheBundleOut, NbBundleIn, NbBundleOut, ProjectNb
from nbstore.executors import ExecutionResult, NotebookOutcome
from nbstore.utils import tabulate_project_records
from tests.conftest import make_nb, write_nb

TO_DICT_KEYS = {"uri", "assets", "created", "traceback", "read_data", "pk"}


@pytest.fixture
def nbs(tmp_path):
    """Three notebooks: a.ipynb (executed), b.ipynb (unexecuted), and a data file next to them."""
    write_nb(tmp_path / "a.ipynb", make_nb(["x = 1"]))
    write_nb(tmp_path / "b.ipynb", make_nb(["y = 2"], executed=False))
    (tmp_path / "data.csv").write_text("1,2\n")
    return tmp_path


def test_add_nb_to_project_is_staging(store, nbs):
    """add_nb_to_project returns NbProjectRecord(pk=N) with 1.0's to_dict keys; it is the stage record."""
    record = store.add_nb_to_project(nbs / "a.ipynb", assets=[nbs / "data.csv"])
    assert repr(record) == "NbProjectRecord(pk=1)"
    assert isinstance(record, NbStageRecord)
    assert set(record.to_dict()) == TO_DICT_KEYS
    assert record.to_dict()["read_data"] == {"name": "nbformat", "type": "plugin"}
    assert record.to_dict()["assets"] == [str(nbs / "data.csv")]
    staged = store.get_staged_record(1)
    assert (staged.pk, staged.uri, staged.assets, staged.created) == (
        record.pk,
        record.uri,
        record.assets,
        record.created,
    )
    # Staging under the seed's name gives the same record back, and vice versa.
    assert store.stage_notebook_file(nbs / "a.ipynb", [nbs / "data.csv"]).pk == 1
    assert store.add_nb_to_project(str(nbs / "a.ipynb"), assets=[str(nbs / "data.csv")]).pk == 1
    assert [r.pk for r in store.list_staged_records()] == [r.pk for r in store.list_project_records()] == [1]


def test_project_lookups_and_removal(store, nbs):
    """get_project_record/notebook, get_cached_project_nb, list_unexecuted (filtered), remove_nb_from_project."""
    store.add_nb_to_project(nbs / "a.ipynb")
    store.add_nb_to_project(nbs / "b.ipynb")
    assert store.get_cached_project_nb(1) is None
    assert [r.pk for r in store.list_unexecuted()] == [1, 2]
    cached = store.cache_notebook_file(nbs / "a.ipynb")
    assert store.get_cached_project_nb(1) == cached
    assert store.get_cached_project_nb(str(nbs / "a.ipynb")) == cached
    assert [r.pk for r in store.list_unexecuted()] == [2]
    assert store.list_unexecuted(filter_pks=[1]) == []
    assert [r.pk for r in store.list_unexecuted(filter_uris=[str(nbs / "b.ipynb")])] == [2]
    assert [r.pk for r in store.list_project_records(filter_pks=[2])] == [2]
    assert [r.pk for r in store.list_project_records(filter_uris=[str(nbs / "a.ipynb")])] == [1]
    assert all(isinstance(r, NbProjectRecord) for r in store.list_unexecuted())
    assert store.get_project_record(str(nbs / "b.ipynb")).pk == 2
    project_nb = store.get_project_notebook(2)
    assert isinstance(project_nb, ProjectNb)
    assert (project_nb.pk, project_nb.uri) == (2, str(nbs / "b.ipynb"))
    assert project_nb.nb.cells[1].source == "y = 2"
    store.remove_nb_from_project(1)
    store.remove_nb_from_project(str(nbs / "b.ipynb"))
    assert store.list_project_records() == []
    with pytest.raises(KeyError, match="pk: 1"):
        store.get_project_record(1)
    with pytest.raises(KeyError):
        store.remove_nb_from_project(1)


def test_bad_read_data_and_assets_change_nothing(store, nbs):
    """An unknown reader, a non-plugin read_data or an empty asset is a ValueError naming it; nothing is written."""
    with pytest.raises(ReaderNotFoundError, match="no notebook reader named 'nope'"):
        store.add_nb_to_project(nbs / "a.ipynb", read_data={"name": "nope", "type": "plugin"})
    with pytest.raises(ValueError, match="only type 'plugin'"):
        store.add_nb_to_project(nbs / "a.ipynb", read_data={"name": "nbformat", "type": "module"})
    with pytest.raises(ValueError, match="empty"):
        store.add_nb_to_project(nbs / "a.ipynb", assets=[""])
    assert not store.path.exists()


def test_cache_bundle_names(store, nbs):
    """CacheBundleIn (nb, uri; data and traceback by keyword) caches; bundles read back are CacheBundleOut."""
    import nbformat

    nb = nbformat.read(nbs / "a.ipynb", 4)
    record = store.cache_notebook_bundle(CacheBundleIn(nb, str(nbs / "a.ipynb"), data={"k": 1}, traceback=None))
    assert isinstance(CacheBundleIn(nb, "x"), NbBundleIn)
    assert CacheBundleOut is NbBundleOut
    bundle = store.get_cache_bundle(record.pk)
    assert isinstance(bundle, CacheBundleOut)
    assert bundle.record.data == {"k": 1}


def test_tabulate_project_records(store, nbs):
    """The table has jupyter-cache's columns ID, URI, Reader, Added, Status: cached [pk], failed, unreadable, -."""
    write_nb(nbs / "c.ipynb", make_nb(["z = 3"], executed=False))
    for name in ("a", "b", "c"):
        store.add_nb_to_project(nbs / f"{name}.ipynb")
    store.cache_notebook_file(nbs / "a.ipynb")
    store.set_staged_traceback(2, "Exception: oopsie!")
    (nbs / "c.ipynb").write_text("not json")
    records = store.list_project_records()
    plain = tabulate_project_records(records, path_length=1).splitlines()
    assert plain[0].split() == ["ID", "URI", "Reader", "Added", "Status"]
    assert [line.split()[-1] for line in plain[2:]] == ["-", "-", "-"]
    table = tabulate_project_records(records, path_length=1, cache=store, assets=True).splitlines()
    assert table[0].split() == ["ID", "URI", "Reader", "Added", "Status", "Assets"]
    rows = [line.split() for line in table[2:]]
    assert [row[:3] for row in rows] == [
        ["1", "a.ipynb", "nbformat"],
        ["2", "b.ipynb", "nbformat"],
        ["3", "c.ipynb", "nbformat"],
    ]
    assert [" ".join(row[5:-1]) for row in rows] == ["cached [1]", "failed", "unreadable"]
    assert rows[0][3] == records[0].created.strftime("%Y-%m-%d")


def test_execution_result_names():
    """The executors' result exposes .succeeded, .excepted, .errored, as_json() and all() (jupyter-cache 1.0)."""
    result = ExecutionResult(
        (
            NotebookOutcome(1, "/a.ipynb", "excepted"),
            NotebookOutcome(2, "/b.ipynb", "succeeded"),
            NotebookOutcome(3, "/c.ipynb", "errored"),
        )
    )
    assert (result.succeeded, result.excepted, result.errored) == (["/b.ipynb"], ["/a.ipynb"], ["/c.ipynb"])
    assert result.as_json() == {"succeeded": ["/b.ipynb"], "excepted": ["/a.ipynb"], "errored": ["/c.ipynb"]}
    assert result.all() == ["/b.ipynb", "/a.ipynb", "/c.ipynb"]


def test_project_records_pickle(tmp_path, nbs):
    """Project records and project notebooks survive pickling (for worker processes and Sphinx's -j)."""
    store = get_cache(tmp_path / "s")
    record = store.add_nb_to_project(nbs / "a.ipynb")
    assert pickle.loads(pickle.dumps(record)) == record
    assert pickle.loads(pickle.dumps(store.get_project_notebook(1))).uri == record.uri
