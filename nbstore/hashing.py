"""Pure hashing: the *key* of a notebook (what execution depends on) and the *object id* of bytes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = [
    "DEFAULT_KERNEL",
    "KEY_RULE",
    "code_sources",
    "kernel_name",
    "notebook_key",
    "object_id",
]

#: Version of the key rule; it is part of every key's hashed input and of every record.
KEY_RULE = 1

#: Kernel assumed for a notebook whose metadata names none (what Jupyter itself starts).
DEFAULT_KERNEL = "python3"


def object_id(data: bytes) -> str:
    """Return the object id of stored bytes: their SHA-256, in hex."""
    return hashlib.sha256(data).hexdigest()


def _source_text(source: Any) -> str:
    if isinstance(source, list):
        return "".join(str(part) for part in source)
    if source is None:
        return ""
    return str(source)


def _cells(nb: dict) -> list:
    if nb.get("nbformat") == 3:
        # nbformat 3 keeps cells in worksheets and code in "input"; hash the v4 form.
        cells: list = []
        for sheet in nb.get("worksheets") or []:
            cells.extend(sheet.get("cells") or [])
        return cells
    return nb.get("cells") or []


def code_sources(nb: dict) -> list[str]:
    """Return the source text of every code cell, in order (v3 and v4 notebooks alike)."""
    v3 = nb.get("nbformat") == 3
    out = []
    for cell in _cells(nb):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        out.append(_source_text(cell.get("input") if v3 else cell.get("source")))
    return out


def kernel_name(nb: dict) -> str:
    """Return the kernel a notebook asks for: kernelspec.name, else DEFAULT_KERNEL."""
    meta = nb.get("metadata")
    spec = meta.get("kernelspec") if isinstance(meta, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else DEFAULT_KERNEL


def notebook_key(nb: dict) -> str:
    """Return the key of a notebook: a hash of its code-cell sources, their order and its kernel."""
    payload = {"rule": KEY_RULE, "kernel": kernel_name(nb), "code": code_sources(nb)}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
