"""Seeded synthetic notebooks for the benchmark (standard library only, so any interpreter can run it)."""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib
from pathlib import Path

__all__ = ["make_exec_notebooks", "make_large", "make_small", "png_bytes", "write_set"]

_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "data",
    "frame",
    "plot",
    "model",
    "fit",
    "mean",
    "value",
    "table",
    "series",
    "sample",
    "index",
    "column",
    "result",
    "array",
    "matrix",
    "vector",
    "signal",
    "filter",
    "sum",
    "count",
    "group",
    "merge",
    "label",
    "figure",
    "axis",
    "scale",
]


def png_bytes(rng: random.Random, side: int = 128) -> bytes:
    """Return a real RGB PNG of noise (noise does not compress, like a busy plot)."""
    raw = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _code(rng: random.Random, tag: str, i: int) -> str:
    lines = [f"# {tag} cell {i}: {_sentence(rng, 4)}"]
    for j in range(rng.randint(2, 6)):
        lines.append(f"{rng.choice(_WORDS)}_{j} = {rng.randint(0, 10**6)} * {rng.random():.6f}")
    lines.append(f"print({rng.choice(_WORDS)!r}, {i})")
    return "\n".join(lines)


def _notebook(cells: list[dict]) -> dict:
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.7"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _build(rng: random.Random, tag: str, n_cells: int, *, images: int = 0, image_side: int = 128) -> dict:
    """Build an executed-looking notebook: execution counts 1, 2, 3... on every code cell."""
    cells: list[dict] = []
    count = 0
    image_cells = set(rng.sample(range(n_cells), images)) if images else set()
    for i in range(n_cells):
        cid = f"{tag}-{i}"[-64:]
        if i % 3 == 0 and i not in image_cells:
            cells.append({"cell_type": "markdown", "id": cid, "metadata": {}, "source": f"## {_sentence(rng, 8)}"})
            continue
        count += 1
        outputs: list[dict] = [{"name": "stdout", "output_type": "stream", "text": _sentence(rng, 10) + "\n"}]
        if i in image_cells:
            outputs.append(
                {
                    "data": {
                        "image/png": base64.b64encode(png_bytes(rng, image_side)).decode("ascii"),
                        "text/plain": "<Figure size 640x480 with 1 Axes>",
                    },
                    "metadata": {},
                    "output_type": "display_data",
                }
            )
        cells.append(
            {
                "cell_type": "code",
                "execution_count": count,
                "id": cid,
                "metadata": {},
                "outputs": outputs,
                "source": _code(rng, tag, i),
            }
        )
    return _notebook(cells)


def make_small(seed: int, index: int) -> dict:
    """Return small notebook number index: about 10 cells, text outputs only."""
    rng = random.Random(f"{seed}-small-{index}")
    return _build(rng, f"small{index}", 10)


def make_large(seed: int, index: int) -> dict:
    """Return large notebook number index: 200 cells and about 2 MB, mostly base64 PNG outputs."""
    rng = random.Random(f"{seed}-large-{index}")
    return _build(rng, f"large{index}", 200, images=30, image_side=128)


def make_exec_notebooks(kind: str, index: int) -> dict:
    """Return an unexecuted notebook to run: 'trivial' (three quick cells) or 'sleep' (one cell sleeps 1 s)."""
    sources = [f"x = {index}", "y = [i * x for i in range(100)]", "print(sum(y))"]
    if kind == "sleep":
        sources.insert(1, "import time\ntime.sleep(1)")
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": s}
        for i, s in enumerate(sources)
    ]
    return _notebook(cells)


def write_set(folder: Path, notebooks: list[tuple[str, dict]]) -> list[Path]:
    """Write (name, notebook) pairs into folder as .ipynb files (as Jupyter writes them) and return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, nb in notebooks:
        path = folder / f"{name}.ipynb"
        path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(path)
    return out
