"""The order path end to end: RouteOrder over NATS, fills from the simulated venues, execution
updates on JetStream, state in PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from tests.support import oms
from tests.support.daemon import DaemonProcess
from tests.support.polling import poll_until


def wait_execution(url: str, order_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    reply = poll_until(
        lambda: oms.get_execution(url, orderId=order_id),
        lambda r: r.error_code is None and r.body["status"] == status,
        what=f"execution of {order_id} {status}",
        timeout=timeout,
    )
    return dict(reply.body)


def broker_order_rows(database_url: str, order_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT broker_id, status, client_order_id FROM broker_orders WHERE order_id = %s", (order_id,)
        ).fetchall()


def test_marketable_limit_order_is_accepted_filled_and_published(
    daemon: DaemonProcess, order_id: str
) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, type="LIMIT", price=100000, quantity=5))
    assert reply.error_code is None, reply
    response = reply.body
    assert response["status"] == "ACCEPTED"
    assert response["selectedBroker"] == "sim-cheap"  # cheapest eligible for an equity
    assert response["brokerOrderId"]
    assert response["executionId"]

    execution = wait_execution(daemon.nats_url, order_id, "COMPLETED")
    assert execution["executionId"] == response["executionId"]
    assert Decimal(str(execution["filledQuantity"])) == 5
    fills = execution["fills"]
    assert fills and sum(Decimal(str(f["quantity"])) for f in fills) == 5
    notional = sum(Decimal(str(f["quantity"])) * Decimal(str(f["price"])) for f in fills)
    assert Decimal(str(execution["averagePrice"])) == (notional / 5).quantize(Decimal("0.00000001"))
    assert Decimal(str(execution["fees"])) >= Decimal("0.35")  # sim-cheap's minimum commission
    assert all(f["venue"] == "CHEAP" for f in fills)
    assert execution["endTime"]

    updates = oms.updates_for(daemon.nats_url, order_id, until_status="COMPLETED")
    statuses = [body["status"] for _, body in updates]
    assert statuses[0] == "EXECUTING" and statuses[-1] == "COMPLETED"
    assert [body["sequence"] for _, body in updates] == list(range(1, len(updates) + 1))
    assert all(h["Nats-Msg-Id"] == f"{response['executionId']}:{b['sequence']}" for h, b in updates)


def test_route_same_order_id_twice_returns_first_answer_and_sends_once(
    daemon: DaemonProcess, database_url: str, order_id: str
) -> None:
    first = oms.route(daemon.nats_url, oms.order(order_id))
    second = oms.route(daemon.nats_url, oms.order(order_id))
    assert first.error_code is None
    assert second.raw == first.raw
    assert len(broker_order_rows(database_url, order_id)) == 1


def test_concurrent_duplicates_yield_one_broker_order(
    daemon: DaemonProcess, database_url: str, order_id: str
) -> None:
    replies = oms.run(
        oms.request_many(daemon.nats_url, "trading.broker.v1.RouteOrder", [oms.order(order_id)] * 25)
    )
    assert all(r.error_code is None for r in replies), replies
    assert len({r.raw for r in replies}) == 1
    assert len(broker_order_rows(database_url, order_id)) == 1


def test_duplicates_through_two_daemons_yield_one_broker_order(
    daemon: DaemonProcess, second_daemon: DaemonProcess, database_url: str, order_id: str
) -> None:
    import concurrent.futures

    import httpx

    from tests.support.daemon import TEST_TOKEN

    def send(url: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
        return httpx.post(f"{url}/execution/route", json=oms.order(order_id), headers=headers, timeout=20)

    urls = [daemon.rest_url, second_daemon.rest_url] * 8
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        responses = list(pool.map(send, urls))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert len(broker_order_rows(database_url, order_id)) == 1


def test_same_order_id_with_different_order_is_refused(daemon: DaemonProcess, order_id: str) -> None:
    assert oms.route(daemon.nats_url, oms.order(order_id, quantity=10)).error_code is None
    reply = oms.route(daemon.nats_url, oms.order(order_id, quantity=11))
    assert reply.error_code == 400
    assert "orderId" in reply.field_errors


def test_invalid_order_gets_error_reply_with_every_field_and_writes_nothing(
    daemon: DaemonProcess, database_url: str, order_id: str
) -> None:
    bad = oms.order(order_id, type="STOP_LIMIT", quantity=-3, side="HOLD", timeInForce="NEVER")
    reply = oms.route(daemon.nats_url, bad)
    assert reply.error_code == 400
    assert {"side", "timeInForce", "quantity", "price", "stopPrice"} <= set(reply.field_errors)
    malformed = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.RouteOrder", b"{not json"))
    assert malformed.error_code == 400 and "malformed" in malformed.body["message"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM routed_orders WHERE order_id = %s", (order_id,)).fetchone()
    assert row == (0,)
    assert broker_order_rows(database_url, order_id) == []


def test_unknown_symbol_and_broker_are_field_errors(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, symbol="NOPE", preferredBrokers=["sim-nowhere"]))
    assert reply.error_code == 400
    assert set(reply.field_errors) == {"symbol", "preferredBrokers[0]"}


def test_stop_limit_is_not_routed_to_a_broker_without_it(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(
        daemon.nats_url, oms.order(order_id, type="STOP_LIMIT", price=1, stopPrice=1, side="SELL")
    )
    assert reply.body["status"] == "ACCEPTED"
    assert reply.body["selectedBroker"] == "sim-fast"


def test_preferred_broker_is_honoured(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, preferredBrokers=["sim-fast"]))
    assert reply.body["selectedBroker"] == "sim-fast"


def test_broker_rejection_fails_over_and_the_attempts_explain_it(
    daemon: DaemonProcess, order_id: str
) -> None:
    # preferredBrokers is a preference, not a restriction: a rejection there moves the order on.
    reply = oms.route(daemon.nats_url, oms.order(order_id, preferredBrokers=["sim-reject"]))
    assert reply.body["status"] == "ACCEPTED"
    assert reply.body["selectedBroker"] == "sim-cheap"
    execution = wait_execution(daemon.nats_url, order_id, "COMPLETED")
    attempts = [(a["attempt"], a["brokerId"], a["status"]) for a in execution["attempts"]]
    assert attempts == [(1, "sim-reject", "REJECTED"), (2, "sim-cheap", "COMPLETED")]
    assert execution["attempts"][0]["reason"].startswith("sim-reject:")
    updates = oms.updates_for(daemon.nats_url, order_id, until_status="COMPLETED")
    assert {b["brokerId"] for _, b in updates} == {"sim-cheap"}  # the failed-over attempt is quiet


def test_no_eligible_broker_is_a_rejection_with_reasons(daemon: DaemonProcess, order_id: str) -> None:
    # CRYPTO STOP_LIMIT: sim-cheap lacks STOP_LIMIT, the others do not trade CRYPTO.
    order = oms.order(order_id, symbol="BTC-USD", type="STOP_LIMIT", price=2, stopPrice=2)
    reply = oms.route(daemon.nats_url, order)
    assert reply.body["status"] == "REJECTED"
    reason = reply.body["rejectionReason"]
    assert "sim-cheap: does not support STOP_LIMIT orders" in reason
    assert "sim-fast: does not trade CRYPTO" in reason
    assert oms.route(daemon.nats_url, order).raw == reply.raw  # the answer is recorded
    assert oms.get_execution(daemon.nats_url, orderId=order_id).error_code == 404


def test_partial_fills_then_complete(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, symbol="BTC-USD", quantity=40))
    assert reply.body["status"] == "ACCEPTED"
    execution = wait_execution(daemon.nats_url, order_id, "COMPLETED", timeout=30)
    assert len(execution["fills"]) > 1
    statuses = [b["status"] for _, b in oms.updates_for(daemon.nats_url, order_id, until_status="COMPLETED")]
    assert "PARTIALLY_FILLED" in statuses and statuses[-1] == "COMPLETED"


def test_ioc_limit_that_cannot_fill_is_canceled(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, type="LIMIT", price=1, timeInForce="IOC"))
    assert reply.body["status"] == "ACCEPTED"
    execution = wait_execution(daemon.nats_url, order_id, "CANCELED")
    assert Decimal(str(execution["filledQuantity"])) == 0


def test_fok_larger_than_the_book_is_canceled_without_fills(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(
        daemon.nats_url, oms.order(order_id, symbol="BTC-USD", quantity=1000, timeInForce="FOK")
    )
    assert reply.body["status"] == "ACCEPTED"
    execution = wait_execution(daemon.nats_url, order_id, "CANCELED")
    assert execution["fills"] == [] and Decimal(str(execution["filledQuantity"])) == 0


def test_cancel_open_order_then_cancel_again_and_unknown(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, type="LIMIT", price=1, timeInForce="GTC"))
    assert reply.body["status"] == "ACCEPTED"
    broker = reply.body["selectedBroker"]
    cancel = oms.run(
        oms.request(
            daemon.nats_url, "trading.broker.v1.CancelOrder", {"orderId": order_id, "brokerId": broker}
        )
    )
    assert cancel.body["status"] == "ACCEPTED", cancel
    wait_execution(daemon.nats_url, order_id, "CANCELED")
    statuses = [b["status"] for _, b in oms.updates_for(daemon.nats_url, order_id, until_status="CANCELED")]
    assert statuses == ["EXECUTING", "CANCELED"]

    again = oms.run(
        oms.request(
            daemon.nats_url, "trading.broker.v1.CancelOrder", {"orderId": order_id, "brokerId": broker}
        )
    )
    assert again.body["status"] == "REJECTED" and "already CANCELED" in again.body["rejectionReason"]
    unknown = oms.run(
        oms.request(
            daemon.nats_url, "trading.broker.v1.CancelOrder", {"orderId": "e2e-nope", "brokerId": broker}
        )
    )
    assert unknown.body["status"] == "REJECTED" and "unknown order" in unknown.body["rejectionReason"]


def test_cancel_of_filled_order_is_rejected(daemon: DaemonProcess, order_id: str) -> None:
    reply = oms.route(daemon.nats_url, oms.order(order_id, quantity=1))
    wait_execution(daemon.nats_url, order_id, "COMPLETED")
    cancel = oms.run(
        oms.request(
            daemon.nats_url,
            "trading.broker.v1.CancelOrder",
            {"orderId": order_id, "brokerId": reply.body["selectedBroker"]},
        )
    )
    assert cancel.body["status"] == "REJECTED" and "already COMPLETED" in cancel.body["rejectionReason"]


def test_get_execution_unknown_is_404(daemon: DaemonProcess) -> None:
    reply = oms.get_execution(daemon.nats_url, orderId="e2e-never-routed")
    assert reply.error_code == 404
    reply = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.GetExecution", {}))
    assert reply.error_code == 400


def test_republished_update_is_deduplicated_by_jetstream(daemon: DaemonProcess, order_id: str) -> None:
    import nats

    oms.route(daemon.nats_url, oms.order(order_id, quantity=1))
    wait_execution(daemon.nats_url, order_id, "COMPLETED")
    headers, body = oms.updates_for(daemon.nats_url, order_id, until_status="COMPLETED")[-1]

    async def republish() -> bool:
        nc = await nats.connect(servers=[daemon.nats_url])
        try:
            subject = f"trading.broker.v1.executions.{body['brokerId']}.COMPLETED.{order_id}"
            ack = await nc.jetstream().publish(
                subject, b"{}", headers={"Nats-Msg-Id": headers["Nats-Msg-Id"]}
            )
            return bool(ack.duplicate)
        finally:
            await nc.close()

    assert oms.run(republish()) is True


def test_service_discovery_through_micro(daemon: DaemonProcess) -> None:
    reply = oms.run(oms.request(daemon.nats_url, "$SRV.INFO.broker-integration", b""))
    assert reply.body["name"] == "broker-integration"
    subjects = {e["subject"] for e in reply.body["endpoints"]}
    assert subjects == {
        "trading.broker.v1.RouteOrder",
        "trading.broker.v1.GetExecution",
        "trading.broker.v1.CancelOrder",
        "trading.broker.v1.GetBrokerStatus",
        "trading.broker.v1.ListBrokers",
        "trading.broker.v1.GetTransactionCostAnalysis",
        "trading.broker.v1.admin.RefreshReadModels",
        "trading.broker.v1.admin.SetMaintenance",
        "trading.broker.v1.admin.SetKillSwitch",
        "trading.broker.v1.admin.ListKillSwitches",
        "trading.broker.v1.ExplainOrder",
    }


def test_read_models_refresh_on_demand(daemon: DaemonProcess, database_url: str, order_id: str) -> None:
    oms.route(daemon.nats_url, oms.order(order_id, quantity=1))
    reply = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.admin.RefreshReadModels", {}))
    assert reply.error_code is None, reply
    assert reply.body["durationMs"] >= 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT total_orders FROM broker_latency_stats WHERE broker_id = 'sim-cheap'"
        ).fetchone()
    assert rows is not None and rows[0] >= 1


def test_list_brokers_and_status_over_nats(daemon: DaemonProcess) -> None:
    brokers = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.ListBrokers", {}))
    assert {b["id"] for b in brokers.body} == {"sim-cheap", "sim-fast", "sim-reject"}
    forex = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.ListBrokers", {"assetClass": "FOREX"}))
    assert [b["id"] for b in forex.body] == ["sim-fast"]
    bad = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.ListBrokers", {"assetClass": "BONDS"}))
    assert bad.error_code == 400 and "assetClass" in bad.field_errors
    status = oms.run(
        oms.request(daemon.nats_url, "trading.broker.v1.GetBrokerStatus", {"brokerId": "sim-fast"})
    )
    assert status.body["status"] == "CONNECTED" and status.body["uptime"] > 0
    missing = oms.run(oms.request(daemon.nats_url, "trading.broker.v1.GetBrokerStatus", {"brokerId": "x"}))
    assert missing.error_code == 404
