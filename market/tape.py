"""A bounded, time-ordered tape of one symbol's quotes or trades: three parallel columns
(`ts_ns`, `a`, `b` — bid/ask or price/size) in NumPy arrays.

Memory is bounded twice: at most `capacity` rows, and rows older than `retain_ns` behind the
newest are dropped. The arrays hold room for twice the capacity; rows are appended at the end
and dropped by moving the start, and when the end reaches the room's end the kept rows are
moved to the front at once (amortised O(1) per row; 48 bytes a row, so a full tape of 200,000
rows takes under 20 MB). A late row (older than the newest) is inserted in its place, so the
tape stays sorted and windows are found by bisection (`searchsorted`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Tape:
    __slots__ = ("_a", "_b", "_end", "_start", "_ts", "capacity", "dropped", "retain_ns")

    def __init__(self, capacity: int, retain_ns: int) -> None:
        if capacity < 1 or retain_ns <= 0:
            raise ValueError("capacity and retention must be positive")
        self.capacity = capacity
        self.retain_ns = retain_ns
        room = min(2 * capacity, 1024)  # grows (doubling) up to 2 x capacity as rows come
        self._ts = np.empty(room, np.int64)
        self._a = np.empty(room, np.float64)
        self._b = np.empty(room, np.float64)
        self._start = 0
        self._end = 0
        #: Rows dropped so far (for the capacity / retention figures in the logs).
        self.dropped = 0

    def __len__(self) -> int:
        return self._end - self._start

    def __repr__(self) -> str:
        return f"<Tape rows={len(self)} capacity={self.capacity} dropped={self.dropped}>"

    @property
    def first_ns(self) -> int | None:
        return int(self._ts[self._start]) if self._end > self._start else None

    @property
    def last_ns(self) -> int | None:
        return int(self._ts[self._end - 1]) if self._end > self._start else None

    def append(self, ts_ns: int, a: float, b: float) -> None:
        if self._end == len(self._ts):
            self._make_room()
        end = self._end
        if end == self._start or ts_ns >= self._ts[end - 1]:
            self._ts[end], self._a[end], self._b[end] = ts_ns, a, b
        else:  # late: shift the newer rows one place (rare; O(rows after it))
            i = self._start + int(np.searchsorted(self._ts[self._start : end], ts_ns, side="right"))
            for column, value in ((self._ts, ts_ns), (self._a, a), (self._b, b)):
                column[i + 1 : end + 1] = column[i:end]
                column[i] = value
        self._end = end + 1
        self._trim()

    def _trim(self) -> None:
        """Drop what exceeds the capacity and what is older than the retention."""
        start, end = self._start, self._end
        cut = max(end - self.capacity, start)
        oldest = self._ts[end - 1] - self.retain_ns
        if self._ts[cut] < oldest:
            cut = start + int(np.searchsorted(self._ts[start:end], oldest, side="left"))
        if cut > start:
            self.dropped += cut - start
            self._start = cut

    def _make_room(self) -> None:
        """Move the kept rows to the front, growing the arrays (up to 2 x capacity) if full."""
        rows = self._end - self._start
        room = len(self._ts)
        if rows >= room // 2 and room < 2 * self.capacity:
            room = min(2 * room, 2 * self.capacity)
        for name in ("_ts", "_a", "_b"):
            old = getattr(self, name)
            new = np.empty(room, old.dtype) if room != len(old) else old
            new[:rows] = old[self._start : self._end]
            setattr(self, name, new)
        self._start, self._end = 0, rows

    def window(self, start_ns: int, end_ns: int, *, before: int = 1) -> tuple[I64, F64, F64]:
        """The rows with `start_ns <= ts < end_ns`, plus up to `before` rows just before
        `start_ns` (what prevailed at the start: TWAP and arrival need it). Copies."""
        ts = self._ts[self._start : self._end]
        lo = max(0, int(np.searchsorted(ts, start_ns, side="left")) - before)
        hi = int(np.searchsorted(ts, end_ns, side="left"))
        s = self._start
        return (
            self._ts[s + lo : s + hi].copy(),
            self._a[s + lo : s + hi].copy(),
            self._b[s + lo : s + hi].copy(),
        )

    def covers(self, start_ns: int) -> bool:
        """Whether nothing from `start_ns` on was trimmed away (whether the tape was being fed
        at `start_ns` is the book's to say)."""
        first = self.first_ns
        return self.dropped == 0 or (first is not None and first < start_ns)

    def last_at_or_before(self, ts_ns: int) -> tuple[int, float, float] | None:
        """The last row at or before `ts_ns`."""
        ts = self._ts[self._start : self._end]
        i = int(np.searchsorted(ts, ts_ns, side="right"))
        if i == 0:
            return None
        j = self._start + i - 1
        return int(self._ts[j]), float(self._a[j]), float(self._b[j])
