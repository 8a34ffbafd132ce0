"""The FIX session layer against the acceptor over real TCP, with sequence numbers in the real
database: logon/logout, heartbeats and test requests, gaps both ways, resends, restarts."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import psycopg
import pytest
import trio
import trio.testing

from adapters.base import AuthenticationFailed, ConnectionLost, OutcomeUnknown, SubmitRequest
from adapters.fix import FixBroker, build_fix_broker
from adapters.fix.store import OutgoingRecord
from api.enums import AssetClass, BrokerOrderStatus, OrderType, Side, TimeInForce
from api.events import AnyBrokerEvent, OrderFilled
from tests.support.fix_acceptor import FixAcceptor, fix_config_for, run_until_lost, running

D = Decimal


def limit_order(client_order_id: str, quantity: str = "10", price: str = "99.5") -> SubmitRequest:
    return SubmitRequest(
        client_order_id=client_order_id,
        account_id="acct-1",
        symbol="AAPL",
        asset_class=AssetClass.EQUITY,
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=D(quantity),
        time_in_force=TimeInForce.DAY,
        price=D(price),
    )


def session_numbers(database_url: str, adapter: FixBroker) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT next_out_seq, next_in_seq FROM fix_sessions WHERE session_id = %s",
            (adapter.config.session_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


# --- logon / logout -------------------------------------------------------------------------


async def test_logon_then_logout_exchange_on_stop(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter):
        assert acceptor.logged_on and adapter.session is not None and adapter.session.logged_on
        logon = acceptor.received_of("A")[0]
        assert logon.seq == 1
        assert logon.get(98) == "0" and logon.get(108) == "1"
        assert logon.get(141) is None  # only when configured
    # run was cancelled: our Logout went out and the acceptor's answer came back
    await acceptor.wait_for(lambda: not acceptor.logged_on)
    assert [m.msg_type for m in acceptor.received][-1] == "5"
    assert acceptor.errors == []
    assert adapter.session is None


async def test_numbers_are_persisted_and_continue_on_the_next_logon(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    async with running(adapter):
        pass
    next_out, next_in = session_numbers(migrated_database_url, adapter)
    assert next_out == acceptor.next_in  # everything we sent, the acceptor processed
    assert next_in == acceptor.next_out
    async with running(adapter):
        assert acceptor.received_of("A")[-1].seq == next_out
    assert acceptor.logons == 2 and acceptor.errors == []


async def test_reset_on_logon_starts_both_sides_at_one(
    acceptor: FixAcceptor, migrated_database_url: str
) -> None:
    adapter = build_fix_broker(fix_config_for(acceptor, reset_on_logon=True), migrated_database_url)
    try:
        async with running(adapter):
            pass
        async with running(adapter):
            logons = acceptor.received_of("A")
            assert [m.seq for m in logons] == [1, 1]
            assert all(m.get(141) == "Y" for m in logons)
        assert acceptor.errors == []
    finally:
        await adapter.aclose()


async def test_password_from_the_environment(
    acceptor: FixAcceptor,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    acceptor.password = "s3cret"
    adapter = build_fix_broker(
        fix_config_for(acceptor, password_env="FIX_TEST_PASSWORD"), migrated_database_url
    )
    try:
        send, _ = trio.open_memory_channel[AnyBrokerEvent](1)
        monkeypatch.setenv("FIX_TEST_PASSWORD", "wrong")
        with pytest.raises(AuthenticationFailed, match="invalid password"):
            await adapter.run(send)
        monkeypatch.setenv("FIX_TEST_PASSWORD", "s3cret")
        async with running(adapter):
            assert acceptor.received_of("A")[-1].get(554) == "s3cret"
        monkeypatch.delenv("FIX_TEST_PASSWORD")
        assert "FIX_TEST_PASSWORD" not in os.environ
        with pytest.raises(AuthenticationFailed, match="FIX_TEST_PASSWORD"):
            await adapter.run(send)
    finally:
        await adapter.aclose()
    assert caplog.records and "s3cret" not in caplog.text


async def test_a_second_process_cannot_drive_the_same_session(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    twin = build_fix_broker(adapter.config, migrated_database_url)  # another daemon, same session
    send, _ = trio.open_memory_channel[AnyBrokerEvent](1)
    try:
        async with running(adapter):
            with pytest.raises(ConnectionLost, match="another process drives this FIX session"):
                await twin.run(send)
        async with running(twin):  # the first one has stopped: now it may
            assert acceptor.logons == 2
    finally:
        await twin.aclose()
    assert acceptor.errors == []


async def test_nothing_listening_is_connection_lost(adapter: FixBroker, migrated_database_url: str) -> None:
    with trio.socket.socket() as placeholder:
        await placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    nowhere = build_fix_broker(msgspec.structs.replace(adapter.config, port=port), migrated_database_url)
    send, _ = trio.open_memory_channel[AnyBrokerEvent](1)
    try:
        with pytest.raises(ConnectionLost, match="cannot connect"):
            await nowhere.run(send)
    finally:
        await nowhere.aclose()


# --- heartbeats and test requests -----------------------------------------------------------


async def test_idle_session_sends_heartbeats(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter):
        acceptor.muted = True  # the acceptor's own heartbeats stop; ours must not
        await acceptor.wait_for(
            lambda: any(m.get(112) is None for m in acceptor.received_of("0")), timeout=1.6
        )


async def test_incoming_test_request_is_answered_with_its_id(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        await acceptor._send("1", [(112, "PING-7")])
        await acceptor.wait_for(lambda: any(m.get(112) == "PING-7" for m in acceptor.received_of("0")))


async def test_heartbeat_is_a_test_request_answered(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter):
        await adapter.heartbeat()
        test_id = acceptor.received_of("1")[-1].get(112)
        assert test_id and (112, test_id) in acceptor.sent_of("0")[-1]
        acceptor.muted = True
        with pytest.raises(ConnectionLost, match="unanswered"):
            await adapter.heartbeat()


async def test_silent_counterparty_gets_a_test_request_then_is_dropped(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    acceptor.muted = True  # it answers the Logon, then says nothing at all
    send, _ = trio.open_memory_channel[AnyBrokerEvent](100)
    started = trio.current_time()
    with trio.fail_after(2.5), pytest.raises(ConnectionLost, match="TestRequest unanswered"):
        await adapter.run(send)
    # HeartBtInt (1 s) + grace (0.2 s) of silence, then the TestRequest, then 0.5 s for an answer
    assert trio.current_time() - started >= 1.7
    assert len(acceptor.received_of("1")) == 1


# --- inbound sequence numbers ---------------------------------------------------------------


async def test_inbound_gap_is_recovered_with_a_resend_request_and_gap_fill(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        session = adapter.session
        assert session is not None
        expected = session.next_in
        acceptor.skip_outgoing_seq(3)  # numbers nothing was ever sent under
        await acceptor.send_test_request("after-the-gap")
        await acceptor.wait_for(lambda: bool(acceptor.received_of("2")))
        request = acceptor.received_of("2")[0]
        assert (request.get(7), request.get(16)) == (str(expected), "0")
        await acceptor.wait_for(lambda: session.in_sync and session.next_in == acceptor.next_out)
        await adapter.heartbeat()  # the session carries on
    assert acceptor.errors == []


async def test_an_unanswered_resend_request_is_sent_again(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    acceptor.ignore_resend_requests = 1
    async with running(adapter):
        session = adapter.session
        assert session is not None
        acceptor.skip_outgoing_seq(2)
        await acceptor.send_test_request("after-the-gap")
        await acceptor.wait_for(lambda: session.in_sync and session.next_in == acceptor.next_out, timeout=2.5)
        requests = acceptor.received_of("2")
        assert len(requests) == 2 and requests[0].get(7) == requests[1].get(7)
    assert acceptor.errors == []


async def test_lost_execution_reports_are_resent_and_processed_in_order(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter) as events:
        await adapter.submit(limit_order("gap-1"))
        acceptor.drop_outgoing(2)  # numbered and kept, never written
        await acceptor.fill("gap-1", D(3), D("99.5"))
        await acceptor.fill("gap-1", D(2), D("99.4"))
        await acceptor.fill("gap-1", D(5), D("99.3"))  # arrives first, behind a gap
        fills = [e async for e in _take(events, 4)][1:]
        assert [(f.quantity, f.price) for f in fills if isinstance(f, OrderFilled)] == [
            (D(3), D("99.5")),
            (D(2), D("99.4")),
            (D(5), D("99.3")),
        ]
        assert len(acceptor.received_of("2")) == 1
    assert acceptor.errors == []


async def test_possdup_duplicates_are_ignored(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter) as events:
        await adapter.submit(limit_order("dup-1"))
        await acceptor.fill("dup-1", D(4), D(100))
        [_, fill] = [e async for e in _take(events, 2)]
        assert isinstance(fill, OrderFilled)
        last = acceptor.next_out - 1
        await acceptor.replay(1, last)  # everything again, PossDupFlag=Y, old numbers
        await adapter.heartbeat()  # processed after the replay: the session is still up
        assert events.statistics().current_buffer_used == 0
    assert acceptor.errors == []


async def test_inbound_number_too_low_without_possdup_logs_out(
    acceptor: FixAcceptor, adapter: FixBroker, nursery: trio.Nursery
) -> None:
    async def rewind_after_logon() -> None:
        await acceptor.wait_for(lambda: acceptor.logged_on)
        acceptor.next_out -= 1  # the number of its Logon, again
        await acceptor.send_test_request("too-low")

    nursery.start_soon(rewind_after_logon)
    send, _ = trio.open_memory_channel[AnyBrokerEvent](10)
    with trio.fail_after(2), pytest.raises(ConnectionLost, match="MsgSeqNum too low"):
        await adapter.run(send)
    logout = acceptor.received_of("5")[-1]
    assert (logout.get(58) or "").startswith("MsgSeqNum too low, expecting")


async def test_sequence_reset_in_reset_mode_moves_the_expected_number(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        session = adapter.session
        assert session is not None
        await acceptor.sequence_reset(acceptor.next_out + 10)
        await acceptor.send_test_request("after-reset")
        await acceptor.wait_for(lambda: any(m.get(112) == "after-reset" for m in acceptor.received_of("0")))
        assert session.next_in == acceptor.next_out and session.in_sync
        assert not acceptor.received_of("2")  # a reset is not a gap
    assert acceptor.errors == []


async def test_garbled_message_is_dropped_and_recovered(acceptor: FixAcceptor, adapter: FixBroker) -> None:
    async with running(adapter):
        session = adapter.session
        assert session is not None
        await acceptor.send_garbled()
        assert not any(m.get(112) == "garbled" for m in acceptor.received_of("0"))
        await acceptor.send_test_request("next")
        await acceptor.wait_for(lambda: bool(acceptor.received_of("2")))
        await acceptor.wait_for(lambda: session.in_sync and session.next_in == acceptor.next_out)
        assert not any(m.get(112) == "garbled" for m in acceptor.received_of("0"))
    assert acceptor.errors == []


# --- answering the counterparty's ResendRequest ---------------------------------------------


async def test_resend_request_for_session_messages_is_one_gap_fill(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        session = adapter.session
        assert session is not None
        before = len(acceptor.received)
        last = session.next_out - 1
        await acceptor.send_resend_request(1, 0)
        await acceptor.wait_for(lambda: any(m.msg_type == "4" for m in acceptor.received[before:]))
        [gap_fill] = [m for m in acceptor.received[before:] if m.msg_type == "4"]
        assert gap_fill.seq == 1
        assert gap_fill.get(123) == "Y" and gap_fill.get(43) == "Y" and gap_fill.get(122)
        assert int(gap_fill.get(36) or 0) == last + 1
    assert acceptor.errors == []


async def test_new_order_is_gap_filled_never_resent_but_a_recent_cancel_is(
    acceptor: FixAcceptor, adapter: FixBroker
) -> None:
    async with running(adapter):
        await adapter.submit(limit_order("nos-1"))
        await adapter.cancel("nos-1")
        [new_order] = acceptor.received_of("D")
        [cancel] = acceptor.received_of("F")
        before = len(acceptor.received)
        await acceptor.send_resend_request(1, 0)
        await acceptor.wait_for(lambda: any(m.msg_type == "F" for m in acceptor.received[before:]))
        await adapter.heartbeat()  # everything of the resend has arrived before its answer
        answer = [m for m in acceptor.received[before:] if m.get(43) == "Y"]
        assert not any(m.msg_type == "D" for m in answer)
        assert any(m.msg_type == "4" and m.seq <= new_order.seq < int(m.get(36) or 0) for m in answer), (
            "the NewOrderSingle's number is covered by a gap fill"
        )
        [resent] = [m for m in answer if m.msg_type == "F"]
        assert resent.seq == cancel.seq
        assert resent.get(122) == cancel.get(52)  # OrigSendingTime: when it was first sent
        assert [(t, v) for t, v in resent.fields if t in (11, 41, 55, 54)] == [
            (t, v) for t, v in cancel.fields if t in (11, 41, 55, 54)
        ]
        covered = sorted({m.seq for m in answer})
        assert covered[0] == 1
    assert acceptor.new_order_counts["nos-1"] == 1
    assert acceptor.errors == []


# --- restarts -------------------------------------------------------------------------------


async def test_restart_mid_session_continues_numbers_and_never_duplicates_the_order(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    send, _ = trio.open_memory_channel[AnyBrokerEvent](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_lost, adapter, send)
        await adapter.submit(limit_order("restart-1"))
        await acceptor.fill("restart-1", D(4), D(99))
        await acceptor.wait_for(lambda: adapter.session is not None and adapter.session.in_sync)
        await acceptor.disconnect()  # our process "crashes": no Logout
    # while we are away the broker goes on, numbering what it sends us
    await acceptor.fill("restart-1", D(6), D("98.5"))
    out_before, _ = session_numbers(migrated_database_url, adapter)

    restarted = build_fix_broker(adapter.config, migrated_database_url)  # a new process
    try:
        async with running(restarted) as events:
            assert acceptor.received_of("A")[-1].seq == out_before  # not 1: from PostgreSQL
            [fill] = [e async for e in _take(events, 1)]  # recovered through the resend
            assert isinstance(fill, OrderFilled) and fill.quantity == D(6)
            with pytest.raises(OutcomeUnknown, match="already sent"):
                await restarted.submit(limit_order("restart-1"))
            snapshot = await restarted.query("restart-1")
            assert snapshot is not None
            assert snapshot.status is BrokerOrderStatus.FILLED and snapshot.filled_quantity == D(10)
    finally:
        await restarted.aclose()
    assert acceptor.new_order_counts["restart-1"] == 1
    assert acceptor.errors == []


async def test_numbers_used_but_never_sent_before_a_crash_are_gap_filled(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    async with running(adapter):
        pass
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE fix_sessions SET next_out_seq = next_out_seq + 3 WHERE session_id = %s",
            (adapter.config.session_id,),
        )
    async with running(adapter):
        session = adapter.session
        assert session is not None
        await acceptor.wait_for(lambda: acceptor.next_in == session.next_out)
        assert acceptor.sent_of("2"), "the acceptor saw the gap and asked for a resend"
        await adapter.heartbeat()
    assert acceptor.errors == []


async def _take(events: trio.MemoryReceiveChannel[AnyBrokerEvent], n: int) -> AsyncIterator[AnyBrokerEvent]:
    with trio.fail_after(2):
        for _ in range(n):
            yield await events.receive()


async def test_logon_prunes_what_the_retention_no_longer_keeps(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    filled = msgspec.structs.replace(limit_order("PR-FILLED"), order_type=OrderType.MARKET, price=None)
    async with running(adapter) as events:
        await adapter.submit(filled)  # fills at once: ends
        await adapter.submit(limit_order("PR-OPEN", price="1"))  # rests
        with trio.fail_after(2):
            while not isinstance(await events.receive(), OrderFilled):
                pass
    session = adapter.config.session_id
    aged = "UPDATE {} SET {} = now() - interval '60 days' WHERE session_id = %s"
    with psycopg.connect(migrated_database_url) as conn:  # as if all of it were two months old
        conn.execute(aged.format("fix_outbound_messages", "sent_at"), (session,))  # type: ignore[arg-type]
        conn.execute(aged.format("fix_executions", "received_at"), (session,))  # type: ignore[arg-type]
    async with running(adapter):
        pass  # the logon prunes
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute("SELECT client_order_id FROM fix_executions WHERE session_id = %s", (session,))
        kept = {r[0] for r in rows}
        old = conn.execute(
            "SELECT msg_type, client_order_id FROM fix_outbound_messages"
            " WHERE session_id = %s AND sent_at < now() - interval '30 days'",
            (session,),
        ).fetchall()
    assert kept == {"PR-OPEN"}  # the open order's reports stay, whatever their age
    assert old == [("D", "PR-OPEN")]  # and its NewOrderSingle: it can still be asked about


# --- group commit: bursts out, batches in ----------------------------------------------------


async def test_concurrent_orders_share_commits_and_each_is_stored_before_it_is_sent(
    acceptor: FixAcceptor, adapter: FixBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = adapter._store
    record_outgoing = store.record_outgoing
    bursts: list[list[int]] = []

    async def recording(epoch: int, burst: list[OutgoingRecord]) -> list[str]:
        seqs = [m.seq for m in burst]
        assert not {m.seq for m in acceptor.received} & set(seqs), "on the wire before it was stored"
        refused = await record_outgoing(epoch, burst)
        bursts.append(seqs)
        return refused

    monkeypatch.setattr(store, "record_outgoing", recording)
    async with running(adapter):
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(adapter.submit, limit_order(f"burst-{i}"))
        session = adapter.session
        assert session is not None
        await acceptor.wait_for(lambda: acceptor.next_in == session.next_out)
    numbered = [seq for burst in bursts for seq in burst]
    assert numbered == list(range(numbered[0], numbered[0] + len(numbered)))  # in order, none reused
    assert len(bursts) < 40 and max(len(b) for b in bursts) > 1  # shared commits
    new_orders = acceptor.received_of("D")
    assert sorted(m.get(11) for m in new_orders) == sorted(f"burst-{i}" for i in range(40))
    assert all(m.seq in numbered for m in new_orders) and acceptor.errors == []


async def test_a_sender_cancelled_while_queued_sends_nothing(
    acceptor: FixAcceptor, adapter: FixBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = adapter._store
    record_outgoing = store.record_outgoing
    hold, holding = trio.Event(), trio.Event()

    async def held(epoch: int, burst: list[OutgoingRecord]) -> list[str]:
        if any(m.client_order_id == "held-1" for m in burst):
            holding.set()
            await hold.wait()
        return await record_outgoing(epoch, burst)

    monkeypatch.setattr(store, "record_outgoing", held)
    async with running(adapter), trio.open_nursery() as nursery:
        nursery.start_soon(adapter.submit, limit_order("held-1"))
        await holding.wait()  # the first burst holds the wire
        with trio.move_on_after(0.1) as scope:
            await adapter.submit(limit_order("queued-1"))  # queued behind it, then cancelled
        assert scope.cancelled_caught
        hold.set()
        session = adapter.session
        assert session is not None
        await adapter.heartbeat()
        await acceptor.wait_for(lambda: acceptor.next_in == session.next_out)
    assert [m.get(11) for m in acceptor.received_of("D")] == ["held-1"]
    assert acceptor.errors == []  # no number skipped or reused on the wire


async def test_reports_lost_with_the_mark_behind_them_are_resent_and_recognised(
    acceptor: FixAcceptor, adapter: FixBroker, migrated_database_url: str
) -> None:
    """A crash after the reports were recorded but before the inbound mark was committed (the
    mark is committed at most every second while traffic flows): the next logon asks for them
    again, and each ExecID is recognised, none emitted twice."""
    send, _ = trio.open_memory_channel[AnyBrokerEvent](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_lost, adapter, send)
        await adapter.submit(limit_order("lag-1"))
        await acceptor.fill("lag-1", D(4), D(99))
        await acceptor.fill("lag-1", D(6), D(98))
        await acceptor.wait_for(
            lambda: adapter.session is not None and adapter.session.next_in == acceptor.next_out
        )
        await adapter.open_orders()  # the reports are recorded
        await acceptor.disconnect()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute(  # as if the process died before it committed the mark: back to the logon
            "UPDATE fix_sessions SET next_in_seq = 2 WHERE session_id = %s", (adapter.config.session_id,)
        )
    restarted = build_fix_broker(adapter.config, migrated_database_url)
    try:
        async with running(restarted) as events:
            session = restarted.session
            assert session is not None
            await acceptor.wait_for(lambda: session.in_sync and session.next_in == acceptor.next_out)
            await restarted.heartbeat()
            await trio.testing.wait_all_tasks_blocked()
            assert events.statistics().current_buffer_used == 0  # every report seen before
            fills = await restarted.fills_since(datetime(2000, 1, 1, tzinfo=UTC))
            assert [f.quantity for f in fills if f.client_order_id == "lag-1"] == [D(4), D(6)]
    finally:
        await restarted.aclose()
    assert acceptor.received_of("2"), "the restarted session asked for the reports again"
    assert acceptor.errors == []
