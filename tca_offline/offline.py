"""Offline TCA: the engine over a desk's files — orders, fills, market trades (and quotes,
closes) — writing a CSV and a JSON of every order's analysis and an HTML report with plots.

`run_offline` is what `broker-integration tca` calls. Everything per order is computed by
`tca.batch` (vectorised); the peer statistics, broker ranking, savings and recommendations use
`tca.peers` over the day's own orders, once per peer group rather than once per order. Files:

- `tca_orders.csv`: one row per order, snake_case columns (docs/tca.md lists them);
- `tca.json`: `{"benchmark", "config", "summary", "brokers", "orders"}` with camelCase names
  matching the TCAResponse (plus every other benchmark, the shortfall split and the reasons
  for what is unavailable);
- `tca_report.html`: self-contained, plots embedded as SVG images (see `tca_offline.report`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from api.enums import TCABenchmark
from tca.batch import NO_TIME, Measures, Status, compute
from tca.model import DEFAULT_CONFIG, TcaConfig
from tca.peers import (
    RANKED_BY,
    BrokerRank,
    Dimension,
    PeerStats,
    best_broker,
    bucket_label,
    peer_stats,
    rank_brokers,
    recommend,
)
from tca.result import Recommendation
from tca_offline.files import Inputs, load
from tca_offline.report import write_report

CSV_NAME = "tca_orders.csv"
JSON_NAME = "tca.json"
HTML_NAME = "tca_report.html"


class OfflineResult(msgspec.Struct, frozen=True):
    """What a run wrote and how long each phase took (seconds)."""

    out_dir: str
    csv_path: str
    json_path: str
    html_path: str | None
    orders: int
    fills: int
    trades: int
    quotes: int
    timings: dict[str, float]


def run_offline(
    orders_csv: Path | str,
    fills_csv: Path | str,
    trades_csv: Path | str,
    quotes_csv: Path | str | None,
    out_dir: Path | str,
    *,
    closes_csv: Path | str | None = None,
    benchmark: TCABenchmark = TCABenchmark.ARRIVAL_PRICE,
    config: TcaConfig = DEFAULT_CONFIG,
    time_unit: str = "ns",
    report: bool = True,
) -> OfflineResult:
    """Analyse every order of the files against `benchmark` and write the results to `out_dir`
    (created if needed). Raises `tca_offline.files.OfflineInputError` for unusable input, before
    writing anything."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    inputs = load(orders_csv, fills_csv, trades_csv, quotes_csv, closes_csv, time_unit=time_unit)
    lap("read")
    measures = compute(
        inputs.order_batch,
        inputs.fill_batch,
        inputs.trades,
        inputs.quotes,
        close_from_tape=True,
        config=config,
    )
    lap("measures")
    table, ranking, _ = analyse_table(inputs, measures, benchmark, config)
    lap("peers")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / CSV_NAME, out / JSON_NAME
    _csv_frame(table).write_csv(csv_path)
    json_path.write_bytes(_json_document(table, ranking, benchmark, config, timings))
    lap("write")
    html_path = None
    if report:
        html_path = out / HTML_NAME
        write_report(html_path, table, ranking, inputs, measures, benchmark, config)
        lap("report")
    return OfflineResult(
        out_dir=str(out),
        csv_path=str(csv_path),
        json_path=str(json_path),
        html_path=None if html_path is None else str(html_path),
        orders=len(inputs.order_batch),
        fills=len(inputs.fill_batch.order),
        trades=len(inputs.trades.ts_ns),
        quotes=0 if inputs.quotes is None else len(inputs.quotes.ts_ns),
        timings=timings,
    )


#: What the broker ranking is computed from, whatever `--benchmark` asks for (said in the JSON
#: and the report): a rank must compare every broker on the one cost all orders have.
RANKING_BENCHMARK_NOTE = (
    "The ranking, the savings and the recommendations compare arrival cost (slippage against the"
    " arrival price plus fees) whatever the benchmark requested; the requested benchmark drives"
    " benchmarkPrice, slippageBps and totalCostBps only."
)


class _Keys(msgspec.Struct, frozen=True):
    """The peer-group keys of every order (numpy string arrays, one element per order)."""

    asset: np.ndarray  # type: ignore[type-arg]
    brokers: np.ndarray  # type: ignore[type-arg]
    strategies: np.ndarray  # type: ignore[type-arg]
    order_types: np.ndarray  # type: ignore[type-arg]
    hours: np.ndarray  # type: ignore[type-arg]


def analyse_table(
    inputs: Inputs, m: Measures, benchmark: TCABenchmark, config: TcaConfig = DEFAULT_CONFIG
) -> tuple[pl.DataFrame, dict[str, tuple[BrokerRank, ...]], PeerStats]:
    """The per-order table (one row per order, snake_case columns), the broker ranking of every
    asset class, and the peer statistics behind them. Steps: peer keys -> peer statistics ->
    ranks -> savings -> recommendations -> the columns -> the nested lists (recommendations,
    what is unavailable and why)."""
    keys = _peer_keys(inputs)
    peers = peer_stats(
        asset_classes=keys.asset,
        buckets=m.size_bucket,
        costs=m.arrival_cost_bps,
        weights=m.notional,
        brokers=keys.brokers,
        strategies=keys.strategies,
        order_types=keys.order_types,
        hours=keys.hours,
    )
    ranking = {
        ac: rank_brokers(peers, ac, config.min_samples, config.confidence)
        for ac in sorted(set(keys.asset.tolist()))
    }
    rank_of = {(ac, r.broker_id): r for ac, ranks in ranking.items() for r in ranks}
    savings, basis = _savings(peers, keys, m, inputs.order_batch.sign, config)
    columns = _columns(inputs, m, benchmark, config)
    columns |= _rank_columns(ranking, rank_of, keys)
    columns |= {"savings_opportunity_bps": savings, "savings_basis": basis}
    table = _tidy(pl.DataFrame(columns))
    recs = _recommendations(peers, keys, m, config)
    gaps = _unavailable(m, table, benchmark, rank_of, keys.asset, keys.brokers, config)
    return _nest(table, recs, gaps), ranking, peers


def _peer_keys(inputs: Inputs) -> _Keys:
    orders = inputs.orders
    hours = (np.floor_divide(inputs.order_batch.arrival_ns, 3_600_000_000_000) % 24).astype(np.int64)
    return _Keys(
        asset=orders["asset_class"].to_numpy().astype(np.str_),
        brokers=orders["broker_id"].to_numpy().astype(np.str_),
        strategies=orders["strategy"].to_numpy().astype(np.str_),
        order_types=orders["order_type"].to_numpy().astype(np.str_),
        hours=np.char.zfill(hours.astype(np.str_), 2),
    )


def _rank_columns(
    ranking: dict[str, tuple[BrokerRank, ...]], rank_of: dict[tuple[str, str], BrokerRank], keys: _Keys
) -> dict[str, object]:
    """Each order's broker rank (shared when intervals overlap), the brokers it is tied with,
    and how many brokers of its asset class are ranked."""
    mine = [rank_of.get((a, b)) for a, b in zip(keys.asset.tolist(), keys.brokers.tolist(), strict=True)]
    ranked_count = {ac: sum(1 for r in ranks if r.rank is not None) for ac, ranks in ranking.items()}
    return {
        "broker_performance_rank": np.array(
            [-1 if r is None or r.rank is None else r.rank for r in mine], dtype=np.int64
        ),
        "rank_tied_with": np.array(
            [" ".join(r.tied_with) if r is not None and r.rank is not None else "" for r in mine],
            dtype=object,
        ),
        "ranked_brokers": np.array([ranked_count.get(a, 0) for a in keys.asset.tolist()], dtype=np.int64),
    }


def _savings(
    peers: PeerStats,
    keys: _Keys,
    m: Measures,
    sign: np.ndarray,
    config: TcaConfig,  # type: ignore[type-arg]
) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Savings against the best-ranked broker of the asset class and size bucket, else the best
    print of the window; and the basis of each."""
    asset = keys.asset
    best_mean = np.full(len(sign), np.nan)
    for ac, bucket in {(a, int(b)) for a, b in zip(asset.tolist(), m.size_bucket.tolist(), strict=True)}:
        best = None if bucket < 0 else best_broker(peers, ac, bucket, config.min_samples)
        if best is not None:
            best_mean[(asset == ac) & (m.size_bucket == bucket)] = best.mean
    with np.errstate(invalid="ignore", divide="ignore"):
        vs_broker = np.maximum(m.arrival_cost_bps - best_mean, 0.0)
        vs_print = np.maximum(sign * (m.average - m.best_print) / m.best_print * 1e4, 0.0)
    use_broker = np.isfinite(vs_broker)
    savings = np.where(use_broker, vs_broker, vs_print)
    basis = np.where(use_broker, "BEST_BROKER", np.where(np.isfinite(vs_print), "BEST_PRICE_IN_WINDOW", ""))
    return savings, basis


def _recommendations(peers: PeerStats, keys: _Keys, m: Measures, config: TcaConfig) -> pl.DataFrame:
    """One evaluation per peer group (dimension, asset class, size bucket, key), spread onto its
    orders as a long table (order row, recommendation)."""
    by_dimension = {
        Dimension.BROKER: keys.brokers,
        Dimension.STRATEGY: keys.strategies,
        Dimension.ORDER_TYPE: keys.order_types,
        Dimension.HOUR: keys.hours,
    }
    rec_rows: list[np.ndarray] = []  # type: ignore[type-arg]
    rec_items: list[Recommendation] = []
    rec_index: list[np.ndarray] = []  # type: ignore[type-arg]
    combined = np.char.add(
        np.char.add(np.char.add(keys.asset, "\x1f"), m.size_bucket.astype(np.str_)), "\x1f"
    )
    for dimension, column in by_dimension.items():
        groups, inverse = np.unique(np.char.add(combined, column), return_inverse=True)
        for g, text in enumerate(groups.tolist()):
            ac, bucket, key = text.split("\x1f")
            found = recommend(peers, asset_class=ac, bucket=int(bucket), keys={dimension: key}, config=config)
            if not found:
                continue
            rows = np.flatnonzero(inverse == g)
            for rec in found:
                rec_rows.append(rows)
                rec_index.append(np.full(len(rows), len(rec_items)))
                rec_items.append(rec)
    return _long_recommendations(rec_rows, rec_index, rec_items)


def _columns(inputs: Inputs, m: Measures, benchmark: TCABenchmark, config: TcaConfig) -> dict[str, object]:
    """The per-order columns that need no peer statistics: ids, fills, the requested
    benchmark's price, slippage and total cost, every benchmark, the shortfall and its parts."""
    orders, ob = inputs.orders, inputs.order_batch
    sign = ob.sign
    slippage = {
        TCABenchmark.ARRIVAL_PRICE: m.slippage_bps(sign, m.arrival),
        TCABenchmark.VWAP: m.slippage_bps(sign, m.vwap),
        TCABenchmark.TWAP: m.slippage_bps(sign, m.twap),
        TCABenchmark.CLOSE_PRICE: m.slippage_bps(sign, m.close),
        TCABenchmark.IMPLEMENTATION_SHORTFALL: m.slippage_bps(sign, m.decision),
    }
    benchmark_price = {
        TCABenchmark.ARRIVAL_PRICE: m.arrival,
        TCABenchmark.VWAP: m.vwap,
        TCABenchmark.TWAP: m.twap,
        TCABenchmark.CLOSE_PRICE: m.close,
        TCABenchmark.IMPLEMENTATION_SHORTFALL: m.decision,
    }[benchmark]
    chosen = slippage[benchmark]
    total = m.is_bps if benchmark is TCABenchmark.IMPLEMENTATION_SHORTFALL else chosen + m.fees_bps
    return {
        "order_id": orders["order_id"],
        "execution_id": orders["execution_id"],
        "broker_id": orders["broker_id"],
        "symbol": orders["symbol"],
        "side": orders["side"],
        "asset_class": orders["asset_class"],
        "order_type": orders["order_type"],
        "strategy": orders["strategy"],
        "benchmark": str(benchmark),
        "quantity": ob.quantity,
        "filled_quantity": m.filled,
        "fill_rate": m.filled / ob.quantity,
        "fill_count": m.fill_count,
        "average_price": m.average,
        "executed_notional": m.notional,
        "fees": m.fees,
        "fees_bps": m.fees_bps,
        "arrival_ns": ob.arrival_ns,
        "window_start_ns": m.window_start_ns,
        "window_end_ns": m.window_end_ns,
        "benchmark_price": benchmark_price,
        "slippage_bps": chosen,
        "total_cost_bps": total,
        "arrival_cost_bps": m.arrival_cost_bps,
        "market_impact_bps": m.market_impact_bps,
        "execution_quality_score": m.quality_score,
        "size_bucket": m.size_bucket,
        "size_bucket_label": np.array(
            [bucket_label(b, config.size_bucket_edges) for b in range(-1, len(config.size_bucket_edges) + 1)]
        )[m.size_bucket + 1],
        "arrival_price": m.arrival,
        "vwap": m.vwap,
        "twap": m.twap,
        "close_price": m.close,
        "close_source": np.where(
            m.close_from_tape, "LAST_PRINT_OF_DAY", np.where(np.isnan(m.close), "", "OFFICIAL")
        ),
        "decision_price": m.decision,
        "end_price": m.end_price,
        "slippage_arrival_bps": slippage[TCABenchmark.ARRIVAL_PRICE],
        "slippage_vwap_bps": slippage[TCABenchmark.VWAP],
        "slippage_twap_bps": slippage[TCABenchmark.TWAP],
        "slippage_close_bps": slippage[TCABenchmark.CLOSE_PRICE],
        "slippage_decision_bps": slippage[TCABenchmark.IMPLEMENTATION_SHORTFALL],
    } | _shortfall_columns(m, ob.quantity)


def _shortfall_columns(m: Measures, quantity: np.ndarray) -> dict[str, object]:  # type: ignore[type-arg]
    """Perold's shortfall and its components in currency and in bps of the paper value
    (S x decision price), CFA and Wagner names (docs/tca.md): `is_explicit_cost` (fees),
    `is_delay_cost` (filled shares), `is_opportunity_delay`, `is_realized_cost` (Wagner's trading
    cost), `is_missed_opportunity_cost` (Perold's, vs decision) and `wagner_opportunity_cost`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        paper = quantity * m.decision
        fees = np.where(np.isnan(m.is_total), np.nan, m.fees)
    parts = {
        "is_explicit_cost": fees,
        "is_execution_cost": m.is_execution,
        "is_delay_cost": m.wagner_trading_delay,
        "is_opportunity_delay": m.wagner_opportunity_delay,
        "is_realized_cost": m.wagner_trading,
        "is_missed_opportunity_cost": m.is_opportunity,
        "wagner_delay_cost": m.wagner_delay,
        "wagner_opportunity_cost": m.wagner_opportunity,
    }
    out: dict[str, object] = {"is_paper_value": paper, "is_total": m.is_total, "is_bps": m.is_bps}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, amount in parts.items():
            out[name] = amount
            out[name + "_bps"] = amount / paper * 1e4
    # The names these had before the CFA ones (kept: desks' scripts read them).
    out["is_opportunity_cost"] = m.is_opportunity
    out["wagner_trading_delay"] = m.wagner_trading_delay
    out["wagner_opportunity_delay"] = m.wagner_opportunity_delay
    out["wagner_trading_cost"] = m.wagner_trading
    return out


def _tidy(table: pl.DataFrame) -> pl.DataFrame:
    """Absent values as null (NO_TIME, -1 ranks, empty texts, NaN), no -0.0, bps-scale floats
    rounded once to 1e-6 (prices and currency amounts are as computed)."""
    table = table.with_columns(
        pl.col("broker_performance_rank").replace(-1, None),
        pl.col("savings_basis").replace("", None),
        pl.col("close_source").replace("", None),
        pl.col("rank_tied_with").replace("", None),
        *(pl.col(c).replace(NO_TIME, None) for c in ("window_start_ns", "window_end_ns")),
    )
    # NaN -> null (unavailable), and -0.0 -> 0.0 (a zero cost times a sell's sign).
    table = table.with_columns(pl.col(pl.Float64).fill_nan(None) + 0.0)
    scores = [c for c in table.columns if c.endswith("_bps")] + ["execution_quality_score"]
    return table.with_columns(pl.col(scores).round(6) + 0.0)


def _nest(table: pl.DataFrame, recs: pl.DataFrame, gaps: pl.DataFrame) -> pl.DataFrame:
    """The recommendations and the unavailable measures of each order as list columns."""
    table = table.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"))
    nested = (
        recs.group_by("row").agg(pl.struct(pl.exclude("row")).alias("recommendations")),
        gaps.group_by("row").agg(pl.struct(pl.exclude("row")).alias("unavailable")),
    )
    for part in nested:
        table = table.join(part, on="row", how="left", maintain_order="left")
    return table.with_columns(
        pl.col("recommendations").fill_null(pl.lit([], dtype=table.schema["recommendations"])),
        pl.col("unavailable").fill_null(pl.lit([], dtype=table.schema["unavailable"])),
    ).drop("row")


def _long_recommendations(
    rows: list[np.ndarray],  # type: ignore[type-arg]
    index: list[np.ndarray],  # type: ignore[type-arg]
    items: list[Recommendation],
) -> pl.DataFrame:
    """One row per (order, recommendation), from the orders of each recommended peer group."""
    schema = {
        "row": pl.UInt32,
        "type": pl.String,
        "description": pl.String,
        "estimatedImprovementBps": pl.Float64,
        "alternative": pl.String,
    }
    if not items:
        return pl.DataFrame(schema=schema)
    which = np.concatenate(index)

    def pick(values: list[str]) -> npt.NDArray[np.object_]:
        picked: npt.NDArray[np.object_] = np.array(values, dtype=object)[which]
        return picked

    return pl.DataFrame(
        {
            "row": np.concatenate(rows).astype(np.uint32),
            "type": pick([str(r.type) for r in items]),
            "description": pick([r.description for r in items]),
            "estimatedImprovementBps": np.array([r.estimated_improvement_bps for r in items])[which],
            "alternative": pick([r.alternative for r in items]),
        },
        schema=schema,
    )


def _unavailable(
    m: Measures,
    table: pl.DataFrame,
    benchmark: TCABenchmark,
    rank_of: dict[tuple[str, str], BrokerRank],
    asset: np.ndarray,  # type: ignore[type-arg]
    brokers: np.ndarray,  # type: ignore[type-arg]
    config: TcaConfig,
) -> pl.DataFrame:
    """One row per (order, missing measure, why): the offline twin of `TcaResult.unavailable`."""
    no_fills = m.fill_count == 0
    window_reason = np.array([Status(s).reason for s in range(len(Status))], dtype=object)[m.window_status]

    def either_fills(other: str | npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        chosen: npt.NDArray[np.object_] = np.where(no_fills, "no fills", other).astype(object)
        return chosen

    slip = either_fills(f"benchmark {benchmark} unavailable")
    rank_reason = np.array(
        [
            _rank_reason(rank_of.get((a, b)), config.min_samples)
            for a, b in zip(asset.tolist(), brokers.tolist(), strict=True)
        ],
        dtype=object,
    )
    checks: list[tuple[str, np.ndarray, object]] = [  # type: ignore[type-arg]
        ("averagePrice", no_fills, "no fills"),
        (
            "ARRIVAL_PRICE",
            np.isnan(m.arrival),
            "no stored arrival price and no quote or trade at or before arrival",
        ),
        ("VWAP", np.isnan(m.vwap), window_reason),
        ("TWAP", np.isnan(m.twap), window_reason),
        ("CLOSE_PRICE", np.isnan(m.close), "no official close and no print on the trade date"),
        (
            "IMPLEMENTATION_SHORTFALL",
            np.isnan(m.is_total),
            np.where(
                np.isnan(m.decision),
                "no decision price and no arrival price",
                "part of the order is unfilled and its end price is unknown",
            ),
        ),
        ("slippageBps", table["slippage_bps"].is_null().to_numpy(), slip),
        ("totalCostBps", table["total_cost_bps"].is_null().to_numpy(), slip),
        (
            "marketImpactBps",
            np.isnan(m.market_impact_bps),
            either_fills("no arrival mid or no mid after the end"),
        ),
        ("executionQualityScore", np.isnan(m.quality_score), either_fills(window_reason)),
        (
            "savingsOpportunityBps",
            table["savings_opportunity_bps"].is_null().to_numpy(),
            either_fills("no ranked broker for this size and no prints in the window"),
        ),
        ("brokerPerformanceRank", table["broker_performance_rank"].is_null().to_numpy(), rank_reason),
    ]
    rows, measures, reasons = [], [], []
    for measure, mask, reason in checks:
        hit = np.flatnonzero(mask)
        rows.append(hit)
        measures.append(np.full(len(hit), measure, dtype=object))
        reasons.append(np.broadcast_to(np.asarray(reason, dtype=object), mask.shape)[hit])
    return pl.DataFrame(
        {
            "row": np.concatenate(rows).astype(np.uint32),
            "measure": np.concatenate(measures),
            "reason": np.concatenate(reasons),
        },
        schema={"row": pl.UInt32, "measure": pl.String, "reason": pl.String},
    ).sort("row", maintain_order=True)


def _slip_reason(no_fills: bool, benchmark: TCABenchmark) -> str:
    return "no fills" if no_fills else f"benchmark {benchmark} unavailable"


def _rank_reason(rank: BrokerRank | None, min_samples: int) -> str:
    if rank is not None and rank.reason:
        return rank.reason
    return f"unranked: no analysable orders of this broker (minimum {min_samples})"


def _csv_frame(table: pl.DataFrame) -> pl.DataFrame:
    """The table with the nested columns flattened to text (CSV has no lists)."""
    return table.with_columns(
        pl.col("recommendations")
        .list.eval(
            pl.element().struct.field("type") + pl.lit(": ") + pl.element().struct.field("description")
        )
        .list.join(" | ")
        .alias("recommendations"),
        pl.col("unavailable")
        .list.eval(pl.element().struct.field("measure") + pl.lit(": ") + pl.element().struct.field("reason"))
        .list.join(" | ")
        .alias("unavailable"),
    )


_JSON_NAMES = {
    "average_price": "averageExecutionPrice",
    "filled_quantity": "filledQuantity",
}


def _camel(name: str) -> str:
    if name in _JSON_NAMES:
        return _JSON_NAMES[name]
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _json_document(
    table: pl.DataFrame,
    ranking: dict[str, tuple[BrokerRank, ...]],
    benchmark: TCABenchmark,
    config: TcaConfig,
    timings: dict[str, float],
) -> bytes:
    orders_json = table.rename({c: _camel(c) for c in table.columns}).write_json()
    filled = table.filter(pl.col("filled_quantity") > 0)
    notional = float(filled["executed_notional"].sum())
    weighted = filled.filter(pl.col("arrival_cost_bps").is_not_null())
    summary = {
        "orders": table.height,
        "ordersWithFills": filled.height,
        "executedNotional": notional,
        "notionalWeightedArrivalCostBps": (
            float((weighted["arrival_cost_bps"] * weighted["executed_notional"]).sum())
            / float(weighted["executed_notional"].sum())
            if weighted.height
            else None
        ),
        "meanSlippageBps": table["slippage_bps"].mean(),
        "meanExecutionQualityScore": table["execution_quality_score"].mean(),
        "timingsSeconds": dict(timings),
    }
    brokers = {
        ac: [
            {
                "brokerId": r.broker_id,
                "rank": r.rank,
                "meanCostBps": r.mean_cost_bps,
                "standardErrorBps": None if math.isinf(r.standard_error_bps) else r.standard_error_bps,
                "orders": r.samples,
                "notional": r.notional,
                "reason": r.reason,
                "tiedWith": list(r.tied_with),
                "intervalBps": None if r.rank is None or math.isinf(r.high_bps) else [r.low_bps, r.high_bps],
            }
            for r in ranks
        ]
        for ac, ranks in ranking.items()
    }
    head = {
        "benchmark": str(benchmark),
        "rankedBy": RANKED_BY,
        "rankingBenchmark": RANKING_BENCHMARK_NOTE,
        "config": msgspec.to_builtins(config),
        "summary": summary,
        "brokers": brokers,
    }
    text = json.dumps(head, allow_nan=False, default=_nan_free)
    return (text[:-1] + ', "orders": ' + orders_json + "}").encode()


def _nan_free(value: object) -> object:
    raise TypeError(f"not JSON: {value!r}")
