"""An order's market window (its quotes and trades) as bytes, for `execution_reports`: a
compressed NumPy archive of six columns — no pickles, so a row can never execute code when
read back."""

from __future__ import annotations

import io

import numpy as np

from tca.model import MarketData, Quotes, Trades


def encode(data: MarketData) -> bytes:
    quotes = data.quotes
    empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        trade_ts=data.trades.ts_ns,
        trade_price=data.trades.price,
        trade_size=data.trades.size,
        quote_ts=quotes.ts_ns if quotes is not None else empty_i,
        quote_bid=quotes.bid if quotes is not None else empty_f,
        quote_ask=quotes.ask if quotes is not None else empty_f,
    )
    return buffer.getvalue()


def decode(blob: bytes, close_price: float | None = None) -> MarketData:
    """The window back; ValueError if `blob` is not one."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            trades = Trades.of(archive["trade_ts"], archive["trade_price"], archive["trade_size"])
            quote_ts = archive["quote_ts"]
            quotes = (
                Quotes.of(quote_ts, archive["quote_bid"], archive["quote_ask"]) if len(quote_ts) else None
            )
    except (OSError, KeyError, EOFError) as exc:
        raise ValueError(f"not a stored market window: {exc}") from exc
    return MarketData(trades=trades, quotes=quotes, close_price=close_price)
