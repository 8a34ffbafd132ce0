"""The offline tool's shortfall components (CFA's worked example, docs/tca.md), per-order
commissions (also on an order without fills) and the ranking's stated benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.enums import TCABenchmark
from tca_offline.files import OfflineInputError
from tca_offline.offline import run_offline

S = 1_000_000_000
ORDERS = (
    "order_id,symbol,side,quantity,broker_id,arrival_time,decision_price,arrival_price,end_time,end_price,commission\n"
    f"cfa,XYZ,BUY,1000,alpha,{S},10.00,10.05,{3 * S},10.12,20\n"
    f"idle,XYZ,BUY,100,alpha,{S},10.00,10.05,{3 * S},10.12,5\n"
)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def run(
    tmp_path: Path, orders: str = ORDERS, benchmark: TCABenchmark = TCABenchmark.VWAP
) -> dict[str, object]:
    result = run_offline(
        write(tmp_path / "orders.csv", orders),
        write(tmp_path / "fills.csv", f"order_id,time,quantity,price\ncfa,{2 * S},800,10.07\n"),
        write(tmp_path / "trades.csv", f"symbol,time,price,size\nXYZ,0,10,100\nXYZ,{2 * S},10.07,100\n"),
        None,
        tmp_path / "out",
        benchmark=benchmark,
    )
    document: dict[str, object] = json.loads(Path(result.json_path).read_text())
    assert result.html_path is not None
    document["html"] = Path(result.html_path).read_text()
    return document


def test_cfa_example_components_and_commissions(tmp_path: Path) -> None:
    document = run(tmp_path)
    cfa, idle = document["orders"]  # type: ignore[misc]
    expected = {
        "isPaperValue": 10_000.0,
        "isExplicitCost": 20.0,
        "isExplicitCostBps": 20.0,
        "isDelayCostBps": 40.0,
        "isRealizedCostBps": 16.0,
        "isMissedOpportunityCostBps": 24.0,
        "isOpportunityDelayBps": 10.0,
        "wagnerOpportunityCostBps": 14.0,
        "isBps": 100.0,
    }
    assert {k: pytest.approx(cfa[k]) for k in expected} == expected
    assert cfa["feesBps"] == round(20.0 / 8_056.0 * 1e4, 6)  # of the executed notional
    # no fills, a commission of 5: explicit cost of a 1,000 paper value = 50 bps; missed 100 x 0.12
    assert idle["fees"] == 5.0 and idle["isExplicitCostBps"] == pytest.approx(50.0)
    assert idle["isBps"] == pytest.approx((5.0 + 12.0) / 1_000.0 * 1e4)
    assert idle["feesBps"] is None


def test_the_report_says_the_benchmark_does_not_drive_the_ranking(tmp_path: Path) -> None:
    document = run(tmp_path)
    assert "whatever the benchmark requested" in str(document["rankingBenchmark"])
    assert "VWAP, does not drive the ranking" in str(document["html"])
    assert "arrivalCostBps" in str(document["html"])


def test_a_negative_commission_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OfflineInputError, match="commission"):
        run(tmp_path, ORDERS.replace(",20\n", ",-1\n"))
