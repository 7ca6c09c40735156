"""Notebook arguments as a person types them: files, folders (every notebook below) and quoted globs."""

from __future__ import annotations

import glob
import os
from pathlib import Path

__all__ = ["GLOB_CHARS", "expand_notebooks"]

#: Characters that make an argument naming no file a pattern (the shell left it unexpanded: quoted, or no match).
GLOB_CHARS = frozenset("*?[")

#: Folders never searched for notebooks: Jupyter's autosave copies.
_SKIPPED = frozenset({".ipynb_checkpoints"})


def _skip_folder(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED


def _below(folder: Path, store: Path) -> list[Path]:
    """Return every .ipynb under folder, sorted, skipping hidden folders, checkpoints, links and the store."""
    store_real = os.path.realpath(store)
    found = []
    for root, dirs, files in os.walk(folder):
        # Links are not followed: a link to a parent would loop, and status names a notebook by its target.
        dirs[:] = sorted(
            d
            for d in dirs
            if not _skip_folder(d)
            and not os.path.islink(os.path.join(root, d))
            and os.path.realpath(os.path.join(root, d)) != store_real
        )
        found.extend(Path(root, f) for f in sorted(files) if f.endswith(".ipynb") and not f.startswith("."))
    return found


def expand_notebooks(args: list[Path], *, store: Path, any_file: bool = False) -> list[tuple[Path, list[Path]]]:
    """Return (argument, notebooks it names) for each argument: a file itself, a folder's notebooks, a glob's.

    An argument that names nothing and is no pattern is kept as itself, so that staging it reports it missing;
    a folder or pattern with no notebook gives an empty list. A folder gives its .ipynb files; a pattern gives
    its .ipynb files too, or (any_file: text notebooks read by another reader) every file it matches.
    """
    out: list[tuple[Path, list[Path]]] = []
    for arg in args:
        text = os.fspath(arg)
        if os.path.isdir(arg):
            out.append((arg, _below(arg, store)))
        elif not os.path.lexists(arg) and GLOB_CHARS & set(text):
            store_real = os.path.realpath(store)
            matches = []
            for match in sorted(glob.glob(text, recursive=True)):
                path = Path(match)
                # glob's wildcards already pass over hidden names (.ipynb_checkpoints, .nbstore) as the shell's do.
                if not (any_file or match.endswith(".ipynb")) or not path.is_file():
                    continue
                if os.path.realpath(match).startswith(store_real + os.sep):
                    continue
                matches.append(path)
            out.append((arg, matches))
        else:
            out.append((arg, [arg]))
    return out
