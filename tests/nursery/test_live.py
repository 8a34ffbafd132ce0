"""nursery.live: the in-memory book of executions and when it may forget a finished one.

Eviction reads `trio.current_time()`, so these tests run under pytest-trio's `mock_clock` and
move time explicitly with `jump`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import trio
import trio.testing

from api.enums import BrokerOrderStatus, ExecutionStrategy, OrderType, Side, TimeInForce, Urgency
from api.events import OrderCanceled
from api.orders import BrokerOrder
from nursery.identity import client_order_id, execution_id
from nursery.live import LiveBook, LiveExecution

T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)


def live_order(
    order_id: str, attempt: int = 1, status: BrokerOrderStatus = BrokerOrderStatus.ACCEPTED
) -> LiveExecution:
    execution = execution_id(order_id, attempt)
    return LiveExecution(
        BrokerOrder(
            id=execution,
            order_id=order_id,
            broker_id="sim-a",
            client_order_id=client_order_id(execution),
            account_id="acc-1",
            symbol="AAPL",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=Decimal(10),
            time_in_force=TimeInForce.DAY,
            execution_strategy=ExecutionStrategy.SMART,
            urgency=Urgency.MEDIUM,
            created_at=T0,
            updated_at=T0,
            status=status,
        )
    )


def assert_present(book: LiveBook, live: LiveExecution) -> None:
    assert book.by_client_order(live.order.client_order_id) is live
    assert book.by_execution(live.order.id) is live
    assert book.by_order(live.order.order_id) is live


def assert_absent(book: LiveBook, live: LiveExecution) -> None:
    assert book.by_client_order(live.order.client_order_id) is None
    assert book.by_execution(live.order.id) is None
    assert book.by_order(live.order.order_id) is None


# --- lookups --------------------------------------------------------------------------------


def test_added_execution_is_found_by_client_order_id_execution_id_and_order_id() -> None:
    book = LiveBook()
    first, second = live_order("ord-1"), live_order("ord-2")
    book.add(first)
    book.add(second)
    assert_present(book, first)
    assert_present(book, second)
    assert len(book) == 2
    assert set(book) == {first, second}
    assert book.open_count() == 2


def test_lookup_of_an_unknown_id_returns_none() -> None:
    book = LiveBook()
    book.add(live_order("ord-1"))
    assert book.by_client_order("bis-00000000000000000000000000000000") is None
    assert book.by_execution("00000000-0000-0000-0000-000000000000") is None
    assert book.by_order("ord-2") is None


def test_new_attempt_of_an_order_takes_over_the_order_lookup_and_keeps_the_old_by_its_ids() -> None:
    book = LiveBook()
    first, retry = live_order("ord-1", attempt=1), live_order("ord-1", attempt=2)
    book.add(first)
    book.add(retry)
    assert book.by_order("ord-1") is retry
    assert book.by_execution(first.order.id) is first
    assert book.by_client_order(first.order.client_order_id) is first
    assert len(book) == 2


def test_iterating_the_book_is_safe_while_it_changes() -> None:
    book = LiveBook()
    for i in range(3):
        book.add(live_order(f"ord-{i}"))
    for live in book:
        book.add(live_order(live.order.order_id + "-x"))
    assert len(book) == 6


def test_repr_shows_the_order_and_queue_length() -> None:
    live = live_order("ord-1")
    live.queue.append(OrderCanceled(client_order_id=live.order.client_order_id, at=T0))
    text = repr(live)
    assert "ord-1" in text
    assert "ACCEPTED" in text
    assert "queued=1" in text


# --- finishing and eviction ------------------------------------------------------------------


async def test_finished_execution_is_kept_until_retain_has_passed(mock_clock: trio.testing.MockClock) -> None:
    book = LiveBook(retain=300.0)
    live = live_order("ord-1", status=BrokerOrderStatus.FILLED)
    book.add(live)
    book.finished(live)
    assert live.finished_at == trio.current_time()
    assert book.open_count() == 0
    mock_clock.jump(299.0)
    assert book.evict_finished() == 0
    assert_present(book, live)
    mock_clock.jump(2.0)
    assert book.evict_finished() == 1
    assert_absent(book, live)
    assert len(book) == 0
    assert book.evict_finished() == 0


async def test_only_the_last_keep_finished_executions_are_kept(mock_clock: trio.testing.MockClock) -> None:
    book = LiveBook(retain=300.0, keep=2)
    resting = live_order("resting")
    book.add(resting)
    done = [live_order(f"ord-{i}", status=BrokerOrderStatus.FILLED) for i in range(4)]
    for live in done:
        book.add(live)
        book.finished(live)  # within retain: only the count forgets the oldest
        mock_clock.jump(1.0)
    for live in done[:2]:
        assert_absent(book, live)
    for live in (*done[2:], resting):
        assert_present(book, live)
    assert len(book) == 3 and book.open_count() == 1


async def test_a_finished_execution_holding_an_unsaved_answer_is_kept(
    mock_clock: trio.testing.MockClock,
) -> None:
    book = LiveBook(retain=10.0, keep=1)
    held, later = (live_order(f"ord-{i}", status=BrokerOrderStatus.FILLED) for i in range(2))
    held.unsaved_response = (held.order.order_id, object())  # type: ignore[assignment]
    for live in (held, later):
        book.add(live)
        book.finished(live)
    mock_clock.jump(60.0)
    assert book.evict_finished() == 0  # the answer waits for the database: the router gives it
    assert_present(book, held)
    held.unsaved_response = None
    assert book.evict_finished() == 2


async def test_open_execution_is_never_evicted(mock_clock: trio.testing.MockClock) -> None:
    book = LiveBook(retain=1.0)
    live = live_order("ord-1")
    book.add(live)
    mock_clock.jump(10_000.0)
    assert book.evict_finished() == 0
    assert_present(book, live)
    assert book.open_count() == 1


async def test_finishing_twice_keeps_the_first_time(mock_clock: trio.testing.MockClock) -> None:
    book = LiveBook(retain=10.0)
    live = live_order("ord-1")
    book.add(live)
    book.finished(live)
    first = live.finished_at
    mock_clock.jump(5.0)
    book.finished(live)
    assert live.finished_at == first
    assert book.open_count() == 0
    mock_clock.jump(6.0)
    assert book.evict_finished() == 1


async def test_finished_execution_with_queued_events_is_not_evicted(
    mock_clock: trio.testing.MockClock,
) -> None:
    book = LiveBook(retain=10.0)
    live = live_order("ord-1", status=BrokerOrderStatus.CANCELED)
    book.add(live)
    book.finished(live)
    live.queue.append(OrderCanceled(client_order_id=live.order.client_order_id, at=T0))
    mock_clock.jump(60.0)
    assert book.evict_finished() == 0
    assert_present(book, live)
    live.queue.clear()
    assert book.evict_finished() == 1
    assert_absent(book, live)


async def test_finished_execution_being_drained_is_not_evicted(mock_clock: trio.testing.MockClock) -> None:
    book = LiveBook(retain=10.0)
    live = live_order("ord-1", status=BrokerOrderStatus.FILLED)
    book.add(live)
    book.finished(live)
    live.draining = True
    mock_clock.jump(60.0)
    assert book.evict_finished() == 0
    assert_present(book, live)
    live.draining = False
    assert book.evict_finished() == 1


async def test_eviction_takes_only_the_executions_older_than_retain(
    mock_clock: trio.testing.MockClock,
) -> None:
    book = LiveBook(retain=100.0)
    old, middle, young, still_open = (live_order(f"ord-{i}") for i in range(4))
    for live in (old, middle, young, still_open):
        book.add(live)
    book.finished(old)
    mock_clock.jump(50.0)
    book.finished(middle)
    mock_clock.jump(40.0)
    book.finished(young)
    mock_clock.jump(61.0)  # old: 151 s, middle: 101 s, young: 61 s
    assert book.evict_finished() == 2
    assert_absent(book, old)
    assert_absent(book, middle)
    assert_present(book, young)
    assert_present(book, still_open)
    assert book.open_count() == 1
    assert len(book) == 2


async def test_evicting_an_old_attempt_keeps_the_new_attempt_of_the_same_order(
    mock_clock: trio.testing.MockClock,
) -> None:
    book = LiveBook(retain=10.0)
    first, retry = live_order("ord-1", attempt=1), live_order("ord-1", attempt=2)
    book.add(first)
    book.finished(first)
    book.add(retry)
    mock_clock.jump(11.0)
    assert book.evict_finished() == 1
    assert book.by_execution(first.order.id) is None
    assert book.by_client_order(first.order.client_order_id) is None
    assert_present(book, retry)


async def test_evicted_execution_can_be_added_again(mock_clock: trio.testing.MockClock) -> None:
    book = LiveBook(retain=10.0)
    live = live_order("ord-1", status=BrokerOrderStatus.FILLED)
    book.add(live)
    book.finished(live)
    mock_clock.jump(11.0)
    assert book.evict_finished() == 1
    reloaded = LiveExecution(live.order)
    book.add(reloaded)
    assert_present(book, reloaded)
    assert book.open_count() == 1
