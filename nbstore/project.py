"""jupyter-cache 1.0's names for staging: the "project" is the staging area, a project record a stage record."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbstore.errors import ArtifactPathError
from nbstore.records import NbProjectRecord

if TYPE_CHECKING:
    from nbstore.records import NbCacheRecord

__all__ = ["ProjectAPI", "ProjectNb"]


@dataclass(frozen=True, repr=False)
class ProjectNb:
    """A notebook of the project as read now: its pk, URI, notebook and assets."""

    pk: int
    uri: str
    nb: Any
    assets: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        cells = len(self.nb.get("cells", [])) if isinstance(self.nb, dict) else "?"
        return f"ProjectNb(pk={self.pk}, uri={self.uri!r}, nb=Notebook(cells={cells}))"


def _filtered(records: list, filter_uris: Iterable[str] | None, filter_pks: Iterable[int] | None) -> list:
    if filter_uris is not None:
        uris = [filter_uris] if isinstance(filter_uris, (str, os.PathLike)) else list(filter_uris)
        wanted = {os.fspath(u) for u in uris} | {str(Path(u).resolve()) for u in uris}
        records = [r for r in records if r.uri in wanted]
    if filter_pks is not None:
        pks = {int(pk) for pk in filter_pks}
        records = [r for r in records if r.pk in pks]
    return records


class ProjectAPI:
    """jupyter-cache 1.0's project methods, mixed into NbStore: each is a stage method under another name."""

    # Uses NbStore's stage_notebook_file, list_staged_records, get_staged_record, get_staged_notebook, ...

    def add_nb_to_project(
        self,
        path: str | os.PathLike[str],
        *,
        read_data: Mapping[str, Any] | None = None,
        assets: Iterable[str | os.PathLike[str]] = (),
    ) -> NbProjectRecord:
        """Stage a notebook, read by the reader read_data names (default nbformat); see stage_notebook_file."""
        from nbstore.readers import reader_name

        if isinstance(assets, (str, os.PathLike)):
            raise TypeError(f"assets must be an iterable of paths, not one path: {assets!r}")
        for asset in assets:
            if not os.fspath(asset):
                raise ArtifactPathError(f"an asset path of {os.fspath(path)} is empty")
        record = self.stage_notebook_file(path, assets, reader=reader_name(read_data))
        return NbProjectRecord.of(record)

    def list_project_records(
        self, filter_uris: Iterable[str] | None = None, filter_pks: Iterable[int] | None = None
    ) -> list[NbProjectRecord]:
        """Return every project (stage) record, by pk, optionally only those with these URIs or pks."""
        records = _filtered(self.list_staged_records(), filter_uris, filter_pks)
        return [NbProjectRecord.of(r) for r in records]

    def get_project_record(self, pk_or_uri: int | str | os.PathLike[str]) -> NbProjectRecord:
        """Return the project record with this pk or notebook path (KeyError if there is none)."""
        return NbProjectRecord.of(self.get_staged_record(pk_or_uri))

    def remove_nb_from_project(self, pk_or_uri: int | str | os.PathLike[str]) -> None:
        """Remove a notebook from the project (KeyError if it is not in it)."""
        self.discard_staged_notebook(pk_or_uri)

    def get_project_notebook(self, pk_or_uri: int | str | os.PathLike[str]) -> ProjectNb:
        """Read a project notebook from its file with its reader; return it with its pk, URI and assets."""
        bundle = self.get_staged_notebook(pk_or_uri)
        record = self.get_staged_record(pk_or_uri)
        return ProjectNb(record.pk, record.uri, bundle.nb, list(record.assets))

    def get_cached_project_nb(self, pk_or_uri: int | str | os.PathLike[str]) -> NbCacheRecord | None:
        """Return the cache record matching the project notebook as it is now, or None."""
        return self.get_cache_record_of_staged(pk_or_uri)

    def list_unexecuted(
        self, filter_uris: Iterable[str] | None = None, filter_pks: Iterable[int] | None = None
    ) -> list[NbProjectRecord]:
        """Return the project records whose notebook, as it is now, has no match in the cache."""
        records = _filtered(self.list_staged_unexecuted(), filter_uris, filter_pks)
        return [NbProjectRecord.of(r) for r in records]
