"""An order's market window (its quotes and trades) as bytes, for `execution_reports`; and the
windows of many orders read from the tapes at once (`gather`).

Format (little-endian): magic `BISW`, a version byte, a flags byte (1: the body is zlib
compressed), then the body: the row counts of trades and quotes (two uint32) and six columns
as raw arrays — trade times (int64 ns), prices, sizes (float64), quote times (int64 ns), bids,
asks (float64). Plain arrays, no pickles: reading a row back can never execute code. Windows
are usually a few dozen rows; a body over `COMPRESS_ABOVE` bytes is compressed (zlib level 1).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tca.batch import Tape, Windows
from tca.model import MarketData, Quotes, Trades

MAGIC = b"BISW"
VERSION = 1
COMPRESSED = 1
COMPRESS_ABOVE = 64 * 1024
_HEAD = struct.Struct("<4sBB")
_COUNTS = struct.Struct("<II")
_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")
_EMPTY_I = np.empty(0, _I64)
_EMPTY_F = np.empty(0, _F64)
#: Windows of one symbol closer than this (ns) are read from the tapes together (`gather`).
WINDOW_GAP_NS = 1_000_000_000

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Columns = tuple[I64, F64, F64]


class Tapes(Protocol):
    """What `gather` reads (`market.book.MarketBook`)."""

    def covers(self, symbol: str, start_ns: int) -> bool: ...

    def market_data(self, symbol: str, start_ns: int, end_ns: int) -> MarketData: ...


def encode(data: MarketData) -> bytes:
    trades, quotes = data.trades, data.quotes
    if quotes is None:
        return encode_columns(trades.ts_ns, trades.price, trades.size, _EMPTY_I, _EMPTY_F, _EMPTY_F)
    return encode_columns(trades.ts_ns, trades.price, trades.size, quotes.ts_ns, quotes.bid, quotes.ask)


def encode_columns(trade_ts: I64, price: F64, size: F64, quote_ts: I64, bid: F64, ask: F64) -> bytes:
    """`encode` of the window given as its six columns (slices of a larger window will do)."""
    columns = (
        np.asarray(trade_ts, _I64),
        np.asarray(price, _F64),
        np.asarray(size, _F64),
        np.asarray(quote_ts, _I64),
        np.asarray(bid, _F64),
        np.asarray(ask, _F64),
    )
    body = _COUNTS.pack(len(columns[0]), len(columns[3])) + b"".join(c.tobytes() for c in columns)
    flags = 0
    if len(body) > COMPRESS_ABOVE:
        body, flags = zlib.compress(body, 1), COMPRESSED
    return _HEAD.pack(MAGIC, VERSION, flags) + body


def decode(blob: bytes, close_price: float | None = None) -> MarketData:
    """The window back; ValueError if `blob` is not one."""
    try:
        magic, version, flags = _HEAD.unpack_from(blob)
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"unknown format {magic!r} v{version}")
        body = blob[_HEAD.size :]
        if flags & COMPRESSED:
            body = zlib.decompress(body)
        n_trades, n_quotes = _COUNTS.unpack_from(body)
        offset = _COUNTS.size
        sizes = (n_trades, n_trades, n_trades, n_quotes, n_quotes, n_quotes)
        dtypes = (_I64, _F64, _F64, _I64, _F64, _F64)
        columns = []
        for count, dtype in zip(sizes, dtypes, strict=True):
            columns.append(np.frombuffer(body, dtype, count, offset))
            offset += count * dtype.itemsize
        if offset != len(body):
            raise ValueError("trailing bytes")
    except (struct.error, zlib.error) as exc:
        raise ValueError(f"not a stored market window: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"not a stored market window: {exc}") from exc
    trades = Trades.of(columns[0], columns[1], columns[2])
    quotes = Quotes.of(columns[3], columns[4], columns[5]) if n_quotes else None
    return MarketData(trades=trades, quotes=quotes, close_price=close_price)


def gather(tapes: Tapes, requests: Sequence[tuple[str, int, int]]) -> tuple[Windows, list[bytes]]:
    """The window of each `(symbol, start_ns, end_ns)`, as `tapes.market_data` gives it for the
    request alone (its rows in `[start, end)` and, on each tape, the row before them; nothing
    when the tapes do not cover the start: unavailable, never half a window), laid out for
    `tca.engine.analyse_many` (no close), and each one `encode`d. One `market_data` per symbol
    and cluster of windows that overlap or lie within `WINDOW_GAP_NS` of each other (from the
    cluster's earliest start to its latest end): a window is a slice of its cluster's."""
    n = len(requests)
    bounds = np.zeros((4, n), dtype=np.int64)  # trade lo, hi, quote lo, hi: rows of the parts
    by_symbol: dict[str, list[int]] = {}
    for i, (symbol, start, _) in enumerate(requests):
        if tapes.covers(symbol, start):
            by_symbol.setdefault(symbol, []).append(i)
    trades: list[Columns] = []
    quotes: list[Columns] = []
    t_base = q_base = 0
    for symbol, members in by_symbol.items():
        for rows in _clusters(members, requests):
            starts = np.array([requests[i][1] for i in rows], dtype=np.int64)
            ends = np.array([requests[i][2] for i in rows], dtype=np.int64)
            data = tapes.market_data(symbol, int(starts.min()), int(ends.max()))
            t = data.trades
            trades.append((t.ts_ns, t.price, t.size))
            bounds[0, rows], bounds[1, rows] = _slices(t.ts_ns, starts, ends, t_base)
            t_base += len(t.ts_ns)
            if data.quotes is not None:
                q = data.quotes
                quotes.append((q.ts_ns, q.bid, q.ask))
                bounds[2, rows], bounds[3, rows] = _slices(q.ts_ns, starts, ends, q_base)
                q_base += len(q.ts_ns)
    t_ts, price, size = _concat(trades)
    q_ts, bid, ask = _concat(quotes)
    t_lo, t_hi, q_lo, q_hi = bounds.tolist()
    encoded = [
        encode_columns(
            t_ts[t_lo[i] : t_hi[i]],
            price[t_lo[i] : t_hi[i]],
            size[t_lo[i] : t_hi[i]],
            q_ts[q_lo[i] : q_hi[i]],
            bid[q_lo[i] : q_hi[i]],
            ask[q_lo[i] : q_hi[i]],
        )
        for i in range(n)
    ]
    t_offsets, t_rows = _segments(bounds[0], bounds[1])
    q_offsets, q_rows = _segments(bounds[2], bounds[3])
    layout = Windows(
        trades=Tape(t_offsets, t_ts[t_rows], price[t_rows], size[t_rows]),
        quotes=Tape(q_offsets, q_ts[q_rows], (bid[q_rows] + ask[q_rows]) / 2, _EMPTY_F),
        close=np.full(n, np.nan),
    )
    return layout, encoded


def _clusters(members: list[int], requests: Sequence[tuple[str, int, int]]) -> list[list[int]]:
    """`members` grouped into runs of windows that overlap or lie within `WINDOW_GAP_NS` of
    each other: one long-resting order does not make a whole batch read hours of tape."""
    out: list[list[int]] = []
    reach = 0
    for i in sorted(members, key=lambda i: requests[i][1]):
        _, start, end = requests[i]
        if out and start <= reach + WINDOW_GAP_NS:
            out[-1].append(i)
            reach = max(reach, end)
        else:
            out.append([i])
            reach = end
    return out


def _slices(ts: I64, starts: I64, ends: I64, base: int) -> tuple[I64, I64]:
    """Rows (offset by `base`) of each window `[start, end)` of `ts` plus the row before it, as
    `market.tape.Tape.window` finds them."""
    lo = np.maximum(np.searchsorted(ts, starts, side="left") - 1, 0)
    hi = np.maximum(np.searchsorted(ts, ends, side="left"), lo)
    return base + lo, base + hi


def _concat(parts: list[Columns]) -> Columns:
    if not parts:
        return _EMPTY_I, _EMPTY_F, _EMPTY_F
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _segments(lo: I64, hi: I64) -> tuple[I64, I64]:
    """The offsets of segments `[lo[i], hi[i])` laid end to end, and the rows they take."""
    lengths = hi - lo
    offsets = np.zeros(len(lo) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = np.repeat(lo - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
    return offsets, rows
