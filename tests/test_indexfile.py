"""The index's framing detects torn and garbled lines, and replay applies entries in order."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nbstore.indexfile import IndexState, frame, parse_lines, replay

entries = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["touch", "hash"]), "name": st.text(min_size=1, max_size=8), "t": st.text(max_size=20)}
    ),
    max_size=10,
)


@given(entries)
def test_frame_round_trips(items):
    """Framed entries parse back to the same entries with no bad lines."""
    data = b"".join(frame(e) for e in items)
    parsed, bad = parse_lines(data)
    assert parsed == items and bad == 0


@given(entries.filter(bool), st.data())
def test_torn_tail_is_detected(items, data):
    """Cutting the file anywhere inside the last line loses that line only, and says so."""
    blob = b"".join(frame(e) for e in items)
    last = len(frame(items[-1]))
    cut = data.draw(st.integers(len(blob) - last + 1, len(blob) - 1))
    parsed, bad = parse_lines(blob[:cut])
    assert parsed == items[:-1] and bad == 1


@given(entries.filter(bool), st.data())
def test_flipped_byte_is_detected(items, data):
    """A changed byte inside an entry's JSON makes that line fail its checksum; the others survive."""
    lines = [frame(e) for e in items]
    i = data.draw(st.integers(0, len(lines) - 1))
    line = bytearray(lines[i])
    pos = data.draw(st.integers(9, len(line) - 2))
    line[pos] = (line[pos] + 1) % 128 or 1
    if line[pos] == ord("\n"):
        line[pos] = ord("x")
    lines[i] = bytes(line)
    parsed, bad = parse_lines(b"".join(lines))
    assert bad == 1
    assert parsed == items[:i] + items[i + 1 :]


def test_replay_applies_puts_deletes_and_volatile_facts():
    """Replay keeps the last put per name, forgets deleted names and tracks the pk high-water mark."""
    state = replay(
        [
            {"op": "put", "kind": "cache", "name": "k1", "rec": {"pk": 1}},
            {"op": "put", "kind": "cache", "name": "k2", "rec": {"pk": 2}},
            {"op": "touch", "kind": "cache", "name": "k2", "t": "2026-01-01T00:00:00"},
            {"op": "del", "kind": "cache", "name": "k2"},
            {"op": "put", "kind": "stage", "name": "s", "rec": {"pk": 7}},
            {"op": "traceback", "kind": "stage", "name": "s", "text": "boom"},
            {"op": "sync", "fp": [1, 2]},
        ]
    )
    assert set(state.cache) == {"k1"} and state.touched == {}
    assert state.high_water == {"cache": 2, "stage": 7}
    assert state.tracebacks == {"s": "boom"} and state.fingerprint == [1, 2]


def test_parse_agrees_with_json_loads_on_unusual_bodies():
    """Bodies with valid checksums but padding, non-objects or bad JSON parse exactly as json.loads would."""
    import zlib

    bodies = [b' {"op":"sync"} ', b'{"op": "touch", "name": "x"}', b"[1, 2]", b"{oops}", b'{"a":1}{"b":2}', b"\xff{}"]
    data = b"".join(b"%08x %s\n" % (zlib.crc32(b), b) for b in bodies)
    parsed, bad = parse_lines(data)
    assert parsed == [{"op": "sync"}, {"op": "touch", "name": "x"}]
    assert bad == 4


def test_only_the_last_fingerprint_counts():
    """Of many sync/begin lines, replay ends with the fingerprint of the last one, wherever it stands."""
    lines = [
        frame({"op": "sync", "fp": [1, 1]}),
        frame({"op": "put", "kind": "cache", "name": "k", "rec": {"pk": 1}}),
        frame({"op": "begin", "fp": None}),
        frame({"op": "sync", "fp": [2, 3]}),
        frame({"op": "touch", "kind": "cache", "name": "k", "t": "x"}),
    ]
    assert len(parse_lines(b"".join(lines))[0]) == 5
    entries, bad = parse_lines(b"".join(lines), last_fingerprint_only=True)
    assert len(entries) == 3
    state = replay(entries)
    assert bad == 0 and state.fingerprint == [2, 3] and set(state.cache) == {"k"} and state.touched == {"k": "x"}
    entries, _ = parse_lines(b"".join(lines[:3]), last_fingerprint_only=True)
    assert replay(entries).fingerprint is None


def _scan(table: dict, pk: int):
    """The pk lookup by linear scan: the first record in table order with this pk."""
    return next((name for name, rec in table.items() if rec.get("pk") == pk and type(rec.get("pk")) is int), None)


pk_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "del", "lookup"]),
        st.sampled_from(["cache", "stage"]),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.integers(1, 3), st.just("x")),
    ),
    max_size=40,
)


@settings(max_examples=400)
@given(pk_ops)
@example([("put", "cache", "a", 1), ("put", "cache", "b", 1), ("del", "cache", "a", 1)])
@example([("put", "stage", "a", 1), ("put", "stage", "b", 1), ("put", "stage", "a", 2)])
def test_pk_lookup_kept_by_replay_equals_a_scan(ops):
    """After any puts (pk changes and shared pks too), deletes and lookups, the pk map answers as a table scan does."""
    state = IndexState()
    for op, kind, name, pk in ops:
        if op == "lookup":
            state.name_of_pk(kind, 1)  # builds the map midway, so later entries must keep it up to date
        elif op == "put":
            state.apply({"op": "put", "kind": kind, "name": name, "rec": {"pk": pk}})
        else:
            state.apply({"op": "del", "kind": kind, "name": name})
        for k, table in (("cache", state.cache), ("stage", state.stage)):
            for probe in range(0, 5):
                assert state.name_of_pk(k, probe) == _scan(table, probe), (k, probe)


def test_pk_lookups_build_the_map_once_however_many_records():
    """Looking up 2000 pks among 20,000 records maps the table once; puts and deletes keep it without a rebuild."""
    state = IndexState()
    for i in range(1, 20_001):
        state.apply({"op": "put", "kind": "cache", "name": f"k{i}", "rec": {"pk": i}})
    builds = []
    real = state._build_pks
    state._build_pks = lambda kind: (builds.append(kind), real(kind))[1]
    assert [state.name_of_pk("cache", pk) for pk in range(1, 20_001, 10)] == [f"k{i}" for i in range(1, 20_001, 10)]
    state.apply({"op": "del", "kind": "cache", "name": "k7"})
    state.apply({"op": "put", "kind": "cache", "name": "new", "rec": {"pk": 20_001}})
    state.apply({"op": "put", "kind": "cache", "name": "k9", "rec": {"pk": 30_000}})
    assert state.name_of_pk("cache", 7) is None and state.name_of_pk("cache", 20_001) == "new"
    assert state.name_of_pk("cache", 9) is None and state.name_of_pk("cache", 30_000) == "k9"
    assert builds == ["cache"]
