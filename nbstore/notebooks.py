"""Pure notebook handling: parse bytes, check structure, strip for storage, check validity, merge outputs."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from nbstore.errors import NbValidityError, NotebookReadError

__all__ = [
    "MAX_NBFORMAT",
    "check_structure",
    "check_validity",
    "dump_notebook",
    "jupyter_text",
    "merge_outputs",
    "parse_notebook",
    "strip_notebook",
    "to_node",
    "rejoin_lines",
    "to_v4",
]

#: The newest major nbformat version nbstore reads.
MAX_NBFORMAT = 4


def parse_notebook(data: bytes, *, source: str = "<bytes>") -> dict:
    """Decode notebook bytes into a checked dict, raising NotebookReadError that names the problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookReadError(
            f"{source}: not a notebook: bytes are not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookReadError(
            f"{source}: not a notebook: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    check_structure(nb, source=source)
    return nb


def check_structure(nb: Any, *, source: str = "<notebook>") -> None:
    """Raise NotebookReadError unless nb has the shape of an nbformat 3 or 4 notebook."""
    if not isinstance(nb, dict):
        raise NotebookReadError(f"{source}: not a notebook: JSON top level is {type(nb).__name__}, not an object")
    major = nb.get("nbformat")
    if not isinstance(major, int) or isinstance(major, bool):
        raise NotebookReadError(f"{source}: not a notebook: no integer 'nbformat' field")
    if major > MAX_NBFORMAT:
        raise NotebookReadError(
            f"{source}: nbformat {major} is newer than this version of nbstore reads (up to {MAX_NBFORMAT})"
        )
    if major < 3:
        raise NotebookReadError(f"{source}: nbformat {major} is too old (nbstore reads 3 and 4)")
    if major == 3:
        sheets = nb.get("worksheets")
        if not isinstance(sheets, list) or not all(isinstance(s, dict) for s in sheets):
            raise NotebookReadError(f"{source}: not a notebook: nbformat 3 without a 'worksheets' list")
        cells = [c for s in sheets for c in (s.get("cells") or [])]
    else:
        cells = nb.get("cells")
        if not isinstance(cells, list):
            raise NotebookReadError(f"{source}: not a notebook: no 'cells' list")
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise NotebookReadError(f"{source}: not a notebook: cell {i} has no 'cell_type'")
        field = "input" if major == 3 and cell["cell_type"] == "code" else "source"
        text = cell.get(field, "")
        # Hashed as text: an int or null source would hash like some string and match the wrong record.
        if not isinstance(text, str) and not (isinstance(text, list) and all(isinstance(t, str) for t in text)):
            raise NotebookReadError(
                f"{source}: not a notebook: cell {i} has a {field!r} that is a {type(text).__name__}, "
                "not text or a list of lines"
            )
    meta = nb.get("metadata", {})
    if not isinstance(meta, dict):
        raise NotebookReadError(f"{source}: not a notebook: 'metadata' is not an object")


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _rejoin_bundle(data: Any) -> None:
    if not isinstance(data, dict):
        return
    for mime, value in list(data.items()):
        if not _is_json_mime(mime) and isinstance(value, list) and all(isinstance(v, str) for v in value):
            data[mime] = "".join(value)


def rejoin_lines(nb: dict) -> dict:
    """Join multi-line strings stored as lists (sources, stream text, mime data) in place, as nbformat.read does."""
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(str(s) for s in cell["source"])
        for attachment in (cell.get("attachments") or {}).values():
            _rejoin_bundle(attachment)
        if cell.get("cell_type") == "code":
            for output in cell.get("outputs") or []:
                if not isinstance(output, dict):
                    continue
                if output.get("output_type") in ("execute_result", "display_data"):
                    _rejoin_bundle(output.get("data"))
                elif isinstance(output.get("text"), list):
                    output["text"] = "".join(str(t) for t in output["text"])
    return nb


def to_v4(nb: dict) -> dict:
    """Return the in-memory v4 form of a checked notebook dict (v3 is converted with nbformat)."""
    if nb.get("nbformat") == 3:
        import warnings

        import nbformat  # only v3 input pays for the import

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = nbformat.reads(json.dumps(nb), as_version=4)
        except Exception as exc:  # nbformat raises assorted errors on malformed v3
            raise NotebookReadError(f"cannot convert this nbformat 3 notebook to nbformat 4: {exc}") from exc
        nb = json.loads(json.dumps(converted))
        # nbformat gives the upgraded cells random ids; ids by position keep one v3 file one object, and a
        # diff against its cached copy free of id noise.
        for index, cell in enumerate(nb.get("cells", [])):
            if isinstance(cell, dict) and "id" in cell:
                cell["id"] = f"cell-{index}"
    return rejoin_lines(nb)


def to_node(nb: dict) -> Any:
    """Return nb as an nbformat NotebookNode (attribute access, as nbformat.read gives)."""
    from nbformat import from_dict

    return from_dict(nb)


#: Mime types nbformat writes as lists of lines besides text/*.
_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})


def _split_bundle(data: Any) -> None:
    if isinstance(data, dict):
        for mime, value in list(data.items()):
            if isinstance(value, str) and (mime.startswith("text/") or mime in _SPLIT_MIMES):
                data[mime] = value.splitlines(True)


def jupyter_text(nb: dict) -> str:
    """Return a v4 notebook dict as the text nbformat.writes gives (lines split, sorted keys, indent 1).

    Plain json: `nbformat` costs seconds to import where jsonschema loads format checkers, and a merge needs
    only this layout. nb is not changed.
    """
    nb = copy.deepcopy(nb)
    meta = nb.get("metadata")
    if isinstance(meta, dict):
        for transient in ("orig_nbformat", "orig_nbformat_minor", "signature"):
            meta.pop(transient, None)
    for cell in nb.get("cells", []):
        if isinstance(cell.get("metadata"), dict):
            cell["metadata"].pop("trusted", None)
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(True)
        for attachment in (cell.get("attachments") or {}).values():
            _split_bundle(attachment)
        if cell.get("cell_type") == "code":
            for output in cell.get("outputs") or []:
                if output.get("output_type") in ("execute_result", "display_data"):
                    _split_bundle(output.get("data"))
                elif output.get("output_type") == "stream" and isinstance(output.get("text"), str):
                    output["text"] = output["text"].splitlines(True)
    return json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)


def _source_text(source: Any) -> str:
    if isinstance(source, list):
        return "".join(source)
    return source if isinstance(source, str) else ""


def strip_notebook(nb: dict) -> dict:
    """Return the stored form of a v4 notebook: its code cells only, with the notebook metadata."""
    cells = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        cell = dict(cell)
        cell["source"] = _source_text(cell.get("source"))
        cell.setdefault("metadata", {})
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": nb.get("metadata") or {},
        "nbformat": nb.get("nbformat", 4),
        "nbformat_minor": nb.get("nbformat_minor", 0),
    }


def dump_notebook(nb: dict) -> bytes:
    """Serialise a notebook deterministically: sorted keys, compact, one line, trailing newline."""
    # Compact JSON is written by json's C encoder; any indent falls back to its Python encoder, 5x slower.
    text = json.dumps(nb, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text + "\n").encode("utf-8", "surrogatepass")


def check_validity(nb: dict, *, uri: str | None = None) -> None:
    """Raise NbValidityError unless code cells that run have execution counts 1, 2, 3... in order."""
    expected = 1
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code" or not _source_text(cell.get("source")).strip():
            continue
        if "skip-execution" in (cell.get("metadata") or {}).get("tags", []):
            continue
        count = cell.get("execution_count")
        if count != expected:
            raise NbValidityError(
                f"Expected cell {index} to have execution_count {expected} not {count}: "
                "the notebook does not look executed in order",
                uri,
            )
        expected += 1


def _same(value: Any) -> Any:
    return value


def merge_outputs(
    nb: dict,
    cached: dict,
    *,
    nb_meta: Iterable[str] | None = ("kernelspec", "language_info", "widgets"),
    cell_meta: Iterable[str] | None = None,
    owned: bool = False,
) -> dict:
    """Return a copy of nb with outputs and execution counts of its code cells taken from cached.

    owned=True: the caller owns both (fresh copies), so nb is changed in place and cached's parts are reused.
    """
    clone = _same if owned else copy.deepcopy
    merged = clone(nb)
    cached_cells = [c for c in cached.get("cells", []) if c.get("cell_type") == "code"]
    code_cells = [c for c in merged.get("cells", []) if c.get("cell_type") == "code"]
    if len(cached_cells) != len(code_cells):
        raise ValueError(f"cannot merge: {len(code_cells)} code cells against {len(cached_cells)} cached")
    if nb_meta is not None:
        meta = merged.setdefault("metadata", {})
        for name in nb_meta:
            if name in cached.get("metadata", {}):
                meta[name] = clone(cached["metadata"][name])
    for cell, source in zip(code_cells, cached_cells, strict=False):
        cell["outputs"] = clone(source.get("outputs", []))
        cell["execution_count"] = source.get("execution_count")
        if cell_meta is not None:
            cmeta = cell.setdefault("metadata", {})
            for name in cell_meta:
                if name in source.get("metadata", {}):
                    cmeta[name] = clone(source["metadata"][name])
    return merged
