"""$SRV.STATS tells the truth about error replies: nats.micro counts only exceptions its handler
raises, but the bus hands every request to Trio and answers later, so the bus counts its error
replies (and handler failures) itself."""

from __future__ import annotations

import json

import nats.errors
import trio
import trio_asyncio

from daemon.bus import Endpoint, NatsBus, Reply

SUBJECT = "test.stats.answer"


async def answer(data: bytes) -> Reply:
    if data == b"bad":
        return Reply(b'{"message":"no"}', 400, "invalid request")
    if data == b"bug":
        raise RuntimeError("a handler bug")
    return Reply(data)


async def test_error_replies_are_counted_in_srv_stats(nats_url: str) -> None:
    async with (
        trio_asyncio.open_loop(),
        NatsBus.connect(nats_url, name="stats-service") as service,
        NatsBus.connect(nats_url, name="stats-requester") as requester,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            lambda task_status: service.serve(
                [Endpoint("Answer", SUBJECT, answer)],
                service_name="stats-test",
                version="0.0.1",
                description="answers",
                queue_group="stats-test",
                workers=2,
                backlog=64,
                overloaded=b"{}",
                task_status=task_status,
            )
        )
        with trio.fail_after(10):  # the service's SUB may reach the server after `started`
            while True:
                try:
                    await requester.request(SUBJECT, b"ok", timeout=5.0)
                    break
                except nats.errors.NoRespondersError:
                    await trio.sleep(0.01)
        for payload in (b"bad", b"ok", b"bad", b"bug"):
            await requester.request(SUBJECT, payload, timeout=5.0)
        data, _ = await requester.request("$SRV.STATS.stats-test", b"", timeout=5.0)
        (endpoint,) = json.loads(data)["endpoints"]
        assert endpoint["num_requests"] == 5  # a "no responders" retry never reached it
        assert endpoint["num_errors"] == 3, endpoint
        assert endpoint["last_error"].startswith("500"), endpoint
        nursery.cancel_scope.cancel()
