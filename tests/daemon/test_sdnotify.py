"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.sdnotify import Notifier

ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on: a datagram socket in tmp_path, announced in NOTIFY_SOCKET."""
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on `sock` right now."""
    sock.setblocking(False)
    try:
        out = []
        while True:
            try:
                out.append(sock.recv(4096))
            except BlockingIOError:
                return out
    finally:
        sock.settimeout(2)


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    assert notifier.ready("up") is False
    assert notifier.status("x") is False
    assert notifier.stopping() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None
    assert "disabled" in repr(notifier)


async def test_run_watchdog_returns_at_once_without_a_watchdog(systemd_socket: socket.socket) -> None:
    notifier = Notifier.from_environment()
    with trio.fail_after(1):
        await notifier.run_watchdog(lambda: True)
    assert received(systemd_socket) == []


def test_ready_status_and_stopping_send_exact_datagrams(systemd_socket: socket.socket) -> None:
    notifier = Notifier.from_environment()
    assert notifier.ready("serving 3 brokers") is True
    assert systemd_socket.recv(4096) == b"READY=1\nSTATUS=serving 3 brokers"
    assert notifier.ready() is True
    assert systemd_socket.recv(4096) == b"READY=1"
    assert notifier.status("draining 12 orders") is True
    assert systemd_socket.recv(4096) == b"STATUS=draining 12 orders"
    assert notifier.stopping() is True
    assert systemd_socket.recv(4096) == b"STOPPING=1"
    assert received(systemd_socket) == []
    notifier.close()


def test_status_cannot_inject_another_assignment(systemd_socket: socket.socket) -> None:
    Notifier.from_environment().status("line one\nREADY=1")
    assert systemd_socket.recv(4096) == b"STATUS=line one READY=1"


def test_status_never_shows_a_password(systemd_socket: socket.socket) -> None:
    Notifier.from_environment().ready("serving; NATS nats://bis:hunter2@nats.internal:4222")
    assert systemd_socket.recv(4096) == b"READY=1\nSTATUS=serving; NATS nats://bis:***@nats.internal:4222"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"broker-integration-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier.from_environment()
        assert repr(notifier).startswith(f"<Notifier @{name} ")
        assert notifier.ready("up") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_variables_are_removed_so_child_processes_stay_silent(systemd_socket: socket.socket) -> None:
    os.environ["WATCHDOG_USEC"] = "10000000"
    notifier = Notifier.from_environment()
    assert notifier.enabled
    assert not any(name in os.environ for name in ENV)


def test_variables_can_be_kept(systemd_socket: socket.socket) -> None:
    Notifier.from_environment(unset_environment=False)
    assert "NOTIFY_SOCKET" in os.environ


def test_watchdog_interval_is_half_of_watchdog_usec(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")  # WatchdogSec=10
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval() == 5.0
    assert notifier.watchdog() is True
    assert systemd_socket.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize("pid", ["own", "none"])
def test_watchdog_pid_of_this_process_or_none_arms_the_watchdog(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch, pid: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    if pid == "own":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_environment().watchdog_interval() == 2.0


async def test_watchdog_pid_of_another_process_disables_pinging(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getppid()))
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval() is None
    assert notifier.watchdog() is False
    with trio.fail_after(1):
        await notifier.run_watchdog(lambda: True)
    # READY still works: WATCHDOG_PID only scopes the watchdog.
    assert notifier.ready() is True
    assert received(systemd_socket) == [b"READY=1"]


@pytest.mark.parametrize("value", ["0", "-5", "ten", ""])
def test_bad_watchdog_usec_disables_the_watchdog(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", value)
    assert Notifier.from_environment().watchdog_interval() is None


async def watch(
    sock: socket.socket,
    notifier: Notifier,
    is_healthy: Callable[[], bool],
    duration: float,
) -> list[tuple[float, bytes]]:
    """Run the watchdog for `duration` (virtual) seconds; return (time since start, datagram)."""
    start = trio.current_time()
    pings: list[tuple[float, bytes]] = []
    receiver = trio.socket.from_stdlib_socket(sock)

    async def receive() -> None:
        while True:
            datagram = await receiver.recv(4096)
            pings.append((trio.current_time() - start, datagram))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await nursery.start(notifier.run_watchdog, is_healthy)
        await trio.sleep(duration)
        nursery.cancel_scope.cancel()
    return pings


async def test_watchdog_pings_at_the_interval(
    systemd_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")  # pings every 5 s
    pings = await watch(systemd_socket, Notifier.from_environment(), lambda: True, 22)
    assert pings == [
        (0.0, b"WATCHDOG=1"),
        (5.0, b"WATCHDOG=1"),
        (10.0, b"WATCHDOG=1"),
        (15.0, b"WATCHDOG=1"),
        (20.0, b"WATCHDOG=1"),
    ]


async def test_no_ping_while_unhealthy(
    systemd_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # pings every 1 s
    start = trio.current_time()

    def is_healthy() -> bool:  # wedged from t=2 to t=5
        return not 2 <= trio.current_time() - start < 5

    pings = await watch(systemd_socket, Notifier.from_environment(), is_healthy, 7.5)
    assert [t for t, _ in pings] == [0.0, 1.0, 5.0, 6.0, 7.0]
    assert {message for _, message in pings} == {b"WATCHDOG=1"}
    # One line when it goes wrong, one when it recovers: not one per skipped ping.
    assert [r.levelno for r in caplog.records if r.name == "daemon.sdnotify"] == [
        logging.ERROR,
        logging.WARNING,
    ]


async def test_a_crashing_health_check_counts_as_unhealthy(
    systemd_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")

    def is_healthy() -> bool:
        raise RuntimeError("health check bug")

    assert await watch(systemd_socket, Notifier.from_environment(), is_healthy, 3.5) == []


def test_a_vanished_socket_is_logged_never_raised(
    systemd_socket: socket.socket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_environment()
    systemd_socket.close()
    (tmp_path / "n.sock").unlink()
    assert notifier.ready("up") is False
    assert notifier.stopping() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # a streak of failures is reported once
    assert "sd_notify" in warnings[0].getMessage()


def test_a_full_queue_is_logged_never_blocks(systemd_socket: socket.socket) -> None:
    # systemd reads its queue promptly; if it ever stops, sends fail fast instead of hanging.
    notifier = Notifier.from_environment()
    results = [notifier.status(f"n={i}") for i in range(2000)]
    assert results[0] is True
    assert False in results


def test_a_non_unix_notify_socket_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not Notifier.from_environment().enabled
