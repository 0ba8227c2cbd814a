"""Rendering and writing the report pages: Jinja templates beside this module, one file per page.

Every value is escaped by the template engine; pages link each other with relative paths so the
``reports`` folder can be copied, zipped or served as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("cdm_pipeline.lib.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a figure the template names but the code forgot fails loudly
    trim_blocks=True,
    lstrip_blocks=True,
)


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _money(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _percent(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _signed(value) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "±0"
    return f"+{_number(value)}" if value > 0 else f"−{_number(-value)}"


def _heat(value, maximum) -> str:
    """A background colour from white to the palette's blue, by ``value / maximum``."""
    share = 0.0 if not maximum or value is None else max(0.0, min(1.0, value / maximum))
    red, green, blue = (round(255 + (c - 255) * share * 0.85) for c in (0x00, 0x72, 0xB2))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _heat_text(value, maximum) -> str:
    share = 0.0 if not maximum or value is None else value / maximum
    return "#ffffff" if share > 0.55 else "#1b1f24"


_ENV.filters.update(number=_number, money=_money, percent=_percent, signed=_signed, heat=_heat, heat_text=_heat_text)


def relative_href(here: Path, target: Path) -> str:
    """The link from a page in folder ``here`` to ``target``."""
    return Path(os.path.relpath(target, here)).as_posix()


def navigation(reports_dir: Path, here: Path) -> list[tuple[str, str]]:
    """The links every page shares, relative to the page's folder."""
    return [
        ("Latest run", relative_href(here, reports_dir / "runs" / "latest" / "index.html")),
        ("All runs", relative_href(here, reports_dir / "runs" / "index.html")),
        ("Customer insights", relative_href(here, reports_dir / "insights" / "index.html")),
        ("Data Docs", relative_href(here, reports_dir / "data_docs" / "index.html")),
    ]


def render(template: str, **context) -> str:
    return _ENV.get_template(template).render(**context)


def write_page(path: Path, html: str) -> Path:
    """Write ``html`` to ``path`` through a temporary file, so a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would keep the page from colleagues and web servers; open() honours
    # the umask like every other file the pipeline writes.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(html, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
