"""A broker's request limiter: every window of its `RateLimits` at once, FIFO, bounded waits.

Guarantee: for each window (W seconds, limit L), no half-open interval [s, s + W) ever holds more
than L granted requests; equivalently, for grant times t0 <= t1 <= ... in order,
`t[i + L] - t[i] >= W` (evaluated with exactly that float arithmetic).

Why exact sliding-window logs and not GCRA: GCRA with burst L over W has emission interval
T = W / L and tolerance (L - 1) * T, so it admits L requests at t and one more at t + T, i.e.
L + 1 inside one window of length W (the test suite demonstrates it); fixed-window counters
admit 2L across a window edge. So the limiter keeps the grant times of the longest window
(at most that window's limit of floats) and grants at `now` only if, for every window,
`now - grants[-L] >= W`.

Waiting: callers queue in arrival order and a newcomer never overtakes a waiting caller. The
head of the queue sleeps until capacity frees (or the broker's 429 penalty ends), takes it and
wakes the next. Whether a caller can be served before its deadline is computed when it arrives
(the queue ahead, the log and the penalty determine it) and it is refused at once when not; a
later `penalize` refuses, at once, the waiters it pushes past their deadlines. A waiter holds no
capacity until `acquire` returns, so cancelling it gives its place to the next in line.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import trio

from adapters.base import DeniedLocally
from api.capabilities import RateLimits

__all__ = ["PENALTY_INITIAL", "PENALTY_MAX", "RateLimitExceeded", "RateLimiter"]

PENALTY_INITIAL = 1.0
PENALTY_MAX = 60.0

_UNITS = {1.0: "s", 60.0: "min", 3600.0: "h"}


class RateLimitExceeded(DeniedLocally):
    """No capacity at the broker before the caller's deadline; nothing was sent. `available_at`
    is the trio time at which the request could have gone, when it was computable."""

    def __init__(self, reason: str, available_at: float | None = None) -> None:
        super().__init__(reason)
        self.available_at = available_at


def describe_limits(limits: RateLimits) -> str:
    """`5/s, 200/min`; `unlimited` when no window has a limit."""
    parts = [f"{limit}/{_UNITS.get(window, f'{window:g}s')}" for window, limit in limits.windows()]
    return ", ".join(parts) or "unlimited"


def _after(granted: float, window: float) -> float:
    """The earliest float x with `x - granted >= window` (the grant check's own arithmetic)."""
    at = granted + window
    while at - granted < window:
        at = math.nextafter(at, math.inf)
    return at


class _Waiter:
    __slots__ = ("deadline", "refusal", "wakeup")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.refusal: RateLimitExceeded | None = None  # set by `penalize`
        self.wakeup = trio.Event()


class RateLimiter:
    """One per broker. `acquire` before every request; `penalize` on a 429; `record_success`
    when the broker accepted a request; `headroom` for its status."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float] = trio.current_time,
        broker_id: str = "broker",
        margin: float = 0.0,
    ) -> None:
        """`margin` (seconds) widens every window: the broker counts arrivals, which come later
        than our grants by a jitter (microseconds here, milliseconds over a network); two
        requests we space a window apart must still arrive a window apart."""
        self.limits = limits
        self.broker_id = broker_id
        self._clock = clock
        self._windows = tuple(sorted((window + margin, limit) for window, limit in limits.windows()))
        self._horizon = max((window for window, _ in self._windows), default=0.0)
        self._grants: deque[float] = deque()  # grant times within the longest window, oldest first
        #: Grants ever forgotten (pruned from the left): `_grants[i]` is grant number `_base + i`.
        self._base = 0
        #: Per window (same order as `_windows`): the number of the oldest grant inside it the
        #: last time `headroom` looked. Grants only leave windows as time passes, so each
        #: cursor only moves forward: `headroom` is O(1) amortised, not O(grants).
        self._cursors = [0] * len(self._windows)
        self._queue: deque[_Waiter] = deque()
        self._penalty_until: float | None = None
        self._strikes = 0  # consecutive 429s (each after the previous penalty had ended)
        self.waits = 0  # requests that queued for capacity (metrics)

    def __repr__(self) -> str:
        penalty = "none" if self._penalty_until is None else f"until {self._penalty_until:.3f}"
        return (
            f"<RateLimiter {self.broker_id} {describe_limits(self.limits)} queued={len(self._queue)} "
            f"penalty={penalty} strikes={self._strikes}>"
        )

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def penalty_until(self) -> float | None:
        """The trio time before which nothing is granted (the broker's 429), if one was set."""
        return self._penalty_until

    # --- acquiring ------------------------------------------------------------------------

    async def acquire(self, deadline: float) -> None:
        """Wait until one request may go to the broker, then count it as sent.

        `deadline` (absolute trio time) bounds the wait: raises `RateLimitExceeded` at once when
        the request cannot be granted by then, without sleeping. A request that can go now goes
        now. Callers are served in arrival order. Cancelled while waiting, it takes no capacity
        and frees its place; once it returns, the capacity is used (there is no give-back: the
        request is presumed sent). An immediate grant, with or without limits, is a cancel point
        but not a schedule point (see the comment below).
        """
        if not self._windows and self._penalty_until is None and not self._queue:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        # A cancel point, but no schedule point before a grant: between the grant and the return
        # that lets the request go nothing may run, or the broker could see the request later
        # than the time counted here and two requests a window apart arrive closer than the
        # window. (Yielding first instead would let same-instant callers overtake each other.)
        await trio.lowlevel.checkpoint_if_cancelled()
        now = self._clock()
        if not self._queue:
            at = self._earliest(now)
            if at <= now:
                self._record(now)
                return
        else:
            *_, at = self._plan(now, [*(w.deadline for w in self._queue), deadline])
        if at > deadline:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise self._exceeded(at)
        waiter = _Waiter(deadline)
        self.waits += 1
        self._queue.append(waiter)
        try:
            await self._wait_for_turn(waiter)
        except BaseException:
            self._leave(waiter)
            raise

    async def _wait_for_turn(self, waiter: _Waiter) -> None:
        while True:
            if waiter.wakeup.is_set():
                waiter.wakeup = trio.Event()
            if waiter.refusal is not None:
                raise waiter.refusal
            now = self._clock()
            wake_at = waiter.deadline
            at = None
            if self._queue[0] is waiter:
                at = self._earliest(now)
                if at <= now and at <= waiter.deadline:
                    self._queue.popleft()
                    self._record(now)
                    self._wake_head()
                    return
                wake_at = min(wake_at, at)
            if now >= waiter.deadline:
                raise self._exceeded(at)
            # Between the checks above and this wait there is no checkpoint, so any change that
            # concerns this waiter happens while it is parked and sets its (fresh) event.
            with trio.move_on_at(wake_at):
                await waiter.wakeup.wait()

    def _leave(self, waiter: _Waiter) -> None:
        if self._queue and self._queue[0] is waiter:
            self._queue.popleft()
            self._wake_head()
            return
        try:
            self._queue.remove(waiter)
        except ValueError:
            pass  # already removed (granted or refused by `penalize`)

    def _wake_head(self) -> None:
        if self._queue:
            self._queue[0].wakeup.set()

    def _record(self, now: float) -> None:
        if self._windows:
            self._grants.append(now)

    def _exceeded(self, available_at: float | None) -> RateLimitExceeded:
        reason = (
            f"rate limit: no capacity at {self.broker_id} before the deadline "
            f"({describe_limits(self.limits)})"
        )
        if self._penalty_until is not None:
            reason += f"; broker throttling (429) until {self._penalty_until:.3f}"
        return RateLimitExceeded(reason, available_at)

    def _prune(self, now: float) -> float:
        """Forget grants older than the longest window and an ended penalty; returns the earliest
        time the penalty allows a grant."""
        grants = self._grants
        while grants and now - grants[0] >= self._horizon:
            grants.popleft()
            self._base += 1
        if self._penalty_until is not None:
            if now < self._penalty_until:
                return self._penalty_until
            self._penalty_until = None
        return now

    def _earliest(self, now: float) -> float:
        """When the next grant may go, for a caller with nobody ahead (no allocation: hot path)."""
        at = self._prune(now)
        grants = self._grants
        total = len(grants)
        for window, limit in self._windows:
            if total >= limit:
                earlier = grants[total - limit]
                if at - earlier < window:
                    at = _after(earlier, window)
        return at

    def _plan(self, now: float, deadlines: Iterable[float]) -> Iterator[float]:
        """The grant time of each caller, in FIFO order with these deadlines, if nothing changes.

        A caller whose time is past its deadline will leave unserved: it is yielded, and it takes
        no capacity from those behind it.
        """
        start = self._prune(now)
        grants = self._grants
        planned: list[float] = []
        for deadline in deadlines:
            at = start
            total = len(grants) + len(planned)
            for window, limit in self._windows:
                if total >= limit:
                    index = total - limit
                    earlier = grants[index] if index < len(grants) else planned[index - len(grants)]
                    if at - earlier < window:
                        at = _after(earlier, window)
            yield at
            if at <= deadline:
                planned.append(at)
                start = at

    # --- the broker's verdicts ------------------------------------------------------------

    def penalize(self, retry_after: float | None = None) -> None:
        """The broker answered 429: grant nothing until now + `retry_after` seconds.

        Without `retry_after`: 1 s, doubling on each consecutive 429 up to 60 s; `record_success`
        resets it. A 429 arriving while a penalty is still in force answers a request sent
        before it began, so it does not double the delay again. A penalty is never shortened.
        Waiters that can no longer be served before their deadlines are refused now.
        """
        now = self._clock()
        if self._penalty_until is None or now >= self._penalty_until:
            self._strikes += 1
            current = now
        else:
            current = self._penalty_until
        if retry_after is None or not retry_after >= 0:  # also rejects NaN
            retry_after = min(PENALTY_MAX, PENALTY_INITIAL * 2.0 ** min(self._strikes - 1, 16))
        self._penalty_until = max(current, now + retry_after)
        if not self._queue:
            return
        waiters = list(self._queue)
        for waiter, at in zip(waiters, self._plan(now, [w.deadline for w in waiters]), strict=True):
            if at > waiter.deadline:
                waiter.refusal = self._exceeded(at)
                self._queue.remove(waiter)
                waiter.wakeup.set()
        self._wake_head()

    def record_success(self) -> None:
        """The broker accepted a request: the next 429 starts again from 1 s."""
        self._strikes = 0

    # --- views ----------------------------------------------------------------------------

    def penalized(self) -> bool:
        """Is a 429 penalty in force right now (nothing is granted until it ends)?"""
        return self._penalty_until is not None and self._clock() < self._penalty_until

    def grant_delay(self) -> float:
        """Seconds until one more request, queued behind the waiters, would be granted if
        nothing changes (0: now). O(waiters x windows): for when `headroom` says 0."""
        now = self._clock()
        *_, at = self._plan(now, [*(w.deadline for w in self._queue), math.inf])
        return max(0.0, at - now)

    def headroom(self) -> float:
        """0-100: the share of capacity left now in the tightest window, after the queued
        waiters; 0 while a 429 penalty is in force; 100 without limits."""
        now = self._clock()
        if self._prune(now) > now:
            return 0.0
        lowest = 100.0
        grants, base, cursors = self._grants, self._base, self._cursors
        end = base + len(grants)
        for i, (window, limit) in enumerate(self._windows):
            cursor = max(cursors[i], base)
            while cursor < end and now - grants[cursor - base] >= window:
                cursor += 1
            cursors[i] = cursor
            left = max(0, limit - (end - cursor) - len(self._queue))
            lowest = min(lowest, 100.0 * left / limit)
        return lowest
