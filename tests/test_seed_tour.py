"""The seed's tour (caching and staging sections) runs with nbstore in place of jupyter_cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_nb, write_nb


@pytest.fixture
def tour_dir(tmp_path, monkeypatch):
    """A folder laid out like the seed's: example_nbs/basic.ipynb (executed) and basic_failing.ipynb."""
    basic = make_nb(["a=1\nprint(a)"], meta={"test_name": "notebook1"})
    basic["cells"][1]["outputs"] = [{"name": "stdout", "output_type": "stream", "text": "1\n"}]
    write_nb(tmp_path / "example_nbs" / "basic.ipynb", basic)
    write_nb(tmp_path / "example_nbs" / "basic_failing.ipynb", make_nb(["raise Exception('oopsie!')"], executed=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_seed_tour(tour_dir):
    """Each call of the seed's tour answers as the seed shows (ids, reprs, errors, tables)."""
    import nbformat as nbf

    from nbstore import get_cache
    from nbstore.base import CachingError, NbBundleIn
    from nbstore.utils import tabulate_cache_records, tabulate_stage_records

    cache = get_cache(".jupyter_cache")
    cache.clear_cache()
    assert repr(cache) == f"NbStore('{tour_dir / '.jupyter_cache'}')"
    assert cache.list_cache_records() == [] and cache.list_staged_records() == []

    record = cache.cache_notebook_file(path=Path("example_nbs", "basic.ipynb"))
    assert repr(record) == "NbCacheRecord(pk=1)"
    info = record.to_dict()
    assert info["uri"] == "example_nbs/basic.ipynb" and info["pk"] == 1 and info["data"] == {}
    assert info["description"] == "" and len(info["hashkey"]) == 32
    assert cache.list_cache_records() == [record] and cache.get_cache_record(1) == record
    bundle = cache.get_cache_bundle(1)
    assert repr(bundle).startswith("NbBundleOut(nb=Notebook(cells=1), record=NbCacheRecord(pk=1)")
    assert bundle.nb.cells[0].source == "a=1\nprint(a)"
    assert bundle.nb.cells[0].outputs == [{"name": "stdout", "output_type": "stream", "text": "1\n"}]
    assert bundle.nb.metadata.test_name == "notebook1"

    with pytest.raises(CachingError, match="Notebook already exists in cache and overwrite=False."):
        cache.cache_notebook_file(path=Path("example_nbs", "basic.ipynb"))

    notebook = nbf.read(str(Path("example_nbs", "basic.ipynb")), 4)
    assert cache.match_cache_notebook(notebook).pk == record.pk
    notebook.cells[0].source = "change some text"
    assert cache.match_cache_notebook(notebook).pk == record.pk
    notebook.cells[1].source = "change some source code"
    with pytest.raises(KeyError, match="Cache record not found for NB with hashkey: [0-9a-f]{32}"):
        cache.match_cache_notebook(notebook)

    record2 = cache.cache_notebook_bundle(
        NbBundleIn(nb=notebook, uri=Path("example_nbs", "basic.ipynb"), data={"tag": "mytag"})
    )
    assert repr(record2) == "NbCacheRecord(pk=2)"
    table = tabulate_cache_records(cache.list_cache_records(), path_length=1, hashkeys=True).splitlines()
    assert table[0].split() == ["ID", "Origin", "URI", "Created", "Accessed", "Hashkey", "Data"]
    assert table[2].split()[:2] == ["2", "basic.ipynb"] and table[2].endswith("{'tag': 'mytag'}")

    assert cache.get_cache_limit() == 1000
    cache.change_cache_limit(100)
    assert cache.get_cache_limit() == 100

    staged = cache.stage_notebook_file(Path("example_nbs", "basic.ipynb"))
    assert repr(staged) == "NbStageRecord(pk=1)"
    assert staged.to_dict()["uri"] == str(tour_dir / "example_nbs" / "basic.ipynb")
    assert staged.to_dict()["assets"] == [] and staged.to_dict()["traceback"] == ""
    assert cache.get_cache_record_of_staged(1).pk == record.pk
    lines = tabulate_stage_records(cache.list_staged_records(), path_length=2, cache=cache).splitlines()
    assert lines[0].split() == ["ID", "URI", "Created", "Assets", "Cache", "ID"]
    assert lines[2].split()[:2] == ["1", "example_nbs/basic.ipynb"] and lines[2].split()[-2:] == ["0", "1"]

    failing = cache.stage_notebook_file(Path("example_nbs", "basic_failing.ipynb"))
    assert repr(failing) == "NbStageRecord(pk=2)"
    assert cache.get_cache_record_of_staged(2) is None
    assert cache.list_staged_unexecuted() == [failing]
    cache.discard_staged_notebook(1)
    lines = tabulate_stage_records(cache.list_staged_records(), path_length=2, cache=cache).splitlines()
    assert lines[0].split() == ["ID", "URI", "Created", "Assets"] and len(lines) == 3

    cache.clear_cache()
    cache.stage_notebook_file(Path("example_nbs", "basic.ipynb"))
    assert repr(cache.stage_notebook_file(Path("example_nbs", "basic_failing.ipynb"))) == "NbStageRecord(pk=2)"
