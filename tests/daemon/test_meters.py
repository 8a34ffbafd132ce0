"""daemon.meters: histogram buckets as Prometheus means them, counters by label values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.meters import Histogram, LabelledCounter, counter_family, histogram_family


def test_bounds_are_inclusive_upper_limits_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(8.65)


def test_many_observations_at_once() -> None:
    histogram = Histogram((1, 2, 4))
    histogram.observe_many(3.0, 4)
    histogram.observe_many(3.0, 0)
    assert histogram.cumulative() == [("1.0", 0.0), ("2.0", 0.0), ("4.0", 4.0), ("+Inf", 4.0)]
    assert histogram.sum == 12.0


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 1.0))


def test_families_render_as_prometheus_text() -> None:
    histogram = Histogram((0.5,))
    histogram.observe(0.2)
    counter = LabelledCounter("broker", "reason_class")
    counter.inc("a", "risk")
    counter.inc("a", "risk", amount=2)

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            yield histogram_family("x_seconds", "x", ["broker"], {("a",): histogram})
            yield counter_family("y_total", "y", counter.labels, counter.counts.items())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("x_seconds_bucket", (("broker", "a"), ("le", "0.5")))] == 1.0
    assert samples[("x_seconds_count", (("broker", "a"),))] == 1.0
    assert samples[("y_total", (("broker", "a"), ("reason_class", "risk")))] == 3.0
    assert counter.get("a", "risk") == 3.0 and counter.get("b", "risk") == 0.0
