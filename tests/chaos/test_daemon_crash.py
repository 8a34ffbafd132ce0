"""Scenario: the daemon is killed (SIGKILL) in the middle of a flood, with orders in flight at
the brokers, and started again; the OMS retries every order with the same orderId.

Every order must get a final answer (no 503 loop), none may be held by a broker twice (the
database's attempts and GetExecution agree), every answer must be the one recorded and stay the
same when the OMS asks again, and every state change in execution_events must be in the stream
BROKER_EXECUTIONS."""

from __future__ import annotations

import time

import pytest

from api import subjects
from daemon.servers import NatsServer
from tests.chaos.broker import SharedAlpaca
from tests.chaos.ledger import execution_attempts_held
from tests.chaos.scenario import (
    IN_FLIGHT,
    REQUEST_TIMEOUT,
    RecordFigures,
    SpawnDaemon,
    assert_promises,
    chaos_orders,
    settle_and_count,
    start_flood,
)
from tests.support.flood import Flood

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

#: After the restart, the flood gets this long to have every order answered.
ANSWER_WITHIN_S = 20.0
#: The second pass (every order again) gets this long: each repeat has a recorded answer to return.
REPEAT_WITHIN_S = 6.0
#: Then (26 s after the restart) the database gets this long to show every claim answered, no
#: attempt PENDING and the outbox published.
SETTLE_AFTER_S = 5.0


def test_daemon_kill_9_in_a_flood_then_restart_answers_every_order_and_sends_none_twice(
    broker: SharedAlpaca | None,  # first: set up before the daemons, torn down after them
    spawn_daemon: SpawnDaemon,
    private_nats_server: NatsServer,
    chaos_database: str,
    record_figures: RecordFigures,
) -> None:
    url = private_nats_server.url
    daemon = spawn_daemon("chaos-crash", broker=broker)
    orders = chaos_orders("crash")
    flood = start_flood(url, orders)

    answered_at_kill, sent_at_kill = flood.answered, flood.sent
    fault_at = time.monotonic()
    assert flood.started_at is not None
    rate = answered_at_kill / (fault_at - flood.started_at)
    exit_code = daemon.kill()
    daemon.start()
    restored_at = time.monotonic()
    flood.finish_by(restored_at + ANSWER_WITHIN_S)
    flood.join()

    # The OMS sends every order again (same orderId): each must come back with its first answer.
    again = Flood(
        url, orders, in_flight=IN_FLIGHT, request_timeout=REQUEST_TIMEOUT, give_up_after=REPEAT_WITHIN_S
    )
    again.start().join()
    changed = [
        key
        for key, trace in flood.traces.items()
        if trace.status is not None
        and again.traces[key].status is not None
        and again.traces[key].answer.get("routingId") != trace.answer.get("routingId")
    ]
    executions = Flood(
        url,
        [(key, {"orderId": key}) for key, _ in orders],
        subject=subjects.GET_EXECUTION,
        in_flight=32,
        give_up_after=REPEAT_WITHIN_S,
    ).start()
    executions.join()
    held_twice = sorted(key for key, held in execution_attempts_held(executions).items() if held > 1)

    figures = settle_and_count(
        "daemon kill -9" + (" (alpaca)" if broker else ""),
        [flood, again],
        chaos_database,
        url,
        restored_at=restored_at,
        settle_by=time.monotonic() + SETTLE_AFTER_S,
        broker=broker,
    )
    figures.extra.update(
        exit_code=exit_code,
        in_flight_at_kill=sent_at_kill - answered_at_kill,
        answered_before_kill=answered_at_kill,
        restart_s=round(restored_at - fault_at, 2),
        answers_per_s_before_kill=round(rate, 1),
        first_pass_answered=flood.answered,
        answers_changed_on_retry=len(changed),
        get_execution_held_twice=len(held_twice),
    )
    figures.examples.update(answers_changed_on_retry=changed[:5], get_execution_held_twice=held_twice[:5])
    record_figures(figures)

    assert exit_code == -9
    more = []
    if changed:
        more.append(f"{len(changed)} orders answered differently when sent again: {changed[:5]}")
    if held_twice:
        more.append(f"GetExecution shows {len(held_twice)} orders held twice: {held_twice[:5]}")
    assert_promises(figures, more)
