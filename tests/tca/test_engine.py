"""`tca.analyse`: one order end to end, every defined edge case, the wire mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest

from api.contracts import TCAResponse
from api.enums import (
    BrokerOrderStatus,
    ExecutionStrategy,
    OrderType,
    Side,
    TCABenchmark,
    TimeInForce,
    Urgency,
)
from api.orders import BrokerOrder, OrderFill
from tca import (
    MarketData,
    Quotes,
    TcaConfig,
    TcaFill,
    TcaOrder,
    Trades,
    analyse,
    from_broker_order,
    ns_of,
    peer_stats,
)

S = 1_000_000_000
WORKED_TAPE = Trades.of([0, 1 * S, 2 * S], [10.0, 11.0, 12.0], [100.0, 200.0, 300.0])


def order(**overrides: object) -> TcaOrder:
    fields: dict[str, object] = {
        "order_id": "o-1",
        "execution_id": "e-1",
        "symbol": "XYZ",
        "side": Side.BUY,
        "quantity": 100.0,
        "broker_id": "alpha",
        "arrival_ns": 0,
    }
    fields.update(overrides)
    return TcaOrder(**fields)  # type: ignore[arg-type]


def missing(result: object, measure: str) -> str | None:
    return next((u.reason for u in result.unavailable if u.measure == measure), None)  # type: ignore[attr-defined]


def test_worked_vwap_example_through_the_engine() -> None:
    result = analyse(
        order(window_start_ns=0, window_end_ns=3 * S),
        [TcaFill(ts_ns=S, quantity=100, price=11.40)],
        MarketData(WORKED_TAPE),
        TCABenchmark.VWAP,
    )
    assert result.benchmark_price == pytest.approx(11.333333333333334)
    assert result.slippage_bps == pytest.approx(58.8235294117647)
    assert round(result.slippage_bps, 2) == 58.82
    assert result.total_cost_bps == result.slippage_bps  # no fees
    assert result.execution_quality_score == pytest.approx(50.0)


def test_default_window_is_first_fill_to_last_fill_end_exclusive() -> None:
    fills = [TcaFill(ts_ns=0, quantity=50, price=10.0), TcaFill(ts_ns=2 * S, quantity=50, price=12.0)]
    result = analyse(order(), fills, MarketData(WORKED_TAPE), TCABenchmark.VWAP)
    assert (result.window_start_ns, result.window_end_ns) == (0, 2 * S)
    assert result.benchmarks.vwap == pytest.approx((10.0 * 100 + 11.0 * 200) / 300)


def test_buy_and_sell_partial_fills() -> None:
    fills = [
        TcaFill(ts_ns=0, quantity=30, price=10.0, fees=1.0),
        TcaFill(ts_ns=2 * S, quantity=10, price=12.0),
    ]
    tape = MarketData(WORKED_TAPE, close_price=12.5)
    buy = analyse(order(arrival_price=10.0, end_price=12.0), fills, tape, TCABenchmark.ARRIVAL_PRICE)
    sell = analyse(order(side=Side.SELL, arrival_price=10.0, end_price=12.0), fills, tape)
    assert buy.filled_quantity == 40.0 and buy.fill_rate == 0.4
    assert buy.average_price == pytest.approx(10.5)
    assert buy.slippage_bps == pytest.approx(500.0)
    assert sell.slippage_bps == pytest.approx(-500.0)
    assert buy.arrival_slippage_bps == buy.slippage_bps  # what routing.TcaObservation takes
    assert buy.fees_bps == pytest.approx(1.0 / 420.0 * 1e4)
    assert buy.total_cost_bps == pytest.approx(500.0 + 1.0 / 420.0 * 1e4)
    assert buy.shortfall is not None and buy.shortfall.opportunity_cost == pytest.approx(60 * 2.0)
    assert sell.shortfall is not None and sell.shortfall.opportunity_cost == pytest.approx(-60 * 2.0)
    assert buy.benchmarks.close == 12.5


def test_zero_fills_are_defined_not_a_division_by_zero() -> None:
    result = analyse(
        order(arrival_price=10.0, end_price=10.5),
        [],
        MarketData(WORKED_TAPE),
        TCABenchmark.IMPLEMENTATION_SHORTFALL,
    )
    assert result.filled_quantity == 0.0
    assert result.average_price is None
    assert result.slippage_bps is None
    assert result.market_impact_bps is None
    assert result.execution_quality_score is None
    assert missing(result, "averagePrice") == "no fills"
    assert missing(result, "VWAP") == "no fills and no requested window"
    # The shortfall is still defined: all of it is the opportunity cost of not trading.
    assert result.shortfall is not None and result.shortfall.total == pytest.approx(50.0)
    assert result.total_cost_bps == pytest.approx(500.0)  # 50 over a paper value of 1,000
    assert result.to_response().slippage_bps is None


def test_a_window_without_market_trades_says_benchmark_unavailable() -> None:
    tape = MarketData(Trades.of([0], [10.0], [100.0]))
    fills = [TcaFill(ts_ns=10 * S, quantity=50, price=10.1), TcaFill(ts_ns=20 * S, quantity=50, price=10.2)]
    result = analyse(order(), fills, tape, TCABenchmark.VWAP)
    assert result.benchmark_price is None
    assert result.slippage_bps is None
    assert result.total_cost_bps is None
    assert result.execution_quality_score is None
    assert missing(result, "VWAP") == "no market trades in the window"
    assert missing(result, "TWAP") == "no market trades in the window"
    assert missing(result, "slippageBps") == "benchmark VWAP unavailable"
    # Arrival is still known (the print before arrival), so the arrival cost is too.
    assert result.benchmarks.arrival == 10.0
    assert result.arrival_cost_bps == pytest.approx(150.0)
    body = msgspec.json.decode(msgspec.json.encode(result.to_response()))
    assert "benchmarkPrice" not in body and "slippageBps" not in body


def test_zero_length_window_is_explained() -> None:
    result = analyse(
        order(), [TcaFill(ts_ns=S, quantity=100, price=11.0)], MarketData(WORKED_TAPE), TCABenchmark.VWAP
    )
    assert result.benchmark_price is None
    assert "zero-length window" in (missing(result, "VWAP") or "")


def test_close_needs_an_official_close() -> None:
    fills = [TcaFill(ts_ns=S, quantity=100, price=11.0)]
    result = analyse(order(), fills, MarketData(WORKED_TAPE), TCABenchmark.CLOSE_PRICE)
    assert result.benchmark_price is None
    assert missing(result, "CLOSE_PRICE") == "no official close for the trade date"
    closed = analyse(order(), fills, MarketData(WORKED_TAPE, close_price=11.5), TCABenchmark.CLOSE_PRICE)
    assert closed.slippage_bps == pytest.approx((11.0 - 11.5) / 11.5 * 1e4)


def test_arrival_mid_from_quotes_and_market_impact_with_a_horizon() -> None:
    quotes = Quotes.of([0, 5 * S, 20 * S], [9.9, 10.0, 10.4], [10.1, 10.2, 10.6])
    fills = [TcaFill(ts_ns=2 * S, quantity=100, price=10.1)]
    config = TcaConfig(impact_horizon_ns=15 * S)
    result = analyse(order(end_ns=5 * S), fills, MarketData(WORKED_TAPE, quotes), config=config)
    assert result.benchmarks.arrival == pytest.approx(10.0)
    assert result.market_impact_bps == pytest.approx((10.5 - 10.0) / 10.0 * 1e4)
    sell = analyse(order(side=Side.SELL, end_ns=5 * S), fills, MarketData(WORKED_TAPE, quotes), config=config)
    assert sell.market_impact_bps == pytest.approx(-500.0)


def test_implementation_shortfall_benchmark_reports_the_perold_total() -> None:
    fills = [
        TcaFill(ts_ns=i * S, quantity=500, price=10.0 if i % 2 == 0 else 11.0, fees=10.0) for i in range(10)
    ]
    eight = [f for i, f in enumerate(fills) if i not in (1, 2)]
    result = analyse(
        order(quantity=5_000, decision_price=10.0, arrival_price=10.25, end_price=11.0),
        eight,
        MarketData(WORKED_TAPE),
        TCABenchmark.IMPLEMENTATION_SHORTFALL,
    )
    assert result.shortfall is not None
    assert result.shortfall.total == 3_080.0
    assert result.shortfall.delay_cost == 1_250.0
    assert result.benchmark_price == 10.0
    assert result.total_cost_bps == 616.0


def test_no_peer_statistics_leave_the_rank_unavailable() -> None:
    result = analyse(order(), [TcaFill(ts_ns=S, quantity=100, price=11.0)], MarketData(WORKED_TAPE))
    assert result.broker_performance_rank is None
    assert missing(result, "brokerPerformanceRank") == "no peer statistics given"


def peers_for(costs: dict[str, list[float]], notional: float = 50_000.0) -> object:
    brokers = [b for b, values in costs.items() for _ in values]
    values = [v for vs in costs.values() for v in vs]
    return peer_stats(
        asset_classes=["EQUITY"] * len(values),
        buckets=[1] * len(values),
        costs=values,
        weights=[notional] * len(values),
        brokers=brokers,
    )


def test_rank_savings_and_broker_recommendation_from_peers() -> None:
    # alpha costs 10..14 bps (mean 12), bravo 2..6 (mean 4), 40 orders each, all of 10k-100k.
    peers = peers_for(
        {"alpha": [10.0 + (i % 5) for i in range(40)], "bravo": [2.0 + (i % 5) for i in range(40)]}
    )
    result = analyse(
        order(arrival_price=10.0, quantity=5_000),
        [TcaFill(ts_ns=S, quantity=5_000, price=10.01)],
        MarketData(WORKED_TAPE),
        peers=peers,  # type: ignore[arg-type]
    )
    assert result.size_bucket == 1  # 5,000 x 10.0 = 50,000 of notional
    assert result.arrival_cost_bps == pytest.approx(10.0)
    assert result.broker_performance_rank == 2 and result.ranked_brokers == 2
    assert result.savings_basis == "BEST_BROKER"
    assert result.savings_opportunity_bps == pytest.approx(10.0 - 4.0)
    (rec,) = result.recommendations
    assert rec.type == "BROKER_SELECTION" and rec.alternative == "bravo" and rec.current == "alpha"
    assert rec.estimated_improvement_bps == pytest.approx(12.0 - 4.0)
    assert (rec.samples, rec.alternative_samples) == (40, 40)
    assert result.to_response().recommendations[0].estimated_improvement_bps == rec.estimated_improvement_bps


def test_a_small_order_is_compared_only_with_its_size_bucket() -> None:
    peers = peers_for(
        {"alpha": [10.0 + (i % 5) for i in range(40)], "bravo": [2.0 + (i % 5) for i in range(40)]}
    )
    result = analyse(
        order(arrival_price=10.0),
        [TcaFill(ts_ns=S, quantity=50, price=11.2), TcaFill(ts_ns=2 * S, quantity=50, price=11.4)],
        MarketData(WORKED_TAPE),
        peers=peers,  # type: ignore[arg-type]
    )
    assert result.size_bucket == 0
    assert result.broker_performance_rank == 2  # the rank is per asset class, every size
    assert result.recommendations == ()
    assert result.savings_basis == "BEST_PRICE_IN_WINDOW"  # the print at 11.00 in [1 s, 2 s)
    assert result.savings_opportunity_bps == pytest.approx((11.3 - 11.0) / 11.0 * 1e4)


def test_too_few_orders_leave_a_broker_unranked_and_without_recommendation() -> None:
    peers = peers_for({"alpha": [10.0] * 5 + [11.0] * 5, "bravo": [2.0 + (i % 5) for i in range(40)]})
    result = analyse(
        order(arrival_price=10.0, quantity=5_000),
        [TcaFill(ts_ns=S, quantity=5_000, price=10.01)],
        MarketData(WORKED_TAPE),
        peers=peers,  # type: ignore[arg-type]
    )
    assert result.broker_performance_rank is None
    assert missing(result, "brokerPerformanceRank") == "unranked: 10 orders, fewer than the minimum of 30"
    assert result.recommendations == ()


def test_from_broker_order_converts_decimals_and_times() -> None:
    t0 = datetime(2025, 12, 1, 14, 30, tzinfo=UTC)
    fill = OrderFill(
        "f1", "bf1", Decimal(100), Decimal("10.5"), Decimal("0.25"), t0 + timedelta(seconds=1), "X"
    )
    broker_order = BrokerOrder(
        id="e-9",
        order_id="o-9",
        broker_id="alpha",
        client_order_id="c-9",
        account_id="acct",
        symbol="XYZ",
        side=Side.SELL,
        order_type=OrderType.LIMIT,
        quantity=Decimal(200),
        time_in_force=TimeInForce.DAY,
        execution_strategy=ExecutionStrategy.SMART,
        urgency=Urgency.MEDIUM,
        created_at=t0,
        updated_at=t0 + timedelta(seconds=2),
        status=BrokerOrderStatus.CANCELED,
        filled_quantity=Decimal(100),
        fills=(fill,),
    )
    tca_order, fills = from_broker_order(broker_order, asset_class="EQUITY", arrival_price=10.6)
    assert tca_order.execution_id == "e-9" and tca_order.side is Side.SELL and tca_order.quantity == 200.0
    assert tca_order.arrival_ns == ns_of(t0) == 1_764_599_400 * S
    assert tca_order.end_ns == ns_of(t0) + 2 * S
    assert tca_order.order_type == "LIMIT" and tca_order.strategy == "SMART"
    assert fills == (TcaFill(ts_ns=ns_of(t0) + S, quantity=100.0, price=10.5, fees=0.25),)


def test_result_maps_onto_the_wire_response() -> None:
    result = analyse(
        order(window_start_ns=0, window_end_ns=3 * S, execution_id="e-7"),
        [TcaFill(ts_ns=S, quantity=100, price=11.40)],
        MarketData(WORKED_TAPE),
        TCABenchmark.VWAP,
    )
    response = result.to_response()
    assert isinstance(response, TCAResponse)
    assert (response.order_id, response.execution_id, response.benchmark) == ("o-1", "e-7", TCABenchmark.VWAP)
    assert response.average_execution_price == pytest.approx(11.40)
    assert "o-1" in repr(result) and "VWAP" in repr(result)


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="quantity"):
        order(quantity=0)
    with pytest.raises(ValueError, match="window"):
        order(window_start_ns=5)
    with pytest.raises(ValueError, match="sorted"):
        Trades.of([2, 1], [10.0, 10.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="bid"):
        Quotes.of([1], [10.0], [9.0])


def test_the_response_rounds_float_noise_away() -> None:
    result = analyse(
        order(),
        [TcaFill(ts_ns=S, quantity=100, price=11.0)],
        MarketData(WORKED_TAPE),
        TCABenchmark.ARRIVAL_PRICE,
    )
    noisy = msgspec.structs.replace(
        result, market_impact_bps=-1.4956826433576638e-12, slippage_bps=12.3456789
    )
    response = noisy.to_response()
    assert response.market_impact_bps == 0.0 and str(response.market_impact_bps) == "0.0"  # no "-0.0"
    assert response.slippage_bps == 12.345679
