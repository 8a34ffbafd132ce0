"""After a connect, or after broker events were dropped: what the broker did while we were not
listening, applied as if its stream had told us.

This is the driver around `nursery.recovery.reconcile_with_broker` (pure: what one lookup
means): it asks the broker and hands every event to the applier's queue, in order. Contract:

- `recover(handle, since)` reads the broker's fills since `since` (our orders only) and then
  looks up every execution still open there that the broker had acknowledged (PENDING ones are
  reconciled on their own, `nursery.resolver`); everything it learns is queued on the
  executions like stream events, the fills first. Fills are stored once by fill id and a
  reconstructed fill once by its cumulative quantity, so running it again is harmless. It sends
  nothing but lookups, and those only while half of the broker's rate limits are free: new
  orders come first. Raises on failure (the broker supervisor retries while connected).
- `recover_all_since(since)` does that at every broker in the background, each retried with
  backoff until it completes (after a database outage that dropped broker events).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import trio

from api.enums import BrokerOrderStatus
from nursery.applier import EventApplier
from nursery.brokers import BrokerHandle
from nursery.hooks import Spawn
from nursery.identity import execution_of_client_order
from nursery.live import LiveBook
from nursery.recovery import reconcile_with_broker

__all__ = ["RECOVERY_HEADROOM", "RECOVERY_LOOKBACK", "RECOVERY_TIMEOUT", "BrokerResync"]

log = logging.getLogger(__name__)

RECOVERY_LOOKBACK = timedelta(days=7)
RECOVERY_TIMEOUT = 30.0
#: Recovery lookups go only while more than this share (%) of the broker's rate limits is free.
RECOVERY_HEADROOM = 50.0


class BrokerResync:
    def __init__(
        self,
        live: LiveBook,
        brokers: Mapping[str, BrokerHandle],
        applier: EventApplier,
        spawn: Spawn,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._live = live
        self._brokers = brokers
        self._applier = applier
        self._spawn = spawn
        self._clock = clock

    def __repr__(self) -> str:
        return f"<BrokerResync brokers={len(self._brokers)}>"

    async def recover(self, handle: BrokerHandle, since: datetime | None) -> None:
        """After a connect: what the broker did while we were not listening.

        1. Fills since `since` (None, the first connect since start: since the oldest
           execution still open there, at most `RECOVERY_LOOKBACK` back), of our orders only,
           applied like stream events (stored once by fill id).
        2. Each execution still open there (and not PENDING: those are reconciled on their
           own) is looked up by client order id, and what the broker answers is applied after
           those fills (`nursery.recovery.reconcile_with_broker`): a fill reconstructed from its
           cumulative quantity when it reports more filled than we hold (reports it lost, a FIX
           sequence reset), the end it reports (cancelled, expired, rejected), and CANCELED
           when it does not know the order at all. Lookups go through the rate limiter, and
           only while half of its capacity is free: new orders come first.
        Raises on failure (the supervisor retries while connected)."""
        now = self._clock()
        broker_id = handle.broker_id
        open_here = [
            live
            for live in self._live
            if live.order.broker_id == broker_id and not live.order.status.is_final
        ]
        if since is None:
            if not open_here:
                return
            since = max(min(live.order.created_at for live in open_here), now - RECOVERY_LOOKBACK)
        with trio.fail_after(RECOVERY_TIMEOUT):
            fills = await handle.adapter.fills_since(since)
        ours = [f for f in fills if execution_of_client_order(f.client_order_id) is not None]
        for fill in ours:
            self._applier.enqueue(fill)
        ended = reconstructed = unknown = 0
        unpriced: list[str] = []
        for live in open_here:
            order = live.order
            if order.status is BrokerOrderStatus.PENDING or order.status.is_final:
                continue
            deadline = trio.current_time() + RECOVERY_TIMEOUT
            with trio.fail_after(RECOVERY_TIMEOUT):
                # Orders first: a lookup waits until the broker's rate limits have room to spare.
                while handle.limiter.headroom() <= RECOVERY_HEADROOM:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await handle.limiter.acquire(deadline)
                snapshot = await handle.adapter.query(order.client_order_id)
            # `order` as queried: the applier recomputes a reconstructed fill against the fills
            # held when it applies it (the ones queued above come first).
            found = reconcile_with_broker(order, snapshot, self._clock())
            for event in found.events:
                self._applier.enqueue(event)
            ended += found.ended
            reconstructed += found.reconstructed
            unknown += found.unknown_at_broker
            if found.unpriced:
                unpriced.append(order.client_order_id)
        if ours or ended or reconstructed or unknown or unpriced:
            log.info(
                "recovered after connecting",
                extra={
                    "broker_id": broker_id,
                    "fills": len(ours),
                    "ended": ended,
                    "reconstructed_fills": reconstructed,
                    "unknown_at_broker": unknown,
                },
            )
        if unknown:
            log.warning(
                "open executions the broker does not know (a venue that lost its state?): ended CANCELED",
                extra={"broker_id": broker_id, "count": unknown},
            )
        if unpriced:
            log.error(
                "the broker reports fills we do not hold but no average price: not booked",
                extra={"broker_id": broker_id, "client_order_ids": unpriced[:20], "count": len(unpriced)},
            )

    def recover_all_since(self, since: datetime) -> None:
        """Broker events were dropped during a database outage: ask every broker again."""
        for handle in self._brokers.values():
            self._spawn(self._recover_until_done, handle, since)

    async def _recover_until_done(self, handle: BrokerHandle, since: datetime) -> None:
        """`recover(handle, since)` until it completes (the broker may be reconnecting)."""
        delay = 0.5
        while True:
            try:
                await self.recover(handle, since)
            except Exception as exc:
                log.warning(
                    "recovery of dropped broker events failed; retrying",
                    extra={"broker_id": handle.broker_id, "error": repr(exc), "retry_in_s": delay},
                )
                await trio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            return
