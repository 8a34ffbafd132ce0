"""The market-data intake: subscribes to the Market Data Service's subjects over NATS and feeds
the `MarketBook`. A bad message is dropped and counted (a warning at most once a minute, with the count),
never allowed to stop the intake; official closes are also handed to `on_close` (persisted, so a
TCA request after a restart still has them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import msgspec
import trio

from market.book import MarketBook
from market.messages import (
    CLOSE_DECODER,
    QUOTE_DECODER,
    TRADE_DECODER,
    BadMarketData,
    CloseMessage,
    check_close,
    check_quote,
    check_trade,
)
from market.subjects import PREFIX, parse, subscriptions
from tca.model import ns_of

log = logging.getLogger(__name__)

BACKLOG = 10_000


class Subscriber(Protocol):
    #: Messages lost before Trio took them, and connection losses (nothing is replayed).
    dropped: int
    disconnects: int

    async def subscribe(
        self, subjects: tuple[str, ...], send: trio.MemorySendChannel[tuple[str, bytes]]
    ) -> None: ...


def _wall_ns() -> int:
    return time.time_ns()


class Intake:
    def __init__(
        self,
        book: MarketBook,
        *,
        prefix: str = PREFIX,
        on_close: Callable[[CloseMessage], Awaitable[None]] | None = None,
        max_skew_s: float = 5.0,
        clock_ns: Callable[[], int] = _wall_ns,
    ) -> None:
        self.book = book
        self.prefix = prefix
        self._on_close = on_close
        #: A timestamp further ahead of our clock than this is refused: one future-dated quote
        #: would otherwise hide every later one and push the tapes' trimming forward.
        self._max_skew_ns = int(max_skew_s * 1e9)
        self._clock_ns = clock_ns
        self.bad = 0
        self._last_warning = -1e9
        self._losses = (0, 0)

    def __repr__(self) -> str:
        return f"<Intake {self.prefix} {self.book!r} bad={self.bad}>"

    async def run(
        self, bus: Subscriber, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[str, bytes]](BACKLOG)
        await bus.subscribe(subscriptions(self.prefix), send)
        self._losses = (bus.dropped, bus.disconnects)
        task_status.started()
        async with receive, trio.open_nursery() as persisting:
            async for subject, payload in receive:
                losses = (bus.dropped, bus.disconnects)
                if losses != self._losses:  # messages were lost: the tapes have a hole
                    self._losses = losses
                    self.book.mark_gap()
                    log.warning("market data lost (NATS dropped or reconnected); tapes restart")
                try:
                    close = self.handle(subject, payload)
                except Exception:  # a bug here must not stop the intake (nor the daemon)
                    log.exception("market-data message could not be applied", extra={"subject": subject})
                    continue
                if close is not None and self._on_close is not None:
                    persisting.start_soon(self._persist_close, close)

    async def _persist_close(self, close: CloseMessage) -> None:
        assert self._on_close is not None
        try:
            await self._on_close(close)
        except Exception as exc:  # persisting a close must not stop the intake
            log.error("close not persisted", extra={"symbol": close.symbol, "error": repr(exc)})

    def handle(self, subject: str, payload: bytes) -> CloseMessage | None:
        """Decode, check and apply one message; returns it if it is an official close."""
        try:
            kind, symbol = parse(subject, self.prefix)
            if kind == "quotes":
                quote = check_quote(QUOTE_DECODER.decode(payload))
                self._check_symbol(symbol, quote.symbol)
                self._check_time(quote.symbol, quote.timestamp)
                self.book.on_quote(quote)
            elif kind == "trades":
                trade = check_trade(TRADE_DECODER.decode(payload))
                self._check_symbol(symbol, trade.symbol)
                self._check_time(trade.symbol, trade.timestamp)
                self.book.on_trade(trade)
            else:
                close = check_close(CLOSE_DECODER.decode(payload))
                self._check_symbol(symbol, close.symbol)
                return close if self.book.on_close(close) else None  # unknown symbols: not kept
        except (ValueError, ArithmeticError, OverflowError, msgspec.DecodeError) as exc:
            self.bad += 1
            now = time.monotonic()
            if now - self._last_warning >= 60.0:
                self._last_warning = now
                log.warning(
                    "bad market-data message dropped",
                    extra={"subject": subject, "error": str(exc), "bad_so_far": self.bad},
                )
        return None

    def _check_time(self, symbol: str, at: datetime) -> None:
        if ns_of(at) - self._clock_ns() > self._max_skew_ns:
            raise BadMarketData(f"{symbol}: timestamp {at.isoformat()} is in the future")

    @staticmethod
    def _check_symbol(from_subject: str, in_message: str) -> None:
        if from_subject != in_message:
            raise BadMarketData(f"subject is for {from_subject!r} but the message for {in_message!r}")
