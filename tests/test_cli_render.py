"""The CLI renderer: time, size and path formatting, JSON forms of records, and plain tables."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from nbstore.cli import render
from nbstore.records import NbCacheRecord, NbStageRecord


def test_iso_and_local_time_agree():
    """iso_time marks naive UTC with Z; local_time shows the same instant in the local zone, from either form."""
    when = datetime(2024, 3, 1, 12, 30, 5, 123456)
    assert render.iso_time(when) == "2024-03-01T12:30:05.123456Z"
    assert render.iso_time(None) is None
    expected = when.replace(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert render.local_time(when) == expected == render.local_time(render.iso_time(when))
    assert render.local_time(None) == "" == render.local_time("")


def test_format_seconds_and_bytes():
    """Seconds get two decimals (nothing for non-numbers); byte counts use binary units."""
    assert render.format_seconds(1.234) == "1.23 s" and render.format_seconds(3) == "3.00 s"
    assert render.format_seconds(None) == "" and render.format_seconds(True) == "" and render.format_seconds("1") == ""
    assert [render.format_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 MiB",
        "3072.0 GiB",
    ]


def test_display_path_is_relative_inside_the_current_folder(tmp_path, monkeypatch):
    """Paths under the current folder are shown relative to it; others are left as they are."""
    monkeypatch.chdir(tmp_path)
    assert render.display_path(tmp_path / "a" / "b.ipynb") == "a/b.ipynb"
    assert render.display_path("/elsewhere/c.ipynb") == "/elsewhere/c.ipynb"
    assert render.display_path("rel/d.ipynb") == "rel/d.ipynb"
    assert render.display_path("") == ""


def test_record_json_forms_are_complete_and_serialisable():
    """Cache and stage records become JSON with every field (times as ISO with Z)."""
    created = datetime(2024, 1, 2, 3, 4, 5)
    rec = NbCacheRecord(
        pk=3,
        hashkey="k" * 32,
        uri="/x/a.ipynb",
        created=created,
        accessed=created,
        data={"execution_seconds": 1.5},
        notebook="o" * 64,
        artifacts={"z.txt": "1" * 64, "a.txt": "2" * 64},
    )
    doc = render.cache_record_json(rec)
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc["artifacts"]) == ["a.txt", "z.txt"] and doc["created"] == "2024-01-02T03:04:05.000000Z"
    assert set(doc) == {
        "pk",
        "hashkey",
        "key_rule",
        "uri",
        "created",
        "accessed",
        "description",
        "data",
        "notebook",
        "artifacts",
        "inputs",
    }
    stage = render.stage_record_json(NbStageRecord(pk=1, uri="/x/a.ipynb", created=created, assets=("/x/d.csv",)))
    assert stage == {
        "pk": 1,
        "uri": "/x/a.ipynb",
        "created": "2024-01-02T03:04:05.000000Z",
        "assets": ["/x/d.csv"],
        "traceback": "",
        "depends": [],
        "env": [],
        "reader": "nbformat",
    }


def test_tables_render_plain_text(capsys, monkeypatch):
    """Tables piped to stdout hold every value, no ANSI codes and no trailing blanks."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    rows = [
        {"pk": 1, "uri": "a.ipynb", "status": "up to date", "cache_pk": 4, "last_run": None, "seconds": 0.5},
        {"pk": 2, "uri": "b.ipynb", "status": "failed", "cache_pk": None, "last_run": None, "seconds": None},
    ]
    render.show(render.status_table(rows))
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "Notebook", "Status", "Cache", "ID", "Last", "run", "Took"]
    assert lines[2].split() == ["1", "a.ipynb", "up", "to", "date", "4", "0.50", "s"]
    assert lines[3].split() == ["2", "b.ipynb", "failed"]
    assert all(line == line.rstrip() for line in lines)


def test_grid_aligns_by_display_width_and_keeps_styles():
    """Grid right-aligns numeric columns, aligns wide characters by cell width and keeps each cell's style."""
    from rich.text import Text

    grid = render.Grid("ID", "Name", "State", numeric=("ID",))
    grid.add_row("7", "ノート.ipynb", Text("failed", style="red"))
    grid.add_row("12", "a.ipynb", "")
    header, rule, first, second = grid.lines()
    assert header.plain == "ID   " + "Name".ljust(12) + "   State" and header.style == "bold"
    assert rule.plain == "─" * len(" 7   " + "x" * 12 + "   failed")
    assert first.plain == " 7   ノート.ipynb   failed"
    assert second.plain == "12   a.ipynb"
    assert any(span.style == "red" and first.plain[span.start : span.end] == "failed" for span in first.spans)
    assert grid.plain_lines() == [line.plain for line in grid.lines()]
