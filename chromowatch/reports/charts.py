"""SVG charts for the reports, written by hand.

Plain SVG strings: crisp in the PDF at any zoom, no plotting library to install or to
import in the renderer, and every text is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from chromowatch.records import CLASS_COLOURS, CLASS_NAMES, UNLABELLED_COLOUR

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


@dataclass(frozen=True)
class Series:
    """One set of bars: a value and a 95% interval per category (None: not available)."""

    name: str
    colour: str
    values: Sequence[float | None]
    intervals: Sequence[tuple[float, float] | None]
    pattern: bool = False  # hatched, to tell a corrected series from the raw one


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


@dataclass(frozen=True)
class _Frame:
    """Where the bar chart's plot area lies and how values map onto it."""

    width: int
    height: int
    y_max: float
    left: int = 44
    right: int = 10
    top: int = 14
    bottom: int = 46

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    def y(self, v: float) -> float:
        plot_h = self.height - self.top - self.bottom
        return self.top + plot_h * (1 - min(v, self.y_max) / self.y_max)


HATCH = (
    '<defs><pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="5" height="5" fill="white"/>'
    '<line x1="0" y1="0" x2="0" y2="5" stroke="black" stroke-width="2.2" '
    'stroke-opacity="0.35"/></pattern></defs>'
)


def _grid(f: _Frame) -> list[str]:
    """Six horizontal lines with their percentages, 0 to y_max."""
    body = []
    for i in range(6):
        v = f.y_max * i / 5
        yy = f.y(v)
        body.append(f'<line x1="{f.left}" y1="{yy:.1f}" x2="{f.width - f.right}" y2="{yy:.1f}" '
                    'stroke="#ddd" stroke-width="0.8"/>')
        body.append(f'<text x="{f.left - 5}" y="{yy + 3.5:.1f}" font-size="10" '
                    f'text-anchor="end" {FONT}>{v:.0%}</text>')
    return body


def _bar(f: _Frame, x: float, bar_w: float, category: str, s: Series,
         value: float, interval: tuple[float, float] | None) -> list[str]:
    """One bar (hatched when the series asks) with its interval whisker."""
    colour = CLASS_COLOURS.get(category, s.colour) if s.colour == "class" else s.colour
    body = [f'<rect x="{x + 1:.1f}" y="{f.y(value):.1f}" width="{bar_w - 2:.1f}" '
            f'height="{f.y(0) - f.y(value):.1f}" fill="{colour}"/>']
    if s.pattern:
        body.append(f'<rect x="{x + 1:.1f}" y="{f.y(value):.1f}" width="{bar_w - 2:.1f}" '
                    f'height="{f.y(0) - f.y(value):.1f}" fill="url(#hatch)" '
                    'fill-opacity="0.9"/>')
    if interval is not None:
        cx = x + bar_w / 2
        lo, hi = f.y(interval[0]), f.y(interval[1])
        body.append(
            f'<path d="M{cx:.1f},{lo:.1f}V{hi:.1f}M{cx - 4:.1f},{lo:.1f}H{cx + 4:.1f}'
            f'M{cx - 4:.1f},{hi:.1f}H{cx + 4:.1f}" stroke="black" stroke-width="1.2" '
            'fill="none"/>'
        )
    return body


def _category(f: _Frame, ci: int, category: str, group_w: float, bar_w: float,
              series: Sequence[Series]) -> list[str]:
    """Every series' bar of one category ("n/a" where a value is missing), and its name."""
    body: list[str] = []
    x0 = f.left + group_w * ci + (group_w - bar_w * len(series)) / 2
    for si, s in enumerate(series):
        value = s.values[ci]
        x = x0 + bar_w * si
        if value is None:
            body.append(f'<text x="{x + bar_w / 2:.1f}" y="{f.y(0) - 4:.1f}" font-size="9" '
                        f'text-anchor="middle" fill="{UNLABELLED_COLOUR}" {FONT}>n/a</text>')
            continue
        body += _bar(f, x, bar_w, category, s, value, s.intervals[ci])
    body.append(f'<text x="{f.left + group_w * (ci + 0.5):.1f}" y="{f.height - f.bottom + 15}" '
                f'font-size="12" font-weight="bold" text-anchor="middle" {FONT}>'
                f"{escape(category)}</text>")
    return body


def _legend(f: _Frame, series: Sequence[Series]) -> list[str]:
    """One swatch and name per series along the bottom."""
    body: list[str] = []
    lx = f.left
    height = f.height
    for s in series:
        if s.colour == "class":  # one small swatch per class colour
            for k, c in enumerate(CLASS_NAMES):
                body.append(f'<rect x="{lx + 4 * k}" y="{height - 18}" width="4" height="10" '
                            f'fill="{CLASS_COLOURS[c]}"/>')
        else:
            body.append(f'<rect x="{lx}" y="{height - 18}" width="12" height="10" '
                        f'fill="{s.colour}"/>')
        if s.pattern:
            body.append(f'<rect x="{lx}" y="{height - 18}" width="12" height="10" '
                        'fill="url(#hatch)"/>')
        body.append(f'<text x="{lx + 16}" y="{height - 9}" font-size="10" {FONT}>'
                    f"{escape(s.name)}</text>")
        lx += 22 + 6 * len(s.name)
    return body


def grouped_bars(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 640,
    height: int = 260,
) -> str:
    """Bars per category and series with 95% interval whiskers; y from 0 to 100%."""
    top_value = max(
        [1e-9]
        + [v for s in series for v in s.values if v is not None]
        + [iv[1] for s in series for iv in s.intervals if iv is not None]
    )
    f = _Frame(width, height, min(1.0, max(0.1, _nice_ceiling(top_value))))
    body = [HATCH, *_grid(f)]
    group_w = f.plot_w / max(1, len(categories))
    bar_w = min(34.0, group_w * 0.8 / max(1, len(series)))
    for ci, category in enumerate(categories):
        body += _category(f, ci, category, group_w, bar_w, series)
    body.append(f'<line x1="{f.left}" y1="{f.y(0):.1f}" x2="{width - f.right}" '
                f'y2="{f.y(0):.1f}" stroke="black" stroke-width="1"/>')
    body += _legend(f, series)
    return _svg(width, height, body, title)


def strip_plot(
    rows: Sequence[tuple[str, Sequence[float], str]],
    *,
    title: str,
    axis_label: str,
    width: int = 640,
) -> str:
    """One row per (label, values, colour): each value a dot (one metaphase), with the
    median and the quartile box, on a 0-100% axis."""
    left, right, top, row_h = 120, 16, 10, 34
    height = top + row_h * max(1, len(rows)) + 36
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * max(0.0, min(1.0, v))

    body: list[str] = []
    for i in range(11):
        v = i / 10
        body.append(f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" '
                    f'y2="{height - 30}" stroke="#e4e4e4" stroke-width="0.8"/>')
        body.append(f'<text x="{x(v):.1f}" y="{height - 18}" font-size="9.5" '
                    f'text-anchor="middle" {FONT}>{v:.0%}</text>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="10" '
                f'text-anchor="middle" {FONT}>{escape(axis_label)}</text>')
    for r, (label, values, colour) in enumerate(rows):
        cy = top + row_h * r + row_h / 2
        body.append(f'<text x="{left - 8}" y="{cy + 3.5:.1f}" font-size="10.5" '
                    f'text-anchor="end" {FONT}>{escape(label)}</text>')
        ordered = sorted(values)
        if not ordered:
            body.append(f'<text x="{left + 4}" y="{cy + 3.5:.1f}" font-size="10" '
                        f'fill="{UNLABELLED_COLOUR}" {FONT}>no metaphases</text>')
            continue
        q1, med, q3 = (_quantile(ordered, q) for q in (0.25, 0.5, 0.75))
        body.append(f'<rect x="{x(q1):.1f}" y="{cy - 9:.1f}" width="{max(1.0, x(q3) - x(q1)):.1f}"'
                    f' height="18" fill="{colour}" fill-opacity="0.18" stroke="{colour}"/>')
        body.append(f'<line x1="{x(med):.1f}" y1="{cy - 11:.1f}" x2="{x(med):.1f}" '
                    f'y2="{cy + 11:.1f}" stroke="black" stroke-width="2"/>')
        for j, v in enumerate(values):
            jitter = ((j * 7919) % 13 - 6) * 1.1  # deterministic spread, no randomness
            body.append(f'<circle cx="{x(v):.1f}" cy="{cy + jitter:.1f}" r="2.6" '
                        f'fill="{colour}" fill-opacity="0.75"/>')
    return _svg(width, height, body, title)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _nice_ceiling(v: float) -> float:
    for step in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.8, 1.0):
        if v <= step:
            return step
    return 1.0
