"""Pure checks of values that come from a store folder (untrusted input): names, object ids, JSON nesting."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "artifact_name_problem",
    "check_artifact_name",
    "check_depth",
    "is_object_id",
    "loads_bounded",
]

#: Deepest JSON nesting accepted in any store file (a notebook is about 6 deep; outputs add little).
MAX_JSON_DEPTH = 200

_OID = re.compile(r"[0-9a-f]{64}")
# C0 and C1 control characters and DEL: never part of a file name nbstore writes out.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_object_id(value: Any) -> bool:
    """True for a string that is an object id (64 lowercase hex digits)."""
    return isinstance(value, str) and _OID.fullmatch(value) is not None


def artifact_name_problem(name: Any) -> str | None:
    """Return why name is not a plain relative path of an artifact ('a/b.csv'), or None if it is one."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if not name:
        return "is empty"
    if "\\" in name:
        return "holds a backslash"
    if _CONTROL.search(name):
        return "holds a control character"
    if name.startswith("/"):
        return "is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' component"
    return None


def check_artifact_name(name: Any) -> str:
    """Return name if it is a plain relative artifact path, else raise ValueError saying why not."""
    problem = artifact_name_problem(name)
    if problem is not None:
        raise ValueError(f"artifact name {name!r} {problem} (artifact names are plain relative paths)")
    return name


def check_depth(obj: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ValueError if parsed JSON nests containers more than limit deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            raise ValueError(f"JSON nested more than {limit} levels deep")
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        for child in node:
            if isinstance(child, (dict, list)):
                push((child, depth + 1))


def loads_bounded(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that refuses nesting deeper than limit with a ValueError (never a RecursionError)."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested more than {limit} levels deep") from None
    # Nesting is at most the number of opening brackets: most records need no walk at all.
    opens = data.count(b"[" if isinstance(data, bytes) else "[") + data.count(b"{" if isinstance(data, bytes) else "{")
    if opens > limit:
        check_depth(obj, limit)
    return obj
