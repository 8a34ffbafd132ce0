"""The FIX store's group writes against the real database: a burst of outgoing numbers and
messages in one commit (or nothing), a batch of reports once per ExecID, and the inbound mark."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from adapters.fix import FixStore, SessionConflict
from adapters.fix.orders import ExecutionReport
from adapters.fix.store import InboundMark, InboundReport, OutgoingRecord
from tests.support.fix_acceptor import FixAcceptor, fix_config_for

D = Decimal
NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


@pytest.fixture
async def store(migrated_database_url: str) -> AsyncIterator[FixStore]:
    token = secrets.token_hex(4).upper()
    config = fix_config_for(FixAcceptor(comp_id=f"BRK{token}", client_comp_id=f"BIS{token}", port=1))
    opened = FixStore(migrated_database_url, config)
    try:
        await opened.claim_session()
        await opened.load_session()
        yield opened
    finally:
        await opened.aclose()


def numbers(database_url: str, store: FixStore) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT next_out_seq, next_in_seq,"
            " (SELECT count(*) FROM fix_outbound_messages m WHERE m.session_id = s.session_id)"
            " FROM fix_sessions s WHERE session_id = %s",
            (store.session_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def new_order(seq: int, client_order_id: str) -> OutgoingRecord:
    return OutgoingRecord(seq, "D", f"8=FIX.4.4|11={client_order_id}|".encode(), client_order_id, NOW)


def heartbeat(seq: int) -> OutgoingRecord:
    return OutgoingRecord(seq, "0", None, None, NOW)


def fill(exec_id: str, client_order_id: str = "o-1", seq: int = 5) -> InboundReport:
    report = ExecutionReport(
        cl_ord_id=client_order_id,
        exec_id=exec_id,
        exec_type="F",
        ord_status="1",
        cum_qty=D(1),
        transact_time=NOW,
        seq=seq,
        order_id="B-1",
        last_qty=D(1),
        last_px=D("99.5"),
        avg_px=D("99.5"),
        commission=D("0.25"),
    )
    return InboundReport(report, client_order_id, "XTST", NOW)


async def test_a_burst_commits_every_number_and_its_stored_messages_at_once(
    store: FixStore, migrated_database_url: str
) -> None:
    burst = [heartbeat(1), new_order(2, "b-1"), new_order(3, "b-2")]
    assert await store.record_outgoing(1, burst) == []
    assert numbers(migrated_database_url, store) == (4, 1, 2)  # session messages: number only
    stored = await store.outgoing_between(1, 1, 3)
    assert sorted(stored) == [2, 3] and stored[3].client_order_id == "b-2"


async def test_a_burst_with_an_order_already_sent_commits_nothing_and_names_it(
    store: FixStore, migrated_database_url: str
) -> None:
    assert await store.record_outgoing(1, [new_order(1, "d-1")]) == []
    refused = await store.record_outgoing(1, [new_order(2, "d-2"), new_order(3, "d-1"), heartbeat(4)])
    assert refused == ["d-1"]
    assert numbers(migrated_database_url, store) == (2, 1, 1)  # neither the numbers nor d-2
    assert await store.record_outgoing(1, [new_order(2, "d-2"), heartbeat(3)]) == []  # renumbered
    assert numbers(migrated_database_url, store) == (4, 1, 2)


async def test_a_burst_that_does_not_start_at_the_next_number_is_a_conflict(
    store: FixStore, migrated_database_url: str
) -> None:
    assert await store.record_outgoing(1, [heartbeat(1), heartbeat(2)]) == []
    with pytest.raises(SessionConflict):
        await store.record_outgoing(1, [new_order(2, "c-1")])  # 2 is used already
    with pytest.raises(SessionConflict):
        await store.record_outgoing(2, [heartbeat(3)])  # not the current epoch
    assert numbers(migrated_database_url, store) == (3, 1, 0)


async def test_a_batch_records_each_exec_id_once_and_its_fees(store: FixStore) -> None:
    first = await store.record_executions([fill("x-1"), fill("x-2"), fill("x-1")], None)
    assert [r.new for r in first] == [True, True, False]  # twice in one batch: new once
    assert all(r.fee == D("0.25") and r.fee_priced for r in first)
    again = await store.record_executions([fill("x-2"), fill("x-3")], None)
    assert [r.new for r in again] == [False, True]
    fills = await store.fills_since(NOW)
    assert [f.fill_id for f in fills] == ["x-1", "x-2", "x-3"]  # arrival order kept


async def test_the_mark_only_rises_and_set_next_in_sets_it(
    store: FixStore, migrated_database_url: str
) -> None:
    await store.record_executions([fill("m-1")], InboundMark(1, 10))
    assert numbers(migrated_database_url, store)[1] == 10
    await store.record_executions([], InboundMark(1, 7))  # an older mark committed late
    assert numbers(migrated_database_url, store)[1] == 10
    await store.set_next_in(1, 2)  # the counterparty started again
    assert numbers(migrated_database_url, store)[1] == 2
    with pytest.raises(SessionConflict):
        await store.record_executions([fill("m-2")], InboundMark(2, 12))
    [recorded] = await store.record_executions([fill("m-2")], None)
    assert not recorded.new  # committed with the conflicting mark: the report is kept
