"""Execution reports in batches: `report_many` writes the same rows and tells the statistics
the same things as `report` one execution at a time; the queue keeps one report per execution,
is bounded and hands out batches on time; the engine writes every report once, through
batches, also after a database outage."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
import psycopg
import pytest
import trio
import trio.testing

from api.enums import (
    AssetClass,
    BrokerOrderStatus,
    ExecutionStrategy,
    OrderType,
    RoutingStatus,
    Side,
    TimeInForce,
    Urgency,
)
from api.orders import BrokerOrder, OrderFill
from market.book import MarketBook
from market.messages import QuoteMessage, TradeMessage
from routing.stats import TcaObservation
from sql.reports import PeerGroupRow, ReportRecord
from sql.writer import DatabaseUnavailable
from tca.model import MarketData, Trades, ns_of
from tca.peers import hour_key, peer_stats
from tca.result import TcaResult
from tca_online import windows
from tca_online.peers import PeerCache
from tca_online.queue import ReportJob
from tca_online.reporter import ExecutionReporter
from tests.tca_online.test_online_tca import SYMBOL, Desk, desk, order, reported  # noqa: F401 (fixture)

T0 = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
CREATED = datetime(2024, 3, 2, tzinfo=UTC)


class Captured:
    """A store that keeps what would be written (and knows the stored arrivals)."""

    def __init__(self, arrivals: dict[str, tuple[Decimal | None, datetime | None]]) -> None:
        self.arrivals = arrivals
        self.saved: list[tuple[ReportRecord, bool]] = []
        self.submissions = 0

    async def load_arrival(self, order_id: str) -> tuple[Decimal | None, datetime | None]:
        return self.arrivals.get(order_id, (None, None))

    async def save_report(self, report: ReportRecord, *, replace: bool = False) -> bool:
        self.submissions += 1
        self.saved.append((report, replace))
        return True

    async def save_reports(self, reports: Sequence[tuple[ReportRecord, bool]]) -> list[bool]:
        self.submissions += 1
        self.saved += reports
        return [True] * len(reports)


class Observed:
    """Routing statistics that only record what they are told."""

    def __init__(self) -> None:
        self.seen: list[TcaObservation] = []

    def on_tca(self, observation: TcaObservation) -> None:
        self.seen.append(observation)


def market() -> MarketBook:
    """AAPL with quotes and prints every 100 / 250 ms for 10 minutes from T0; MSFT with prints
    only; the book's coverage starts at T0."""
    rng = np.random.default_rng(17)
    book = MarketBook({"AAPL": AssetClass.EQUITY, "MSFT": AssetClass.EQUITY}, clock_ns=lambda: 0)
    mid = 190.0
    for k in range(6_000):
        at = T0 + timedelta(milliseconds=100 * k)
        mid = round(mid + float(rng.normal(0, 0.01)), 2)
        book.on_quote(QuoteMessage("AAPL", Decimal(f"{mid - 0.01:.2f}"), Decimal(f"{mid + 0.01:.2f}"), at))
        if k % 5 == 2:
            size = Decimal(int(rng.integers(0, 400)))
            book.on_trade(
                TradeMessage("AAPL", Decimal(f"{mid + float(rng.choice([-0.01, 0.01])):.2f}"), size, at)
            )
        if k % 7 == 3:
            book.on_trade(
                TradeMessage("MSFT", Decimal(f"{410 + float(rng.normal(0, 0.2)):.2f}"), Decimal(50), at)
            )
    return book


def execution(i: int, rng: np.random.Generator, **changes: Any) -> BrokerOrder:
    """A finished execution: 1-4 fills over up to 20 s, fully or partly filled."""
    symbol = str(rng.choice(["AAPL", "AAPL", "MSFT"]))
    created = T0 + timedelta(seconds=float(rng.uniform(5, 500)))
    count = int(rng.integers(1, 5))
    offsets = sorted(float(x) for x in rng.uniform(0, 20, count))
    if count == 2 and rng.random() < 0.4:
        offsets[1] = offsets[0]  # both fills at one instant
    base = 190.0 if symbol == "AAPL" else 410.0
    fills = tuple(
        OrderFill(
            id=f"f{i}-{k}",
            broker_fill_id=f"bf{i}-{k}",
            quantity=Decimal(int(rng.integers(1, 40))),
            price=Decimal(f"{base + float(rng.normal(0, 0.1)):.2f}"),
            fees=Decimal("0.35"),
            timestamp=created + timedelta(seconds=offset),
            venue="SIMX",
        )
        for k, offset in enumerate(offsets)
    )
    filled = sum((f.quantity for f in fills), Decimal(0))
    partial = rng.random() < 0.3
    quantity = filled + (Decimal(25) if partial else Decimal(0))
    fields: dict[str, Any] = dict(
        id=f"exec-{i}",
        order_id=f"order-{i}",
        broker_id=str(rng.choice(["a", "b"])),
        client_order_id=f"c{i}",
        account_id="ACC",
        symbol=symbol,
        side=Side.BUY if rng.random() < 0.5 else Side.SELL,
        order_type=OrderType.LIMIT,
        quantity=quantity,
        time_in_force=TimeInForce.DAY,
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
        created_at=created,
        updated_at=fills[-1].timestamp + timedelta(seconds=2 if partial else 0),
        status=BrokerOrderStatus.CANCELED if partial else BrokerOrderStatus.FILLED,
        broker_order_id=f"b{i}",
        filled_quantity=filled,
        average_price=sum((f.quantity * f.price for f in fills), Decimal(0)) / filled,
        fees=sum((f.fees for f in fills), Decimal(0)),
        fills=fills,
    )
    fields.update(changes)
    return BrokerOrder(**fields)


def jobs_and_arrivals() -> tuple[list[ReportJob], dict[str, tuple[Decimal | None, datetime | None]]]:
    """Every kind of execution the reports meet."""
    rng = np.random.default_rng(23)
    jobs = []
    for i in range(60):
        done = execution(i, rng)
        jobs.append(ReportJob(done, Decimal("190.00" if done.symbol == "AAPL" else "410.00"), True))
    arrivals: dict[str, tuple[Decimal | None, datetime | None]] = {}
    # Arrival read back from the store: known there, unknown there (the window's reference).
    jobs.append(ReportJob(execution(100, rng)))
    arrivals["order-100"] = (Decimal("189.95"), None)
    jobs.append(ReportJob(execution(101, rng)))
    # A second attempt after a failover: the arrival is when the OMS order was received.
    late = execution(102, rng, attempt=2)
    jobs.append(ReportJob(late, Decimal("190.02"), True))
    arrivals["order-102"] = (Decimal("190.02"), late.created_at - timedelta(seconds=3))
    # An order from before the book's coverage: no window (unavailable, never half a window).
    early = T0 - timedelta(seconds=30)
    jobs.append(ReportJob(execution(103, rng, created_at=early), Decimal("190.00"), True))
    # A rewrite after a late fill; nothing to report: not final, no fills, unknown symbol.
    jobs.append(ReportJob(execution(104, rng), Decimal("190.00"), True, replace=True))
    jobs.append(ReportJob(execution(105, rng, status=BrokerOrderStatus.ACCEPTED), Decimal(190), True))
    jobs.append(
        ReportJob(
            execution(106, rng, fills=(), filled_quantity=Decimal(0), average_price=None),
            Decimal(190),
            True,
        )
    )
    jobs.append(ReportJob(execution(107, rng, symbol="NOPE"), Decimal(190), True))
    return jobs, arrivals


def peer_groups() -> list[PeerGroupRow]:
    """A month of reports in which broker a cost more than b (ranks and recommendations), as
    the server's sums per peer group (`sql.reports.load_peer_groups`)."""
    rng = np.random.default_rng(29)
    brokers = ["a"] * 80 + ["b"] * 80
    drawn = [  # bucket, cost, notional: drawn row by row
        (
            int(rng.integers(0, 2)),
            float(rng.normal(8.0 if broker == "a" else 1.0, 0.5)),
            float(Decimal(f"{rng.uniform(2e3, 9e3):.2f}")),
        )
        for broker in brokers
    ]
    stats = peer_stats(
        asset_classes=["EQUITY"] * len(brokers),
        buckets=[bucket for bucket, _, _ in drawn],
        costs=[cost for _, cost, _ in drawn],
        weights=[notional for _, _, notional in drawn],
        brokers=brokers,
        strategies=["SMART"] * len(brokers),
        order_types=["LIMIT"] * len(brokers),
        hours=[hour_key(ns_of(T0 - timedelta(days=1)))] * len(brokers),
    )
    return [PeerGroupRow(*msgspec.structs.astuple(g)) for g in stats.groups]  # the same fields, in order


async def reporter_for(store: Captured, book: MarketBook, stats: Observed) -> ExecutionReporter:
    peers = PeerCache(merge_every=1e9)  # the statistics of the month, unmoved by the test's reports

    async def load(since: datetime) -> list[PeerGroupRow]:
        return peer_groups()

    await peers.refresh(load, CREATED)
    peers._merged_at = math.inf
    return ExecutionReporter(
        store,  # type: ignore[arg-type]
        book,
        stats=stats,  # type: ignore[arg-type]
        peers=peers,
        clock=lambda: CREATED,
        market_settle_s=0.0,
    )


def close_enough(got: object, expected: object, path: str) -> None:
    if isinstance(expected, float) and isinstance(got, float | int):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), path
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), path
        for key in expected:
            close_enough(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            close_enough(g, e, f"{path}[{i}]")
    else:
        assert got == expected, path


def same_row(got: ReportRecord, expected: ReportRecord) -> None:
    for field in msgspec.structs.fields(ReportRecord):
        g, e = getattr(got, field.name), getattr(expected, field.name)
        where = f"{expected.execution_id}.{field.name}"
        if field.name in ("recommendations", "benchmarks", "shortfall", "unavailable") and e is not None:
            close_enough(json.loads(g), json.loads(e), where)
        else:
            close_enough(g, e, where)


async def test_a_batch_writes_the_rows_and_statistics_of_one_by_one() -> None:
    book = market()
    jobs, arrivals = jobs_and_arrivals()
    alone_store, alone_stats = Captured(arrivals), Observed()
    alone_results: list[TcaResult | None] = []
    for job in jobs:  # one by one, each with the month's peer statistics
        reporter = await reporter_for(alone_store, book, alone_stats)
        alone_results.append(
            await reporter.report(
                job.order, job.arrival_price, arrival_known=job.arrival_known, replace=job.replace
            )
        )
    batch_store, batch_stats = Captured(arrivals), Observed()
    batched = await reporter_for(batch_store, book, batch_stats)
    results = await batched.report_many(jobs)

    assert batch_store.submissions == 1 and alone_store.submissions == len(alone_store.saved) == 65
    assert [r is None for r in results] == [r is None for r in alone_results]
    assert [(r.execution_id, replace) for r, replace in batch_store.saved] == [
        (r.execution_id, replace) for r, replace in alone_store.saved
    ]
    for (got, _), (expected, _) in zip(batch_store.saved, alone_store.saved, strict=True):
        same_row(got, expected)
    assert batched.written == 65 and len(batched.peers._pending) == 64  # not the rewrite
    assert len(batch_stats.seen) == len(alone_stats.seen) > 50
    for got_seen, expected_seen in zip(batch_stats.seen, alone_stats.seen, strict=True):
        close_enough(msgspec.to_builtins(got_seen), msgspec.to_builtins(expected_seen), "on_tca")
    # What the comparison covered: windows with and without prints, ranks, recommendations.
    rows = [r for r, _ in batch_store.saved]
    assert any(r.rank is not None for r in rows) and any(r.recommendations != "[]" for r in rows)
    assert any(r.quality_score is not None for r in rows) and any("VWAP" in r.unavailable for r in rows)
    assert len({r.market_window for r in rows}) > 50
    with pytest.raises(ValueError):
        await batched.report_many([jobs[0], jobs[0]])


def test_windows_read_together_are_the_windows_read_alone() -> None:
    book = market()
    rng = np.random.default_rng(41)
    base = ns_of(T0)
    requests = []
    for _ in range(300):  # clusters near and far apart, long and short, some before the tapes
        start = base + int(rng.uniform(-20, 590)) * 1_000_000_000 + int(rng.integers(0, 10**9))
        length = int(rng.choice([0, 1_000_000, 2 * 10**9, 40 * 10**9]))
        requests.append((str(rng.choice(["AAPL", "MSFT", "NOPE"])), start, start + length))
    requests.append(("AAPL", base + 10**10, base + 10**10 - 5))  # ends before it starts
    layout, encoded = windows.gather(book, requests)
    for i, (symbol, start, end) in enumerate(requests):
        alone = (
            book.market_data(symbol, start, end) if book.covers(symbol, start) else MarketData(Trades.empty())
        )
        assert encoded[i] == windows.encode(alone), i
        lo, hi = layout.trades.offsets[i], layout.trades.offsets[i + 1]
        assert np.array_equal(layout.trades.ts_ns[lo:hi], alone.trades.ts_ns)
        assert layout.quotes is not None
        q_lo, q_hi = layout.quotes.offsets[i], layout.quotes.offsets[i + 1]
        mids = np.empty(0) if alone.quotes is None else (alone.quotes.bid + alone.quotes.ask) / 2
        assert np.array_equal(layout.quotes.value[q_lo:q_hi], mids)
    assert len({len(e) for e in encoded}) > 10  # windows of many sizes, empty ones among them


async def test_the_queue_keeps_one_report_per_execution_and_is_bounded() -> None:
    rng = np.random.default_rng(31)
    reporter = ExecutionReporter(Captured({}), market(), max_queued=3, batch_size=100)  # type: ignore[arg-type]
    first = execution(1, rng)
    assert reporter.queue(first, Decimal(190), arrival_known=True)
    later = msgspec.structs.replace(first, filled_quantity=first.filled_quantity + 1)
    assert reporter.queue(later, Decimal(190), arrival_known=True, replace=True)  # a late fill
    assert reporter.pending == 1
    assert reporter.queue(execution(2, rng)) and reporter.queue(execution(3, rng))
    assert not reporter.queue(execution(4, rng))  # full: left to the backfill
    assert reporter.dropped == 1
    assert reporter.queue(execution(5, rng), replace=True)  # a rewrite the backfill would not do
    batch = await reporter.next_batch()
    assert [job.order.id for job in batch] == ["exec-1", "exec-2", "exec-3", "exec-5"]
    assert batch[0].order is later and not batch[0].replace  # its first report, as it is now
    assert reporter.pending == 4
    assert reporter.queue(later, replace=True)  # while its batch is written: a rewrite after it
    assert reporter.pending == 5
    reporter.batch_done(batch)
    assert reporter.pending == 1 and reporter.discard() == 1 and reporter.pending == 0


async def test_a_batch_is_taken_after_the_interval_or_once_enough_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = np.random.default_rng(37)
    reporter = ExecutionReporter(Captured({}), market(), batch_interval_s=0.15, batch_size=3)  # type: ignore[arg-type]
    took: list[tuple[float, int]] = []

    async def take() -> None:
        batch = await reporter.next_batch()
        took.append((trio.current_time(), len(batch)))
        reporter.batch_done(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.sleep(1.0)  # nothing queued: it waits
        assert not took
        reporter.queue(execution(1, rng))
        start = trio.current_time()
        await trio.sleep(0.05)
        reporter.queue(execution(2, rng))
    assert len(took) == 1 and took[0][1] == 2  # the oldest waited the interval
    assert took[0][0] == pytest.approx(start + 0.15)

    async with trio.open_nursery() as nursery:
        for i in range(3):
            reporter.queue(execution(10 + i, rng))
        start = trio.current_time()
        nursery.start_soon(take)
    assert took[-1] == (start, 3)  # enough waiting: at once


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_the_engine_reports_every_execution_once_in_batches(desk: Desk) -> None:  # noqa: F811
    reporter = desk.engine._reporter
    assert isinstance(reporter, ExecutionReporter)
    quote = desk.market.quote(SYMBOL)
    requests = [order(price=quote.ask, quantity=Decimal(5)) for _ in range(12)]  # fill at once
    real = reporter.report_many
    sizes: list[int] = []

    async def spy(jobs: Sequence[ReportJob], **kwargs: Any) -> list[TcaResult | None]:
        sizes.append(len(jobs))
        return await real(jobs, **kwargs)

    reporter.report_many = spy  # type: ignore[method-assign]

    async with trio.open_nursery() as nursery:
        for request in requests:
            nursery.start_soon(desk.engine.route_order, request)
    for request in requests:
        await reported(desk, request.order_id)
    assert desk.engine._reports_pending == 0 and reporter.pending == 0

    def count(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT count(*) FROM execution_reports WHERE order_id = ANY(%s)",
            ([r.order_id for r in requests],),
        ).fetchone()
        assert row is not None
        return int(row[0])

    assert await desk.store._read(count) == len(requests)
    assert reporter.written == len(requests)
    broker = desk.stats.broker("tca-a")
    assert broker is not None and AssetClass.EQUITY in broker.tca
    assert sum(sizes) == len(requests) and max(sizes) > 1  # in batches, each report once


async def test_a_batch_that_meets_an_outage_is_written_once_the_database_is_back(
    desk: Desk,  # noqa: F811
) -> None:
    reporter = desk.engine._reporter
    assert isinstance(reporter, ExecutionReporter)
    real = reporter.report_many
    failures: list[int] = []

    async def once_unavailable(jobs: Sequence[ReportJob], **kwargs: Any) -> list[TcaResult | None]:
        if not failures:
            failures.append(len(jobs))
            raise DatabaseUnavailable("connection lost")
        return await real(jobs, **kwargs)

    reporter.report_many = once_unavailable  # type: ignore[method-assign]
    request = order(price=desk.market.quote(SYMBOL).ask, order_id=f"outage-{uuid.uuid4().hex[:8]}")
    response = await desk.engine.route_order(request)
    assert response.status is RoutingStatus.ACCEPTED
    await reported(desk, request.order_id)
    execution_ = await desk.store.load_latest_execution(request.order_id)
    assert execution_ is not None and await desk.store.load_report(execution_.id) is not None
    assert failures == [1] and desk.engine._reports_pending == 0
