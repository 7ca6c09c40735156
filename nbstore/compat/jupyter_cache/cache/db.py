"""jupyter-cache 1.0's `cache.db`: the record classes, with the static helpers tools call on them.

Where jupyter-cache passes its SQLAlchemy engine as `db`, pass the store (JupyterCacheBase.db is the store).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from nbstore import records as _records
from nbstore.errors import RecordNotFoundError

if TYPE_CHECKING:
    from nbstore.store.cache import NbStore

__all__ = ["NbCacheRecord", "NbProjectRecord", "NbStageRecord"]


class NbProjectRecord(_records.NbProjectRecord):
    """nbstore's project record, with jupyter-cache's static helpers (records handed out are the base class)."""

    @staticmethod
    def remove_tracebacks(pks: Iterable[int], db: NbStore) -> None:
        """Clear the tracebacks of the project records with these pks (unknown pks are ignored)."""
        for pk in pks:
            with contextlib.suppress(RecordNotFoundError):
                db.set_staged_traceback(int(pk), "")

    @staticmethod
    def set_traceback(uri: str | os.PathLike[str], traceback: str | None, db: NbStore) -> None:
        """Record the traceback of the project notebook at uri (KeyError if it is not in the project)."""
        db.set_staged_traceback(uri, traceback or "")

    @staticmethod
    def record_from_pk(pk: int, db: NbStore) -> _records.NbProjectRecord:
        """Return the project record with this pk (KeyError if none)."""
        return db.get_project_record(int(pk))

    @staticmethod
    def record_from_uri(uri: str | os.PathLike[str], db: NbStore) -> _records.NbProjectRecord:
        """Return the project record of the notebook at uri (KeyError if none)."""
        return db.get_project_record(uri)

    @staticmethod
    def records_all(db: NbStore) -> list[_records.NbProjectRecord]:
        """Return every project record, by pk."""
        return db.list_project_records()

    @staticmethod
    def remove_pks(pks: Iterable[int], db: NbStore) -> None:
        """Remove the project records with these pks (unknown pks are ignored)."""
        for pk in pks:
            with contextlib.suppress(RecordNotFoundError):
                db.remove_nb_from_project(int(pk))

    @staticmethod
    def remove_uris(uris: Iterable[str | os.PathLike[str]], db: NbStore) -> None:
        """Remove the project records of these notebook paths (unknown ones are ignored)."""
        for uri in uris:
            with contextlib.suppress(RecordNotFoundError):
                db.remove_nb_from_project(uri)


class NbCacheRecord(_records.NbCacheRecord):
    """nbstore's cache record, with jupyter-cache's static look-ups (records handed out are the base class)."""

    @staticmethod
    def record_from_hashkey(hashkey: str, db: NbStore) -> _records.NbCacheRecord:
        """Return the cache record with this hashkey (KeyError if none)."""
        return db.match_cache_key(hashkey)

    @staticmethod
    def record_from_pk(pk: int, db: NbStore) -> _records.NbCacheRecord:
        """Return the cache record with this pk (KeyError if none)."""
        return db.get_cache_record(int(pk))

    @staticmethod
    def records_all(db: NbStore) -> list[_records.NbCacheRecord]:
        """Return every cache record, by pk."""
        return db.list_cache_records()


#: jupyter-cache 0.x's name for a project record.
NbStageRecord = _records.NbStageRecord
