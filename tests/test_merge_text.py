"""`nbstore merge` writes notebooks as nbformat.writes would, without importing nbformat (issue 11)."""

from __future__ import annotations

import json

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbstore.notebooks import jupyter_text, parse_notebook, to_v4


def _ids_sound(nb: dict) -> bool:
    """nbformat.writes gives cells new ids where they are missing or repeated (validation repairs them)."""
    if nb.get("nbformat_minor", 0) < 5:
        return True
    ids = [c.get("id") for c in nb.get("cells", [])]
    return None not in ids and len(set(ids)) == len(ids)


def test_jupyter_text_is_nbformat_writes_on_the_corpus(corpus):
    """For every readable corpus notebook (ids intact), jupyter_text gives nbformat.writes' exact text."""
    compared = 0
    for path in sorted(corpus.glob("*.ipynb")):
        try:
            nb = to_v4(parse_notebook(path.read_bytes(), source=str(path)))
        except Exception:  # noqa: BLE001 - the corpus holds deliberately unreadable notebooks too
            continue
        if not _ids_sound(nb):
            continue
        before = json.dumps(nb, sort_keys=True)
        assert jupyter_text(nb) == nbformat.writes(nbformat.from_dict(nb)), path.name
        assert json.dumps(nb, sort_keys=True) == before, f"{path.name}: jupyter_text changed its argument"
        compared += 1
    assert compared >= 20


_text = st.text(alphabet=st.sampled_from("ab \n\t\r€\\\"'"), max_size=12)
_output = st.one_of(
    st.fixed_dictionaries({"output_type": st.just("stream"), "name": st.just("stdout"), "text": _text}),
    st.fixed_dictionaries(
        {
            "output_type": st.sampled_from(["display_data", "execute_result"]),
            "metadata": st.just({}),
            "data": st.dictionaries(
                st.sampled_from(["text/plain", "text/html", "image/svg+xml", "application/json", "image/png"]),
                _text,
                max_size=3,
            ),
        }
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    sources=st.lists(_text, min_size=1, max_size=4),
    outputs=st.lists(st.lists(_output, max_size=2), min_size=4, max_size=4),
)
def test_jupyter_text_matches_nbformat_writes(sources, outputs):
    """On generated v4.5 notebooks (sources, streams, mime bundles), jupyter_text equals nbformat.writes."""
    cells = []
    for i, src in enumerate(sources):
        cell = {"cell_type": "code", "id": f"c{i}", "metadata": {"trusted": True}, "source": src}
        cell.update(execution_count=i + 1, outputs=outputs[i])
        for out in cell["outputs"]:
            if out["output_type"] == "execute_result":
                out["execution_count"] = i + 1
        cells.append(cell)
    nb = {"cells": cells, "metadata": {"signature": "x", "kernelspec": {"name": "python3"}}, "nbformat": 4}
    nb["nbformat_minor"] = 5
    assert jupyter_text(nb) == nbformat.writes(nbformat.from_dict(nb))


@pytest.mark.parametrize("name", ["basic.ipynb", "squares.ipynb"])
def test_cli_merge_output_reads_back_as_nbformat_would_write_it(tmp_path, monkeypatch, name):
    """The file `nbstore merge` writes is byte for byte what nbformat.writes gives for the merged notebook."""
    from pathlib import Path

    from typer.testing import CliRunner

    from nbstore import get_cache
    from nbstore.cli.app import app

    src = Path(__file__).resolve().parents[1] / "examples" / name
    (tmp_path / name).write_bytes(src.read_bytes())
    monkeypatch.chdir(tmp_path)
    store = get_cache(tmp_path / ".nbstore")
    store.cache_notebook_file(tmp_path / name, check_validity=False)
    result = CliRunner().invoke(app, ["merge", name, "-o", "out.ipynb"])
    assert result.exit_code == 0, result.output
    _, merged = store.merge_match_into_file(tmp_path / name)
    assert (tmp_path / "out.ipynb").read_text(encoding="utf-8") == nbformat.writes(merged) + "\n"
