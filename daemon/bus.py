"""The daemon's only door to asyncio: the nats-py client, bridged into Trio by trio-asyncio.

Rules (PITFALLS.md): asyncio-side callbacks only hand work to Trio (`send_nowait` into a memory
channel, or setting a Trio event) and return; Trio code does the work and owns its errors. Every
call into nats-py goes through `aio_as_trio(fn)(args)`. Nothing else in the project imports nats.

Delivery semantics:
- request-reply endpoints are served through `nats.micro` (so `$SRV.PING/INFO/STATS` discovery
  works) in a queue group, so several daemons share the load;
- a request that cannot be queued (backlog full) is answered at once with a 503 error reply, so an
  OMS never waits for a timeout to learn the service is saturated;
- `publish_durable` is a JetStream publish with a `Nats-Msg-Id` header: acknowledged by the stream
  or reported failed, never silently lost; republishing the same id inside the stream's
  duplicate window is dropped by the server.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import nats
import nats.js.api
import nats.micro
import trio
from nats.micro.request import Request as MicroRequest
from trio_asyncio import aio_as_trio

from daemon import aioloop

log = logging.getLogger(__name__)


class _ErrorLog:
    """Logs connection errors at most once per `ERROR_LOG_EVERY_S`, counting the others."""

    def __init__(self) -> None:
        self._last = -ERROR_LOG_EVERY_S
        self._suppressed = 0

    def record(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last < ERROR_LOG_EVERY_S:
            self._suppressed += 1
            return
        log.warning("nats error", extra={"error": repr(exc), "not_logged_since_last": self._suppressed})
        self._last = now
        self._suppressed = 0


ERROR_HEADER = "Nats-Service-Error"
#: Replies sent in one bridge crossing at most.
MAX_REPLY_BATCH = 256
#: How often a lost server is tried again (s). Short: a restarted server is found at once.
RECONNECT_WAIT_S = 0.05
#: At most one "nats error" log line per this many seconds (a reconnect loop fails 20 times a s).
ERROR_LOG_EVERY_S = 10.0
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


def server_urls(url: str) -> list[str]:
    """`url` as nats-py's server list: one URL, or several separated by commas (the nodes of a
    cluster; nats-py tries them in turn and fails over between them)."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError("no NATS server URL given")
    return urls


class Reply(msgspec.Struct, frozen=True):
    """What an endpoint handler returns: a payload, plus an error code for error replies."""

    data: bytes
    error_code: int | None = None
    error_text: str | None = None


Handler = Callable[[bytes], Awaitable[Reply]]

#: The reply to a request whose handler raised (a bug: handlers turn errors into replies).
_HANDLER_FAILED = Reply(b'{"message":"internal error"}', 500, "internal error")


class Endpoint(msgspec.Struct, frozen=True):
    name: str
    subject: str
    handler: Handler


class DurableMessage(msgspec.Struct, frozen=True):
    subject: str
    payload: bytes
    msg_id: str


class NatsBus:
    """One NATS connection inside trio-asyncio. Create with `NatsBus.connect`."""

    def __init__(self, nc: Any, connection_lost: trio.Event) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.connection_lost = connection_lost
        self._service: Any = None
        self._unanswered = 0  # requests handed to Trio and not yet answered
        #: nats.micro's endpoints by subject, whose $SRV.STATS we keep truthful (`_count_errors`).
        self._stats: dict[str | None, Any] = {}
        self._answered = trio.Event()
        self._answered.set()
        #: Subscription messages dropped because Trio had not taken the previous ones yet.
        self.dropped = 0
        #: Times the connection was lost (core-NATS messages published meanwhile are not replayed).
        self.disconnects = 0

    def __repr__(self) -> str:
        return f"<NatsBus {getattr(self._nc, 'connected_url', None)} connected={self.is_connected}>"

    @property
    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        connect_timeout: float = 5.0,
        drain_timeout: float = 5.0,
        reconnect_time_wait: float = RECONNECT_WAIT_S,
    ) -> AsyncIterator[NatsBus]:
        """Connect (reconnecting forever on later loss: a trading daemon must not give up after two
        minutes, PITFALLS.md); drain and close on exit, bounded by `drain_timeout`.

        A lost server is tried again every `reconnect_time_wait` s: nats-py restores the
        subscriptions only once reconnected, and until then requesters that reached the
        restarted server first get "no responders". Errors (each failed attempt is one) are
        logged once per `ERROR_LOG_EVERY_S`, with how many were not."""
        lost = trio.Event()
        created: list[NatsBus] = []  # the bus, once built (the callbacks exist before it)
        errors = _ErrorLog()

        async def on_error(exc: Exception) -> None:
            errors.record(exc)

        async def on_disconnected() -> None:
            for built in created:
                built.disconnects += 1
            log.warning("nats disconnected; reconnecting")

        async def on_reconnected() -> None:
            log.info(
                "nats reconnected", extra={"url": str(nc.connected_url.geturl() if nc.connected_url else "")}
            )

        async def on_closed() -> None:
            lost.set()

        aioloop.install()  # nats-py's callbacks in bursts: one Trio pass per burst, not each
        try:
            nc = await aio_as_trio(nats.connect)(
                servers=server_urls(url),
                name=name,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_time_wait,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
                pending_size=8 * 1024 * 1024,
            )
        except Exception as exc:
            raise ConnectionError(
                f"cannot connect to NATS at {url}: {exc!r}; is nats-server running?"
            ) from exc
        bus = cls(nc, lost)
        created.append(bus)
        try:
            yield bus
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(drain_timeout):
                await bus._close()

    async def _close(self) -> None:
        if self._nc.is_closed:
            return
        try:
            await aio_as_trio(self._nc.drain)()
        except Exception as exc:  # a drain that fails still must close the socket
            log.warning("nats drain failed", extra={"error": repr(exc)})
            with contextlib.suppress(Exception):
                await aio_as_trio(self._nc.close)()

    # --- request-reply --------------------------------------------------------------------

    async def serve(
        self,
        endpoints: Sequence[Endpoint],
        *,
        service_name: str,
        version: str,
        description: str,
        queue_group: str,
        workers: int,
        backlog: int,
        overloaded: bytes,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve `endpoints` until cancelled. Reports started once every endpoint is subscribed."""
        send, receive = trio.open_memory_channel[tuple[Handler, MicroRequest]](backlog)
        handlers: Mapping[str, Handler] = {e.subject: e.handler for e in endpoints}

        async def on_request(request: MicroRequest) -> None:
            # asyncio side: hand over and return; never do the work here.
            try:
                send.send_nowait((handlers[request.subject], request))
            except (trio.WouldBlock, trio.ClosedResourceError):
                self._count_error(request.subject, "503 service overloaded or stopping")
                await request.respond_error("503", "service overloaded or stopping", overloaded)
                return
            self._unanswered += 1
            if self._answered.is_set():
                self._answered = trio.Event()

        self._service = await aio_as_trio(nats.micro.add_service)(
            self._nc,
            name=service_name,
            version=version,
            description=description,
            queue_group=queue_group,
        )
        for endpoint in endpoints:
            await aio_as_trio(self._service.add_endpoint)(
                name=endpoint.name, subject=endpoint.subject, handler=on_request
            )
        self._stats = {getattr(e, "_subject", None): e for e in getattr(self._service, "_endpoints", ())}
        replies_send, replies_receive = trio.open_memory_channel[tuple[MicroRequest, Reply | None]](
            backlog + workers
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reply, replies_receive)
            for _ in range(workers):
                nursery.start_soon(self._work, receive.clone(), replies_send.clone())
            receive.close()
            replies_send.close()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                send.close()

    async def stop_serving(self) -> None:
        """Stop taking requests without dropping any: each endpoint's subscription is *drained*
        (NATS stops delivering; what was already delivered is still handed to Trio and answered),
        so new requests go to the other daemons of the queue group (or get "no responders"), and
        no requester is left to time out. Then the discovery subscriptions stop."""
        service, self._service = self._service, None
        if service is None:
            return
        # nats.micro's Service.stop() *unsubscribes* endpoints, which discards requests nats-py
        # has received but not yet passed to our callback. Drain them first (the end-to-end
        # SIGTERM-during-a-burst test guards this use of micro's internals).
        for endpoint in list(getattr(service, "_endpoints", ())):
            subscription = getattr(endpoint, "_subscription", None)
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await aio_as_trio(subscription.drain)()
                endpoint._subscription = None
        service._endpoints = []
        with contextlib.suppress(Exception):
            await aio_as_trio(service.stop)()

    async def wait_answered(self) -> None:
        """Wait until every request handed to Trio has been answered."""
        await self._answered.wait()

    async def _work(
        self,
        receive: trio.MemoryReceiveChannel[tuple[Handler, MicroRequest]],
        replies: trio.MemorySendChannel[tuple[MicroRequest, Reply | None]],
    ) -> None:
        async with receive, replies:
            async for handler, request in receive:
                reply: Reply | None = None
                try:
                    reply = await handler(request.data)
                except Exception as exc:  # handlers turn errors into replies: this is a bug
                    log.exception(
                        "request handler failed", extra={"subject": request.subject, "error": repr(exc)}
                    )
                try:
                    replies.send_nowait((request, reply))  # room for every worker's reply: no wait
                except trio.WouldBlock:
                    await replies.send((request, reply))

    async def _reply(self, receive: trio.MemoryReceiveChannel[tuple[MicroRequest, Reply | None]]) -> None:
        """Send the replies that are ready, all of them in one bridge crossing: one crossing per
        reply cost more than the order work at a few thousand requests a second."""
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < MAX_REPLY_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                for request, reply in batch:
                    if reply is None or reply.error_code is not None:
                        error = reply if reply is not None else _HANDLER_FAILED
                        self._count_error(request.subject, f"{error.error_code} {error.error_text}")
                try:
                    failed = await aio_as_trio(_respond_all)(batch)
                except Exception as exc:  # NATS is down: the requesters time out and retry
                    failed = len(batch)
                    log.warning("replies failed", extra={"count": len(batch), "error": repr(exc)})
                else:
                    if failed:
                        log.warning("replies failed (requesters gone?)", extra={"count": failed})
                self._unanswered -= len(batch)
                if self._unanswered == 0:
                    self._answered.set()

    def _count_error(self, subject: str, error: str) -> None:
        """Count an error reply in the endpoint's $SRV.STATS (`num_errors`, `last_error`).
        nats.micro counts only exceptions raised by its handler, and ours never raises: it
        hands the request to Trio, whose answer (an error reply too) is sent later, here."""
        endpoint = self._stats.get(subject)
        if endpoint is not None:
            endpoint._num_errors += 1
            endpoint._last_error = error

    # --- publishing -----------------------------------------------------------------------

    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        duplicate_window: float,
        max_age: float,
        replicas: int = 1,
    ) -> None:
        """Create or update the JetStream stream that keeps execution updates (`replicas`
        copies: 3 in a 3-node cluster, so losing one node loses no update)."""
        config = nats.js.api.StreamConfig(
            name=name,
            subjects=list(subjects),
            duplicate_window=duplicate_window,
            max_age=max_age,
            storage=nats.js.api.StorageType.FILE,
            num_replicas=replicas,
        )
        try:
            await aio_as_trio(self._js.add_stream)(config)
        except nats.js.errors.BadRequestError:
            await aio_as_trio(self._js.update_stream)(config)

    async def publish_durable(
        self, messages: Sequence[DurableMessage], *, timeout: float
    ) -> list[BaseException | None]:
        """Publish a batch to JetStream in one bridge crossing; one result per message (None when
        the stream acknowledged it, the exception otherwise)."""
        return await aio_as_trio(_publish_batch)(self._js, messages, timeout)  # type: ignore[no-any-return]

    async def publish(self, subject: str, payload: bytes) -> None:
        """Core NATS publish (not durable)."""
        await aio_as_trio(self._nc.publish)(subject, payload)

    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Core NATS publishes (not durable), in one bridge crossing."""
        await aio_as_trio(_publish_many)(self._nc, messages)

    async def subscribe(
        self, subjects: Sequence[str], send: trio.MemorySendChannel[tuple[str, bytes]]
    ) -> None:
        """Subscribe (core NATS) to `subjects`; each message is handed to Trio as (subject,
        payload). A message that finds `send` full is dropped and counted in `dropped`: this is
        for market data, where the next quote supersedes the one lost; nothing durable."""

        async def on_message(msg: Any) -> None:
            # asyncio side: hand over and return.
            try:
                send.send_nowait((msg.subject, msg.data))
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.dropped += 1

        for subject in subjects:
            await aio_as_trio(self._nc.subscribe)(subject, cb=on_message, pending_msgs_limit=65_536)

    async def request(self, subject: str, payload: bytes, *, timeout: float) -> tuple[bytes, dict[str, str]]:
        msg = await aio_as_trio(self._nc.request)(subject, payload, timeout=timeout)
        return msg.data, dict(msg.headers or {})


# --- asyncio side (runs inside trio-asyncio's loop) -------------------------------------------


async def _respond(request: MicroRequest, reply: Reply) -> None:
    if reply.error_code is None:
        await request.respond(reply.data)
    else:
        await request.respond_error(str(reply.error_code), reply.error_text or "error", reply.data)


async def _respond_all(batch: Sequence[tuple[MicroRequest, Reply | None]]) -> int:
    """Send each reply (a request whose handler failed gets a 500); how many failed."""
    failed = 0
    for request, reply in batch:
        try:
            await _respond(request, reply if reply is not None else _HANDLER_FAILED)
        except Exception:
            failed += 1
    return failed


async def _publish_many(nc: Any, messages: Sequence[tuple[str, bytes]]) -> None:
    for subject, payload in messages:
        await nc.publish(subject, payload)


async def _publish_batch(
    js: Any, messages: Sequence[DurableMessage], timeout: float
) -> list[BaseException | None]:
    import asyncio

    futures = []
    for message in messages:
        futures.append(
            await js.publish_async(message.subject, message.payload, headers={"Nats-Msg-Id": message.msg_id})
        )
    results: list[BaseException | None] = []
    done, _pending = await asyncio.wait(futures, timeout=timeout)
    for future in futures:
        if future not in done:
            future.cancel()
            results.append(TimeoutError("no JetStream ack within timeout"))
        else:
            results.append(future.exception())
    return results
