"""What the adapter's requests wait for: one `Pending` answer each, settled by the receive
loop (first outcome wins), plus what it remembers of its orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from adapters.base import BrokerError, BrokerOrderSnapshot
from adapters.fix.orders import OrderDetails
from api.enums import BrokerOrderStatus

__all__ = ["CancelWait", "KnownOrder", "Pending", "QueryWait"]

T = TypeVar("T")


class Pending(Generic[T]):
    """One answer awaited from the stream: resolved or failed once, by the receive loop."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: tuple[T] | None = None
        self._error: BrokerError | None = None

    def __repr__(self) -> str:
        state = "waiting" if not self.done else "failed" if self._error is not None else "resolved"
        return f"<Pending {state}>"

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def resolve(self, value: T) -> None:
        if not self.done:
            self._value = (value,)
            self._done.set()

    def fail(self, error: BrokerError) -> None:
        if not self.done:
            self._error = error
            self._done.set()

    async def wait(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value[0]


@dataclass
class KnownOrder:
    """What the adapter remembers of one of its orders (PostgreSQL has it all after a restart)."""

    details: OrderDetails | None = None
    broker_order_id: str | None = None
    status: BrokerOrderStatus | None = None


@dataclass
class CancelWait:
    """A cancel waiting for the order's Canceled report or an OrderCancelReject."""

    client_order_id: str
    answer: Pending[None] = field(default_factory=Pending)


@dataclass
class QueryWait:
    """A status request waiting for its ExecutionReport (ExecType I)."""

    client_order_id: str
    answer: Pending[BrokerOrderSnapshot | None] = field(default_factory=Pending)
