"""Pure framing and replay of the append-only index: one checksummed JSON entry per line."""

from __future__ import annotations

import gc
import itertools
import json
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from json.scanner import make_scanner

__all__ = [
    "MAX_INDEX_LINE_BYTES",
    "IndexState",
    "SNAPSHOT_MARK",
    "frame",
    "frame_snapshot",
    "frame_snapshot_parts",
    "load_by_parts",
    "load",
    "parse_lines",
    "parse_snapshot",
    "replay",
]


def frame(entry: dict) -> bytes:
    """Frame one index entry as '<crc32 hex> <compact json>\\n' so a torn line is detectable."""
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


#: Longest index line replayed (a put line holds one record, at most 16 MiB); a longer one counts as garbled.
MAX_INDEX_LINE_BYTES = 32 * 1024 * 1024

_scan = make_scanner(json.JSONDecoder())

# How the compact, key-sorted JSON of an entry that carries only a fingerprint ends.
_FP_ONLY_ENDINGS = (b',"op":"sync"}', b',"op":"begin"}')


def _loads(body: bytes):
    # The index is replayed on every command: skip json.loads' per-call overhead for the compact UTF-8
    # lines frame() writes, and fall back to json.loads (same result or error) for anything else.
    try:
        text = body.decode("utf-8")
        obj, end = _scan(text, 0)
        if end == len(text):
            return obj
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        pass
    return json.loads(body)


def parse_lines(data: bytes, *, last_fingerprint_only: bool = False) -> tuple[list[dict], int]:
    """Parse framed lines; return the whole entries and the number of torn or garbled lines.

    With last_fingerprint_only, of the "begin"/"sync" lines (which carry only the folders' fingerprint) just
    the last is decoded and returned, at the end: replay keeps only the last fingerprint anyway.
    """
    entries: list[dict] = []
    bad = 0
    lines = data.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: a line still being (or never fully) written
    if tail:
        bad += 1
    crc32 = zlib.crc32
    # Every write adds two such lines: decoding just the last of them makes an open about a third faster.
    last_fp = None
    for line in lines:
        if len(line) < 10 or line[8:9] != b" " or len(line) > MAX_INDEX_LINE_BYTES:
            bad += line != b""
            continue
        body = line[9:]
        try:
            if int(line[:8], 16) != crc32(body):
                bad += 1
                continue
            if last_fingerprint_only and body.startswith(b'{"fp":') and body.endswith(_FP_ONLY_ENDINGS):
                last_fp = body
                continue
            entry = _loads(body)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            bad += 1
    if last_fp is not None:
        try:
            entries.append(_loads(last_fp))
        except (ValueError, RecursionError):
            bad += 1
    return entries, bad


_FIELD_NAMES = {
    name: name
    for name in (
        *("artifacts", "created", "data", "description", "hashkey", "inputs", "key_rule", "notebook", "pk"),
        *("uri", "uri_relative", "assets", "depends", "env", "reader"),
    )
}


@dataclass
class IndexState:
    """What replaying the index gives: records by kind and name, volatile facts, and fingerprints."""

    cache: dict = field(default_factory=dict)  # hashkey -> sidecar dict
    stage: dict = field(default_factory=dict)  # stage name -> sidecar dict
    touched: dict = field(default_factory=dict)  # hashkey -> ISO access time
    tracebacks: dict = field(default_factory=dict)  # stage name -> traceback text
    hashes: dict = field(default_factory=dict)  # stage name -> [size, mtime_ns, key]
    high_water: dict = field(default_factory=lambda: {"cache": 0, "stage": 0})
    fingerprint: list | None = None
    header: dict | None = None
    bad_lines: int = 0
    # pk -> name per kind, built on the first lookup and kept up to date by apply(): derived, never written.
    _pks: dict = field(default_factory=dict, repr=False, compare=False)
    _clashes: set = field(default_factory=set, repr=False, compare=False)  # kinds whose map saw a shared pk

    def name_of_pk(self, kind: str, pk: int) -> str | None:
        """Return the name of the record of this kind with this pk (the first in table order on a clash), or None."""
        table = self.cache if kind == "cache" else self.stage
        pks = self._pks.get(kind)
        if pks is None:
            pks = self._build_pks(kind)
        name = pks.get(pk)
        if name is None:
            return None
        rec = table.get(name)
        if rec is None or rec.get("pk") != pk:
            # The table was changed without apply() (a rebuild's renumbering): map it again.
            name = self._build_pks(kind).get(pk)
        return name

    def forget_pks(self) -> None:
        """Drop the pk maps after changing a table directly (they are rebuilt on the next lookup)."""
        self._pks.clear()
        self._clashes.clear()

    def _build_pks(self, kind: str) -> dict:
        pks: dict = {}
        clash = False
        for name, rec in (self.cache if kind == "cache" else self.stage).items():
            pk = rec.get("pk")
            if type(pk) is not int:
                continue  # an index is untrusted: such a record is never found by pk (a rebuild checks it)
            if pk in pks:
                clash = True
            else:
                pks[pk] = name
        # With a clash, which record holds a pk depends on table order: apply() then drops the map instead.
        if clash:
            self._clashes.add(kind)
        else:
            self._clashes.discard(kind)
        self._pks[kind] = pks
        return pks

    def _map_put(self, kind: str, name: str, old: dict | None, rec: dict) -> None:
        pks = self._pks.get(kind)
        if pks is None:
            return
        old_pk = old.get("pk") if old is not None else None
        pk = rec.get("pk")
        if type(old_pk) is int and old_pk != pk and pks.get(old_pk) == name:
            if kind in self._clashes:
                del self._pks[kind]
                return
            del pks[old_pk]
        if type(pk) is not int:
            return
        holder = pks.get(pk)
        if holder is None or holder == name:
            pks[pk] = name
        else:
            del self._pks[kind]  # two records share a pk (a merge before its renumbering): rebuilt when asked

    def _map_del(self, kind: str, name: str, old: dict | None) -> None:
        pks = self._pks.get(kind)
        old_pk = old.get("pk") if old is not None else None
        if pks is None or type(old_pk) is not int or pks.get(old_pk) != name:
            return
        if kind in self._clashes:
            del self._pks[kind]
        else:
            del pks[old_pk]

    def apply(self, entry: dict) -> None:
        """Apply one index entry to the state."""
        op = entry.get("op")
        kind = entry.get("kind")
        name = entry.get("name")
        if "fp" in entry:
            self.fingerprint = entry["fp"]
        if op == "header":
            self.header = entry
        elif op == "put" and kind in ("cache", "stage") and isinstance(entry.get("rec"), dict):
            table = self.cache if kind == "cache" else self.stage
            # One string per field name for records replayed line by line (each line is its own parse).
            rec = {_FIELD_NAMES.get(k, k): v for k, v in entry["rec"].items()}
            if self._pks:
                self._map_put(kind, name, table.get(name), rec)
            table[name] = rec
            pk = rec.get("pk")
            if isinstance(pk, int) and pk > self.high_water[kind]:
                self.high_water[kind] = pk
        elif op == "del" and kind in ("cache", "stage"):
            old = (self.cache if kind == "cache" else self.stage).pop(name, None)
            if self._pks:
                self._map_del(kind, name, old)
            (self.touched if kind == "cache" else self.tracebacks).pop(name, None)
            if kind == "stage":
                self.hashes.pop(name, None)
        elif op == "touch":
            self.touched[name] = entry.get("t")
        elif op == "traceback":
            if entry.get("text"):
                self.tracebacks[name] = entry["text"]
            else:
                self.tracebacks.pop(name, None)
        elif op == "hash":
            self.hashes[name] = entry.get("stat")
        elif op == "hw" and kind in ("cache", "stage"):
            self.high_water[kind] = max(self.high_water[kind], int(entry.get("pk", 0)))


#: First byte of the snapshot line. It is not framed like an entry, so a version of nbstore that does not know
#: snapshots counts it as a garbled line and rebuilds the index from the records instead of trusting a part.
SNAPSHOT_MARK = b"~"

_TABLES = ("cache", "stage", "touched", "tracebacks", "hashes")


_SNAPSHOT_NAMES = (*_TABLES, "hw")


#: Bytes of the log after a snapshot parsed at a time.
_TAIL_BLOCK = 1 << 20

#: Entries of a table per piece of the snapshot: a reader parses one piece at a time (~0.5 MB of text).
_PIECE_ENTRIES = 1000


def _connector(i: int) -> bytes:
    """The literal text before the i-th table of a snapshot body: '{"cache":', ',"stage":', ..."""
    return (('{"%s":' if i == 0 else ',"%s":') % _SNAPSHOT_NAMES[i]).encode()


def _table_pieces(table: dict) -> list[bytes]:
    """A table's compact JSON in pieces: '{' + entries, ',' + entries, ..., and a last piece '}'."""
    pieces = []
    items = iter(table.items())
    while True:
        group = dict(itertools.islice(items, _PIECE_ENTRIES))
        if not group:
            break
        text = json.dumps(group, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        pieces.append((b"," if pieces else b"{") + text[1:-1])
    return [*(pieces or [b"{"]), b"}"]


def frame_snapshot(state: IndexState) -> bytes:
    """Frame the whole state as one '~<crc32 hex> <compact json>\\n' line (loaded in one json parse)."""
    return frame_snapshot_parts(state)[0]


def frame_snapshot_parts(state: IndexState) -> tuple[bytes, list[list[int]]]:
    """Frame the snapshot line and return it with the byte lengths of each table's pieces.

    The body is the JSON object of every table (what one json parse reads), written in pieces of at most
    _PIECE_ENTRIES entries so that a reader told their lengths (the header keeps them) can read and parse a
    piece at a time: a large store's state is then built without its whole text in memory beside it.
    """
    body = []
    lengths = []
    for i, name in enumerate(_SNAPSHOT_NAMES):
        pieces = _table_pieces(state.high_water if name == "hw" else getattr(state, name))
        body.append(_connector(i))
        body.extend(pieces)
        lengths.append([len(piece) for piece in pieces])
    body.append(b"}")
    data = b"".join(body)
    return b"~%08x %s\n" % (zlib.crc32(data), data), lengths


def _valid_snapshot(doc: object) -> bool:
    """True if a parsed snapshot has the shape frame_snapshot writes (a store folder is untrusted input)."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(name), dict) for name in (*_TABLES, "hw")):
        return False
    hw = doc["hw"]
    if set(hw) != {"cache", "stage"} or not all(type(v) is int for v in hw.values()):
        return False
    # A stat-cache entry is a string (a list in versions before it).
    for name, kind in (
        ("cache", dict),
        ("stage", dict),
        ("touched", str),
        ("tracebacks", str),
        ("hashes", (str, list)),
    ):
        for value in doc[name].values():
            if not isinstance(value, kind):
                return False
    for table in (doc["cache"], doc["stage"]):
        for rec in table.values():
            if type(rec.get("pk")) is not int:
                return False
    return True


def _snapshot_text(line: bytes | bytearray | memoryview) -> str | None:
    """Return the JSON text of a snapshot line whose checksum holds, else None."""
    with memoryview(line) as view:
        if len(view) < 11 or view[:1] != SNAPSHOT_MARK or view[9:10] != b" ":
            return None
        body = view[10:]
        if body[-1:] == b"\n":
            body = body[:-1]
        try:
            if int(bytes(view[1:9]), 16) != zlib.crc32(body):
                return None
            # Decoding from the view spares a copy of what may be tens of megabytes.
            return str(body, "utf-8")
        except ValueError:
            return None
        finally:
            body.release()


def _snapshot_state(text: str) -> IndexState | None:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not _valid_snapshot(doc):
        return None
    return IndexState(
        cache=doc["cache"],
        stage=doc["stage"],
        touched=doc["touched"],
        tracebacks=doc["tracebacks"],
        hashes=doc["hashes"],
        high_water=doc["hw"],
    )


def parse_snapshot(line: bytes | bytearray | memoryview) -> IndexState | None:
    """Return the state a snapshot line holds, or None if it is torn, garbled or not a snapshot."""
    text = _snapshot_text(line)
    return None if text is None else _snapshot_state(text)


@contextmanager
def _no_gc():
    """Pause the cyclic garbage collector: parsing allocates only acyclic containers, and its passes over
    millions of new dicts and lists take half the time of a large parse."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _share_names(doc: dict) -> None:
    """Make the tables of a snapshot parsed piece by piece share one string per record name.

    Each piece is its own parse, so a stage name keyed in the stage table and again in the stat-cache, or a
    hashkey that is a cache table key and its record's "hashkey", were two strings: 16 MB at 100,000 notebooks.
    """
    for rec_table, others, field_name in (("cache", ("touched",), "hashkey"), ("stage", ("hashes", "tracebacks"), "")):
        names = doc[rec_table]
        one = {name: name for name in names}
        for other in others:
            table = doc[other]
            doc[other] = {one.get(name, name): value for name, value in table.items()}
        if field_name:
            for name, rec in names.items():
                if rec.get(field_name) == name:
                    rec[field_name] = name
        del one


def load_by_parts(header: dict, offset: int, size: int, read) -> tuple[IndexState, int] | None:
    """Load a snapshot line piece by piece with read(offset, length) -> bytes, then the log after it.

    header is the index's checked first line and offset where the snapshot line starts; its "parts" give the
    lengths of each table's pieces (as frame_snapshot_parts wrote them), so only one piece's text is held at
    a time. Returns (state, bytes consumed from the start of the file) or None when the pieces do not check
    out (then the whole file is to be read with load(), which trusts nothing it cannot check either).
    """
    parts = header.get("parts")
    if not isinstance(parts, list) or len(parts) != len(_SNAPSHOT_NAMES):
        return None
    for lengths in parts:
        if not isinstance(lengths, list) or len(lengths) < 2 or not all(type(n) is int and n > 0 for n in lengths):
            return None
    total = sum(len(_connector(i)) + sum(lengths) for i, lengths in enumerate(parts)) + 1
    if offset + 10 + total + 1 > size:
        return None
    head = read(offset, 10)
    if len(head) != 10 or head[:1] != SNAPSHOT_MARK or head[9:10] != b" ":
        return None
    try:
        want = int(head[1:9], 16)
    except ValueError:
        return None
    crc = 0
    pos = offset + 10

    def take(length: int) -> bytes | None:
        nonlocal crc, pos
        chunk = read(pos, length)
        if len(chunk) != length:
            return None
        pos += length
        crc = zlib.crc32(chunk, crc)
        return chunk

    doc: dict = {}
    with _no_gc():
        for i, lengths in enumerate(parts):
            if take(len(_connector(i))) != _connector(i):
                return None
            table: dict = {}
            for j, length in enumerate(lengths):
                chunk = take(length)
                if chunk is None:
                    return None
                if j == len(lengths) - 1:
                    if chunk != b"}":
                        return None
                    break
                if chunk[:1] != (b"," if j else b"{"):
                    return None
                if length == 1:
                    continue  # an empty table: '{' then '}'
                try:
                    piece = json.loads(b"{" + chunk[1:] + b"}")
                except (ValueError, RecursionError):
                    return None
                if not isinstance(piece, dict):
                    return None
                table.update(piece)
            doc[_SNAPSHOT_NAMES[i]] = table
        if take(1) != b"}" or crc != want or read(pos, 1) != b"\n" or not _valid_snapshot(doc):
            return None
        _share_names(doc)
        state = IndexState(
            cache=doc["cache"],
            stage=doc["stage"],
            touched=doc["touched"],
            tracebacks=doc["tracebacks"],
            hashes=doc["hashes"],
            high_water=doc["hw"],
        )
        del doc
        replay([header], state)
        # The log after the snapshot, a block of whole lines at a time: up to half the snapshot's size, it
        # would otherwise be held three times over (its bytes, its lines, its entries) beside the state.
        pos += 1
        carry = b""
        while pos < size:
            block = carry + read(pos, min(_TAIL_BLOCK, size - pos))
            if len(block) == len(carry):
                break  # the file ended early (it was truncated since its size was taken)
            pos += len(block) - len(carry)
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            entries, bad = parse_lines(block[:cut], last_fingerprint_only=True)
            del block
            state.bad_lines += bad
            replay(entries, state)
            del entries
    return state, pos - len(carry)


def load(data: bytes | bytearray) -> tuple[IndexState, int]:
    """Replay a whole index file (header, optional snapshot line, entries); return the state and bytes consumed.

    Only whole lines are consumed: a line still being appended is left for the next read. A bytearray is
    emptied once its snapshot line is decoded, so that the file's bytes are not held while the state is built.
    """
    with _no_gc():
        return _load(data)


def _load(data: bytes | bytearray) -> tuple[IndexState, int]:
    end = data.rfind(b"\n") + 1
    head_end = data.find(b"\n") + 1
    state = None
    start = 0
    if head_end and data[head_end : head_end + 1] == SNAPSHOT_MARK:
        snap_end = data.find(b"\n", head_end) + 1
        if snap_end:
            with memoryview(data) as view:
                text = _snapshot_text(view[head_end:snap_end])
            if text is not None:
                head, log = bytes(data[:head_end]), bytes(data[snap_end:end])
                if isinstance(data, bytearray):
                    data.clear()  # the caller's copy of the file: tens of MB that the parse need not sit beside
                data, end, start = log, end - snap_end, 0
                state = _snapshot_state(text)
                del text
                if state is not None:
                    header, bad = parse_lines(head)
                    replay(header, state)
                    state.bad_lines += bad
                    consumed = snap_end
                else:
                    # A snapshot that parses to the wrong shape: the rest is replayed, and the index rebuilt.
                    state = IndexState()
                    state.bad_lines += 1
                    replay(parse_lines(head)[0], state)
                    consumed = snap_end
                entries, bad = parse_lines(data[:end], last_fingerprint_only=True)
                state.bad_lines += bad
                replay(entries, state)
                return state, consumed + end
    if state is None:
        state = IndexState()
    entries, bad = parse_lines(data[start:end], last_fingerprint_only=True)
    state.bad_lines += bad
    replay(entries, state)
    return state, end


def replay(entries: list[dict], state: IndexState | None = None) -> IndexState:
    """Replay entries onto a state (a new one by default) and return it."""
    state = state if state is not None else IndexState()
    for entry in entries:
        state.apply(entry)
    return state
