"""Cancelling orders at brokers: the OMS's CancelOrder, retries of unanswered cancels, cancels
made to fail over, and cancels of zombie orders.

Cancels go by client order id and are idempotent at the broker, so they are retried with
backoff until the broker answers; a refusal (already filled, unknown) is a final answer.
Nothing here applies events: what the broker does with a cancel comes back on its stream.
`Cancels` is the applier's `ZombieCanceller` (`nursery.hooks.ApplierHooks`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

import trio

from adapters.base import CancelRejected, OutcomeUnknown
from api.contracts import CancelOrderRequest, CancelOrderResponse
from api.enums import BrokerOrderStatus, CancellationStatus
from nursery.brokers import BrokerHandle
from nursery.live import LiveBook, LiveExecution
from sql.store import Store

log = logging.getLogger(__name__)


class Cancels:
    def __init__(
        self,
        store: Store,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        *,
        spawn: Callable[..., None],
        attempt_deadline: Callable[[object], float],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._live = live
        self._brokers = brokers
        self._spawn = spawn
        self._attempt_deadline = attempt_deadline
        self._clock = clock

    def __repr__(self) -> str:
        return f"<Cancels brokers={len(self._brokers)}>"

    async def cancel(self, request: CancelOrderRequest) -> CancelOrderResponse:
        """The OMS's CancelOrder for a known broker: ACCEPTED (the broker took the cancel; the
        CANCELED update follows), PENDING (it will be sent / retried), or REJECTED with why."""
        now = self._clock()
        request_id = str(uuid.uuid4())

        def answer(status: CancellationStatus, reason: str | None = None) -> CancelOrderResponse:
            return CancelOrderResponse(
                request_id=request_id,
                order_id=request.order_id,
                status=status,
                timestamp=now,
                rejection_reason=reason,
            )

        live = self._live.by_order(request.order_id)
        order = live.order if live is not None else await self._store.load_latest_execution(request.order_id)
        if order is None:
            return answer(CancellationStatus.REJECTED, f"unknown order {request.order_id!r}")
        if order.broker_id != request.broker_id:
            return answer(
                CancellationStatus.REJECTED,
                f"order {request.order_id!r} is at broker {order.broker_id!r}, not {request.broker_id!r}",
            )
        if (
            request.broker_order_id
            and order.broker_order_id
            and request.broker_order_id != order.broker_order_id
        ):
            return answer(
                CancellationStatus.REJECTED,
                f"brokerOrderId {request.broker_order_id!r} does not match {order.broker_order_id!r}",
            )
        if order.status.is_final:
            return answer(
                CancellationStatus.REJECTED, f"order is already {order.status.execution_status.value}"
            )
        if live is None:
            live = LiveExecution(order)
            self._live.add(live)
        if order.status is BrokerOrderStatus.PENDING:
            live.cancel_requested = True  # sent as soon as the broker acknowledges the order
            return answer(CancellationStatus.PENDING, None)
        handle = self._brokers[order.broker_id]
        deadline = trio.current_time() + self._attempt_deadline(order.urgency)
        try:
            with trio.fail_at(deadline):
                await handle.limiter.acquire(deadline)
                await handle.adapter.cancel(order.client_order_id)
        except CancelRejected as exc:
            return answer(CancellationStatus.REJECTED, f"{order.broker_id}: {exc.reason}")
        except (OutcomeUnknown, trio.TooSlowError):
            live.cancel_requested = True
            self._spawn(self.send_cancel, live)
            return answer(CancellationStatus.PENDING, None)
        return answer(CancellationStatus.ACCEPTED, None)

    async def send_cancel(self, live: LiveExecution) -> None:
        """Cancel by client order id until the broker answers (cancels are idempotent)."""
        delay = 0.05
        handle = self._brokers[live.order.broker_id]
        while not live.order.status.is_final:
            try:
                with trio.fail_after(max(1.0, self._attempt_deadline(live.order.urgency))):
                    await handle.adapter.cancel(live.order.client_order_id)
                return
            except CancelRejected as exc:
                log.warning(
                    "cancel refused by broker", extra={"order_id": live.order.order_id, "reason": exc.reason}
                )
                return
            except Exception as exc:
                log.info(
                    "cancel failed; retrying", extra={"order_id": live.order.order_id, "error": repr(exc)}
                )
                await trio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def cancel_zombie(self, live: LiveExecution) -> None:
        """Cancel an order a broker took after we declared it absent (its status stays what we
        recorded, so `send_cancel`'s loop condition does not apply)."""
        handle = self._brokers[live.order.broker_id]
        delay = 0.05
        for _ in range(20):
            try:
                with trio.fail_after(max(1.0, self._attempt_deadline(live.order.urgency))):
                    await handle.adapter.cancel(live.order.client_order_id)
                return
            except CancelRejected as exc:
                log.error("zombie order could not be cancelled", extra={"reason": exc.reason})
                return
            except Exception:
                await trio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def cancel_and_confirm(self, live: LiveExecution, budget: float) -> bool:
        """Cancel an order found at a broker after an unknown outcome (the caller has recorded
        it accepted) and wait for the broker to confirm it. True when it ended with nothing
        filled (safe to fail over); False when it filled (partly) first or the cancel could not
        be confirmed in time: then it is adopted."""
        handle = self._brokers[live.order.broker_id]
        with trio.move_on_after(budget):
            while not live.order.status.is_final:
                try:
                    await handle.adapter.cancel(live.order.client_order_id)
                except CancelRejected:
                    break  # it finished first (filled): adopt what happened
                except Exception as exc:
                    log.info("cancel for failover failed; retrying", extra={"error": repr(exc)})
                with trio.move_on_after(0.5):  # the broker's word comes on the stream; else ask again
                    await live.changed.wait()
        order = live.order
        return order.status in (BrokerOrderStatus.CANCELED, BrokerOrderStatus.EXPIRED) and not order.fills
