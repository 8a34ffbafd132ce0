"""The report's SVG charts: round ticks, well-formed SVG, nothing drawn from nothing."""

from __future__ import annotations

import base64
from xml.etree import ElementTree

import numpy as np
import pytest

from tca_offline.charts import Axes, bar_ranking, box_plot, data_uri, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_of_zero_to_ten() -> None:
    assert nice_ticks(0.0, 10.0) == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])


@pytest.mark.parametrize(("lo", "hi"), [(-3.2, 7.9), (99.91, 100.07), (0.001, 0.0013), (-5e6, 2e7)])
def test_nice_ticks_are_round_evenly_spaced_and_inside_the_range(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 8
    assert lo - 1e-9 <= ticks[0] and ticks[-1] <= hi + 1e-9
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


def test_nice_ticks_of_a_single_value_or_nothing() -> None:
    assert len(nice_ticks(5.0, 5.0)) >= 1
    assert nice_ticks(float("nan"), 1.0) == []


def test_axes_draw_every_mark_as_valid_svg() -> None:
    axes = Axes(title="t <&>", xlabel="x", ylabel="y")
    axes.span(0, 1, "#ffe")
    axes.line([0, 1, 2], [1.0, 2.0, 1.5], "#000", step=True, label="prints")
    axes.points([0.5, 1.5], [1.2, 1.8], "#f00", radii=[2, 5], label="fills")
    axes.level(1.4, "#0a0", label="VWAP")
    axes.bars([0, 1], [1, 2], [3, 4], "#00f")
    root = ElementTree.fromstring(axes.svg())
    tags = [element.tag.removeprefix(SVG) for element in root.iter()]
    for tag in ("polyline", "circle", "line", "rect", "text", "clipPath"):
        assert tag in tags
    assert any(element.text == "t <&>" for element in root.iter(f"{SVG}text"))


def test_empty_axes_still_render() -> None:
    ElementTree.fromstring(Axes().svg())


def test_box_plot_and_ranking_bars() -> None:
    box = box_plot(["a", "b"], [np.arange(10.0), np.array([])], [4.5, float("nan")], ylabel="bps")
    assert len(ElementTree.fromstring(box).findall(f"{SVG}polygon")) == 1
    bars = bar_ranking(["x", "y"], [1.0, -2.0], [0.5, float("inf")], ["#111", "#222"], xlabel="bps")
    assert len(ElementTree.fromstring(bars).findall(f"{SVG}rect")) == 3  # background + two bars


def test_data_uri_round_trips() -> None:
    svg = Axes().svg()
    uri = data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == svg
