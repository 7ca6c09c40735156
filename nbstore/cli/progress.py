"""The progress display of `nbstore execute`: a Rich bar on stderr and one line per finished notebook."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from nbstore.cli.render import STATUS_STYLES, display_path, format_seconds, safe_text

__all__ = ["ExecutionProgress"]


class ExecutionProgress:
    """Receive an executor's events and draw them: a live bar on a terminal, plain lines in a log."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: Any = None
        self._running: dict[int, str] = {}
        # Parallel executors may report from worker threads.
        self._lock = threading.Lock()

    def __enter__(self) -> ExecutionProgress:
        # In a log (not a terminal) a bar cannot be redrawn: only the per-notebook lines are written.
        if self.console.is_terminal:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.console.is_terminal:
            self._progress.stop()

    def _describe(self) -> str:
        if not self._running:
            return "executing"
        names = sorted(self._running.values())
        more = f" (+{len(names) - 1})" if len(names) > 1 else ""
        # A progress description is Rich markup: escape it, as well as any control character.
        return f"running {escape(names[0])}{more}"

    def on_event(self, event: Any) -> None:
        """Update the display for one ExecutionEvent ('start' or 'end' of one notebook)."""
        with self._lock:
            if self._task is None:
                self._task = self._progress.add_task("executing", total=event.total)
            name = safe_text(display_path(event.uri))
            if event.kind == "start":
                self._running[event.pk] = name
            elif event.kind == "end":
                self._running.pop(event.pk, None)
                status = event.status or "done"
                line = Text.assemble(
                    (f"{status:<10}", STATUS_STYLES.get(status, "")),
                    f" {name}",
                    (f"  {format_seconds(event.seconds)}", "dim"),
                    (f"  {safe_text(event.reason)}" if event.reason else "", "dim"),
                )
                self.console.print(line, soft_wrap=True)
                self._progress.advance(self._task)
            self._progress.update(self._task, description=self._describe(), total=event.total)
