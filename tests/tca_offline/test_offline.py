"""The offline tool on small generated files: what it writes, and how it refuses bad input."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import polars as pl
import pytest

from api.enums import TCABenchmark
from tca import analyse
from tca.batch import compute
from tca_offline.files import OfflineInputError, engine_case, load
from tca_offline.offline import analyse_table, run_offline
from tca_offline.synthetic import generate_day


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> object:
    return generate_day(
        tmp_path_factory.mktemp("day"),
        orders=400,
        fills=6_000,
        trades=40_000,
        symbols=12,
        quotes=4_000,
        closes=True,
    )


def test_run_offline_writes_csv_json_and_an_html_report_with_plots(day: object, tmp_path: Path) -> None:
    result = run_offline(
        day.orders,
        day.fills,
        day.trades,
        day.quotes,
        tmp_path / "out",
        closes_csv=day.closes,  # type: ignore[attr-defined]
    )
    assert (result.orders, result.fills, result.trades, result.quotes) == (400, 6_000, 40_000, 4_000)
    assert set(result.timings) == {"read", "measures", "peers", "write", "report"}

    with open(result.csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 400
    for column in (
        "order_id",
        "slippage_bps",
        "total_cost_bps",
        "vwap",
        "twap",
        "is_total",
        "wagner_delay_cost",
        "execution_quality_score",
        "broker_performance_rank",
        "recommendations",
        "unavailable",
    ):
        assert column in rows[0]

    document = json.loads(Path(result.json_path).read_text())
    assert document["benchmark"] == "ARRIVAL_PRICE"
    assert len(document["orders"]) == 400
    first = document["orders"][0]
    for key in (
        "orderId",
        "benchmarkPrice",
        "averageExecutionPrice",
        "slippageBps",
        "marketImpactBps",
        "totalCostBps",
        "savingsOpportunityBps",
        "executionQualityScore",
        "brokerPerformanceRank",
        "recommendations",
        "unavailable",
    ):
        assert key in first
    ranking = document["brokers"]["EQUITY"]
    ranked = [r for r in ranking if r["rank"]]
    assert ranked and min(r["rank"] for r in ranked) == 1
    for r in ranked:  # a rank counts only the brokers whose whole interval lies below
        low = r["intervalBps"][0]
        assert r["rank"] == 1 + sum(1 for o in ranked if o["intervalBps"][1] < low)
        overlapping = {
            o["brokerId"]
            for o in ranked
            if o is not r and o["intervalBps"][0] <= r["intervalBps"][1] and low <= o["intervalBps"][1]
        }
        assert set(r["tiedWith"]) == overlapping
    assert "arrivalCostBps" in document["rankedBy"]
    assert "whatever the benchmark requested" in document["rankingBenchmark"]
    no_fill = [o for o in document["orders"] if o["filledQuantity"] == 0]
    assert no_fill, "the generated day has orders without fills"
    assert all(o["slippageBps"] is None for o in no_fill)
    assert all({"measure": "averagePrice", "reason": "no fills"} in o["unavailable"] for o in no_fill)
    assert all(o["closeSource"] == "OFFICIAL" for o in document["orders"])

    html = Path(result.html_path or "").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(images) == 7  # four orders' prices, the box plot, the ranking, the histogram
    assert {alt for alt, _ in images} == {
        "execution prices over the window",
        "cost distribution per broker",
        "broker ranking",
        "slippage distribution",
    }
    for _, encoded in images:
        svg = ElementTree.fromstring(base64.b64decode(encoded))
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert len(svg) > 5  # drawn marks, not an empty frame
    assert "Broker ranking" in html and "Execution prices against the benchmark" in html


def test_offline_numbers_are_the_engines(day: object) -> None:
    inputs = load(day.orders, day.fills, day.trades, day.quotes, day.closes)  # type: ignore[attr-defined]
    measures = compute(inputs.order_batch, inputs.fill_batch, inputs.trades, inputs.quotes)
    table, _, peers = analyse_table(inputs, measures, TCABenchmark.TWAP)
    for row in range(0, 400, 13):
        close = measures.close[row]
        order, fills, market = engine_case(inputs, row, None if math.isnan(close) else float(close))
        result = analyse(order, fills, market, TCABenchmark.TWAP, peers=peers)
        record = table.row(row, named=True)
        for column, value in (
            ("slippage_bps", result.slippage_bps),
            ("total_cost_bps", result.total_cost_bps),
            ("market_impact_bps", result.market_impact_bps),
            ("execution_quality_score", result.execution_quality_score),
            ("savings_opportunity_bps", result.savings_opportunity_bps),
            ("broker_performance_rank", result.broker_performance_rank),
        ):
            if value is None:
                assert record[column] is None, (row, column)
            else:
                assert record[column] == pytest.approx(value, rel=1e-9, abs=1e-6), (row, column)
        assert sorted(r["type"] for r in record["recommendations"]) == sorted(
            r.type for r in result.recommendations
        )


def test_iso_times_and_parquet_give_the_same_results(tmp_path: Path) -> None:
    ns = generate_day(tmp_path / "ns", orders=60, fills=600, trades=5_000, symbols=4, seed=3)
    iso = generate_day(
        tmp_path / "iso", orders=60, fills=600, trades=5_000, symbols=4, seed=3, iso_times=True
    )
    assert "T" in Path(iso.trades).read_text().splitlines()[1]
    for name in ("orders", "fills", "trades"):
        pl.read_csv(getattr(ns, name)).write_parquet(tmp_path / f"{name}.parquet")
    runs = [
        run_offline(ns.orders, ns.fills, ns.trades, None, tmp_path / "a", report=False),
        run_offline(iso.orders, iso.fills, iso.trades, None, tmp_path / "b", report=False),
        run_offline(
            *(tmp_path / f"{n}.parquet" for n in ("orders", "fills", "trades")),
            None,
            tmp_path / "c",
            report=False,
        ),
    ]
    frames = [pl.read_csv(r.csv_path) for r in runs]
    for frame in frames[1:]:
        assert frame["slippage_bps"].to_list() == pytest.approx(
            frames[0]["slippage_bps"].to_list(), nan_ok=True
        )


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, str]:
    return {
        "orders": write(
            tmp_path / "o.csv", "order_id,symbol,side,quantity,broker_id,arrival_time\nA,XYZ,BUY,100,b1,0\n"
        ),
        "fills": write(tmp_path / "f.csv", "order_id,time,quantity,price\nA,1000,100,10.5\n"),
        "trades": write(tmp_path / "t.csv", "symbol,time,price,size\nXYZ,0,10,100\nXYZ,500,11,100\n"),
    }


def test_a_minimal_order_without_a_window_still_gets_its_arrival_numbers(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    result = run_offline(tiny["orders"], tiny["fills"], tiny["trades"], None, tmp_path / "out", report=False)
    (order,) = json.loads(Path(result.json_path).read_text())["orders"]
    assert order["arrivalPrice"] == 10.0 and order["slippageBps"] == pytest.approx(500.0)
    reasons = {u["measure"]: u["reason"] for u in order["unavailable"]}
    assert reasons["VWAP"].startswith("zero-length window")
    assert reasons["brokerPerformanceRank"] == "unranked: 1 orders, fewer than the minimum of 30"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "orders",
            "order_id,symbol,side,quantity,broker_id\nA,XYZ,BUY,100,b1\n",
            r"lacks the column\(s\) arrival_time",
        ),
        (
            "orders",
            "order_id,symbol,side,quantity,broker_id,arrival_time\nA,XYZ,HOLD,100,b1,0\n",
            "side other than",
        ),
        ("orders", "order_id,symbol,side,quantity,broker_id,arrival_time\nA,XYZ,BUY,0,b1,0\n", "quantity"),
        (
            "orders",
            "order_id,symbol,side,quantity,broker_id,arrival_time\nA,XYZ,BUY,1,b1,0\nA,XYZ,BUY,1,b1,0\n",
            "repeat",
        ),
        ("fills", "order_id,time,quantity,price\nB,1000,100,10.5\n", "not in the orders file"),
        ("fills", "order_id,time,quantity,price\nA,1000,100,-1\n", "not > 0"),
        ("fills", "order_id,time,quantity,price\nA,yesterday,100,10\n", "wrong type"),
        ("trades", "symbol,time,price\nXYZ,0,10\n", r"lacks the column\(s\) size"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(
    tiny: dict[str, str], tmp_path: Path, name: str, text: str, message: str
) -> None:
    tiny[name] = write(tmp_path / f"bad-{name}.csv", text)
    with pytest.raises(OfflineInputError, match=message):
        run_offline(tiny["orders"], tiny["fills"], tiny["trades"], None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_is_refused(tiny: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(OfflineInputError, match="does not exist"):
        run_offline(tiny["orders"], tiny["fills"], tmp_path / "nope.csv", None, tmp_path / "out")


def test_synthetic_day_has_every_edge_case(day: object) -> None:
    orders = pl.read_csv(day.orders)  # type: ignore[attr-defined]
    fills = pl.read_csv(day.fills)  # type: ignore[attr-defined]
    filled = fills.group_by("order_id").agg(pl.col("quantity").sum())
    joined = orders.join(filled, on="order_id", how="left", suffix="_filled")
    rate = (joined["quantity_filled"].fill_null(0) / joined["quantity"]).to_numpy()
    assert (rate == 0).any() and ((rate > 0) & (rate < 1)).any() and np.isclose(rate, 1).any()
