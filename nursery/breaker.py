"""A per-broker circuit breaker: stop sending to a broker that is unwell, probe it, resume.

Pure: no I/O, no implicit clock (the caller injects one), no tasks.

    CLOSED ──(failure_threshold consecutive failures, or failure rate >= failure_rate over the
       ▲      last `window` seconds with >= min_calls calls)──► OPEN
       │                                                          │ cooldown passed, at allow()
       │                                                          ▼
       └──────────────(probe succeeded)─────────────────────── HALF_OPEN ──(probe failed)──► OPEN
                                                                 (one probe at a time)  (cooldown
                                                                                         restarts)

What counts as a failure is the caller's call, and it must mean "the broker is unwell": a timeout,
a 5xx, a dropped connection, an unknown outcome. A rejection of a valid order (insufficient
funds, market closed, bad symbol) is a healthy broker answering: record it as a success, or not at
all — never as a failure. Neither is a request we refused locally (rate limit, capability).

Verdicts are not tied to the call that was allowed: in HALF_OPEN the first verdict to arrive
decides, even from a call let through while CLOSED. Verdicts arriving while OPEN (calls that were
already in flight when it opened) are ignored, so they neither close it nor restart the cooldown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    """One per broker. Ask `allow()` before each request; report its verdict with
    `record_success()` / `record_failure()`, or `release_probe()` when it ended without one
    (cancelled, denied locally)."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        failure_rate: float = 0.5,
        window: float = 30.0,
        min_calls: int = 10,
        cooldown: float = 10.0,
        clock: Callable[[], float],
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0.0 < failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if not window > 0.0:
            raise ValueError("window must be positive")
        if min_calls < 1:
            raise ValueError("min_calls must be at least 1")
        if not cooldown >= 0.0:
            raise ValueError("cooldown must not be negative")
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.window = window
        self.min_calls = min_calls
        self.cooldown = cooldown
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self._consecutive_failures = 0
        self._calls: deque[tuple[float, bool]] = deque()  # (time, failed) within the window
        self._failures_in_window = 0

    def __repr__(self) -> str:
        calls, failures = self.window_counts()
        text = (
            f"<CircuitBreaker {self._state} consecutive_failures={self._consecutive_failures} "
            f"window={failures}/{calls} failed"
        )
        if self._opened_at is not None:
            text += f" opened_at={self._opened_at:.3f}"
        if self._state is BreakerState.HALF_OPEN:
            text += f" probe_in_flight={self._probe_in_flight}"
        return text + ">"

    @property
    def state(self) -> BreakerState:
        """The state as of the last call; an OPEN breaker turns HALF_OPEN in `allow()`."""
        return self._state

    @property
    def opened_at(self) -> float | None:
        """When it last opened (clock time); None while CLOSED."""
        return self._opened_at

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def window_counts(self) -> tuple[int, int]:
        """(calls, failures) recorded while CLOSED in the last `window` seconds."""
        self._prune(self._clock())
        return len(self._calls), self._failures_in_window

    # --- asking ---------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a request go now? CLOSED: yes. OPEN: no until `cooldown` has passed since it
        opened; then it turns HALF_OPEN and lets this one request through as the probe.
        HALF_OPEN: yes only if no probe is in flight (the caller of a True owns the probe and
        must end it with a verdict or `release_probe()`)."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            assert self._opened_at is not None
            if self._clock() - self._opened_at < self.cooldown:
                return False
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def would_allow(self) -> bool:
        """What `allow()` would answer now, without changing state or taking the probe."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            assert self._opened_at is not None
            return self._clock() - self._opened_at >= self.cooldown
        return not self._probe_in_flight

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled, refused locally): let another probe go.
        A no-op in any other state."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    # --- verdicts -------------------------------------------------------------------------

    def record_success(self) -> None:
        """The broker answered healthily. HALF_OPEN → CLOSED with all counts reset."""
        if self._state is BreakerState.HALF_OPEN:
            self._close()
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._add_call(self._clock(), failed=False)

    def record_failure(self) -> None:
        """The broker looked unwell (timeout, 5xx, disconnect, unknown outcome; never a
        rejection of a valid order). CLOSED → OPEN past either rule; HALF_OPEN → OPEN with the
        cooldown restarted."""
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            self._open(now)
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._add_call(now, failed=True)
            calls = len(self._calls)
            if self._consecutive_failures >= self.failure_threshold or (
                calls >= self.min_calls and self._failures_in_window / calls >= self.failure_rate
            ):
                self._open(now)

    # --- internals ------------------------------------------------------------------------

    def _add_call(self, now: float, *, failed: bool) -> None:
        self._prune(now)
        self._calls.append((now, failed))
        self._failures_in_window += failed

    def _prune(self, now: float) -> None:
        calls = self._calls
        while calls and now - calls[0][0] >= self.window:
            _, failed = calls.popleft()
            self._failures_in_window -= failed

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._probe_in_flight = False

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._opened_at = None
        self._probe_in_flight = False
        self._consecutive_failures = 0
        self._calls.clear()
        self._failures_in_window = 0
