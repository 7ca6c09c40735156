"""Shared fixtures: notebook builders and the corpus folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def make_nb(sources, *, executed=True, markdown=True, kernel=KERNELSPEC, outputs=None, meta=None) -> dict:
    """Build a v4.5 notebook dict with one code cell per source (executed: counts 1, 2, ... and outputs)."""
    cells = []
    if markdown:
        cells.append({"cell_type": "markdown", "id": "md0", "metadata": {}, "source": "# title\n\ntext"})
    for i, src in enumerate(sources, start=1):
        out = (outputs or {}).get(i - 1)
        if out is None and executed:
            out = [{"name": "stdout", "output_type": "stream", "text": f"out {i}\n"}]
        cells.append(
            {
                "cell_type": "code",
                "execution_count": i if executed else None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": out or [],
                "source": src,
            }
        )
    metadata = dict(meta or {})
    if kernel is not None:
        metadata["kernelspec"] = kernel
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def write_nb(path: Path, nb: dict) -> Path:
    """Write a notebook dict as nbformat's usual JSON layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
    return path


def tree_listing(root: Path) -> dict:
    """Return {relative path: bytes or 'dir'} for every entry under root (to compare folders exactly)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture
def corpus() -> Path:
    """The shared corpus of real notebooks (skips outside the nbstore workplace)."""
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus is absent (outside the nbstore workplace)")
    return CORPUS


@pytest.fixture
def store(tmp_path):
    """A fresh store in tmp_path/.nbstore."""
    from nbstore import get_cache

    return get_cache(tmp_path / ".nbstore")
