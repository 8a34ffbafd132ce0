"""alpaca-py's `TradingClient`, made safe to call from Trio: once, bounded, classified.

Retries switched off. alpaca-py's `RESTClient._request` retries every request answered 429 or
504 (POST /orders included) up to 3 times with a blocking `time.sleep(3)`: `_one_request`
raises `RetryException` when `status in self._retry_codes and retry > 0`. A retried POST is a
second order when the first one was created before the 504. `retry_attempts=0` cannot turn it
off (the constructor ignores falsy values). `OneShotTradingClient` therefore overrides
`_one_request` to always pass `retry=0` (no RetryException can be raised), and also sets
`_retry = 0` and `_retry_codes = []` so that `_request`'s loop runs exactly once. Every error
status reaches us as `APIError`; tests assert a POST answered 429 or 504 is sent once.

Timeouts. alpaca-py passes no timeout to requests (a silent peer would block a worker thread
forever). `_one_request` adds `timeout=(connect, read)`, so every request ends on its own.

Threads. Each call runs in `trio.to_thread.run_sync` under one `CapacityLimiter` (the worker
threads and the connection pool stay bounded) with `abandon_on_cancel=True`: a caller's
deadline returns at once, and the thread finishes in the background within its own timeout
(still holding its limiter slot, so abandoned threads cannot pile up). A handshake tells apart
a request that was never started (waiting for a slot: `DeniedLocally`, nothing was sent) from
one in flight (`OutcomeUnknown`). An outer deadline a little past the requests timeout backs
it up. The threads share alpaca-py's one `requests.Session`: its urllib3 pool is thread-safe,
and Alpaca sets no cookies (the part of a Session that is not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio
from alpaca.trading.client import TradingClient

from adapters.alpaca.config import AlpacaConfig, AlpacaCredentials
from adapters.alpaca.errors import Call, map_error
from adapters.base import DeniedLocally, OutcomeUnknown

T = TypeVar("T")

#: Beyond the requests timeout, how long the Trio side waits before giving up on a thread.
_THREAD_GRACE = 1.0


class OneShotTradingClient(TradingClient):
    """A TradingClient whose requests are sent exactly once, each with a timeout."""

    def __init__(
        self, credentials: AlpacaCredentials, *, url: str, paper: bool, timeout: tuple[float, float]
    ) -> None:
        super().__init__(
            api_key=credentials.key_id,
            secret_key=credentials.secret,
            paper=paper,
            raw_data=True,
            url_override=url,
        )
        self._retry = 0
        self._retry_codes = []
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<OneShotTradingClient {self._base_url}>"

    def _one_request(self, method: str, url: str, opts: dict[Any, Any], retry: int) -> Any:
        return super()._one_request(method, url, {**opts, "timeout": self._timeout}, 0)


class _Handshake:
    """Whether a worker thread began its request, decided exactly once under a lock: either the
    thread claims it first (the request is sent) or the caller abandons first (it never is)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: str | None = None  # "started" | "abandoned"

    def claim(self) -> bool:
        with self._lock:
            if self._state is None:
                self._state = "started"
            return self._state == "started"

    def abandon(self) -> bool:
        """Mark abandoned; True if the request had already started."""
        with self._lock:
            if self._state is None:
                self._state = "abandoned"
            return self._state == "started"


class AlpacaRest:
    """One REST connection: `call(fn)` runs `fn(client)` in a worker thread and maps its
    failure into `adapters.base`'s errors (see `adapters.alpaca.errors`)."""

    def __init__(self, config: AlpacaConfig, credentials: AlpacaCredentials) -> None:
        self.client = OneShotTradingClient(
            credentials,
            url=config.rest_url,
            paper=config.paper,
            timeout=(config.connect_timeout, config.request_timeout),
        )
        self._limiter = trio.CapacityLimiter(config.max_concurrent_requests)
        self._timeout = config.connect_timeout + config.request_timeout
        self._deadline = self._timeout + _THREAD_GRACE

    def __repr__(self) -> str:
        return f"<AlpacaRest {self.client._base_url} busy={self._limiter.borrowed_tokens}>"

    async def call(self, fn: Callable[[TradingClient], T], *, kind: Call = Call.OTHER) -> T:
        """`fn(client)`, sent at most once. Raises DeniedLocally when no worker slot freed up
        within the deadline (nothing was sent), else the mapped error of the call."""
        handshake = _Handshake()

        def work() -> T:
            if not handshake.claim():
                raise DeniedLocally("abandoned before sending")
            return fn(self.client)

        with trio.move_on_after(self._deadline) as scope:
            try:
                return await trio.to_thread.run_sync(work, limiter=self._limiter, abandon_on_cancel=True)
            except DeniedLocally:
                raise
            except Exception as exc:
                raise map_error(exc, kind, time.time(), self._timeout) from None
        assert scope.cancelled_caught
        if handshake.abandon():
            raise OutcomeUnknown(f"no answer from Alpaca within {self._deadline:g}s")
        raise DeniedLocally(f"no REST slot free within {self._deadline:g}s")
