"""Cheap single-thread meters: a histogram and labelled counters the hot path can afford.

prometheus-client's own `Histogram.observe` takes a lock and walks its buckets on every call;
these take neither: an observation is one `bisect` and two additions. They are safe because
every observation and every scrape happens on the daemon's Trio thread (the REST app that
renders `/metrics` runs there too): nothing reads a meter while another thread writes it.

`daemon.metrics` owns the meters and turns them into Prometheus metric families at scrape time
(`histogram_family`, `counter_family`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

__all__ = ["Histogram", "LabelledCounter", "counter_family", "histogram_family"]


class Histogram:
    """Counts of observations per bucket (`le` bounds, inclusive, as Prometheus means them)
    plus their sum. `observe` is O(log buckets), allocation-free."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} sum={self.sum:g}>"

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, value: float, times: int) -> None:
        """`times` observations of `value` at once."""
        if times > 0:
            self.counts[bisect_left(self.bounds, value)] += times
            self.sum += value * times

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs ending with +Inf, as the exposition format wants them."""
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else _le(bound), float(running)))
        return buckets


def _le(bound: float) -> str:
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"


class LabelledCounter:
    """Monotonic counts keyed by a fixed tuple of label values (bounded sets only: a broker id,
    an outcome, a reason class; never an order id)."""

    __slots__ = ("counts", "labels")

    def __init__(self, *labels: str) -> None:
        self.labels = labels
        self.counts: dict[tuple[str, ...], float] = {}

    def __repr__(self) -> str:
        return f"<LabelledCounter {self.labels} series={len(self.counts)}>"

    def inc(self, *values: str, amount: float = 1.0) -> None:
        self.counts[values] = self.counts.get(values, 0.0) + amount

    def get(self, *values: str) -> float:
        return self.counts.get(values, 0.0)


def histogram_family(
    name: str, documentation: str, labels: Sequence[str], series: Mapping[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, histogram in series.items():
        family.add_metric(list(values), histogram.cumulative(), histogram.sum)
    return family


def counter_family(
    name: str, documentation: str, labels: Sequence[str], series: Iterable[tuple[tuple[str, ...], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for values, value in series:
        family.add_metric(list(values), value)
    return family
