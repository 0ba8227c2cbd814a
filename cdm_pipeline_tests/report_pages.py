"""Reading the report pages back in tests: tables by id, as lists of cell texts."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._stack: list[str | None] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self._stack.append(attributes.get("id") or attributes.get("data-chart"))
            if self._stack[-1]:
                self.tables[self._stack[-1]] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table" and self._stack:
            self._stack.pop()
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._stack and self._stack[-1]:
                self.tables[self._stack[-1]].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def page_tables(path: Path) -> dict[str, list[list[str]]]:
    """Every table with an id (or data-chart name): its rows, header row first."""
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


def table_rows(path: Path, table_id: str) -> dict[str, list[str]]:
    """A table's body rows keyed by their first cell."""
    rows = page_tables(path)[table_id]
    return {row[0]: row[1:] for row in rows[1:]}


def chart_images(path: Path) -> dict[str, bytes]:
    """The PNG bytes of every ``<img data-chart>`` on the page, by chart name."""
    html = path.read_text(encoding="utf-8")
    found = re.findall(r'<img class="chart" data-chart="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {name: base64.b64decode(data) for name, data in found}
