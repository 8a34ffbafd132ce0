"""The execution engine against real PostgreSQL, with a probe broker adapter: write before send,
idempotency under concurrency, unknown outcomes reconciled without a resend, fills persisted and
queued for publication exactly once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import trio

from adapters.base import BrokerAck, BrokerOrderSnapshot, BrokerRejected, OutcomeUnknown, SubmitRequest
from api.capabilities import Capabilities
from api.contracts import CommissionStructure, GetExecutionRequest
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus, ExecutionStatus, RoutingStatus
from api.events import AnyBrokerEvent, OrderFilled
from nursery.engine import ExecutionEngine
from tests.support.engine_stack import AaplMarket, aapl_order, engine_stack
from tests.support.polling import condition, wait_until

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


class ProbeBroker:
    """A broker adapter that records, at the moment `submit` is called, what another database
    session can see of the order; its behaviour per call is scripted by the test."""

    broker_id = "probe"
    capabilities = Capabilities(frozenset({AssetClass.EQUITY}), frozenset(BrokerFeature))
    commission = CommissionStructure(base_rate=Decimal("0.0001"))
    outlives_daemon = True  # a broker outside the daemon

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.submits: list[SubmitRequest] = []
        self.visible_at_submit: list[Any] = []
        self.outcome = "accept"
        self.placed: dict[str, BrokerOrderSnapshot] = {}
        self.events: trio.MemorySendChannel[AnyBrokerEvent] | None = None
        self.queries_hang = False
        self.query_count = 0

    async def run(
        self,
        events: trio.MemorySendChannel[AnyBrokerEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.events = events
        task_status.started()
        await trio.sleep_forever()

    def _visible(self, client_order_id: str) -> Any:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(
                "SELECT bo.order_id, bo.broker_id, bo.status, ro.response IS NULL"
                " FROM broker_orders bo JOIN routed_orders ro USING (order_id)"
                " WHERE bo.client_order_id = %s",
                (client_order_id,),
            ).fetchone()

    async def submit(self, request: SubmitRequest) -> BrokerAck:
        self.submits.append(request)
        self.visible_at_submit.append(await trio.to_thread.run_sync(self._visible, request.client_order_id))
        if self.outcome == "reject":
            raise BrokerRejected("insufficient buying power")
        snapshot = BrokerOrderSnapshot(
            client_order_id=request.client_order_id,
            broker_order_id=f"B-{len(self.submits)}",
            status=BrokerOrderStatus.ACCEPTED,
            filled_quantity=Decimal(0),
        )
        if self.outcome == "lost_then_silent":  # never reached it, and queries hang from now on
            self.queries_hang = True
            raise OutcomeUnknown("connection reset before the request was sent")
        if self.outcome == "lost":  # the request never reached the broker
            raise OutcomeUnknown("connection reset before the request was sent")
        self.placed[request.client_order_id] = snapshot
        if self.outcome == "unknown":  # the broker took it, but the answer was lost
            raise OutcomeUnknown("read timeout")
        await trio.sleep(0.01)  # a real round trip: concurrent duplicates overlap it
        return BrokerAck(snapshot.broker_order_id, NOW)

    async def heartbeat(self) -> None:
        await trio.lowlevel.checkpoint()

    async def cancel(self, client_order_id: str) -> None:
        raise NotImplementedError

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        self.query_count += 1
        if self.queries_hang:
            await trio.sleep_forever()
        return self.placed.get(client_order_id)


@pytest.fixture
async def stack(migrated_database_url: str) -> AsyncIterator[tuple[ExecutionEngine, ProbeBroker, Any]]:
    broker = ProbeBroker(migrated_database_url)
    async with engine_stack(
        migrated_database_url, [broker], AaplMarket(), deadline=2.0, recover=False, reconcile_budget=1.0
    ) as built:
        yield built.engine, broker, built.published


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


async def test_order_broker_and_client_order_id_are_committed_before_the_broker_is_called(stack: Any) -> None:
    engine, broker, _ = stack
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.ACCEPTED
    (request,) = broker.submits
    # Seen from another session while the broker call was in progress: committed, PENDING,
    # with the broker and the client order id the broker received; the answer not yet stored.
    assert broker.visible_at_submit == [(order_id, "probe", "PENDING", True)]
    assert request.client_order_id.startswith("bis-")


@pytest.mark.parametrize("outlives_daemon", [True, False])
async def test_an_ack_is_written_before_the_reply_only_when_the_broker_dies_with_the_daemon(
    stack: Any, outlives_daemon: bool
) -> None:
    """A broker that outlives the daemon can tell the answer again after a crash: its ack is
    written after the reply. One that dies with it (a simulated venue) cannot: the OMS hears
    ACCEPTED only once the ack and the answer are committed."""
    engine, broker, _ = stack
    broker.outlives_daemon = outlives_daemon
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.ACCEPTED
    # Read at once, with no checkpoint in between: a deferred write has not run yet.
    (request,) = broker.submits
    committed = broker._visible(request.client_order_id)
    if outlives_daemon:
        assert committed == (order_id, "probe", "PENDING", True)
    else:
        assert committed == (order_id, "probe", "ACCEPTED", False)


async def test_concurrent_duplicates_reach_the_broker_once(stack: Any) -> None:
    engine, broker, _ = stack
    order_id = new_id()
    responses: list[Any] = []

    async def send() -> None:
        responses.append(await engine.route_order(aapl_order(order_id)))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(send)
    assert len(broker.submits) == 1
    assert len({r.routing_id for r in responses}) == 1
    assert all(r == responses[0] for r in responses)


async def test_rejection_is_answered_and_persisted(stack: Any) -> None:
    engine, broker, publish = stack
    broker.outcome = "reject"
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.REJECTED
    assert response.rejection_reason == "probe: insufficient buying power"
    details = await engine.get_execution(GetExecutionRequest(order_id=order_id))
    assert details.status.value == "REJECTED"
    update = publish.receive_nowait()
    assert update.subject == f"trading.broker.v1.executions.probe.REJECTED.{order_id}"


async def test_unknown_outcome_is_reconciled_and_adopted_without_a_resend(stack: Any) -> None:
    engine, broker, _ = stack
    broker.outcome = "unknown"  # the broker took it; the answer was lost
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.ACCEPTED
    assert response.broker_order_id == "B-1"
    assert broker.query_count >= 1
    assert len(broker.submits) == 1  # found by query, never sent again


async def test_unknown_outcome_for_an_order_the_broker_never_got_is_rejected_not_resent(stack: Any) -> None:
    engine, broker, _ = stack
    broker.outcome = "lost"
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.REJECTED  # the only broker, provably without it
    assert "never reached the broker" in (response.rejection_reason or "")
    assert len(broker.submits) == 1


async def test_unknown_outcome_past_the_budget_is_pending_and_resolved_in_the_background(stack: Any) -> None:
    engine, broker, publish = stack
    broker.outcome = "lost_then_silent"
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    assert response.status is RoutingStatus.PENDING
    asked = broker.query_count
    await wait_until(
        lambda: condition(lambda: broker.query_count),
        lambda count: count > asked,
        what="the background reconciliation asking the broker again",
    )
    details = await engine.get_execution(GetExecutionRequest(order_id=order_id))
    assert details.status is ExecutionStatus.PENDING  # still asking
    broker.queries_hang = False  # the broker answers again: it never got the order
    with trio.fail_after(10):
        update = await publish.receive()
    assert b'"status":"REJECTED"' in update.payload
    assert len(broker.submits) == 1


async def test_a_fill_is_persisted_and_queued_for_publication_once(
    stack: Any, migrated_database_url: str
) -> None:
    engine, broker, publish = stack
    order_id = new_id()
    response = await engine.route_order(aapl_order(order_id))
    await engine.wait_settled()  # the ack is written (and published) just after the reply
    accepted = publish.receive_nowait()
    assert accepted.msg_id == f"{response.execution_id}:1"
    client_order_id = broker.submits[0].client_order_id
    fill = OrderFilled(client_order_id, NOW, "X-1", Decimal(40), Decimal("190.25"), Decimal("0.76"), "PROBE")
    assert broker.events is not None
    await broker.events.send(fill)
    await broker.events.send(fill)  # the broker repeats itself (stream replay)
    with trio.fail_after(5):
        update = await publish.receive()
    assert update.msg_id == f"{response.execution_id}:2"
    assert b'"status":"PARTIALLY_FILLED"' in update.payload
    await engine.wait_settled()  # the repeat is applied too
    with pytest.raises(trio.WouldBlock):
        publish.receive_nowait()  # the repeat changed nothing and published nothing
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT f.quantity, f.price, bo.filled_quantity, bo.fees FROM order_fills f"
            " JOIN broker_orders bo ON bo.id = f.broker_order_id WHERE bo.order_id = %s",
            (order_id,),
        ).fetchall()
    assert rows == [(Decimal(40), Decimal("190.25"), Decimal(40), Decimal("0.76"))]


async def test_a_repeat_gets_the_first_answer_byte_for_byte_even_before_it_is_written(stack: Any) -> None:
    engine, _, _ = stack
    order_id = new_id()
    first = await engine.route_order(aapl_order(order_id))
    again = await engine.route_order(aapl_order(order_id))  # the ack's write may still be queued
    assert msgspec.json.encode(again) == msgspec.json.encode(first)
    await engine.wait_settled()
    third = await engine.route_order(aapl_order(order_id))  # from the database now
    assert msgspec.json.encode(third) == msgspec.json.encode(first)


async def test_a_burst_of_fills_for_many_executions_is_written_in_one_round(
    migrated_database_url: str,
) -> None:
    """Broker events that arrive together are applied in one round: one writer submission for
    all of their executions (not one per event), each execution's updates still in order."""
    broker = ProbeBroker(migrated_database_url)
    async with engine_stack(
        migrated_database_url, [broker], AaplMarket(), deadline=2.0, recover=False, drain=True
    ) as built:
        engine = built.engine
        responses = [await engine.route_order(aapl_order(new_id())) for _ in range(20)]
        await engine.wait_settled()
        before = built.store.writer_stats.submissions
        assert broker.events is not None
        for i, request in enumerate(broker.submits):  # all queued before the engine runs again
            for n in (1, 2):
                broker.events.send_nowait(
                    OrderFilled(
                        request.client_order_id,
                        NOW,
                        f"X-{i}-{n}",
                        Decimal(50),
                        Decimal("190.25"),
                        Decimal(0),
                        "P",
                    )
                )
        await engine.wait_settled()
        assert built.store.writer_stats.submissions - before <= 2  # a round, maybe a straggler
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT bo.status, bo.filled_quantity, count(f.id) FROM broker_orders bo"
            " JOIN order_fills f ON f.broker_order_id = bo.id WHERE bo.id = ANY(%s)"
            " GROUP BY bo.id, bo.status, bo.filled_quantity",
            ([r.execution_id for r in responses],),
        ).fetchall()
        sequences = conn.execute(
            "SELECT execution_id, array_agg(sequence ORDER BY sequence) FROM execution_events"
            " WHERE execution_id = ANY(%s) GROUP BY execution_id",
            ([r.execution_id for r in responses],),
        ).fetchall()
    assert sorted(rows) == [("FILLED", Decimal(100), 2)] * 20
    assert all(seqs == [1, 2, 3] for _, seqs in sequences) and len(sequences) == 20
