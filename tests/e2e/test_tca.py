"""Transaction cost analysis through the running daemon: an order fills on the simulated market
(whose quotes and trades reach the daemon over NATS), its execution report lands in
PostgreSQL, and GetTransactionCostAnalysis / POST /analysis/tca answer for it."""

from __future__ import annotations

import httpx
import psycopg

from api import subjects
from tests.support.daemon import DaemonProcess
from tests.support.oms import order, request, route, run, updates_for
from tests.support.polling import poll_until


def test_a_filled_order_is_analysed_over_nats_and_rest_and_reported_in_postgres(
    daemon: DaemonProcess, rest: httpx.Client, database_url: str, order_id: str
) -> None:
    reply = route(daemon.nats_url, order(order_id, quantity=10))
    assert reply.error_code is None, reply
    execution_id = reply.body["executionId"]
    assert updates_for(daemon.nats_url, order_id, until_status="COMPLETED")[-1][1]["status"] == "COMPLETED"

    tca = run(request(daemon.nats_url, subjects.GET_TCA, {"orderId": order_id}))
    assert tca.error_code is None, tca
    body = tca.body
    assert body["executionId"] == execution_id and body["benchmark"] == "ARRIVAL_PRICE"
    assert body["benchmarkPrice"] > 0 and body["averageExecutionPrice"] > 0  # arrival from market data
    assert isinstance(body["slippageBps"], float) and isinstance(body["totalCostBps"], float)

    via_rest = rest.post("/analysis/tca", json={"orderId": order_id, "benchmark": "IMPLEMENTATION_SHORTFALL"})
    assert via_rest.status_code == 200, via_rest.text
    assert via_rest.json()["benchmark"] == "IMPLEMENTATION_SHORTFALL"
    assert rest.post("/analysis/tca", json={"orderId": "nope"}).status_code == 404
    bad = rest.post("/analysis/tca", json={"orderId": order_id, "benchmark": "BEST"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "benchmark"
    missing = run(request(daemon.nats_url, subjects.GET_TCA, {"orderId": "nope"}))
    assert missing.error_code == 404

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = poll_until(
            lambda: conn.execute(
                "SELECT benchmark_type, asset_class, size_bucket, market_window IS NOT NULL, arrival_price"
                " FROM execution_reports WHERE broker_order_id = %s",
                (execution_id,),
            ).fetchone(),
            what=f"the execution report of {execution_id} in PostgreSQL",
        )
    assert row is not None
    assert row[0] == "ARRIVAL_PRICE" and row[1] == "EQUITY" and row[2] == 0 and row[3] and row[4] > 0
