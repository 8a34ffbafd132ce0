"""Small SVG charts for the offline report: line/step, scatter, levels, bars, box plots.

Hand-written on purpose: the report's four plots need a few primitives, and drawing them as
SVG text takes milliseconds where a plotting library costs seconds of import and layout per
run (the offline tool's budget is 3 s end to end). The output is plain SVG 1.1, embedded in the
report as `data:image/svg+xml;base64` images, so it scales crisply and needs nothing to view.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from html import escape

import numpy as np
import numpy.typing as npt

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f")
FONT = 'font-family="system-ui, Helvetica, Arial, sans-serif"'


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.01
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:g}m"
    if magnitude >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:.6g}"


class Axes:
    """One plot with linear x and y axes. Add marks, then `svg()`; the ranges fit the data
    unless set with `x_range` / `y_range`."""

    def __init__(
        self,
        width: int = 520,
        height: int = 300,
        *,
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        left: int = 62,
        right: int = 14,
        top: int = 30,
        bottom: int = 44,
    ) -> None:
        self.width, self.height = width, height
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self._marks: list[tuple[str, tuple[object, ...]]] = []
        self._xs: list[float] = []
        self._ys: list[float] = []
        self._xlim: tuple[float, float] | None = None
        self._ylim: tuple[float, float] | None = None
        self._legend: list[tuple[str, str, str]] = []  # (label, colour, kind)

    # --- data -----------------------------------------------------------------------------
    def x_range(self, lo: float, hi: float) -> None:
        self._xlim = (lo, hi)

    def y_range(self, lo: float, hi: float) -> None:
        self._ylim = (lo, hi)

    def _extend(self, xs: npt.ArrayLike | None, ys: npt.ArrayLike | None) -> None:
        for target, values in ((self._xs, xs), (self._ys, ys)):
            if values is None:
                continue
            array = np.asarray(values, dtype=np.float64)
            array = array[np.isfinite(array)]
            if len(array):
                target += [float(array.min()), float(array.max())]

    def line(
        self,
        xs: npt.ArrayLike,
        ys: npt.ArrayLike,
        colour: str,
        *,
        width: float = 1.0,
        step: bool = False,
        label: str | None = None,
    ) -> None:
        self._extend(xs, ys)
        self._marks.append(("line", (np.asarray(xs, float), np.asarray(ys, float), colour, width, step)))
        if label:
            self._legend.append((label, colour, "line"))

    def points(
        self,
        xs: npt.ArrayLike,
        ys: npt.ArrayLike,
        colour: str,
        *,
        radii: npt.ArrayLike = 3.0,
        label: str | None = None,
    ) -> None:
        self._extend(xs, ys)
        x, y = np.asarray(xs, float), np.asarray(ys, float)
        self._marks.append(("points", (x, y, np.broadcast_to(np.asarray(radii, float), x.shape), colour)))
        if label:
            self._legend.append((label, colour, "point"))

    def level(self, y: float, colour: str, *, dash: str = "5,3", label: str | None = None) -> None:
        self._extend(None, [y])
        self._marks.append(("level", (y, colour, dash)))
        if label:
            self._legend.append((label, colour, "dash"))

    def span(self, x0: float, x1: float, colour: str) -> None:
        self._marks.append(("span", (x0, x1, colour)))

    def bars(self, x0: npt.ArrayLike, x1: npt.ArrayLike, heights: npt.ArrayLike, colour: str) -> None:
        self._extend(
            np.concatenate([np.asarray(x0, float), np.asarray(x1, float)]), [0.0, *np.asarray(heights, float)]
        )
        self._marks.append(
            ("bars", (np.asarray(x0, float), np.asarray(x1, float), np.asarray(heights, float), colour))
        )

    # --- drawing --------------------------------------------------------------------------
    def _limits(self) -> tuple[float, float, float, float]:
        x0, x1 = self._xlim or ((min(self._xs), max(self._xs)) if self._xs else (0.0, 1.0))
        y0, y1 = self._ylim or ((min(self._ys), max(self._ys)) if self._ys else (0.0, 1.0))
        if self._ylim is None:
            pad = (y1 - y0) * 0.05 or abs(y0) * 0.01 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        if x1 <= x0:
            x1 = x0 + 1.0
        return x0, x1, y0, y1

    def svg(self) -> str:
        x0, x1, y0, y1 = self._limits()
        pw = self.width - self.left - self.right
        ph = self.height - self.top - self.bottom

        def sx(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
            return self.left + (np.asarray(x, float) - x0) / (x1 - x0) * pw

        def sy(y: npt.ArrayLike) -> npt.NDArray[np.float64]:
            return self.top + ph - (np.asarray(y, float) - y0) / (y1 - y0) * ph

        out = [_open(self.width, self.height)]
        clip = f"c{id(self)}"
        out.append(
            f'<clipPath id="{clip}"><rect x="{self.left}" y="{self.top}" width="{pw}" height="{ph}"/>'
            "</clipPath>"
        )
        out += _axis_lines_and_ticks(self, sx, sy, (x0, x1), (y0, y1), pw, ph)
        out.append(f'<g clip-path="url(#{clip})">')
        for kind, data in self._marks:
            out.append(_draw(kind, data, sx, sy, self.left, pw, self.top, ph))
        out.append("</g>")
        out += _legend(self._legend, self.left + pw - 6, self.top + 6)
        out.append("</svg>")
        return "".join(out)


def _open(width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT} font-size="11">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
    )


def _axis_lines_and_ticks(
    axes: Axes,
    sx: object,
    sy: object,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    pw: float,
    ph: float,
) -> list[str]:
    out = []
    left, top = axes.left, axes.top
    bottom = top + ph
    for value in nice_ticks(*ylim, count=5):
        y = float(sy(value))  # type: ignore[operator]
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{_label(value)}</text>')
    for value in nice_ticks(*xlim, count=6):
        x = float(sx(value))  # type: ignore[operator]
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#555"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{_label(value)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#555"/>')
    if axes.title:
        out.append(
            f'<text x="{left}" y="{top - 10}" font-size="12" font-weight="600">{escape(axes.title)}</text>'
        )
    if axes.xlabel:
        out.append(
            f'<text x="{left + pw / 2:.1f}" y="{bottom + 34}" text-anchor="middle">'
            f"{escape(axes.xlabel)}</text>"
        )
    if axes.ylabel:
        out.append(
            f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
            f"{escape(axes.ylabel)}</text>"
        )
    return out


def _draw(
    kind: str, data: tuple[object, ...], sx: object, sy: object, left: float, pw: float, top: float, ph: float
) -> str:
    scale_x, scale_y = sx, sy
    if kind == "line":
        xs, ys, colour, width, step = data
        px, py = scale_x(xs), scale_y(ys)  # type: ignore[operator]
        if step and len(px) > 1:  # type: ignore[arg-type]
            px = np.repeat(px, 2)[1:]
            py = np.repeat(py, 2)[:-1]
        coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px.tolist(), py.tolist(), strict=True))
        return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{width}"/>'
    if kind == "points":
        xs, ys, radii, colour = data
        px, py = scale_x(xs), scale_y(ys)  # type: ignore[operator]
        return "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{r:.1f}" fill="{colour}" fill-opacity="0.65"/>'
            for a, b, r in zip(px.tolist(), py.tolist(), radii.tolist(), strict=True)  # type: ignore[attr-defined]
        )
    if kind == "level":
        y, colour, dash = data
        py = float(scale_y(y))  # type: ignore[operator]
        return (
            f'<line x1="{left}" x2="{left + pw}" y1="{py:.1f}" y2="{py:.1f}" stroke="{colour}"'
            f' stroke-width="1.3" stroke-dasharray="{dash}"/>'
        )
    if kind == "span":
        x0, x1, colour = data
        a, b = float(scale_x(x0)), float(scale_x(x1))  # type: ignore[operator]
        return f'<rect x="{a:.1f}" y="{top}" width="{max(b - a, 0):.1f}" height="{ph}" fill="{colour}"/>'
    if kind == "bars":
        x0, x1, heights, colour = data
        a, b = scale_x(x0), scale_x(x1)  # type: ignore[operator]
        base, tops = float(scale_y(0.0)), scale_y(heights)  # type: ignore[operator]
        return "".join(
            f'<rect x="{p:.1f}" y="{min(t, base):.1f}" width="{max(q - p - 0.5, 0.5):.1f}"'
            f' height="{abs(base - t):.1f}" fill="{colour}"/>'
            for p, q, t in zip(a.tolist(), b.tolist(), tops.tolist(), strict=True)
        )
    raise ValueError(kind)


def _legend(entries: Sequence[tuple[str, str, str]], right: float, top: float) -> list[str]:
    if not entries:
        return []
    width = 18 + 6.2 * max(len(label) for label, _, _ in entries)
    x = right - width
    out = [
        f'<rect x="{x - 4:.1f}" y="{top:.1f}" width="{width + 4:.1f}" height="{14 * len(entries) + 6}"'
        ' fill="white" fill-opacity="0.85" stroke="#ccc"/>'
    ]
    for i, (label, colour, kind) in enumerate(entries):
        y = top + 12 + 14 * i
        if kind == "point":
            out.append(f'<circle cx="{x + 6:.1f}" cy="{y - 4:.1f}" r="4" fill="{colour}"/>')
        else:
            dash = ' stroke-dasharray="4,2"' if kind == "dash" else ""
            out.append(
                f'<line x1="{x:.1f}" x2="{x + 12:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}" stroke="{colour}"'
                f' stroke-width="2"{dash}/>'
            )
        out.append(f'<text x="{x + 16:.1f}" y="{y:.1f}">{escape(label)}</text>')
    return out


def box_plot(
    categories: Sequence[str],
    samples: Sequence[npt.NDArray[np.float64]],
    means: Sequence[float],
    *,
    ylabel: str,
    width: int | None = None,
    height: int = 320,
) -> str:
    """Box plots per category: box = quartiles, line = median, whiskers = 5th-95th percentile,
    red diamond = the given mean (e.g. notional-weighted)."""
    n = len(categories)
    width = width or max(360, 90 * n + 90)
    left, right, top, bottom = 62, 14, 16, 30
    pw, ph = width - left - right, height - top - bottom
    stats = [np.percentile(s, [5, 25, 50, 75, 95]) if len(s) else np.full(5, np.nan) for s in samples]
    finite = [v for row in stats for v in row.tolist() if math.isfinite(v)] + [
        m for m in means if math.isfinite(m)
    ]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad

    def y(value: float) -> float:
        return top + ph - (value - lo) / (hi - lo) * ph

    out = [_open(width, height)]
    for value in nice_ticks(lo, hi, 5):
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{left - 5}" y="{y(value) + 4:.1f}" text-anchor="end">{_label(value)}</text>')
    if lo < 0 < hi:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999"/>')
    slot = pw / max(n, 1)
    for i, (name, (p5, q1, med, q3, p95), mean) in enumerate(zip(categories, stats, means, strict=True)):
        cx = left + slot * (i + 0.5)
        half = min(slot * 0.3, 30)
        if math.isfinite(med):
            out.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(p95):.1f}" y2="{y(p5):.1f}" stroke="#555"/>'
            )
            out.append(
                f'<rect x="{cx - half:.1f}" y="{y(q3):.1f}" width="{2 * half:.1f}"'
                f' height="{y(q1) - y(q3):.1f}"'
                f' fill="{PALETTE[0]}" fill-opacity="0.35" stroke="{PALETTE[0]}"/>'
            )
            out.append(
                f'<line x1="{cx - half:.1f}" x2="{cx + half:.1f}" y1="{y(med):.1f}" y2="{y(med):.1f}"'
                ' stroke="#222" stroke-width="2"/>'
            )
        if math.isfinite(mean):
            d = 5
            my = y(mean)
            out.append(
                f'<polygon points="{cx:.1f},{my - d:.1f} {cx + d:.1f},{my:.1f} {cx:.1f},{my + d:.1f}'
                f' {cx - d:.1f},{my:.1f}"'
                f' fill="{PALETTE[1]}"/>'
            )
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" text-anchor="middle">{escape(name)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#555"/>')
    out.append(
        f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(ylabel)}</text>"
    )
    out.append("</svg>")
    return "".join(out)


def bar_ranking(
    labels: Sequence[str],
    values: Sequence[float],
    errors: Sequence[float],
    colours: Sequence[str],
    *,
    xlabel: str,
    width: int = 640,
) -> str:
    """Horizontal bars, one per label (top to bottom), with +- error whiskers."""
    n = len(labels)
    left = int(min(max(7 * max((len(s) for s in labels), default=4), 80), 320)) + 12
    right, top, bottom, row = 16, 10, 40, 22
    height = top + bottom + row * max(n, 1)
    pw = width - left - right
    ends = [v + s * e for v, e in zip(values, errors, strict=True) for s in (-1, 1) if math.isfinite(v + e)]
    lo, hi = min([0.0, *ends]), max([0.0, *ends])
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad

    def x(value: float) -> float:
        return left + (value - lo) / (hi - lo) * pw

    out = [_open(width, height)]
    for value in nice_ticks(lo, hi, 6):
        out.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{x(value):.1f}" y="{height - bottom + 15}" text-anchor="middle">{_label(value)}</text>'
        )
    for i, (label, value, error, colour) in enumerate(zip(labels, values, errors, colours, strict=True)):
        cy = top + row * i + row / 2
        a, b = sorted((x(0.0), x(value)))
        out.append(f'<rect x="{a:.1f}" y="{cy - 7:.1f}" width="{b - a:.1f}" height="14" fill="{colour}"/>')
        if math.isfinite(error) and error > 0:
            e0, e1 = x(value - error), x(value + error)
            out.append(f'<line x1="{e0:.1f}" x2="{e1:.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="#222"/>')
            for e in (e0, e1):
                out.append(
                    f'<line x1="{e:.1f}" x2="{e:.1f}" y1="{cy - 4:.1f}" y2="{cy + 4:.1f}" stroke="#222"/>'
                )
        out.append(f'<text x="{left - 6}" y="{cy + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    out.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top}" y2="{height - bottom}" stroke="#777"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append("</svg>")
    return "".join(out)


def data_uri(svg: str) -> str:
    """The SVG as a base64 `data:` URI, for an `<img src=...>`."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")
