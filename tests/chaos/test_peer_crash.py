"""Scenario: two daemons share one database and one queue group (distinct instance ids, state
directories and REST ports; the same nats-server and PostgreSQL); one is killed (SIGKILL) in the
middle of a flood.

Within 30 s the survivor must take over what the dead one left: every routed_orders row gets its
answer and no attempt stays PENDING; the OMS's retries of the dead daemon's orders (they reach
the survivor through the queue group) get answers. Nothing lost, sent twice or left out of the
stream."""

from __future__ import annotations

import time

import psycopg
import pytest

from daemon.servers import NatsServer
from tests.chaos.broker import SharedAlpaca
from tests.chaos.ledger import poll, read_ledger
from tests.chaos.scenario import (
    RecordFigures,
    SpawnDaemon,
    Unresolved,
    assert_promises,
    chaos_orders,
    settle_and_count,
    start_flood,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

#: What the survivor gets to answer the dead daemon's claims and reconcile its attempts.
TAKEOVER_WITHIN_S = 30.0
#: The OMS's retries of the dead daemon's orders then get this long to fetch the answers
#: recorded by the takeover (a retry is due within its 1 s backoff; the answer is read at once).
OMS_AFTER_TAKEOVER_S = 3.0


def claims_resolved(database_url: str) -> bool | None:
    """True once every claim has an answer and no attempt is PENDING (None until then)."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM routed_orders WHERE response IS NULL),"
            " (SELECT count(*) FROM broker_orders WHERE status = 'PENDING')"
        ).fetchone()
    return True if row is not None and not any(row) else None


def test_peer_kill_9_in_a_flood_survivor_answers_its_claims_within_30s(
    broker: SharedAlpaca | None,  # first: set up before the daemons, torn down after them
    spawn_daemon: SpawnDaemon,
    private_nats_server: NatsServer,
    chaos_database: str,
    record_figures: RecordFigures,
) -> None:
    url = private_nats_server.url
    doomed = spawn_daemon("chaos-peer-a", broker=broker)
    survivor = spawn_daemon("chaos-peer-b", broker=broker)
    flood = start_flood(url, chaos_orders("peer"))

    answered_at_kill, sent_at_kill = flood.answered, flood.sent
    fault_at = time.monotonic()
    exit_code = doomed.kill()
    flood.finish_by(fault_at + TAKEOVER_WITHIN_S + OMS_AFTER_TAKEOVER_S)
    resolved, waited = poll(lambda: claims_resolved(chaos_database), TAKEOVER_WITHIN_S - 0.5)
    at_deadline = read_ledger(chaos_database)
    flood.join()

    figures = settle_and_count(
        "peer kill -9 (2 daemons)" + (" (alpaca)" if broker else ""),
        [flood],
        chaos_database,
        url,
        restored_at=fault_at,
        settle_by=time.monotonic() + 3.0,
        broker=broker,
    )
    figures.extra.update(
        exit_code=exit_code,
        survivor_alive=survivor.alive,
        in_flight_at_kill=sent_at_kill - answered_at_kill,
        answered_before_kill=answered_at_kill,
        takeover_s=round(waited, 2) if resolved else None,
        stranded_at_30s=len(at_deadline.stranded),
        pending_attempts_at_30s=len(at_deadline.pending_attempts),
    )
    record_figures(figures)

    assert exit_code == -9
    assert survivor.alive, "the surviving daemon exited:\n" + "\n".join(survivor.log().splitlines()[-25:])
    assert_promises(figures)
    if not resolved:
        raise Unresolved(
            f"{TAKEOVER_WITHIN_S:.0f}s after its peer died the survivor still left "
            f"{len(at_deadline.stranded)} claims without an answer and "
            f"{len(at_deadline.pending_attempts)} attempts PENDING (e.g. {at_deadline.stranded[:3]}); "
            f"all resolved {figures.extra['settled_after_flood_s']}s after the flood"
        )
