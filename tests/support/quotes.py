"""A stand-in Market Data Service for end-to-end tests: publishes one symbol's quote every 20 ms
on the market-data subjects, from a thread of its own (nats-py on its own asyncio loop)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import nats

from market.subjects import subject


class QuotePublisher:
    def __init__(
        self, nats_url: str, prefix: str, symbol: str = "AAPL", bid: str = "99.98", ask: str = "100.02"
    ) -> None:
        self.nats_url = nats_url
        self.subject = subject("quotes", symbol, prefix)
        self.quote = {"symbol": symbol, "bid": bid, "ask": ask}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        nc = await nats.connect(servers=[self.nats_url])
        try:
            while not self._stop.is_set():
                message = {**self.quote, "timestamp": datetime.now(UTC).isoformat()}
                await nc.publish(self.subject, json.dumps(message).encode())
                await asyncio.sleep(0.02)
        finally:
            await nc.close()

    def __enter__(self) -> QuotePublisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
