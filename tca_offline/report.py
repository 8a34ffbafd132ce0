"""The offline tool's HTML report: tables and plots in one self-contained file.

Plots (`tca_offline.charts`, SVG embedded as base64 `data:` images, so the file can be mailed):
1. execution prices against the benchmark over the window, for the largest orders: the market
   prints (step line), our fills (dot area ~ quantity), the arrival, VWAP and TWAP levels, the
   window shaded;
2. the distribution of arrival cost per broker (box plots, notional-weighted mean marked);
3. the broker ranking per asset class: mean cost with a 95 % interval, unranked brokers grey;
4. the distribution of slippage against the requested benchmark.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from api.enums import TCABenchmark
from tca.batch import Measures
from tca.model import TcaConfig
from tca.peers import RANKED_BY, BrokerRank
from tca_offline.charts import PALETTE, Axes, bar_ranking, box_plot, data_uri
from tca_offline.files import Inputs

#: At most this many orders get a price chart; at most this many prints are drawn per chart.
EXAMPLE_ORDERS = 4
MAX_POINTS = 1_500
_NS_PER_MIN = 60_000_000_000


def write_report(
    path: Path,
    table: pl.DataFrame,
    ranking: dict[str, tuple[BrokerRank, ...]],
    inputs: Inputs,
    measures: Measures,
    benchmark: TCABenchmark,
    config: TcaConfig,
) -> None:
    """Write the report for an analysed table (see `tca_offline.offline.analyse_table`)."""
    sections = [
        _summary(table, benchmark),
        "<h2>Execution prices against the benchmark</h2>",
        "<p>The largest orders: market prints, our fills (area ~ quantity) and the benchmark levels;"
        " the benchmark window is shaded.</p>",
        _images(_price_charts(table, inputs, measures), "execution prices over the window"),
        "<h2>Cost per broker</h2>",
        "<p>Arrival cost (slippage against the arrival price plus fees, bps) of every order with fills."
        " Box: quartiles; line: median; whiskers: 5th-95th percentile; diamond: notional-weighted mean.</p>",
        _images(_cost_boxplot(table), "cost distribution per broker"),
        "<h2>Broker ranking</h2>",
        f"<p>Ranked by {html.escape(RANKED_BY)}. Brokers with fewer than {config.min_samples} orders"
        " are not ranked (grey). Whiskers show the 95 % interval; a rank counts only the brokers whose"
        f" whole interval lies below. {html.escape(_benchmark_note(benchmark))}</p>",
        _images(_ranking_chart(ranking), "broker ranking"),
        _ranking_table(ranking),
        f"<h2>Slippage against {benchmark}</h2>",
        _images(_slippage_histogram(table, benchmark), "slippage distribution"),
        _recommendations(table),
        "<h2>Costliest orders</h2>",
        _costliest(table),
    ]
    path.write_text(_PAGE.format(body="\n".join(sections)), encoding="utf-8")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Transaction cost analysis</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td.l, th.l {{ text-align: left; }}
img {{ max-width: 100%; margin: 0.2em; }}
</style></head><body>
<h1>Transaction cost analysis</h1>
{body}
</body></html>
"""


def _images(svgs: Sequence[str], alt: str) -> str:
    if not svgs:
        return f"<p><em>No data for the {html.escape(alt)} plot.</em></p>"
    return "<div>" + "".join(f'<img alt="{html.escape(alt)}" src="{data_uri(s)}">' for s in svgs) + "</div>"


def _fmt(value: object, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _summary(table: pl.DataFrame, benchmark: TCABenchmark) -> str:
    filled = table.filter(pl.col("filled_quantity") > 0)
    weighted = filled.filter(pl.col("arrival_cost_bps").is_not_null())
    notional = float(weighted["executed_notional"].sum())
    mean_cost = (
        float((weighted["arrival_cost_bps"] * weighted["executed_notional"]).sum()) / notional
        if notional
        else None
    )
    rows = [
        ("Orders", f"{table.height:,}"),
        ("Orders with fills", f"{filled.height:,}"),
        ("Executed notional", _fmt(float(filled["executed_notional"].sum()), 0)),
        ("Benchmark", str(benchmark)),
        ("Mean slippage (bps)", _fmt(table["slippage_bps"].mean())),
        ("Notional-weighted arrival cost (bps)", _fmt(mean_cost)),
        ("Mean execution quality score (0-100)", _fmt(table["execution_quality_score"].mean(), 1)),
        ("Orders with a recommendation", f"{int((table['recommendations'].list.len() > 0).sum()):,}"),
    ]
    cells = "".join(f'<tr><th class="l">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f"<h2>Summary</h2><table>{cells}</table>"


def _price_charts(table: pl.DataFrame, inputs: Inputs, m: Measures) -> list[str]:
    candidates = (
        table.with_row_index("i")
        .filter(pl.col("vwap").is_not_null() & (pl.col("filled_quantity") > 0))
        .sort("executed_notional", descending=True)
        .head(EXAMPLE_ORDERS)
    )
    trades, fills = inputs.trades, inputs.fill_batch
    charts = []
    for row in candidates.iter_rows(named=True):
        i = row["i"]
        code = int(inputs.order_batch.symbol_code[i])
        start, end = int(m.window_start_ns[i]), int(m.window_end_ns[i])
        margin = max((end - start) // 10, 1)
        lo, hi = int(trades.offsets[code]), int(trades.offsets[code + 1])
        a, b = np.searchsorted(trades.ts_ns[lo:hi], [start - margin, end + margin]) + lo
        step = max((b - a) // MAX_POINTS, 1)
        axes = Axes(
            title=f"{row['order_id']} {row['side']} {row['symbol']} at {row['broker_id']}:"
            f" {_plain(row['slippage_vwap_bps'])} bps vs VWAP",
            xlabel="minutes from the window's start",
            ylabel="price",
        )
        axes.span(0, (end - start) / _NS_PER_MIN, "#fff8dc")
        axes.line(
            (trades.ts_ns[a:b:step] - start) / _NS_PER_MIN,
            trades.value[a:b:step],
            "#8aa",
            step=True,
            label="market prints",
        )
        f0, f1 = np.searchsorted(fills.order, [i, i + 1])
        qty = fills.quantity[f0:f1]
        axes.points(
            (fills.ts_ns[f0:f1] - start) / _NS_PER_MIN,
            fills.price[f0:f1],
            PALETTE[1] if row["side"] == "BUY" else PALETTE[0],
            radii=2 + 6 * np.sqrt(qty / qty.max()),
            label=f"our fills ({row['side'].lower()})",
        )
        for column, name, colour in (
            ("arrival_price", "arrival", "#555"),
            ("vwap", "VWAP", PALETTE[2]),
            ("twap", "TWAP", PALETTE[3]),
        ):
            if row[column] is not None:
                axes.level(row[column], colour, label=f"{name} {row[column]:.4g}")
        axes.x_range(-margin / _NS_PER_MIN, (end - start + margin) / _NS_PER_MIN)
        charts.append(axes.svg())
    return charts


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _cost_boxplot(table: pl.DataFrame) -> list[str]:
    data = table.filter(pl.col("arrival_cost_bps").is_not_null())
    if data.height == 0:
        return []
    per_broker = (
        data.group_by("broker_id")
        .agg(
            pl.col("arrival_cost_bps"),
            (
                (pl.col("arrival_cost_bps") * pl.col("executed_notional")).sum()
                / pl.col("executed_notional").sum()
            ).alias("mean"),
        )
        .sort("broker_id")
    )
    samples = [np.asarray(s, dtype=np.float64) for s in per_broker["arrival_cost_bps"].to_list()]
    return [
        box_plot(
            per_broker["broker_id"].to_list(),
            samples,
            per_broker["mean"].to_list(),
            ylabel="arrival cost (bps)",
        )
    ]


def _ranking_chart(ranking: dict[str, tuple[BrokerRank, ...]]) -> list[str]:
    rows = [(ac, r) for ac, ranks in ranking.items() for r in ranks]
    if not rows:
        return []
    labels = [f"{ac} {'#' + str(r.rank) if r.rank else 'unranked'} {r.broker_id}" for ac, r in rows]
    errors = [0.0 if math.isinf(r.standard_error_bps) else 1.96 * r.standard_error_bps for _, r in rows]
    colours = [PALETTE[2] if r.rank == 1 else (PALETTE[0] if r.rank else "#bbb") for _, r in rows]
    return [
        bar_ranking(
            labels,
            [r.mean_cost_bps for _, r in rows],
            errors,
            colours,
            xlabel="notional-weighted mean arrival cost (bps)",
        )
    ]


def _ranking_table(ranking: dict[str, tuple[BrokerRank, ...]]) -> str:
    head = (
        '<tr><th class="l">asset class</th><th>rank</th><th class="l">broker</th><th>orders</th>'
        '<th>notional</th><th>mean cost (bps)</th><th>&plusmn; 95 %</th><th class="l">note</th></tr>'
    )
    body = "".join(
        f'<tr><td class="l">{html.escape(ac)}</td><td>{r.rank or "&ndash;"}</td>'
        f'<td class="l">{html.escape(r.broker_id)}</td><td>{r.samples:,}</td><td>{_fmt(r.notional, 0)}</td>'
        f"<td>{_fmt(r.mean_cost_bps)}</td>"
        f"<td>{'&ndash;' if math.isinf(r.standard_error_bps) else _fmt(1.96 * r.standard_error_bps)}</td>"
        f'<td class="l">{html.escape(r.reason or _tied(r))}</td></tr>'
        for ac, ranks in ranking.items()
        for r in ranks
    )
    return f"<table>{head}{body}</table>"


def _tied(rank: BrokerRank) -> str:
    return f"tied with {', '.join(rank.tied_with)}" if rank.tied_with else ""


def _benchmark_note(benchmark: TCABenchmark) -> str:
    """Whether the requested benchmark drives the ranking: it never does (said in the report)."""
    if benchmark is TCABenchmark.ARRIVAL_PRICE:
        return "The requested benchmark, ARRIVAL_PRICE, is the one the ranking uses."
    return (
        f"The requested benchmark, {benchmark}, does not drive the ranking: the ranking, the savings"
        " and the recommendations compare arrival cost for every benchmark."
    )


def _slippage_histogram(table: pl.DataFrame, benchmark: TCABenchmark) -> list[str]:
    values = table["slippage_bps"].drop_nulls().to_numpy()
    if len(values) == 0:
        return []
    low, high = np.percentile(values, [1, 99])
    if high <= low:
        low, high = low - 1.0, high + 1.0
    counts, edges = np.histogram(np.clip(values, low, high), bins=50, range=(low, high))
    axes = Axes(
        720, 260, xlabel=f"slippage vs {benchmark} (bps, clipped to the 1st-99th percentile)", ylabel="orders"
    )
    axes.bars(edges[:-1], edges[1:], counts, PALETTE[0])
    axes.y_range(0, max(float(counts.max()) * 1.05, 1.0))
    return [axes.svg()]


def _recommendations(table: pl.DataFrame) -> str:
    recs = table.select("recommendations").explode("recommendations").drop_nulls().unnest("recommendations")
    if recs.height == 0:
        return "<h2>Recommendations</h2><p>None: no peer group was cheaper by more than its noise.</p>"
    grouped = (
        recs.group_by("type", "description", "estimatedImprovementBps")
        .len()
        .sort(["estimatedImprovementBps", "len"], descending=True)
        .head(25)
    )
    body = "".join(
        f'<tr><td class="l">{html.escape(t)}</td><td>{_fmt(imp)}</td><td>{n:,}</td>'
        f'<td class="l">{html.escape(d)}</td></tr>'
        for t, d, imp, n in grouped.select(
            "type", "description", "estimatedImprovementBps", "len"
        ).iter_rows()
    )
    head = (
        '<tr><th class="l">type</th><th>improvement (bps)</th><th>orders</th><th class="l">evidence</th></tr>'
    )
    return f"<h2>Recommendations</h2><table>{head}{body}</table>"


def _costliest(table: pl.DataFrame, limit: int = 20) -> str:
    columns: Sequence[str] = (
        "order_id",
        "symbol",
        "side",
        "broker_id",
        "filled_quantity",
        "average_price",
        "benchmark_price",
        "slippage_bps",
        "total_cost_bps",
        "market_impact_bps",
        "execution_quality_score",
    )
    rows = (
        table.filter(pl.col("total_cost_bps").is_not_null())
        .sort("total_cost_bps", descending=True)
        .head(limit)
    )
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row[c])}</td>" for c in columns) + "</tr>"
        for row in rows.iter_rows(named=True)
    )
    return f"<table><tr>{head}</tr>{body}</table>"
