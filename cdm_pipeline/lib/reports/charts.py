"""Charts for the report pages: small matplotlib figures embedded in the page as PNG data URIs.

Embedding keeps a page one self-contained file that renders with no network and can be mailed
or archived; the figures plotted are aggregates the page also shows as numbers.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from dataclasses import dataclass
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

# Colour-blind-safe (Okabe-Ito), in the order series are drawn.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_WIDTH, _DPI = 7.0, 110


@dataclass(frozen=True)
class Chart:
    """One rendered chart: ``name`` identifies it on the page, ``alt`` describes it in words."""

    name: str
    alt: str
    data_uri: str


def _thousands(value: float, _pos=None) -> str:
    return f"{value:,.0f}"


def _render(fig, name: str, alt: str) -> Chart:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Chart(name, alt, f"data:image/png;base64,{encoded}")


def _axes(height: float):
    fig, ax = plt.subplots(figsize=(_WIDTH, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _whole_ticks(axis) -> None:
    # Counts of rows and customers: ticks at 0.2 steps would print as "0 0 0 1 1".
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(FuncFormatter(_thousands))


def bar_chart(
    name: str, alt: str, labels: Sequence[str], values: Sequence[float], *,
    horizontal: bool = False, value_label: str = "", colour: str = PALETTE[0],
) -> Chart:
    """One series of bars, each labelled with its value."""
    fig, ax = _axes(max(2.2, 0.42 * len(labels) + 0.8) if horizontal else 3.2)
    positions = range(len(labels))
    if horizontal:
        bars = ax.barh(positions, values, color=colour)
        ax.set_yticks(list(positions), labels)
        ax.invert_yaxis()
        _whole_ticks(ax.xaxis)
        ax.set_xlabel(value_label)
    else:
        bars = ax.bar(positions, values, color=colour)
        crowded = len(labels) > 6
        ax.set_xticks(list(positions), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        _whole_ticks(ax.yaxis)
        ax.set_ylabel(value_label)
    ax.bar_label(bars, labels=[_thousands(v) for v in values], padding=2, fontsize=8)
    ax.margins(x=0.12) if horizontal else ax.margins(y=0.12)
    return _render(fig, name, alt)


def grouped_bar_chart(
    name: str, alt: str, labels: Sequence[str], series: dict[str, Sequence[float]], *,
    value_label: str = "", stacked: bool = False, horizontal: bool = False,
) -> Chart:
    """Several series side by side (or stacked) per label, with a legend."""
    fig, ax = _axes(max(2.4, 0.5 * len(labels) + 1.0) if horizontal else 3.4)
    count = len(series)
    width = 0.8 if stacked else 0.8 / max(count, 1)
    base = [0.0] * len(labels)
    for i, (series_name, values) in enumerate(series.items()):
        offsets = [p if stacked else p - 0.4 + width * (i + 0.5) for p in range(len(labels))]
        draw = ax.barh if horizontal else ax.bar
        kwargs = {"left" if horizontal else "bottom": base} if stacked else {}
        draw(offsets, values, width, label=series_name, color=PALETTE[i % len(PALETTE)], **kwargs)
        if stacked:
            base = [b + v for b, v in zip(base, values, strict=True)]
    if horizontal:
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        _whole_ticks(ax.xaxis)
        ax.set_xlabel(value_label)
    else:
        rotate = len(labels) > 6
        ax.set_xticks(range(len(labels)), labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        _whole_ticks(ax.yaxis)
        ax.set_ylabel(value_label)
    ax.legend(frameon=False, fontsize=8, loc="best")
    return _render(fig, name, alt)


def line_chart(
    name: str, alt: str, x: Sequence, series: dict[str, Sequence[float | None]], *,
    value_label: str = "", percent: bool = False,
) -> Chart:
    """One line per series over ``x`` (dates or labels)."""
    fig, ax = _axes(3.2)
    for i, (series_name, values) in enumerate(series.items()):
        ax.plot(list(x), [float("nan") if v is None else v for v in values], marker="o", markersize=3,
                label=series_name, color=PALETTE[i % len(PALETTE)])
    if percent:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylabel(value_label)
    ax.set_ylim(bottom=0)
    points = list(x)
    if points and len(points) <= 16 and all(isinstance(p, dt.date) for p in points):
        # A few days or weeks: a tick on each, not matplotlib's hourly ticks between them.
        ax.set_xticks(points, [p.strftime("%d %b") for p in points])
    fig.autofmt_xdate()
    ax.legend(frameon=False, fontsize=8, loc="best")
    return _render(fig, name, alt)
