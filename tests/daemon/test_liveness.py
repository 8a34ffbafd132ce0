"""daemon.liveness: live while the heartbeat task keeps stamping; stalled when it stops."""

from __future__ import annotations

import time

import pytest
import trio

from daemon.liveness import Liveness


async def test_live_while_the_loop_turns_and_stalled_when_it_blocks() -> None:
    liveness = Liveness(every=0.01, stale_after=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(liveness.run)
        await trio.sleep(0.3)
        assert liveness.is_live() and liveness.report().status == "ok"
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop on purpose: what a wedged daemon does
        report = liveness.report()
        assert not liveness.is_live()
        assert report.status == "stalled" and report.detail is not None and "not turned" in report.detail
        await trio.sleep(0.05)  # the loop turns again: the next stamp makes it live
        assert liveness.is_live()
        nursery.cancel_scope.cancel()


def test_the_interval_must_be_shorter_than_the_staleness() -> None:
    with pytest.raises(ValueError, match="shorter"):
        Liveness(every=1.0, stale_after=1.0)
