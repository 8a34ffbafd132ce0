"""A broker that outlives the daemons: the loopback Alpaca (tests/support/alpaca_emulator.py) in a
thread of the test process, on its own Trio loop, shared by every daemon of a test.

The simulated brokers live inside the daemon's process: a daemon killed with -9 takes them with
it, so after the crash every attempt it had in flight is unknown to the broker asked about it, and
neither "the broker holds it, do not send it again" nor "sent twice" can happen. Here the broker
keeps what it was sent: an order created by a POST whose answer the dead daemon never read is
still there, filled, for the restarted daemon (or the surviving peer) to find by client order id.

Every POST /v2/orders creates the order (and streams its fill at once), then is answered only
after a lognormal delay (median `latency_s`): orders are in flight at the broker, with the broker
already holding them, when the daemon dies. `holdings()` is the broker's side of the ledger.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import trio
import trio.lowlevel

from tests.support.alpaca_emulator import AlpacaEmulator

BROKER_ID = "alpaca-shared"
KEY_ENV = "CHAOS_ALPACA_KEY"
SECRET_ENV = "CHAOS_ALPACA_SECRET"


@dataclass(frozen=True)
class Holding:
    """One order as the broker has it."""

    client_order_id: str
    status: str
    filled_qty: Decimal

    @property
    def held(self) -> bool:
        """The broker holds (or held) this order: it is open or has fills."""
        return self.status in ("pending_new", "new", "accepted", "partially_filled") or self.filled_qty > 0


@dataclass(frozen=True)
class Holdings:
    orders: dict[str, Holding]  # client order id -> the order
    posts: Counter[str]  # client order id -> POST /v2/orders received


class SharedAlpaca:
    """`with SharedAlpaca() as broker:` an Alpaca emulator serving on `broker.url` until the block
    ends. `brokers_toml` and `env` configure a daemon to trade there (its only broker)."""

    def __init__(
        self, *, latency_s: float = 0.1, sigma: float = 0.5, posts: int = 5000, seed: int = 5
    ) -> None:
        self.emulator = AlpacaEmulator()
        draw = random.Random(seed)
        #: Every POST /v2/orders is answered late (the order is created at once): one delay each
        #: for the first `posts` of them, in order (the emulator's `delay_next`).
        self._delays = [latency_s * draw.lognormvariate(0.0, sigma) for _ in range(posts)]
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="chaos-alpaca", daemon=True)

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def env(self) -> dict[str, str]:
        return {KEY_ENV: self.emulator.key_id, SECRET_ENV: self.emulator.secret}

    @property
    def brokers_toml(self) -> str:
        """The daemon's [market] instruments (AAPL only: the quotes the test publishes) and the
        account, without rate limits (the emulator has none)."""
        return f"""
[[market.instruments]]
symbol = "AAPL"
asset_class = "EQUITY"
price = "100"
spread_bps = "4"
volatility_bps = "1"
top_size = "100"
tick_size = "0.01"
trade_probability = 0.2

[[alpaca_brokers]]
broker_id = "{BROKER_ID}"
name = "Alpaca (emulated, outside the daemons)"
base_url = {json.dumps(self.url)}
key_env = "{KEY_ENV}"
secret_env = "{SECRET_ENV}"
max_concurrent_requests = 16
connect_timeout = 1.0
request_timeout = 3.0
rate_limits = {{ requests_per_second = 0, requests_per_minute = 0, requests_per_hour = 0 }}
"""

    def __enter__(self) -> SharedAlpaca:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the Alpaca emulator did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def holdings(self) -> Holdings:
        """The broker's orders and POST counts, read on its own loop (consistent)."""
        assert self._token is not None

        def read() -> Holdings:
            orders = {
                o.client_order_id: Holding(o.client_order_id, o.status, o.filled_qty)
                for o in self.emulator.orders.values()
            }
            return Holdings(orders, Counter(self.emulator.posts))

        return trio.from_thread.run_sync(read, trio_token=self._token)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        for delay in self._delays:
            self.emulator.delay_next("POST", "/v2/orders", delay)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.emulator.serve)
            self._ready.set()
            # The test thread sets a threading.Event: waited for in a worker thread, no polling.
            await trio.to_thread.run_sync(self._stop.wait, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()


def broker_problems(
    answers: dict[str, str], attempts: dict[str, list[str]], holdings: Holdings
) -> tuple[list[str], list[str], list[str]]:
    """The broker's side of the promises, for orders answered `answers` (order id -> status told
    to the OMS) whose attempts have the client order ids `attempts` (order id -> ids, from the
    database): (held twice: more than one order at the broker; contradicted: told REJECTED while
    the broker holds it, or ACCEPTED/PENDING while it has none; reposted: a client order id POSTed
    more than once), each an example text per order."""
    held_twice: list[str] = []
    contradicted: list[str] = []
    for order_id, client_ids in sorted(attempts.items()):
        at_broker = [holdings.orders[c] for c in client_ids if c in holdings.orders]
        held = [h for h in at_broker if h.held]
        if len(held) > 1:
            held_twice.append(f"{order_id}: " + ", ".join(f"{h.client_order_id} {h.status}" for h in held))
        told = answers.get(order_id)
        if told == "REJECTED" and held:
            contradicted.append(f"{order_id}: told REJECTED, the broker holds {held[0].client_order_id}")
        elif told in ("ACCEPTED", "PENDING") and not at_broker:
            contradicted.append(f"{order_id}: told {told}, the broker has no order of it")
    reposted = [f"{c}: {n} POSTs" for c, n in sorted(holdings.posts.items()) if n > 1]
    return held_twice, contradicted, reposted
