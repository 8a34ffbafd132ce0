"""Reading a desk's files (CSV, or Parquet by extension) into the batch arrays of `tca.batch`.

Columns (docs/tca.md has the full table): required ones must be present and non-empty; optional
ones may be absent or empty per row. Times are ISO-8601 (an offset is honoured, none means UTC)
or integers counted in `time_unit` since the epoch. Bad input raises `OfflineInputError`
naming the file, the column and an example row; nothing is silently dropped except market data
of symbols no order trades.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import polars as pl

from api.enums import Side
from tca.batch import NO_TIME, FillBatch, OrderBatch, Tape, tape_of
from tca.model import MarketData, Quotes, TcaFill, TcaOrder, Trades

_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

ORDER_REQUIRED = ("order_id", "symbol", "side", "quantity", "broker_id", "arrival_time")
ORDER_OPTIONAL = (
    "execution_id",
    "asset_class",
    "order_type",
    "strategy",
    "arrival_price",
    "decision_price",
    "end_time",
    "end_price",
    "window_start",
    "window_end",
    "close_price",
    "commission",
)
FILL_REQUIRED = ("order_id", "time", "quantity", "price")
FILL_OPTIONAL = ("fees", "fill_id", "venue")
TRADE_REQUIRED = ("symbol", "time", "price", "size")
QUOTE_REQUIRED = ("symbol", "time", "bid", "ask")
CLOSE_REQUIRED = ("symbol", "date", "close")

_STRINGS = frozenset(
    {"order_id", "symbol", "side", "broker_id", "execution_id", "asset_class", "order_type", "strategy"}
    | {"fill_id", "venue"}
)
_FLOATS = frozenset(
    {"quantity", "price", "size", "bid", "ask", "fees", "close", "close_price"}
    | {"arrival_price", "decision_price", "end_price", "commission"}
)
_TIMES = ("arrival_time", "end_time", "window_start", "window_end", "time")


class OfflineInputError(ValueError):
    """A file the offline tool cannot use, with what is wrong and where."""


class Inputs(msgspec.Struct, frozen=True):
    """The files, read and checked: the orders table (polars, one row per order, in file order,
    with normalised columns), and the arrays the batch engine takes."""

    orders: pl.DataFrame
    symbols: tuple[str, ...]
    order_batch: OrderBatch
    fill_batch: FillBatch
    trades: Tape
    quotes: Tape | None


def read_table(path: Path | str, required: tuple[str, ...], what: str, time_unit: str = "ns") -> pl.DataFrame:
    """One input file with its columns typed: ids and labels as strings, amounts as floats,
    times as int64 ns since the epoch (UTC)."""
    path = Path(path)
    if not path.exists():
        raise OfflineInputError(f"{what}: {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pl.read_parquet(path)
    else:
        header = pl.read_csv(path, n_rows=0).columns
        overrides: dict[str, pl.DataType] = {c: pl.String() for c in header if c in _STRINGS}
        overrides |= {c: pl.Float64() for c in header if c in _FLOATS}
        try:
            frame = pl.read_csv(path, schema_overrides=overrides)
        except pl.exceptions.PolarsError as exc:
            raise OfflineInputError(f"{what}: {path} could not be read as CSV: {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise OfflineInputError(f"{what}: {path} lacks the column(s) {', '.join(missing)}")
    casts = [pl.col(c).cast(pl.String) for c in frame.columns if c in _STRINGS]
    casts += [pl.col(c).cast(pl.Float64) for c in frame.columns if c in _FLOATS]
    try:
        frame = frame.with_columns(
            casts + [_time_expr(frame, c, time_unit) for c in _TIMES if c in frame.columns]
        )
    except pl.exceptions.PolarsError as exc:
        raise OfflineInputError(f"{what}: {path} has a value of the wrong type: {exc}") from exc
    for column in required:
        nulls = frame[column].null_count()
        if nulls:
            row = frame.with_row_index("row").filter(pl.col(column).is_null())["row"][0]
            raise OfflineInputError(
                f"{what}: {path} column {column} is empty in {nulls} row(s), e.g. row {row + 1}"
            )
    return frame


def _time_expr(frame: pl.DataFrame, column: str, time_unit: str) -> pl.Expr:
    dtype = frame.schema[column]
    col = pl.col(column)
    if dtype.is_integer():
        scale = _UNIT_NS[time_unit]
        return (col.cast(pl.Int64) * scale if scale != 1 else col.cast(pl.Int64)).alias(column)
    if isinstance(dtype, pl.Datetime):
        aware = col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC")
        return aware.dt.cast_time_unit("ns").to_physical().alias(column)
    if dtype == pl.String:
        return col.str.to_datetime(time_unit="ns", time_zone="UTC").to_physical().alias(column)
    if dtype == pl.Null:
        return col.cast(pl.Int64).alias(column)
    raise OfflineInputError(f"column {column}: times must be ISO-8601 text or integers, got {dtype}")


def _bad(frame: pl.DataFrame, mask: pl.Expr, what: str, message: str) -> None:
    bad = frame.with_row_index("row").filter(mask)
    if bad.height:
        example = bad.row(0, named=True)
        example["row"] += 1
        raise OfflineInputError(f"{what}: {bad.height} row(s) {message}, e.g. {example}")


def load(
    orders_path: Path | str,
    fills_path: Path | str,
    trades_path: Path | str,
    quotes_path: Path | str | None = None,
    closes_path: Path | str | None = None,
    *,
    time_unit: str = "ns",
) -> Inputs:
    """Read and check every file and build the batch arrays."""
    if time_unit not in _UNIT_NS:
        raise OfflineInputError(f"time_unit must be one of {', '.join(_UNIT_NS)}")
    orders = read_table(orders_path, ORDER_REQUIRED, "orders", time_unit)
    for column in ORDER_OPTIONAL:
        if column not in orders.columns:
            dtype = pl.Int64 if column in _TIMES else (pl.Float64 if column in _FLOATS else pl.String)
            orders = orders.with_columns(pl.lit(None, dtype=dtype).alias(column))
    orders = orders.with_columns(
        pl.col("side").str.to_uppercase(),
        pl.col("asset_class").fill_null("EQUITY"),
        pl.col("execution_id").fill_null(pl.col("order_id")),
        pl.col("order_type").fill_null(""),
        pl.col("strategy").fill_null(""),
    )
    _bad(orders, pl.col("order_id").is_duplicated(), "orders", "repeat an order_id")
    _bad(orders, ~pl.col("side").is_in(["BUY", "SELL"]), "orders", "have a side other than BUY or SELL")
    _bad(orders, ~(pl.col("quantity") > 0), "orders", "have a quantity that is not > 0")
    for column in ("arrival_price", "decision_price", "end_price", "close_price"):
        _bad(orders, pl.col(column) <= 0, "orders", f"have a {column} that is not > 0")
    _bad(orders, pl.col("commission") < 0, "orders", "have a commission that is not >= 0")
    _bad(
        orders,
        pl.col("window_start").is_null() != pl.col("window_end").is_null(),
        "orders",
        "give only one of window_start and window_end",
    )
    _bad(
        orders,
        pl.col("window_end") < pl.col("window_start"),
        "orders",
        "have a window ending before it starts",
    )

    symbols = tuple(sorted(orders["symbol"].unique().to_list()))
    enum = pl.Enum(symbols)
    orders = orders.with_columns(
        pl.col("symbol").cast(enum).to_physical().cast(pl.Int64).alias("symbol_code")
    )

    fills = read_table(fills_path, FILL_REQUIRED, "fills", time_unit)
    if "fees" not in fills.columns:
        fills = fills.with_columns(pl.lit(0.0).alias("fees"))
    fills = fills.with_columns(pl.col("fees").fill_null(0.0))
    _bad(
        fills, ~(pl.col("quantity") > 0) | ~(pl.col("price") > 0), "fills", "have a quantity or price not > 0"
    )
    _bad(fills, pl.col("fees") < 0, "fills", "have negative fees")
    index = orders.select("order_id").with_row_index("order_index")
    fills = fills.join(index, on="order_id", how="left")
    _bad(fills, pl.col("order_index").is_null(), "fills", "name an order_id that is not in the orders file")
    fill_order = fills["order_index"].to_numpy().astype(np.int64)
    fill_ts = fills["time"].to_numpy()
    if len(fill_order) > 1 and not bool(
        np.all(
            (fill_order[1:] > fill_order[:-1])
            | ((fill_order[1:] == fill_order[:-1]) & (fill_ts[1:] >= fill_ts[:-1]))
        )
    ):
        perm = np.lexsort((fill_ts, fill_order))
    else:
        perm = np.arange(len(fill_order))
    fill_batch = FillBatch(
        order=fill_order[perm],
        ts_ns=fill_ts[perm].astype(np.int64),
        quantity=fills["quantity"].to_numpy()[perm],
        price=fills["price"].to_numpy()[perm],
        fees=fills["fees"].to_numpy()[perm],
    )

    trades = _tape(
        read_table(trades_path, TRADE_REQUIRED, "trades", time_unit), enum, "price", "size", "trades"
    )
    quotes = None
    if quotes_path is not None:
        quotes = _tape(
            read_table(quotes_path, QUOTE_REQUIRED, "quotes", time_unit), enum, "bid", "ask", "quotes"
        )

    if closes_path is not None:
        orders = _attach_closes(orders, fill_batch, closes_path)

    def times(column: str) -> np.ndarray:  # type: ignore[type-arg]
        return orders[column].fill_null(NO_TIME).to_numpy().astype(np.int64)

    def prices(column: str) -> np.ndarray:  # type: ignore[type-arg]
        return orders[column].fill_null(np.nan).to_numpy().astype(np.float64)

    order_batch = OrderBatch(
        symbol_code=orders["symbol_code"].to_numpy().astype(np.int64),
        sign=np.where(orders["side"].to_numpy() == "BUY", 1, -1).astype(np.int64),
        quantity=orders["quantity"].to_numpy().astype(np.float64),
        arrival_ns=times("arrival_time"),
        arrival_price=prices("arrival_price"),
        decision_price=prices("decision_price"),
        end_ns=times("end_time"),
        end_price=prices("end_price"),
        window_start_ns=times("window_start"),
        window_end_ns=times("window_end"),
        close_price=prices("close_price"),
        commission=orders["commission"].fill_null(0.0).to_numpy().astype(np.float64),
    )
    return Inputs(orders, symbols, order_batch, fill_batch, trades, quotes)


def _tape(frame: pl.DataFrame, enum: pl.Enum, first: str, second: str, what: str) -> Tape:
    """Market rows of the orders' symbols as a `Tape` (trades: price and size; quotes: mid)."""
    frame = frame.select(
        pl.col("symbol").cast(enum, strict=False).to_physical().alias("code"), "time", first, second
    )
    if frame["code"].null_count():  # market data of symbols no order trades
        frame = frame.filter(pl.col("code").is_not_null())
    if what == "trades":
        _bad(
            frame, ~(pl.col("price") > 0) | ~(pl.col("size") >= 0), what, "have a price not > 0 or a size < 0"
        )
        value, size = frame[first].to_numpy(), frame[second].to_numpy()
    else:
        _bad(
            frame,
            ~(pl.col("bid") > 0) | ~(pl.col("ask") >= pl.col("bid")),
            what,
            "do not have 0 < bid <= ask",
        )
        value, size = ((frame[first] + frame[second]) / 2).to_numpy(), None
    codes = frame["code"].to_numpy()
    return tape_of(codes, frame["time"].to_numpy(), value, size, len(enum.categories))


def _attach_closes(orders: pl.DataFrame, fills: FillBatch, closes_path: Path | str) -> pl.DataFrame:
    """Official closes by (symbol, UTC trade date): the date of the order's last fill, else its
    end, else its arrival. A close_price given in the orders file wins."""
    closes = read_table(closes_path, CLOSE_REQUIRED, "closes")
    closes = closes.with_columns(pl.col("date").cast(pl.String).str.to_date()).select(
        "symbol", pl.col("date").alias("trade_date"), pl.col("close").alias("official_close")
    )
    last_fill = np.full(orders.height, NO_TIME, dtype=np.int64)
    if len(fills.order):
        ends = np.searchsorted(fills.order, np.arange(orders.height), side="right") - 1
        has = (ends >= 0) & (fills.order[np.maximum(ends, 0)] == np.arange(orders.height))
        last_fill[has] = fills.ts_ns[ends[has]]
    anchor = pl.Series("anchor", last_fill).replace(NO_TIME, None)
    orders = orders.with_columns(
        pl.coalesce(anchor, pl.col("end_time"), pl.col("arrival_time"))
        .cast(pl.Datetime("ns", "UTC"))
        .dt.date()
        .alias("trade_date")
    )
    joined = orders.join(closes, on=["symbol", "trade_date"], how="left", maintain_order="left")
    return joined.with_columns(pl.coalesce("close_price", "official_close").alias("close_price")).drop(
        "official_close"
    )


def engine_case(
    inputs: Inputs, row: int, close_price: float | None = None
) -> tuple[TcaOrder, tuple[TcaFill, ...], MarketData]:
    """The online engine's inputs for order `row` of the files (its symbol's whole tape as the
    market data): how the naive baseline and the cross-checks feed `tca.engine.analyse`."""
    ob, fb = inputs.order_batch, inputs.fill_batch
    record = inputs.orders.row(row, named=True)

    def opt_time(value: int) -> int | None:
        return None if value == NO_TIME else int(value)

    def opt_price(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    order = TcaOrder(
        order_id=record["order_id"],
        execution_id=record["execution_id"],
        symbol=record["symbol"],
        side=Side(record["side"]),
        quantity=float(ob.quantity[row]),
        broker_id=record["broker_id"],
        arrival_ns=int(ob.arrival_ns[row]),
        asset_class=record["asset_class"],
        order_type=record["order_type"],
        strategy=record["strategy"],
        arrival_price=opt_price(ob.arrival_price[row]),
        decision_price=opt_price(ob.decision_price[row]),
        end_ns=opt_time(ob.end_ns[row]),
        end_price=opt_price(ob.end_price[row]),
        window_start_ns=opt_time(ob.window_start_ns[row]),
        window_end_ns=opt_time(ob.window_end_ns[row]),
        commission=0.0 if ob.commission is None else float(ob.commission[row]),
    )
    lo, hi = np.searchsorted(fb.order, [row, row + 1])
    fills = tuple(
        TcaFill(ts_ns=t, quantity=q, price=p, fees=f)
        for t, q, p, f in zip(
            fb.ts_ns[lo:hi].tolist(),
            fb.quantity[lo:hi].tolist(),
            fb.price[lo:hi].tolist(),
            fb.fees[lo:hi].tolist(),
            strict=True,
        )
    )
    code = int(ob.symbol_code[row])
    t0, t1 = int(inputs.trades.offsets[code]), int(inputs.trades.offsets[code + 1])
    trades = Trades.of(inputs.trades.ts_ns[t0:t1], inputs.trades.value[t0:t1], inputs.trades.size[t0:t1])
    quotes = None
    if inputs.quotes is not None:
        q0, q1 = int(inputs.quotes.offsets[code]), int(inputs.quotes.offsets[code + 1])
        mids = inputs.quotes.value[q0:q1]
        quotes = Quotes.of(inputs.quotes.ts_ns[q0:q1], mids, mids)
    return order, fills, MarketData(trades=trades, quotes=quotes, close_price=close_price)
