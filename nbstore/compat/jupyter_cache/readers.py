"""jupyter-cache 1.0's `readers`: read_data names a reader registered as an entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nbstore.errors import NotebookReadError as NbReadError
from nbstore.readers import list_readers as _list_readers
from nbstore.readers import load_reader, reader_name

#: read_data of a notebook that names no reader.
DEFAULT_READ_DATA = (("name", "nbformat"), ("type", "plugin"))

__all__ = ["DEFAULT_READ_DATA", "NbReadError", "get_reader", "list_readers"]


def list_readers() -> set[str]:
    """Return the names of the installed readers."""
    return set(_list_readers())


def get_reader(data: Mapping[str, Any]) -> Callable[[str], Any]:
    """Return the reader read_data names (ValueError if none is registered under it)."""
    return load_reader(reader_name(data))
