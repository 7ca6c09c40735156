"""Readers: turn a notebook file of some format (.ipynb, MyST Markdown, py:percent, ...) into a notebook.

A reader is a callable taking a file path and returning a notebook; readers are found by name among the
entry points of the groups `nbstore.readers` and jupyter-cache's `jcache.readers` (where MyST-NB registers
`myst_nb_md`). The store reads `nbformat` notebooks itself, without calling the entry point, so that
status and match never import nbformat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from nbstore import notebooks
from nbstore.errors import NotebookNotFoundError, NotebookReadError, ReaderNotFoundError
from nbstore.records import DEFAULT_READER

__all__ = [
    "DEFAULT_READER",
    "ENTRY_POINT_GROUPS",
    "check_reader",
    "list_readers",
    "load_reader",
    "read_jupytext",
    "read_nbformat",
    "read_notebook",
    "reader_name",
]

#: Where readers are registered, in order of precedence: nbstore's own group, then jupyter-cache's.
ENTRY_POINT_GROUPS = ("nbstore.readers", "jcache.readers")

# The readers nbstore ships (as pyproject.toml declares them), for a checkout used without installing it.
_BUILTIN = {
    "nbformat": "nbstore.readers:read_nbformat",
    "jupytext": "nbstore.readers:read_jupytext",
}


def read_nbformat(uri: str) -> Any:
    """Read an .ipynb file with nbformat, as it is (no conversion)."""
    import nbformat

    return nbformat.read(uri, nbformat.NO_CONVERT)


def read_jupytext(uri: str) -> Any:
    """Read any format jupytext knows (MyST Markdown, py:percent, R Markdown, ...) as a notebook."""
    try:
        import jupytext
    except ImportError as exc:
        raise NotebookReadError("the jupytext reader needs jupytext: pip install 'nbstore-cache[jupytext]'") from exc
    return jupytext.read(uri)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for group in ENTRY_POINT_GROUPS:
        for ep in entry_points(group=group):
            found.setdefault(ep.name, ep)
    for name, value in _BUILTIN.items():
        found.setdefault(name, EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUPS[0]))
    return found


def list_readers() -> list[str]:
    """Return the names of the installed readers (nbstore's nbformat and jupytext always among them)."""
    return sorted(_entry_points())


def reader_name(read_data: Mapping[str, Any] | str | None) -> str:
    """Return the reader named by jupyter-cache 1.0's read_data ({"name": ..., "type": "plugin"}), or a name."""
    if read_data is None:
        return DEFAULT_READER
    if isinstance(read_data, str):
        name = read_data
    elif isinstance(read_data, Mapping):
        if read_data.get("type", "plugin") != "plugin":
            raise ReaderNotFoundError(f"No reader found for: {dict(read_data)!r} (only type 'plugin' is known)")
        name = read_data.get("name")
    else:
        raise ReaderNotFoundError(f"read_data must be a dict like {{'name': 'jupytext'}}, not {read_data!r}")
    if not isinstance(name, str) or not name:
        raise ReaderNotFoundError(f"No reader found for: {read_data!r} (it names no reader)")
    return name


def check_reader(name: str) -> str:
    """Return name if a reader is registered under it (ReaderNotFoundError naming the known ones if not)."""
    if name != DEFAULT_READER and name not in _entry_points():
        known = ", ".join(list_readers())
        raise ReaderNotFoundError(f"no notebook reader named {name!r}; known readers: {known}")
    return name


def load_reader(name: str) -> Callable[[str], Any]:
    """Return the reader registered under name (ReaderNotFoundError if none is)."""
    found = _entry_points()
    if name not in found:
        check_reader(name)
    try:
        return found[name].load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a crash
        raise ReaderNotFoundError(f"the notebook reader {name!r} cannot be loaded: {exc}") from exc


def read_notebook(name: str, path: str | os.PathLike[str]) -> dict:
    """Read the file at path with the named reader; return the notebook as a plain checked dict."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NotebookNotFoundError(f"notebook not found: {path}")
    if os.path.isdir(path):
        raise NotebookReadError(f"{path}: is a folder, not a notebook file")
    reader = load_reader(name)
    try:
        nb = reader(path)
    except NotebookReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party reader is a read error
        raise NotebookReadError(f"{path}: the {name!r} reader failed: {type(exc).__name__}: {exc}") from exc
    try:
        plain = json.loads(json.dumps(nb))
    except (TypeError, ValueError) as exc:
        raise NotebookReadError(f"{path}: the {name!r} reader returned no notebook: {exc}") from exc
    notebooks.check_structure(plain, source=path)
    return plain
