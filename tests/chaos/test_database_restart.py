"""Scenario: PostgreSQL stops in the middle of a flood and comes back 4 s later on the same port:
`pg_ctl stop -m fast` (an orderly stop: sessions terminated, checkpoint) or `-m immediate` (a
crash: every backend killed, WAL replayed at the next start).

The daemon must stay alive through it (invariant 8: a failing dependency is a state, not an exit)
and every order must get a final answer: a 503 ("database unavailable; retry with the same
orderId") is retryable, and the OMS retries with backoff until it gets one. Nothing may be
stranded, lost, sent twice or left out of the stream."""

from __future__ import annotations

import time

import httpx
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
from tests.support.postgres import RestartablePostgres

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

#: The deliberate outage: long enough for every pooled connection to be found dead.
OUTAGE_S = 4.0
#: After PostgreSQL is back, the flood gets this long to have every order answered.
ANSWER_WITHIN_S = 25.0
#: A daemon that died does not come back by itself: the flood then gets only this long more.
AFTER_DEATH_S = 3.0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_in_a_flood_keeps_the_daemon_alive_and_answers_every_order(
    mode: str,
    spawn_daemon: SpawnDaemon,
    private_nats_server: NatsServer,
    postgres: RestartablePostgres,
    chaos_database: str,
    record_figures: RecordFigures,
) -> None:
    url = private_nats_server.url
    daemon = spawn_daemon("chaos-db")
    orders = chaos_orders("db")
    flood = start_flood(url, orders)

    answered_at_stop = flood.answered
    fault_at = time.monotonic()
    postgres.stop(mode)
    stopped_at = time.monotonic()
    time.sleep(OUTAGE_S)  # the deliberate outage
    answered_during_outage = flood.answered - answered_at_stop
    during = httpx.get(f"{daemon.rest_url}/ready", timeout=5)  # not ready, and says why
    postgres.start()
    restored_at = time.monotonic()
    flood.finish_by(restored_at + ANSWER_WITHIN_S)

    died_at: float | None = None
    while not flood.done:
        if died_at is None and not daemon.alive:
            died_at = time.monotonic()
            flood.finish_by(died_at + AFTER_DEATH_S)
        time.sleep(0.1)
    flood.join()
    alive = daemon.alive
    exit_code = None if alive or daemon.proc is None else daemon.proc.returncode

    figures = settle_and_count(
        f"postgres -m {mode}",
        [flood],
        chaos_database,
        url,
        restored_at=restored_at,
        settle_by=time.monotonic() + (15.0 if alive else 0.0),
    )
    figures.extra.update(
        daemon_alive=alive,
        daemon_exit_code=exit_code,
        daemon_died_after_stop_s=round(died_at - fault_at, 2) if died_at is not None else None,
        pg_ctl_stop_s=round(stopped_at - fault_at, 2),
        outage_s=round(restored_at - fault_at, 2),
        answered_before_stop=answered_at_stop,
        answered_during_outage=answered_during_outage,
    )
    record_figures(figures)

    assert during.status_code == 503, during.text
    assert during.json()["checks"]["database"] != "ok", during.text
    after = httpx.get(f"{daemon.rest_url}/ready", timeout=5)
    assert after.status_code == 200, after.text
    assert alive, f"the daemon exited (code {exit_code}) when PostgreSQL restarted; log tail:\n" + "\n".join(
        daemon.log().splitlines()[-25:]
    )
    assert_promises(figures)
