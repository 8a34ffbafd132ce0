"""Uptime of a broker from its status history (pure: no clock, no I/O).

`uptime_percent` is the BrokerStatus `uptime`: the share of a window (the last 24 hours) the
broker spent up. A status holds from its change until the next change, and the last one holds
until `now`.

What counts as up:
- CONNECTED, and DEGRADED: a degraded broker still serves orders (slowly, or with errors on
  some of them); routing keeps sending it orders, so its time is service time.
- DISCONNECTED and MAINTENANCE are down. Maintenance is planned, but the broker takes no orders
  meanwhile, and the figure answers "was it there to route to".

Where the window starts:
- If the history has a change at or before the window's start, that change is the status at
  the start, and the whole window counts.
- Otherwise the broker's known life begins at its first change, or at `started` (when the
  broker was added, e.g. the daemon's start) if that is earlier; time before that does not
  count: a broker added an hour ago and connected since is 100 % up, not 4 %. From that
  beginning until its first change the broker is counted down (it was connecting).
- With neither a change nor `started`, nothing is known: 0.0.

Changes after `now` are ignored; the history need not be sorted (of two changes at the same
instant, the later in the sequence wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from api.enums import ConnectionStatus
from sql.records import StatusChange

__all__ = ["DAY", "UP_STATUSES", "is_up", "uptime_percent"]

DAY = timedelta(hours=24)
UP_STATUSES = frozenset({ConnectionStatus.CONNECTED, ConnectionStatus.DEGRADED})
_MICROSECOND = timedelta(microseconds=1)


def is_up(status: ConnectionStatus) -> bool:
    return status in UP_STATUSES


def uptime_percent(
    history: Sequence[StatusChange],
    now: datetime,
    window: timedelta = DAY,
    started: datetime | None = None,
) -> float:
    """Percentage (0..100) of the window ending at `now` spent up (see the module's doc).

    When the counted span is empty (the broker began at `now`), the answer is the current
    status: 100.0 if up, else 0.0."""
    if window <= timedelta(0):
        raise ValueError(f"window must be positive, not {window}")
    window_start = now - window
    changes = sorted((c for c in history if c.at <= now), key=lambda c: c.at)  # stable
    before = [c for c in changes if c.at <= window_start]
    inside = [c for c in changes if c.at > window_start]

    if before:
        begin, status = window_start, before[-1].status
    else:
        origins = [t for t in (started, inside[0].at if inside else None) if t is not None]
        if not origins:
            return 0.0
        begin, status = max(window_start, min(origins)), ConnectionStatus.DISCONNECTED

    up = timedelta(0)
    cursor = begin
    for change in inside:
        if change.at > cursor:
            if is_up(status):
                up += change.at - cursor
            cursor = change.at
        status = change.status
    if now > cursor and is_up(status):
        up += now - cursor

    span = now - begin
    if span <= timedelta(0):
        return 100.0 if is_up(status) else 0.0
    # In whole microseconds: one correctly rounded division (25 % of a day is exactly 25.0).
    return 100 * (up // _MICROSECOND) / (span // _MICROSECOND)
