"""The implementation shortfall's components in bps of the paper value, the response's rounding
and `unavailable`, and ranks that say what the evidence says (docs/tca.md, worked examples)."""

from __future__ import annotations

import msgspec
import pytest

from api.enums import Side, TCABenchmark
from tca import MarketData, TcaFill, TcaOrder, Trades, analyse, peer_stats, rank_brokers
from tca.peers import RANKED_BY

S = 1_000_000_000
TAPE = Trades.of([0, 1 * S, 2 * S, 3 * S], [10.00, 10.05, 10.07, 10.12], [100.0, 100.0, 100.0, 100.0])


def cfa_order(**overrides: object) -> TcaOrder:
    """The CFA curriculum's example: buy 1,000 decided at 10.00, the order reaches the market at
    10.05, 800 fill at 10.07 with a commission of 20, the rest is cancelled at 10.12."""
    fields: dict[str, object] = {
        "order_id": "cfa",
        "symbol": "XYZ",
        "side": Side.BUY,
        "quantity": 1_000.0,
        "broker_id": "alpha",
        "arrival_ns": 1 * S,
        "decision_price": 10.00,
        "arrival_price": 10.05,
        "end_ns": 3 * S,
        "end_price": 10.12,
        "commission": 20.0,
    }
    fields.update(overrides)
    return TcaOrder(**fields)  # type: ignore[arg-type]


CFA_FILLS = [TcaFill(ts_ns=2 * S, quantity=800.0, price=10.07)]


def test_cfa_worked_example_components_in_bps_of_the_paper_value() -> None:
    result = analyse(cfa_order(), CFA_FILLS, MarketData(TAPE), TCABenchmark.IMPLEMENTATION_SHORTFALL)
    shortfall = result.to_response().implementation_shortfall
    assert shortfall is not None
    assert shortfall.paper_value == 10_000.0
    # CFA: delay (filled shares) 40 + realized 16 + missed opportunity 24 + explicit 20 = 100
    assert (shortfall.delay_cost, shortfall.delay_cost_bps) == (40.0, 40.0)
    assert (shortfall.realized_cost, shortfall.realized_cost_bps) == (16.0, 16.0)
    assert (shortfall.missed_opportunity_cost, shortfall.missed_opportunity_cost_bps) == (24.0, 24.0)
    assert (shortfall.explicit_cost, shortfall.explicit_cost_bps) == (20.0, 20.0)
    assert (shortfall.total, shortfall.total_bps) == (100.0, 100.0)
    # Wagner: delay 50 (40 on the filled shares + 10 on the unfilled) + 16 + opportunity 14 + 20
    assert (shortfall.opportunity_delay, shortfall.opportunity_delay_bps) == (10.0, 10.0)
    assert (shortfall.wagner_opportunity_cost, shortfall.wagner_opportunity_cost_bps) == (14.0, 14.0)
    # Perold's two parts: execution 56 (= delay + realized) + missed 24 + fees 20
    assert (shortfall.execution_cost, shortfall.execution_cost_bps) == (56.0, 56.0)
    assert result.to_response().total_cost_bps == 100.0
    # fees_bps is of the executed notional (8,056), the explicit cost of the paper value (10,000)
    assert result.to_response().fees_bps == round(20.0 / 8_056.0 * 1e4, 6)


def test_blotter_wagner_example_in_bps() -> None:
    """Blotter's eight-of-ten fills, P_d 10, P_0 10.25, P_end 11, fee 10 a fill: IS 3,080 = 616 bps
    of the 50,000 paper value; delay 1,250 (1,000 on the filled shares + 250 unfilled), trading
    1,000, Wagner's opportunity 750, fees 80."""
    fills = [TcaFill(ts_ns=(i + 1) * S, quantity=500.0, price=10.0 + i % 2, fees=10.0) for i in range(8)]
    order = cfa_order(quantity=5_000.0, arrival_price=10.25, end_price=11.0, end_ns=9 * S, commission=0.0)
    shortfall = analyse(order, fills, MarketData(TAPE)).to_response().implementation_shortfall
    assert shortfall is not None
    parts = {
        "total_bps": 616.0,
        "delay_cost_bps": 200.0,
        "opportunity_delay_bps": 50.0,
        "realized_cost_bps": 200.0,
        "wagner_opportunity_cost_bps": 150.0,
        "explicit_cost_bps": 16.0,
        "missed_opportunity_cost_bps": 200.0,
        "execution_cost_bps": 400.0,
    }
    assert {k: getattr(shortfall, k) for k in parts} == parts


def test_an_order_without_fills_carries_its_commission() -> None:
    result = analyse(cfa_order(), [], MarketData(TAPE), TCABenchmark.IMPLEMENTATION_SHORTFALL)
    response = result.to_response()
    shortfall = response.implementation_shortfall
    assert shortfall is not None
    assert shortfall.explicit_cost == 20.0 and shortfall.missed_opportunity_cost == 120.0
    assert shortfall.total_bps == 140.0
    assert response.fees_bps is None and response.unavailable["feesBps"] == "no fills"
    with pytest.raises(ValueError, match="commission"):
        cfa_order(commission=-1.0)


def test_every_absent_figure_of_the_response_has_a_reason() -> None:
    empty = MarketData(Trades.empty())
    response = analyse(cfa_order(arrival_price=None), [], empty, TCABenchmark.VWAP).to_response()
    absent = {
        name
        for name, value in msgspec.structs.asdict(response).items()
        if value is None and name not in ("ranked_by", "ranked_brokers")  # the rank's own reason covers them
    }
    camel = {f.name: f.encode_name for f in msgspec.structs.fields(response)}
    assert absent, "the case leaves figures out"
    assert "broker_performance_rank" in absent
    for name in absent:
        assert camel[name] in response.unavailable, name
    assert response.unavailable["benchmarkPrice"] == "no fills and no requested window"
    assert response.unavailable["averageExecutionPrice"] == "no fills"


def test_prices_round_to_the_instruments_precision_and_bps_to_1e_6() -> None:
    fills = [
        TcaFill(ts_ns=2 * S, quantity=381.0, price=190.13),
        TcaFill(ts_ns=2 * S, quantity=381.0, price=190.14),
    ]
    fills.append(TcaFill(ts_ns=2 * S, quantity=1.0, price=190.11, fees=0.5))
    order = cfa_order(
        quantity=763.0, arrival_price=190.0, decision_price=None, price_decimals=2, commission=0.0
    )
    result = analyse(order, fills, MarketData(TAPE))
    assert result.average_price is not None and result.average_price != round(result.average_price, 4)
    response = result.to_response()
    assert response.average_execution_price == round(result.average_price, 2 + 2)  # a hundredth of a tick
    assert response.slippage_bps == round(result.slippage_bps or 0.0, 6)
    assert response.fees_bps is not None and len(repr(response.fees_bps).split(".")[1]) <= 6
    assert msgspec.structs.replace(order, price_decimals=None).price_decimals is None
    unrounded = analyse(msgspec.structs.replace(order, price_decimals=None), fills, MarketData(TAPE))
    assert unrounded.to_response().average_execution_price == round(result.average_price, 6)


def peers_of(costs: dict[str, list[float]]) -> object:
    brokers = [b for b, values in costs.items() for _ in values]
    values = [v for vs in costs.values() for v in vs]
    n = len(values)
    return peer_stats(
        asset_classes=["EQUITY"] * n, buckets=[1] * n, costs=values, weights=[1.0] * n, brokers=brokers
    )


def test_overlapping_intervals_share_a_rank() -> None:
    # a and b overlap (means 10 and 10.5, SE ~0.7); c is far dearer; d is too small to rank
    spread = [-4.0, -2.0, 0.0, 2.0, 4.0] * 8
    peers = peers_of(
        {
            "a": [10.0 + x for x in spread],
            "b": [10.5 + x for x in spread],
            "c": [30.0 + x for x in spread],
            "d": [0.0] * 3,
        }
    )
    ranking = {r.broker_id: r for r in rank_brokers(peers, "EQUITY", min_samples=30)}  # type: ignore[arg-type]
    assert {k: r.rank for k, r in ranking.items()} == {"a": 1, "b": 1, "c": 3, "d": None}
    assert ranking["a"].tied_with == ("b",) and ranking["b"].tied_with == ("a",)
    assert ranking["c"].tied_with == ()
    assert ranking["a"].low_bps < 10.0 < ranking["a"].high_bps


def test_the_response_names_the_ranked_measure_and_the_ties() -> None:
    spread = [-4.0, -2.0, 0.0, 2.0, 4.0] * 8
    peers = peers_of({"alpha": [10.0 + x for x in spread], "bravo": [10.5 + x for x in spread]})
    response = analyse(cfa_order(), CFA_FILLS, MarketData(TAPE), peers=peers).to_response()  # type: ignore[arg-type]
    assert response.broker_performance_rank == 1 and response.rank_tied_with == ("bravo",)
    assert response.ranked_by == RANKED_BY and "arrival" in RANKED_BY
    assert response.ranked_brokers == 2
    assert analyse(cfa_order(), CFA_FILLS, MarketData(TAPE)).to_response().ranked_by is None
