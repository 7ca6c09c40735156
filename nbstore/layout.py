"""Pure layout of a store folder: where each kind of file lives."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = [
    "FORMAT",
    "GITATTRIBUTES",
    "GITIGNORE",
    "Layout",
    "TEMP_SUFFIX",
    "stage_name",
    "temp_name",
    "temp_writer",
]

#: Version of the on-disk format written by this version of nbstore.
FORMAT = 1

#: Suffix of every temporary file (written, fsynced, then renamed into place).
TEMP_SUFFIX = ".tmp"

GITIGNORE = """\
# nbstore: volatile state that is rebuilt or recreated as needed; never commit it.
/index
/lock
/claims/
/quarantine/
/stat/
/tmp/
*.tmp
"""

# Never convert line endings: stored bytes must keep the hash they are named by.
GITATTRIBUTES = "* -text\n"


def temp_name(target: str, host: str, pid: int, token: str) -> str:
    """Return the name of a temp file for target, naming its writer (host tag and pid) so gc can tell it died."""
    return f"{target}.{host}-{pid}.{token}{TEMP_SUFFIX}"


def temp_writer(name: str) -> tuple[str, int] | None:
    """Return the (host tag, pid) a temp file name records, or None for a name temp_name did not make."""
    if not name.endswith(TEMP_SUFFIX):
        return None
    parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3:
        return None
    host, _, pid = parts[1].rpartition("-")
    return (host, int(pid)) if host and pid.isdigit() else None


def stage_name(stored_uri: str) -> str:
    """Return the sidecar name of a staged notebook, from the URI as stored on disk."""
    return hashlib.sha256(stored_uri.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Layout:
    """Paths inside one store folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "nbstore.json"
        self.index = root / "index"
        self.lock = root / "lock"
        self.objects = root / "objects"
        self.cache = root / "cache"
        self.stage = root / "stage"
        self.quarantine = root / "quarantine"
        self.tmp = root / "tmp"
        self.gitignore = root / ".gitignore"
        self.gitattributes = root / ".gitattributes"
        self._objects_text = os.path.join(str(self.objects), "")

    def object_text(self, oid: str) -> str:
        """Return object_path(oid) as a string (status stats an object per notebook: pathlib costs 10x)."""
        return f"{self._objects_text}{oid[:2]}{os.sep}{oid[2:]}"

    def object_path(self, oid: str) -> Path:
        """Return the path of an object: a two-character fan-out, as git does."""
        return self.objects / oid[:2] / oid[2:]

    def cache_sidecar(self, hashkey: str) -> Path:
        """Return the sidecar path of a cached notebook."""
        return self.cache / f"{hashkey}.json"

    def stage_sidecar(self, name: str) -> Path:
        """Return the sidecar path of a staged notebook."""
        return self.stage / f"{name}.json"
