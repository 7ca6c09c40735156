"""Properties of the notebook key: what changes it and what does not."""

from __future__ import annotations

import copy
import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from nbstore.hashing import (
    DEFAULT_KERNEL,
    EXECUTION_TAGS,
    KEY_RULE,
    KEY_RULE_DEPENDS,
    KeyInputs,
    code_sources,
    compose_key,
    kernel_name,
    notebook_facts,
    notebook_key,
    object_id,
    text_hash,
)
from tests.conftest import make_nb

sources = st.lists(st.text(max_size=40), min_size=0, max_size=6)
texts = st.text(max_size=30)


def _split_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


@given(sources, texts, st.integers(0, 5), st.booleans())
def test_key_ignores_everything_but_code_and_kernel(srcs, text, minor, as_list):
    """Markdown, outputs, counts, ids, other metadata, list-vs-string sources and layout leave the key alone."""
    nb = make_nb(srcs)
    key = notebook_key(nb)
    other = copy.deepcopy(nb)
    other["nbformat_minor"] = minor
    other["metadata"]["extra"] = {"x": text}
    other["metadata"]["language_info"] = {"name": "python", "version": text}
    for cell in other["cells"]:
        cell["id"] = "x" + str(len(text))
        if cell["cell_type"] == "markdown":
            cell["source"] = text
        else:
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": text}]
            cell["execution_count"] = None
            if as_list:
                cell["source"] = _split_lines(cell["source"])
    other["cells"].insert(0, {"cell_type": "raw", "metadata": {}, "source": text})
    reparsed = json.loads(json.dumps(other, indent=4, sort_keys=True))
    assert notebook_key(other) == key
    assert notebook_key(reparsed) == key


@given(sources, st.text(min_size=1, max_size=20))
def test_any_code_change_changes_the_key(srcs, extra):
    """Editing, adding, removing or reordering code cells changes the key."""
    nb = make_nb(srcs)
    key = notebook_key(nb)
    added = make_nb([*srcs, extra])
    assert notebook_key(added) != key
    if srcs:
        edited = make_nb([srcs[0] + extra, *srcs[1:]])
        assert notebook_key(edited) != key
        removed = make_nb(srcs[1:])
        assert notebook_key(removed) != key
    if len(srcs) >= 2 and srcs[0] != srcs[1]:
        swapped = make_nb([srcs[1], srcs[0], *srcs[2:]])
        assert notebook_key(swapped) != key


@settings(max_examples=50)
@given(sources, st.text(min_size=1, max_size=10).filter(lambda s: s != "python3"))
def test_kernel_name_changes_the_key(srcs, name):
    """Another kernel name is another key; display name and language do not count."""
    nb = make_nb(srcs)
    other = make_nb(srcs, kernel={"name": name, "display_name": "x", "language": "y"})
    assert notebook_key(other) != notebook_key(nb)
    renamed = make_nb(srcs, kernel={"name": "python3", "display_name": name, "language": name})
    assert notebook_key(renamed) == notebook_key(nb)


def test_missing_kernelspec_defaults_to_python3():
    """A notebook naming no kernel hashes as if it named python3 (documented default)."""
    assert kernel_name({"metadata": {}}) == DEFAULT_KERNEL == "python3"
    assert kernel_name({"metadata": {"kernelspec": {"language": "python"}}}) == "python3"
    assert notebook_key(make_nb(["a=1"], kernel=None)) == notebook_key(make_nb(["a=1"]))


def test_v3_hashes_like_its_v4_form():
    """An nbformat 3 notebook's key equals the key of the same code in v4 form."""
    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {"name": ""},
        "worksheets": [
            {
                "cells": [
                    {"cell_type": "heading", "level": 1, "source": ["Title"], "metadata": {}},
                    {"cell_type": "code", "input": ["a = 1\n", "print(a)"], "language": "python", "outputs": []},
                    {"cell_type": "code", "input": "b = 2", "language": "python", "outputs": []},
                ]
            }
        ],
    }
    assert code_sources(v3) == ["a = 1\nprint(a)", "b = 2"]
    assert notebook_key(v3) == notebook_key(make_nb(["a = 1\nprint(a)", "b = 2"], kernel=None))


def test_key_shape_and_rule_version():
    """Keys are 32 hex digits and the rule version is part of the hashed input."""
    key = notebook_key(make_nb(["x"]))
    assert len(key) == 32 and int(key, 16) >= 0
    assert KEY_RULE == 1


def test_object_id_is_sha256():
    """The object id is the SHA-256 of the bytes."""
    assert object_id(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ------------------------------------------------------------------------------ rule 2


presentation_tags = st.lists(
    st.sampled_from(["remove-input", "remove-output", "hide-output", "hide-input", "remove-cell", "thebe-init"]),
    max_size=3,
)


def _rule1(nb: dict) -> str:
    payload = {"rule": 1, "kernel": kernel_name(nb), "code": code_sources(nb)}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@given(sources.filter(bool), presentation_tags, st.data())
def test_execution_tags_change_the_key_presentation_tags_do_not(srcs, tags, data):
    """skip-execution / raises-exception on a code cell change the key; presentation tags keep the rule-1 key."""
    nb = make_nb(srcs)
    key = notebook_key(nb)
    assert key == _rule1(nb)
    index = data.draw(st.integers(0, len(srcs) - 1))
    cosmetic = copy.deepcopy(nb)
    cosmetic["cells"][index + 1]["metadata"]["tags"] = tags
    cosmetic["metadata"]["execution"] = {"record_timing": True}  # an option no executor honours
    assert notebook_key(cosmetic) == key
    tag = data.draw(st.sampled_from(EXECUTION_TAGS))
    tagged = copy.deepcopy(cosmetic)
    tagged["cells"][index + 1]["metadata"]["tags"] = [*tags, tag]
    assert notebook_key(tagged) != key
    facts = notebook_facts(tagged)
    assert facts.execution and facts.key1 == key
    moved = copy.deepcopy(nb)
    if len(srcs) > 1:
        moved["cells"][(index + 1) % len(srcs) + 1]["metadata"]["tags"] = [tag]
        assert notebook_key(moved) != notebook_key(tagged)


@given(
    sources,
    st.one_of(st.booleans().map(lambda b: ("allow_errors", b)), st.integers(-5, 600).map(lambda t: ("timeout", t))),
)
def test_execution_options_change_the_key(srcs, option):
    """metadata.execution.allow_errors / timeout are part of the key; each value its own key."""
    nb = make_nb(srcs)
    name, value = option
    with_option = make_nb(srcs, meta={"execution": {name: value}})
    assert notebook_key(with_option) != notebook_key(nb)
    other = make_nb(srcs, meta={"execution": {name: (not value) if name == "allow_errors" else value + 1}})
    assert notebook_key(other) != notebook_key(with_option)


file_bytes = st.binary(max_size=64)
paths = st.text(alphabet="abc/._-", min_size=1, max_size=12)


@given(sources, st.dictionaries(paths, file_bytes, min_size=1, max_size=4), st.data())
def test_any_byte_change_in_a_matched_file_changes_the_key(srcs, files, data):
    """Rule 2 hashes every matched file's content: any byte changed, a file added or renamed, gives another key."""
    facts = notebook_facts(make_nb(srcs))
    inputs = KeyInputs(files=tuple((p, object_id(b)) for p, b in files.items()))
    key, rule = compose_key(facts, inputs)
    assert rule == KEY_RULE_DEPENDS and key != facts.key1
    path = data.draw(st.sampled_from(sorted(files)))
    changed = data.draw(file_bytes.filter(lambda b: b != files[path]))
    edited = dict(files, **{path: changed})
    assert compose_key(facts, KeyInputs(files=tuple((p, object_id(b)) for p, b in edited.items())))[0] != key
    extra = data.draw(paths.filter(lambda p: p not in files))
    grown = dict(files, **{extra: b""})
    assert compose_key(facts, KeyInputs(files=tuple((p, object_id(b)) for p, b in grown.items())))[0] != key


@given(sources, st.dictionaries(paths, file_bytes, min_size=1, max_size=4), st.randoms())
def test_declarations_matching_nothing_new_do_not_change_the_key(srcs, files, rnd):
    """A file matched twice (by two globs), or inputs in another order, give the same key."""
    facts = notebook_facts(make_nb(srcs))
    pairs = [(p, object_id(b)) for p, b in files.items()]
    key = compose_key(facts, KeyInputs(files=tuple(pairs)))[0]
    doubled = pairs + pairs[: rnd.randint(0, len(pairs))]
    rnd.shuffle(doubled)
    assert compose_key(facts, KeyInputs(files=tuple(doubled)))[0] == key


@given(sources, st.text(max_size=10))
def test_env_values_enter_the_key_and_unset_is_not_empty(srcs, value):
    """A declared variable's value is in the key; unset, empty and any value are three keys."""
    facts = notebook_facts(make_nb(srcs))
    keys = {compose_key(facts, KeyInputs(env=(("X", text_hash(v)),)))[0] for v in (None, "", value + "!")}
    assert len(keys) == 3
    assert text_hash(None) is None and text_hash("") != text_hash(" ")
