"""Every notebook of the shared corpus hashes, caches, matches and merges back to its own outputs."""

from __future__ import annotations

import json

import pytest

from nbstore import NotebookReadError, get_cache, notebook_key
from nbstore.notebooks import parse_notebook, to_v4
from tests.conftest import CORPUS

ABSENT = "../shared/corpus is absent (outside the nbstore workplace)"
NOTEBOOKS = (
    [pytest.param(p, id=p.stem) for p in sorted(CORPUS.glob("*.ipynb"))]
    if CORPUS.is_dir()
    else [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))]
)


def _code_outputs(nb: dict) -> list:
    return [(c.get("outputs", []), c.get("execution_count")) for c in nb["cells"] if c["cell_type"] == "code"]


def test_corpus_is_present(corpus):
    """The corpus holds the notebooks the other tests in this file walk through."""
    assert len(list(corpus.glob("*.ipynb"))) >= 40


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_corpus_notebook_round_trips(tmp_path, path):
    """Cache the notebook, match it by file and by object, and merge back exactly its own outputs."""
    cache = get_cache(tmp_path / "store")
    raw = parse_notebook(path.read_bytes(), source=str(path))
    key = notebook_key(raw)
    record = cache.cache_notebook_file(path, check_validity=False)
    assert record.hashkey == key
    assert cache.match_cache_file(path).pk == record.pk
    assert cache.match_cache_notebook(json.loads(path.read_bytes())).pk == record.pk
    pk, merged = cache.merge_match_into_file(path)
    original = to_v4(json.loads(path.read_bytes()))
    assert pk == record.pk
    assert _code_outputs(merged) == _code_outputs(original)
    assert [c.get("source") for c in merged["cells"]] == [c.get("source") for c in original["cells"]]


def test_v3_corpus_notebook_matches_its_v4_conversion(corpus, tmp_path):
    """nbformat 3's test notebook has the key of its nbformat 4 conversion (random new cell ids do not count)."""
    import nbformat

    path = corpus / "nbformat__test3.ipynb"
    converted = nbformat.convert(nbformat.read(path, as_version=3), 4)
    assert notebook_key(json.loads(path.read_bytes())) == notebook_key(json.loads(json.dumps(converted)))


def test_duplicate_ids_do_not_change_the_key(corpus):
    """nbformat.validate's silent repair of duplicate cell ids leaves the key as it was."""
    import nbformat

    path = corpus / "nbformat__invalid_unique_cell_id.ipynb"
    before = notebook_key(json.loads(path.read_bytes()))
    raw_ids = [c["id"] for c in json.loads(path.read_bytes())["cells"]]
    assert len(set(raw_ids)) < len(raw_ids)
    with pytest.warns(Warning, match="Non-unique cell id"):
        nb = nbformat.read(path, as_version=4)  # reading validates, which rewrites the duplicate id
    assert len({c.id for c in nb.cells}) == len(nb.cells)
    assert notebook_key(nb) == before


def test_corpus_readers_never_crash(corpus):
    """Every corpus file either parses or raises NotebookReadError; none raises anything else."""
    for path in corpus.glob("*.ipynb"):
        try:
            parse_notebook(path.read_bytes(), source=str(path))
        except NotebookReadError:
            pytest.fail(f"{path.name} is a real notebook and must be readable")
