"""An order's market window (its quotes and trades) as bytes, for `execution_reports`.

Format (little-endian): magic `BISW`, a version byte, a flags byte (1: the body is zlib
compressed), then the body: the row counts of trades and quotes (two uint32) and six columns
as raw arrays — trade times (int64 ns), prices, sizes (float64), quote times (int64 ns), bids,
asks (float64). Plain arrays, no pickles: reading a row back can never execute code. Windows
are usually a few dozen rows; a body over `COMPRESS_ABOVE` bytes is compressed (zlib level 1).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from tca.model import MarketData, Quotes, Trades

MAGIC = b"BISW"
VERSION = 1
COMPRESSED = 1
COMPRESS_ABOVE = 64 * 1024
_HEAD = struct.Struct("<4sBB")
_COUNTS = struct.Struct("<II")
_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")


def encode(data: MarketData) -> bytes:
    trades, quotes = data.trades, data.quotes
    empty_i, empty_f = np.empty(0, _I64), np.empty(0, _F64)
    columns = (
        np.asarray(trades.ts_ns, _I64),
        np.asarray(trades.price, _F64),
        np.asarray(trades.size, _F64),
        np.asarray(quotes.ts_ns, _I64) if quotes is not None else empty_i,
        np.asarray(quotes.bid, _F64) if quotes is not None else empty_f,
        np.asarray(quotes.ask, _F64) if quotes is not None else empty_f,
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
