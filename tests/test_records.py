"""Pure record helpers: reading both sides of a sidecar or settings file that git left in conflict."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbstore.records import conflict_sides, dump_json, parse_config

# Lines as a JSON sidecar has them: never a conflict marker.
_lines = st.lists(st.text(alphabet='abc{}":, 0123456789', max_size=12).map(lambda t: f"  {t}\n"), max_size=5)


def _conflicted(common: list[list[str]], ours: list[list[str]], theirs: list[list[str]], base: bool) -> str:
    """Lay out common runs of lines and conflict hunks between them, as git writes a conflicted file."""
    out = []
    for i, run in enumerate(common):
        out.extend(run)
        if i < len(ours):
            out.append("<<<<<<< HEAD\n")
            out.extend(ours[i])
            if base:
                out.append("||||||| merged common ancestors\n")
                out.append("  base line\n")
            out.append("=======\n")
            out.extend(theirs[i])
            out.append(">>>>>>> other-branch\n")
    return "".join(out)


@given(
    common=st.lists(_lines, min_size=2, max_size=4),
    ours=st.lists(_lines, min_size=1, max_size=3),
    theirs=st.lists(_lines, min_size=1, max_size=3),
    base=st.booleans(),
)
def test_conflict_sides_rebuild_each_branch(common, ours, theirs, base):
    """Splitting a conflicted file gives back each branch's text: common lines plus its own hunks."""
    hunks = min(len(common) - 1, len(ours), len(theirs))
    ours, theirs = ours[:hunks], theirs[:hunks]
    text = _conflicted(common, ours, theirs, base)
    want_ours = "".join(line for i, run in enumerate(common) for line in run + (ours[i] if i < hunks else []))
    want_theirs = "".join(line for i, run in enumerate(common) for line in run + (theirs[i] if i < hunks else []))
    assert conflict_sides(text.encode()) == (want_ours.encode(), want_theirs.encode())


@pytest.mark.parametrize(
    "text",
    [
        '{\n  "pk": 1\n}\n',  # no markers
        '{\n<<<<<<< HEAD\n  "pk": 1\n}\n',  # never closed
        '{\n<<<<<<< HEAD\n  "pk": 1\n>>>>>>> b\n}\n',  # no separator
        '{\n=======\n  "pk": 1\n}\n',  # separator outside a hunk
    ],
)
def test_conflict_sides_is_none_without_well_formed_markers(text):
    """A file without markers, or with unbalanced ones, has no sides."""
    assert conflict_sides(text.encode()) is None


def test_parse_config_takes_the_larger_limit_of_a_conflict():
    """Settings in conflict read as the side with the larger cache limit, flagged as conflicted."""
    a, b = dump_json({"cache_limit": 300, "format": 1}), dump_json({"cache_limit": 200, "format": 1})
    text = b"<<<<<<< HEAD\n" + b + b"=======\n" + a + b">>>>>>> x\n"
    assert parse_config(text) == ({"cache_limit": 300, "format": 1}, True)
    assert parse_config(a) == (json.loads(a), False)
    with pytest.raises(ValueError):
        parse_config(b"<<<<<<< HEAD\nnot json\n=======\nnor this\n>>>>>>> x\n")
