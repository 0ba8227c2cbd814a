"""Reading the report pages back in tests: an element tree, tables by id, embedded charts."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None]):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    @property
    def text(self) -> str:
        return " ".join("".join(p if isinstance(p, str) else f" {p.text} " for p in self.parts).split())

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k) == v for k, v in wanted.items())]

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class _TreeBuilder(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        self.stack[-1].parts.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].parts.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def page_tables(path: Path) -> dict[str, list[list[str]]]:
    """Every table with an id (or data-chart name): its rows of cell texts, header row first."""
    return tables_in(path.read_text(encoding="utf-8"))


def tables_in(html: str) -> dict[str, list[list[str]]]:
    """``page_tables`` of a page's text."""
    tables = {}
    for table in parse(html).find_all("table"):
        name = table.attrs.get("id") or table.attrs.get("data-chart")
        if name:
            tables[name] = [[cell.text for cell in row.children if cell.tag in ("td", "th")]
                            for row in table.find_all("tr")]
    return tables


def table_rows(path: Path, table_id: str) -> dict[str, list[str]]:
    """A table's body rows keyed by their first cell."""
    rows = page_tables(path)[table_id]
    return {row[0]: row[1:] for row in rows[1:]}


def chart_images(path: Path) -> dict[str, bytes]:
    """The PNG bytes of every ``<img data-chart>`` on the page, by chart name."""
    html = path.read_text(encoding="utf-8")
    found = re.findall(r'<img class="chart" data-chart="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {name: base64.b64decode(data) for name, data in found}
