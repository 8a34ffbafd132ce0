"""daemon.liveness: live while the heartbeat task keeps stamping; stalled when it stops."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from daemon.liveness import Liveness


async def test_live_while_the_loop_turns_and_stalled_when_it_blocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On Trio's clock, which the test moves: `jump` is time passing while no task runs, what a
    loop blocked by a synchronous call looks like to the heartbeat."""
    liveness = Liveness(every=0.01, stale_after=0.2, clock=trio.current_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(liveness.run)
        await trio.sleep(0.3)
        assert liveness.is_live() and liveness.report().status == "ok"
        autojump_clock.jump(0.3)  # the loop wedged for 0.3 s: nobody stamped
        report = liveness.report()
        assert not liveness.is_live()
        assert report.status == "stalled" and report.detail is not None and "not turned" in report.detail
        await trio.testing.wait_all_tasks_blocked()  # the loop turns again: the next stamp makes it live
        assert liveness.is_live()
        nursery.cancel_scope.cancel()


def test_the_interval_must_be_shorter_than_the_staleness() -> None:
    with pytest.raises(ValueError, match="shorter"):
        Liveness(every=1.0, stale_after=1.0)
