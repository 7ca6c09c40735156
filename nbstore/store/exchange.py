"""What sharing a store with another one needs from the local store: its records as sidecars, checked
objects in and out, and a merge of incoming records by key with the rules of a git merge of two stores."""

from __future__ import annotations

import json
from typing import Any

from nbstore.errors import StoreCorruptError
from nbstore.hashing import object_id
from nbstore.indexfile import IndexState
from nbstore.records import dump_json
from nbstore.store.cache import NbStore
from nbstore.store.fsio import atomic_write
from nbstore.store.objects import has_object, put_object, read_object

__all__ = [
    "cache_sidecars",
    "content_without_pk",
    "local_object",
    "merge_cache_sidecars",
    "missing_objects",
    "receive_object",
    "record_objects",
    "wins",
]


def content_without_pk(rec: dict) -> bytes:
    """Return a sidecar's deterministic bytes without its pk (pks are each store's own numbering)."""
    return dump_json({k: v for k, v in rec.items() if k != "pk"})


def wins(a: dict, b: dict) -> bool:
    """True if record a beats record b for the same key: created first (then smaller bytes), as in a git merge."""
    return (a["created"], content_without_pk(a)) < (b["created"], content_without_pk(b))


def record_objects(rec: dict) -> list[str]:
    """Return the object ids a cache sidecar names: its notebook, then its artifacts."""
    return [rec["notebook"], *rec.get("artifacts", {}).values()]


def cache_sidecars(store: NbStore) -> dict[str, dict]:
    """Return a copy of every cache record's sidecar JSON, by key."""
    state = store._state_in_sync()
    return {key: json.loads(json.dumps(rec)) for key, rec in state.cache.items()}


def local_object(store: NbStore, oid: str) -> bytes:
    """Return an object's bytes, checked against its hash (StoreCorruptError naming it otherwise)."""
    return read_object(store.layout, oid)


def missing_objects(store: NbStore, oids: Any) -> set[str]:
    """Return the object ids, of those given, that the store lacks."""
    return {oid for oid in oids if not has_object(store.layout, oid)}


def receive_object(store: NbStore, oid: str, data: bytes, *, source: str) -> None:
    """Store bytes that arrived from elsewhere as object oid, refusing them if their hash is not oid."""
    if object_id(data) != oid:
        raise StoreCorruptError(f"object {oid} from {source} is corrupt: its bytes do not match its hash")
    store._ensure()
    put_object(store.layout, data, oid=oid)


def merge_cache_sidecars(store: NbStore, incoming: dict[str, dict]) -> list[str]:
    """Merge incoming cache sidecars by key as a git merge would; return the keys whose record changed.

    A key the store lacks is added with its pk; for a key on both sides the record created first is kept
    (with the pk it has here). Clashing pks are then settled by the store's own rule: the record created
    first keeps it, the others are renumbered after the highest. Every object an incoming record names
    must already be in the store.
    """
    changed: list[str] = []
    with store._writing() as state:
        writes: dict[str, dict] = {}
        for key, rec in incoming.items():
            store._check_sidecar("cache", rec, key)
            missing = missing_objects(store, record_objects(rec))
            if missing:
                raise StoreCorruptError(f"record {key} names objects the store lacks: {', '.join(sorted(missing))}")
            local = state.cache.get(key)
            if local is None:
                writes[key] = rec
            elif content_without_pk(local) != content_without_pk(rec) and wins(rec, local):
                writes[key] = dict(rec, pk=local["pk"])
        if writes:
            # Settle clashing pks here, by the store's own rule, so that the rebuild finds none to renumber
            # (each renumbering would be logged as a warning, and a pull brings many on purpose).
            merged = IndexState(
                cache={**state.cache, **writes}, stage=dict(state.stage), high_water=dict(state.high_water)
            )
            store._resolve_collisions(merged)
            store._begin()
            for key in sorted(merged.cache):
                if merged.cache[key] != state.cache.get(key):
                    atomic_write(store.layout.cache_sidecar(key), dump_json(merged.cache[key]), tmpdir=store.layout.tmp)
                    if key in writes:
                        changed.append(key)
            store.rebuild_index()
    return changed
