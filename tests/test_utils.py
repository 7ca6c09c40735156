"""The seed's plain-text tables: columns, order and alignment."""

from __future__ import annotations

from nbstore import get_cache
from nbstore.utils import shorten_path, tabulate_cache_records, tabulate_stage_records
from tests.conftest import make_nb, write_nb


def test_shorten_path():
    """path_length keeps the last parts of a path."""
    assert shorten_path("/a/b/c.ipynb", 2) == "b/c.ipynb"
    assert shorten_path("/a/b/c.ipynb", None) == "/a/b/c.ipynb"


def test_cache_table_columns_and_order(tmp_path):
    """The cache table has the seed's columns, newest first, a Data column only when some record has data."""
    cache = get_cache(tmp_path / "c")
    first = cache.cache_notebook_file(write_nb(tmp_path / "x" / "basic.ipynb", make_nb(["a"])))
    text = tabulate_cache_records(cache.list_cache_records(), path_length=1, hashkeys=True)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "Origin", "URI", "Created", "Accessed", "Hashkey"]
    assert lines[1].split()[0] == "----"
    assert lines[2].split()[:2] == ["1", "basic.ipynb"] and first.hashkey in lines[2]
    cache.cache_notebook_file(write_nb(tmp_path / "x" / "b.ipynb", make_nb(["b"])), data={"tag": "mytag"})
    lines = tabulate_cache_records(cache.list_cache_records(), path_length=1).splitlines()
    assert lines[0].split()[-1] == "Data"
    assert lines[2].startswith("   2  b.ipynb") and lines[2].endswith("{'tag': 'mytag'}")
    assert lines[3].startswith("   1  basic.ipynb")


def test_stage_table_cache_id_column(tmp_path):
    """The stage table shows a Cache ID column only when some staged notebook is cached."""
    cache = get_cache(tmp_path / "c")
    a = write_nb(tmp_path / "nbs" / "a.ipynb", make_nb(["a"]))
    cache.stage_notebook_file(a)
    lines = tabulate_stage_records(cache.list_staged_records(), path_length=2, cache=cache).splitlines()
    assert lines[0].split() == ["ID", "URI", "Created", "Assets"]
    assert lines[2].split()[:2] == ["1", "nbs/a.ipynb"] and lines[2].endswith("0")
    cache.cache_notebook_file(a)
    lines = tabulate_stage_records(cache.list_staged_records(), path_length=2, cache=cache).splitlines()
    assert lines[0].split()[-2:] == ["Cache", "ID"]
    assert lines[2].endswith("1")
