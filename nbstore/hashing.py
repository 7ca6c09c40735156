"""Pure hashing: the *key* of a notebook (what execution depends on) and the *object id* of bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_KERNEL",
    "EXECUTION_OPTIONS",
    "EXECUTION_TAGS",
    "KEY_RULE",
    "KEY_RULE_DEPENDS",
    "KERNEL_ENV",
    "KeyInfo",
    "KeyInputs",
    "NotebookFacts",
    "code_sources",
    "compose_key",
    "declarations",
    "describe_change",
    "key_record",
    "execution_metadata",
    "kernel_name",
    "notebook_facts",
    "notebook_key",
    "object_id",
    "text_hash",
]

#: Version of the key rule for code alone; it is part of every key's hashed input and of every record.
KEY_RULE = 1

#: The rule for notebooks with execution metadata or declared dependencies (see the README).
KEY_RULE_DEPENDS = 2

#: Cell tags nbclient reads: a tagged cell is not run, or may raise.
EXECUTION_TAGS = ("raises-exception", "skip-execution")

#: Keys of metadata.execution the executors honour (per-notebook run options).
EXECUTION_OPTIONS = ("allow_errors", "timeout")

#: The pseudo environment variable that stands for the kernel environment's fingerprint.
KERNEL_ENV = "@kernel"

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


def _digest(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def text_hash(value: str | None) -> str | None:
    """Return the SHA-256 (hex) of a text value, or None for an unset one (unset is not empty)."""
    return None if value is None else hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def execution_metadata(nb: dict) -> dict:
    """Return the metadata execution reads: EXECUTION_TAGS per code cell, EXECUTION_OPTIONS; {} if none."""
    cells = []
    index = 0
    for cell in _cells(nb):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata")
        tags = meta.get("tags") if isinstance(meta, dict) else None
        if isinstance(tags, list):
            hit = sorted({t for t in tags if isinstance(t, str) and t in EXECUTION_TAGS})
            if hit:
                cells.append([index, hit])
        index += 1
    out: dict = {}
    if cells:
        out["cells"] = cells
    meta = nb.get("metadata")
    options = meta.get("execution") if isinstance(meta, dict) else None
    if isinstance(options, dict):
        chosen = {k: options[k] for k in EXECUTION_OPTIONS if k in options}
        if chosen:
            out["options"] = chosen
    return out


def declarations(nb: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the (depends globs, env names) a notebook declares in metadata.nbstore; ValueError if malformed."""
    meta = nb.get("metadata")
    decl = meta.get("nbstore") if isinstance(meta, dict) else None
    if decl is None:
        return (), ()
    if not isinstance(decl, dict):
        raise ValueError("metadata.nbstore must be an object")
    out = []
    for field in ("depends", "env"):
        values = decl.get(field, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"metadata.nbstore.{field} must be a list of non-empty strings, not {values!r}")
        out.append(tuple(values))
    return out[0], out[1]


@dataclass(frozen=True)
class NotebookFacts:
    """What a notebook's file contributes to its key: its rule-1 key, its rule-2 digest and declarations."""

    key1: str
    digest: str
    execution: bool
    depends: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    kernel: str = DEFAULT_KERNEL


@dataclass(frozen=True)
class KeyInputs:
    """What lies outside the notebook and enters its key: (path, content SHA-256) and (name, value hash)."""

    files: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()


def notebook_facts(nb: dict) -> NotebookFacts:
    """Return a notebook's NotebookFacts (ValueError if its declarations are malformed)."""
    kernel, code = kernel_name(nb), code_sources(nb)
    execution = execution_metadata(nb)
    depends, env = declarations(nb)
    return NotebookFacts(
        key1=_digest({"rule": KEY_RULE, "kernel": kernel, "code": code})[:32],
        digest=_digest({"kernel": kernel, "code": code, "execution": execution}),
        execution=bool(execution),
        depends=depends,
        env=env,
        kernel=kernel,
    )


def compose_key(facts: NotebookFacts, inputs: KeyInputs = KeyInputs()) -> tuple[str, int]:
    """Return (key, rule): rule 1 without execution metadata and inputs, else rule 2 over digest and inputs."""
    if not facts.execution and not inputs.files and not inputs.env:
        return facts.key1, KEY_RULE
    files = sorted({path: sha for path, sha in inputs.files}.items())
    env = sorted({name: value for name, value in inputs.env}.items())
    payload = {
        "rule": KEY_RULE_DEPENDS,
        "notebook": facts.digest,
        "files": [list(f) for f in files],
        "env": [list(e) for e in env],
    }
    return _digest(payload)[:32], KEY_RULE_DEPENDS


def notebook_key(nb: dict, inputs: KeyInputs | None = None) -> str:
    """Return the key of a notebook: its code, kernel and execution metadata (and inputs, resolved by a store)."""
    kernel, code = kernel_name(nb), code_sources(nb)
    execution = execution_metadata(nb)
    if not execution and (inputs is None or not (inputs.files or inputs.env)):
        return _digest({"rule": KEY_RULE, "kernel": kernel, "code": code})[:32]
    facts = NotebookFacts(
        key1="", digest=_digest({"kernel": kernel, "code": code, "execution": execution}), execution=bool(execution)
    )
    return compose_key(facts, inputs or KeyInputs())[0]


def key_record(facts: NotebookFacts, inputs: KeyInputs) -> dict:
    """Return what entered a rule-2 key, as records keep it: digests and hashes, never values."""
    return {
        "code": facts.key1,
        "notebook": facts.digest,
        "files": dict(inputs.files),
        "env": dict(inputs.env),
    }


def describe_change(before: dict | None, after: dict, *, execution: bool = False) -> str:
    """Say why a key changed, from two key_record dicts (a rule-1 record is {"code": its key}); '' if unknown.

    execution tells whether the notebook now has execution metadata (a rule-1 record had none).
    """
    if not before:
        return ""
    reasons = []
    if before.get("code") != after.get("code"):
        reasons.append("code changed")
    elif before.get("notebook") is not None:
        if before["notebook"] != after.get("notebook"):
            reasons.append("execution metadata changed")
    elif execution:
        reasons.append("execution metadata changed")
    old_files, new_files = before.get("files") or {}, after.get("files") or {}
    for path in sorted(set(old_files) | set(new_files)):
        if path not in old_files:
            reasons.append(f"{path} added")
        elif path not in new_files:
            reasons.append(f"{path} removed")
        elif old_files[path] != new_files[path]:
            reasons.append(f"{path} changed")
    old_env, new_env = before.get("env") or {}, after.get("env") or {}
    for name in sorted(set(old_env) | set(new_env)):
        if old_env.get(name, 0) != new_env.get(name, 0):
            reasons.append("environment changed" if name == KERNEL_ENV else f"{name} changed")
    return ", ".join(reasons)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A notebook's key as it is now and what entered it (key_record form), or why it cannot be computed."""

    key: str | None
    rule: int = KEY_RULE
    inputs: dict | None = None
    execution: bool = False
    error: str = ""
    #: What failed when key is None: "notebook" (missing or unreadable) or "dependency" (a declaration).
    broken: str = ""
