"""A bounded, time-ordered tape of one symbol's quotes or trades: three parallel columns
(`ts_ns`, `a`, `b` — bid/ask or price/size).

Memory is bounded twice: at most `capacity` rows, and rows older than `retain_ns` behind the
newest are dropped. Trimming happens in amortised batches (when the tape holds twice what it
must keep), so appending is O(1) amortised. A late row (older than the newest) is inserted in
its place, so the tape stays sorted and windows are found by bisection.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np
import numpy.typing as npt


class Tape:
    __slots__ = ("_a", "_b", "_ts", "capacity", "dropped", "retain_ns")

    def __init__(self, capacity: int, retain_ns: int) -> None:
        if capacity < 1 or retain_ns <= 0:
            raise ValueError("capacity and retention must be positive")
        self.capacity = capacity
        self.retain_ns = retain_ns
        self._ts: list[int] = []
        self._a: list[float] = []
        self._b: list[float] = []
        #: Rows dropped so far (for the capacity / retention figures in the logs).
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._ts)

    def __repr__(self) -> str:
        return f"<Tape rows={len(self._ts)} capacity={self.capacity} dropped={self.dropped}>"

    @property
    def first_ns(self) -> int | None:
        return self._ts[0] if self._ts else None

    @property
    def last_ns(self) -> int | None:
        return self._ts[-1] if self._ts else None

    def append(self, ts_ns: int, a: float, b: float) -> None:
        ts = self._ts
        if not ts or ts_ns >= ts[-1]:
            ts.append(ts_ns)
            self._a.append(a)
            self._b.append(b)
        else:
            i = bisect_right(ts, ts_ns)
            ts.insert(i, ts_ns)
            self._a.insert(i, a)
            self._b.insert(i, b)
        if len(ts) >= 2 * self.capacity or ts[-1] - ts[0] > 2 * self.retain_ns:
            self._trim()

    def _trim(self) -> None:
        ts = self._ts
        cut = max(len(ts) - self.capacity, bisect_left(ts, ts[-1] - self.retain_ns))
        if cut > 0:
            del ts[:cut], self._a[:cut], self._b[:cut]
            self.dropped += cut

    def window(
        self, start_ns: int, end_ns: int, *, before: int = 1
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The rows with `start_ns <= ts < end_ns`, plus up to `before` rows just before
        `start_ns` (what prevailed at the start: TWAP and arrival need it)."""
        ts = self._ts
        lo = max(0, bisect_left(ts, start_ns) - before)
        hi = bisect_left(ts, end_ns)
        return (
            np.asarray(ts[lo:hi], dtype=np.int64),
            np.asarray(self._a[lo:hi], dtype=np.float64),
            np.asarray(self._b[lo:hi], dtype=np.float64),
        )

    def covers(self, start_ns: int) -> bool:
        """Whether nothing from `start_ns` on was trimmed away (whether the tape was being fed
        at `start_ns` is the book's to say)."""
        return self.dropped == 0 or (self.first_ns is not None and self.first_ns < start_ns)

    def last_at_or_before(self, ts_ns: int) -> tuple[int, float, float] | None:
        """The last row at or before `ts_ns`."""
        i = bisect_right(self._ts, ts_ns)
        return None if i == 0 else (self._ts[i - 1], self._a[i - 1], self._b[i - 1])
