"""Records (frozen snapshots) and the pure (de)serialisation of their JSON sidecars."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from nbstore.untrusted import artifact_name_problem, is_object_id, loads_bounded

__all__ = [
    "DEFAULT_READER",
    "NbCacheRecord",
    "NbProjectRecord",
    "NbStageRecord",
    "conflict_sides",
    "dump_json",
    "format_time",
    "now",
    "parse_config",
    "parse_time",
]


def now() -> datetime:
    """Return the current time as a naive UTC datetime (the form records hand out)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def format_time(value: datetime) -> str:
    """Format a naive UTC datetime as ISO 8601 with microseconds."""
    return value.isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """Parse a time written by format_time (a trailing Z or offset is converted to naive UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def dump_json(obj: Any) -> bytes:
    """Serialise a sidecar deterministically: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# How git's conflict markers move between the sections of a conflicted file (None: lines common to both).
_NEXT_SECTION = {
    (None, b"<"): "ours",
    ("ours", b"|"): "base",  # diff3 and zdiff3 styles show the merge base too
    ("ours", b"="): "theirs",
    ("base", b"="): "theirs",
    ("theirs", b">"): None,
}


def _marker(line: bytes) -> bytes | None:
    """Return the character of a git conflict-marker line (<, |, = or >), or None for any other line."""
    if line[:7] in (b"<<<<<<<", b"|||||||", b">>>>>>>") and line[7:8] in (b" ", b"\n", b"\r", b""):
        return line[:1]
    return b"=" if line.rstrip(b"\r\n") == b"=======" else None


def conflict_sides(data: bytes) -> tuple[bytes, bytes] | None:
    """Return both sides of a file git left with merge-conflict markers, or None if it has none (or bad ones)."""
    sides: dict[str, list[bytes]] = {"ours": [], "base": [], "theirs": []}
    section: str | None = None
    seen = False
    for line in data.splitlines(keepends=True):
        marker = _marker(line)
        if marker is None:
            for name in ("ours", "theirs") if section is None else (section,):
                sides[name].append(line)
        elif (section, marker) in _NEXT_SECTION:
            section, seen = _NEXT_SECTION[section, marker], True
        else:
            return None
    if not seen or section is not None:
        return None
    return b"".join(sides["ours"]), b"".join(sides["theirs"])


def parse_config(raw: bytes) -> tuple[Any, bool]:
    """Parse nbstore.json; for a file git left in conflict, the side with the larger cache limit (and True)."""
    try:
        return loads_bounded(raw), False
    except ValueError as exc:
        error = exc
    sound = []
    for side in conflict_sides(raw) or ():
        try:
            config = loads_bounded(side)
        except ValueError:
            continue
        if isinstance(config, dict) and isinstance(config.get("cache_limit"), int):
            sound.append(config)
    if not sound:
        raise error
    # The larger limit evicts nothing that either branch kept.
    return max(sound, key=lambda config: (config["cache_limit"], dump_json(config))), True


@dataclass(frozen=True, repr=False)
class NbCacheRecord:
    """A snapshot of one cached notebook's record."""

    pk: int
    hashkey: str
    uri: str
    created: datetime
    accessed: datetime
    description: str = ""
    data: dict = field(default_factory=dict)
    notebook: str = ""
    artifacts: dict = field(default_factory=dict)
    key_rule: int = 1
    #: What entered a rule-2 key: code and notebook digests, {path: content hash}, {name: value hash}.
    inputs: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"NbCacheRecord(pk={self.pk})"

    def to_dict(self) -> dict:
        """Return the record's public fields, as the seed shows them."""
        return {
            "hashkey": self.hashkey,
            "description": self.description,
            "created": self.created,
            "uri": self.uri,
            "pk": self.pk,
            "data": dict(self.data),
            "accessed": self.accessed,
        }

    def to_sidecar(self) -> dict:
        """Return the JSON form written to cache/<hashkey>.json (no access time: that is volatile)."""
        return {
            "artifacts": dict(self.artifacts),
            "created": format_time(self.created),
            "data": self.data,
            "description": self.description,
            "hashkey": self.hashkey,
            "key_rule": self.key_rule,
            "notebook": self.notebook,
            "pk": self.pk,
            "uri": self.uri,
            # Rule-1 records stay byte for byte what earlier versions wrote.
            **({"inputs": self.inputs} if self.inputs else {}),
        }

    @classmethod
    def from_sidecar(cls, obj: dict, *, accessed: datetime | None = None, uri: str | None = None) -> NbCacheRecord:
        """Build a record from its sidecar JSON (raises KeyError/TypeError/ValueError when malformed).

        uri: the uri to hand out instead of the stored one (the store makes a relative one absolute).
        """
        created = parse_time(obj["created"])
        artifacts = obj.get("artifacts") or {}
        if not isinstance(artifacts, dict) or not is_object_id(obj["notebook"]):
            raise ValueError("malformed object references")
        for name, oid in artifacts.items():
            # Checked on every read, not only when written: a record may come from anyone's pull request.
            problem = artifact_name_problem(name)
            if problem is not None:
                raise ValueError(f"artifact name {name!r} {problem}")
            if not is_object_id(oid):
                raise ValueError(f"artifact {name!r} refers to {oid!r}, which is not an object id")
        pk = obj["pk"]
        if not isinstance(pk, int) or isinstance(pk, bool) or pk < 1:
            raise ValueError(f"bad pk {pk!r}")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError("'data' is not an object")
        inputs = obj.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise ValueError("'inputs' is not an object")
        return cls(
            pk=pk,
            hashkey=str(obj["hashkey"]),
            uri=str(obj.get("uri") or "") if uri is None else uri,
            created=created,
            accessed=accessed if accessed is not None and accessed > created else created,
            description=str(obj.get("description") or ""),
            data=data,
            notebook=obj["notebook"],
            artifacts=dict(artifacts),
            key_rule=int(obj.get("key_rule", 1)),
            inputs=inputs,
        )


#: The reader of a stage record that names none: notebooks are .ipynb files read as JSON.
DEFAULT_READER = "nbformat"


@dataclass(frozen=True, repr=False)
class NbStageRecord:
    """A snapshot of one staged notebook's record (uri and assets are absolute paths)."""

    pk: int
    uri: str
    created: datetime
    assets: tuple[str, ...] = ()
    traceback: str = ""
    reader: str = DEFAULT_READER
    #: Dependency globs and environment variable names declared at staging (relative to the notebook's folder).
    depends: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    @property
    def read_data(self) -> dict:
        """Return jupyter-cache 1.0's form of the reader: {"name": reader, "type": "plugin"}."""
        return {"name": self.reader, "type": "plugin"}

    def __repr__(self) -> str:
        return f"NbStageRecord(pk={self.pk})"

    def to_dict(self) -> dict:
        """Return the record's public fields, as the seed shows them."""
        return {
            "assets": list(self.assets),
            "traceback": self.traceback,
            "pk": self.pk,
            "uri": self.uri,
            "created": self.created,
        }


@dataclass(frozen=True, repr=False)
class NbProjectRecord(NbStageRecord):
    """A stage record under jupyter-cache 1.0's name (a notebook of the project); to_dict adds read_data."""

    def __repr__(self) -> str:
        return f"NbProjectRecord(pk={self.pk})"

    def to_dict(self) -> dict:
        """Return the record's public fields, as jupyter-cache 1.0 shows them."""
        return {**super().to_dict(), "read_data": self.read_data}

    @classmethod
    def of(cls, record: NbStageRecord) -> NbProjectRecord:
        """Return the stage record as a project record (the same fields)."""
        if isinstance(record, cls):
            return record
        return cls(record.pk, record.uri, record.created, record.assets, record.traceback, record.reader)
