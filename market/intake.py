"""The market-data intake: subscribes to the Market Data Service's subjects over NATS and feeds
the `MarketBook`. A bad message is dropped and counted (a warning at most once a minute, with the count),
never allowed to stop the intake; official closes are also handed to `on_close` (persisted, so a
TCA request after a restart still has them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
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

log = logging.getLogger(__name__)

BACKLOG = 10_000


class Subscriber(Protocol):
    async def subscribe(
        self, subjects: tuple[str, ...], send: trio.MemorySendChannel[tuple[str, bytes]]
    ) -> None: ...


class Intake:
    def __init__(
        self,
        book: MarketBook,
        *,
        prefix: str = PREFIX,
        on_close: Callable[[CloseMessage], Awaitable[None]] | None = None,
    ) -> None:
        self.book = book
        self.prefix = prefix
        self._on_close = on_close
        self.bad = 0
        self._last_warning = -1e9

    def __repr__(self) -> str:
        return f"<Intake {self.prefix} {self.book!r} bad={self.bad}>"

    async def run(
        self, bus: Subscriber, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[str, bytes]](BACKLOG)
        await bus.subscribe(subscriptions(self.prefix), send)
        task_status.started()
        async with receive:
            async for subject, payload in receive:
                close = self.handle(subject, payload)
                if close is not None and self._on_close is not None:
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
                self.book.on_quote(quote)
            elif kind == "trades":
                trade = check_trade(TRADE_DECODER.decode(payload))
                self._check_symbol(symbol, trade.symbol)
                self.book.on_trade(trade)
            else:
                close = check_close(CLOSE_DECODER.decode(payload))
                self._check_symbol(symbol, close.symbol)
                self.book.on_close(close)
                return close
        except (ValueError, msgspec.DecodeError) as exc:
            self.bad += 1
            now = time.monotonic()
            if now - self._last_warning >= 60.0:
                self._last_warning = now
                log.warning(
                    "bad market-data message dropped",
                    extra={"subject": subject, "error": str(exc), "bad_so_far": self.bad},
                )
        return None

    @staticmethod
    def _check_symbol(from_subject: str, in_message: str) -> None:
        if from_subject != in_message:
            raise BadMarketData(f"subject is for {from_subject!r} but the message for {in_message!r}")
