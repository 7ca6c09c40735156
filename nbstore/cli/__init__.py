"""The `nbstore` command line (Typer commands, Rich output); `main` is the console script."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Run the `nbstore` command with the process's arguments."""
    from nbstore.cli.app import app

    app()
