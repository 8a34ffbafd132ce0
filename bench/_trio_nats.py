"""A minimal NATS client written for Trio, only as far as an echo responder needs it: what the
NATS client costs without asyncio in between (`bench/nats_client.py`). Not for the daemon.

    python bench/_common.py trio-nats-echo NATS_URL SUBJECT      serve echo replies on SUBJECT

The responder has the daemon's shape (`daemon.bus.NatsBus.serve`): the connection's reader hands
each request to a memory channel, worker tasks make the replies, one task sends the replies that
are ready in one write. What it leaves out of the protocol: TLS, authentication, reconnects,
cluster discovery, `-ERR` recovery, slow-consumer handling. It speaks the core protocol as
the server documents it (INFO, CONNECT, PING/PONG, SUB, MSG/HMSG, PUB), headers included.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

import trio

WORKERS = 128
BACKLOG = 4096
MAX_REPLY_BATCH = 256


class TrioNats:
    """One connection: `subscribe` (with a handler per message), `publish`; `run` reads."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self._subscriptions: dict[bytes, trio.MemorySendChannel[tuple[bytes, bytes]]] = {}
        self._next_sid = 1

    @classmethod
    async def connect(cls, url: str) -> TrioNats:
        parts = urlsplit(url)
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 4222)
        client = cls(stream)
        info = await client._line()
        if not info.startswith(b"INFO "):
            raise ConnectionError(f"expected INFO, got {info[:80]!r}")
        options = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True, "protocol": 1}
        await stream.send_all(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        while (line := await client._line()) != b"PONG":
            if line.startswith(b"-ERR"):
                raise ConnectionError(line.decode(errors="replace"))
        return client

    async def _fill(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise EOFError("nats-server closed the connection")
        self._buffer += data

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size + 2:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[: size + 2]
        return data

    async def subscribe(self, subject: str, send: trio.MemorySendChannel[tuple[bytes, bytes]]) -> None:
        sid = str(self._next_sid).encode()
        self._next_sid += 1
        self._subscriptions[sid] = send
        await self.write(b"SUB " + subject.encode() + b" " + sid + b"\r\nPING\r\n")

    async def write(self, data: bytes) -> None:
        async with self._send_lock:
            await self._stream.send_all(data)

    async def run(self, ready: trio.Event) -> None:
        """Read until the connection ends: messages to their subscription's channel (reply
        subject, payload; headers dropped), PINGs answered."""
        while True:
            line = await self._line()
            if line.startswith(b"MSG "):
                fields = line.split()
                reply = fields[3] if len(fields) == 5 else b""
                payload = await self._exactly(int(fields[-1]))
                self._deliver(fields[2], reply, payload)
            elif line.startswith(b"HMSG "):
                fields = line.split()
                reply = fields[3] if len(fields) == 6 else b""
                whole = await self._exactly(int(fields[-1]))
                self._deliver(fields[2], reply, whole[int(fields[-2]) :])
            elif line == b"PING":
                await self.write(b"PONG\r\n")
            elif line == b"PONG":
                ready.set()  # the answer to the PING after SUB: subscribed
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode(errors="replace"))

    def _deliver(self, sid: bytes, reply: bytes, payload: bytes) -> None:
        send = self._subscriptions.get(sid)
        if send is not None:
            send.send_nowait((reply, payload))  # the backlog bounds it, as in daemon.bus


async def serve_echo(url: str, subject: str, ready_line: str) -> None:
    """Serve echo replies on `subject`; print `ready_line` once subscribed, stop when stdin closes."""
    client = await TrioNats.connect(url)
    requests_send, requests = trio.open_memory_channel[tuple[bytes, bytes]](BACKLOG)
    replies_send, replies = trio.open_memory_channel[tuple[bytes, bytes]](BACKLOG + WORKERS)

    async def work(receive: trio.MemoryReceiveChannel[tuple[bytes, bytes]]) -> None:
        async for reply, payload in receive:
            replies_send.send_nowait((reply, payload))  # the handler: echo

    async def send_replies() -> None:
        async for first in replies:
            batch = [first]
            while len(batch) < MAX_REPLY_BATCH:
                try:
                    batch.append(replies.receive_nowait())
                except trio.WouldBlock:
                    break
            pubs = [b"PUB %s %d\r\n%s\r\n" % (to, len(payload), payload) for to, payload in batch if to]
            await client.write(b"".join(pubs))

    async def parent_gone() -> None:  # stdin closes when the benchmark exits, however it exits
        await trio.lowlevel.wait_readable(sys.stdin.fileno())

    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, ready)
        for _ in range(WORKERS):
            nursery.start_soon(work, requests.clone())
        nursery.start_soon(send_replies)
        await client.subscribe(subject, requests_send)
        await ready.wait()
        print(ready_line, flush=True)
        await parent_gone()
        nursery.cancel_scope.cancel()
