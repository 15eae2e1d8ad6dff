"""Server-rendered SVG bar charts: pure functions from (label, value) pairs to accessible SVG text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 420
BAR_AREA_HEIGHT = 110
ROW_HEIGHT = 22
LABEL_WIDTH = 110


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its value, and the value as the tooltip shows it."""

    label: str
    value: float
    shown: str


def column_chart(title: str, bars: Sequence[Bar], axis_labels: tuple[str, str] = ("", "")) -> str:
    """Vertical bars side by side (one per day), the largest value marked, first and last label under the axis."""
    top = max((bar.value for bar in bars), default=0) or 1
    slot = WIDTH / max(len(bars), 1)
    height = BAR_AREA_HEIGHT + 40
    parts = [_open(title, WIDTH, height)]
    for index, bar in enumerate(bars):
        bar_height = round(BAR_AREA_HEIGHT * bar.value / top, 1)
        x = round(index * slot + 1, 1)
        parts.append(f'<rect class="bar" x="{x}" y="{20 + BAR_AREA_HEIGHT - bar_height}" '
                     f'width="{round(max(slot - 2, 1), 1)}" height="{bar_height}">'
                     f"<title>{escape(bar.label)}: {escape(bar.shown)}</title></rect>")
    peak = max(bars, key=lambda bar: bar.value, default=None)
    parts.append(f'<text class="peak" x="0" y="12">max {escape(peak.shown) if peak else "0"}</text>')
    base = 20 + BAR_AREA_HEIGHT
    parts.append(f'<line class="axis" x1="0" y1="{base}" x2="{WIDTH}" y2="{base}"/>')
    first, last = axis_labels
    parts.append(f'<text x="0" y="{base + 16}">{escape(first)}</text>')
    parts.append(f'<text x="{WIDTH}" y="{base + 16}" text-anchor="end">{escape(last)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_list(title: str, bars: Sequence[Bar]) -> str:
    """Horizontal bars, one row per label (one per model), the value written after each bar."""
    top = max((bar.value for bar in bars), default=0) or 1
    room = WIDTH - LABEL_WIDTH - 110
    height = max(len(bars), 1) * ROW_HEIGHT + 4
    parts = [_open(title, WIDTH, height)]
    for index, bar in enumerate(bars):
        y = index * ROW_HEIGHT + 2
        length = round(room * bar.value / top, 1)
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end">{escape(_clip(bar.label))}</text>')
        parts.append(f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 3}" width="{length}" height="{ROW_HEIGHT - 6}">'
                     f"<title>{escape(bar.label)}: {escape(bar.shown)}</title></rect>")
        parts.append(f'<text x="{LABEL_WIDTH + length + 6}" y="{y + 15}">{escape(bar.shown)}</text>')
    if not bars:
        parts.append(f'<text x="0" y="16">{escape("No requests in this period.")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_of(items: Sequence, label: Callable, value: Callable, shown: Callable) -> list[Bar]:
    """Bars from any rows, given how to read each one's label, value and shown value."""
    return [Bar(str(label(item)), float(value(item)), str(shown(item))) for item in items]


def _open(title: str, width: int, height: int) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(title)}" '
            f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet">'
            f"<title>{escape(title)}</title>")


def _clip(label: str, length: int = 16) -> str:
    return label if len(label) <= length else label[: length - 1] + "…"
