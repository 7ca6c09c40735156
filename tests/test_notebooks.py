"""Pure notebook handling: parsing errors, stripping, validity and merging."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbstore.errors import NbValidityError, NotebookReadError
from nbstore.notebooks import (
    check_validity,
    dump_notebook,
    merge_outputs,
    parse_notebook,
    rejoin_lines,
    strip_notebook,
)
from tests.conftest import make_nb


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "invalid JSON at line 1"),
        (b"[1, 2]", "top level is list"),
        (b'{"cells": []}', "no integer 'nbformat'"),
        (b'{"nbformat": 5, "cells": []}', "nbformat 5 is newer"),
        (b'{"nbformat": 2}', "too old"),
        (b'{"nbformat": 4, "cells": {}}', "no 'cells' list"),
        (b'{"nbformat": 4, "cells": [{"source": "x"}]}', "cell 0 has no 'cell_type'"),
        (b'{"nbformat": 4, "cells": [], "metadata": []}', "'metadata' is not an object"),
        (b'{"nbformat": 3, "cells": []}', "without a 'worksheets' list"),
    ],
)
def test_parse_names_the_problem(data, fragment):
    """Each kind of bad input is a NotebookReadError (a ValueError) that names the source and the problem."""
    with pytest.raises(NotebookReadError, match="in.ipynb") as info:
        parse_notebook(data, source="in.ipynb")
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_accepts_future_minor_and_bom():
    """A future minor version and a UTF-8 byte-order mark are read, not refused."""
    nb = make_nb(["a"])
    nb["nbformat_minor"] = 99
    assert parse_notebook(b"\xef\xbb\xbf" + json.dumps(nb).encode())["nbformat_minor"] == 99


def test_strip_keeps_code_cells_and_metadata_only():
    """The stored form holds code cells (sources joined) and notebook metadata, nothing else."""
    nb = make_nb(["a=1\n", "b"], meta={"test_name": "n"})
    nb["cells"][1]["source"] = ["a=1\n"]
    stripped = strip_notebook(nb)
    assert [c["cell_type"] for c in stripped["cells"]] == ["code", "code"]
    assert stripped["cells"][0]["source"] == "a=1\n"
    assert stripped["metadata"]["test_name"] == "n"


def test_dump_is_deterministic():
    """Serialising the same notebook twice, from differently ordered dicts, gives the same bytes."""
    nb = make_nb(["x"])
    shuffled = json.loads(json.dumps(nb, sort_keys=False))
    shuffled = dict(reversed(list(shuffled.items())))
    assert dump_notebook(nb) == dump_notebook(shuffled)
    assert dump_notebook(nb).endswith(b"\n")


def test_validity_requires_counts_in_order():
    """Counts must run 1, 2, 3 over code cells that run; blank and skipped cells do not count."""
    check_validity(make_nb(["a", "b"]))
    nb = make_nb(["a", "  ", "b"])
    nb["cells"][2]["execution_count"] = None
    nb["cells"][3]["execution_count"] = 2
    check_validity(nb)
    with pytest.raises(NbValidityError, match="execution_count 1 not None"):
        check_validity(make_nb(["a"], executed=False), uri="u.ipynb")
    bad = make_nb(["a", "b"])
    bad["cells"][2]["execution_count"] = 5
    with pytest.raises(NbValidityError, match="cell 2"):
        check_validity(bad)


def test_rejoin_lines_matches_nbformat_reading():
    """List-form strings are joined as nbformat.read joins them; JSON mime data stays as it is."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["a\n", "b"],
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["1\n", "2\n"]},
                    {"output_type": "display_data", "data": {"text/plain": ["x", "y"], "application/json": ["k"]}},
                ],
            }
        ]
    }
    rejoin_lines(nb)
    cell = nb["cells"][0]
    assert cell["source"] == "a\nb"
    assert cell["outputs"][0]["text"] == "1\n2\n"
    assert cell["outputs"][1]["data"] == {"text/plain": "xy", "application/json": ["k"]}


@given(st.lists(st.text(max_size=10), min_size=1, max_size=5))
def test_merge_takes_outputs_and_keeps_markdown(srcs):
    """Merging puts cached outputs and counts into code cells and leaves markdown untouched."""
    plain = make_nb(srcs, executed=False)
    plain["cells"][0]["source"] = "edited markdown"
    cached = strip_notebook(make_nb(srcs))
    merged = merge_outputs(plain, cached)
    assert merged["cells"][0] == plain["cells"][0]
    code = [c for c in merged["cells"] if c["cell_type"] == "code"]
    assert [c["outputs"] for c in code] == [c["outputs"] for c in cached["cells"]]
    assert [c["execution_count"] for c in code] == list(range(1, len(srcs) + 1))
    assert plain["cells"][1]["execution_count"] is None  # the input is not modified


def test_merge_owned_gives_the_same_notebook_without_copying():
    """owned=True merges into nb itself and reuses cached's outputs, with the same result as a copying merge."""
    import copy

    plain, cached = make_nb(["a", "b"], executed=False), strip_notebook(make_nb(["a", "b"]))
    expected = merge_outputs(copy.deepcopy(plain), copy.deepcopy(cached), cell_meta=["tags"])
    merged = merge_outputs(plain, cached, cell_meta=["tags"], owned=True)
    assert merged == expected
    assert merged is plain
    assert merged["cells"][1]["outputs"] is cached["cells"][0]["outputs"]


def test_merge_refuses_mismatched_cells():
    """Merging notebooks with different numbers of code cells is an error, not a silent mix."""
    with pytest.raises(ValueError, match="code cells"):
        merge_outputs(make_nb(["a"]), strip_notebook(make_nb(["a", "b"])))
