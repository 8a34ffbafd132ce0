"""Scenario: the nats-server is killed (SIGKILL) in the middle of a flood and started again 2 s
later on the same port with the same JetStream store.

No execution update may be lost: every row of execution_events must end up in the stream
BROKER_EXECUTIONS (the outbox is published again until JetStream acknowledges). The OMS retries
what got "no responders" or no answer, with the same orderId; every order must be answered."""

from __future__ import annotations

import time

import pytest

from daemon.servers import NatsServer
from tests.chaos.scenario import (
    RecordFigures,
    SpawnDaemon,
    assert_promises,
    chaos_orders,
    settle_and_count,
    start_flood,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

#: The deliberate outage.
OUTAGE_S = 2.0
#: After the nats-server is back, the flood gets this long to have every order answered.
ANSWER_WITHIN_S = 25.0


def test_nats_server_kill_and_restart_in_a_flood_loses_no_execution_update(
    spawn_daemon: SpawnDaemon,
    private_nats_server: NatsServer,
    chaos_database: str,
    record_figures: RecordFigures,
) -> None:
    url = private_nats_server.url
    daemon = spawn_daemon("chaos-nats")
    orders = chaos_orders("nats")
    flood = start_flood(url, orders)

    answered_at_kill = flood.answered
    fault_at = time.monotonic()
    private_nats_server.kill()
    time.sleep(OUTAGE_S)  # the deliberate outage
    private_nats_server.start()
    restored_at = time.monotonic()
    flood.finish_by(restored_at + ANSWER_WITHIN_S)
    flood.join()

    figures = settle_and_count("nats-server kill -9", [flood], chaos_database, url, restored_at=restored_at)
    figures.extra.update(
        daemon_alive=daemon.alive,
        outage_s=round(restored_at - fault_at, 2),
        answered_before_kill=answered_at_kill,
    )
    record_figures(figures)

    assert daemon.alive, "the daemon exited when the nats-server restarted:\n" + "\n".join(
        daemon.log().splitlines()[-25:]
    )
    assert_promises(figures)
