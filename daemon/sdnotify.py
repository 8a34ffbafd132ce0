"""A tiny sd_notify client for a Trio daemon run by systemd (`Type=notify`).

Contract:

- `Notifier.from_environment()` reads `NOTIFY_SOCKET` (a filesystem path, or `@name` for the
  abstract namespace), `WATCHDOG_USEC` and `WATCHDOG_PID`. Without `NOTIFY_SOCKET` (a terminal,
  a test, `make run`) it returns a disabled notifier whose methods do nothing, so the daemon
  calls them unconditionally.
- STATUS text is flattened to one line and passed through `daemon.logs.redact_text`: it is
  readable by any user via `systemctl status`, so a URL password or token never goes there.
- Every send is one non-blocking datagram on an `AF_UNIX`/`SOCK_DGRAM` socket. A send that
  fails (socket gone, queue full) is logged and reported by a `False` return; it never raises
  into the daemon: a notification is advice to systemd, never a reason to stop trading.
- The watchdog is armed only when `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset or our own
  pid (as `sd_watchdog_enabled` does). `run_watchdog(is_healthy)` pings at half the configured
  period, and only while `is_healthy()` is true, so a wedged daemon stops pinging and systemd
  restarts it.

Message order the daemon is expected to follow: `status(...)` while starting, `ready(...)` once
every service listens (after `nursery.start` returned for each of them), `stopping()` as soon as
SIGTERM arrives, before the graceful drain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, MutableMapping

import trio

from daemon.logs import redact_text

log = logging.getLogger(__name__)

_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify datagrams to `address` (None: disabled, every method is a no-op).

    `watchdog_usec` is the watchdog period systemd enforces, or None when no watchdog applies
    to this process.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._socket: socket.socket | None = None
        self._failing = False  # log the first failure of a streak loudly, the rest quietly

    def __repr__(self) -> str:
        interval = self.watchdog_interval()
        watchdog = f"every {interval:g}s" if interval is not None else "off"
        return f"<Notifier {self._display_address or 'disabled'} watchdog={watchdog}>"

    @classmethod
    def from_environment(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = True,
    ) -> Notifier:
        """A notifier for what systemd put in the environment (`os.environ` by default).

        With `unset_environment` (the default) the three variables are removed afterwards, so
        the processes the daemon starts (the embedded nats-server and PostgreSQL; a PostgreSQL
        built with systemd support would send its own READY=1) never talk to our socket.
        """
        env = os.environ if environ is None else environ
        raw_socket = env.get("NOTIFY_SOCKET", "")
        raw_usec = env.get("WATCHDOG_USEC", "")
        raw_pid = env.get("WATCHDOG_PID", "")
        if unset_environment:
            for name in _NOTIFY_VARIABLES:
                env.pop(name, None)

        address = _parse_address(raw_socket)
        watchdog_usec = _parse_watchdog(raw_usec, raw_pid) if address is not None else None
        return cls(address, watchdog_usec)

    @classmethod
    def disabled(cls) -> Notifier:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # -- messages ------------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (with STATUS= when given): systemd now considers the service started."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.send("\n".join(lines))

    def status(self, text: str) -> bool:
        """STATUS=...: the free-form line `systemctl status` shows."""
        return self.send(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        """STOPPING=1: the service is shutting down on purpose (not a crash)."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1: one keep-alive ping. Sent only when a watchdog is armed for us."""
        if self.watchdog_usec is None:
            return False
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the period systemd enforces), or None without a watchdog."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def send(self, message: str) -> bool:
        """Send one raw notification (`KEY=value` lines). True if the datagram left; never raises."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(
                level,
                "sd_notify to %s failed: %s",
                self._display_address,
                exc,
                extra={"sd_message": message.split("\n", 1)[0]},
            )
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify to %s works again", self._display_address)
            self._failing = False
        return True

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    # -- watchdog loop ---------------------------------------------------------------------------

    async def run_watchdog(
        self,
        is_healthy: Callable[[], bool],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Ping WATCHDOG=1 now and then every `watchdog_interval()` seconds while `is_healthy()`
        is true; skip the ping (and log once) while it is false or raises. Runs until cancelled;
        returns at once when no watchdog is armed. systemd enforces the watchdog from READY=1
        until the service stops (it stops enforcing on STOPPING=1), so start this right after
        `ready()`; starting it earlier is harmless.
        """
        interval = self.watchdog_interval()
        task_status.started()
        if interval is None:
            return
        healthy_before = True
        while True:
            healthy = _call_health_check(is_healthy)
            if healthy:
                self.watchdog()
                if not healthy_before:
                    log.warning("daemon healthy again: watchdog pings resumed")
            elif healthy_before:
                log.error(
                    "daemon unhealthy: watchdog pings withheld; systemd restarts the service "
                    "if this lasts %.1fs",
                    interval * 2,
                )
            healthy_before = healthy
            await trio.sleep(interval)

    @property
    def _display_address(self) -> str:
        address = self.address or ""
        return "@" + address[1:] if address.startswith("\0") else address


def _call_health_check(is_healthy: Callable[[], bool]) -> bool:
    try:
        return bool(is_healthy())
    except Exception:
        # A health check that crashes says the daemon is not healthy; withholding pings lets
        # systemd restart it rather than keeping a broken process alive.
        log.exception("watchdog health check raised")
        return False


def _parse_address(raw: str) -> str | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]  # the abstract namespace
    if raw.startswith("/"):
        return raw
    # systemd also documents vsock addresses (vsock:CID:PORT) for VMs; a daemon on a trading
    # host never gets one, so say so instead of guessing.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket address; sd_notify disabled", raw)
    return None


def _parse_watchdog(raw_usec: str, raw_pid: str) -> int | None:
    if not raw_usec:
        return None
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a pid; watchdog disabled", raw_pid)
            return None
        if pid != os.getpid():
            return None  # the watchdog is meant for another process (e.g. our parent)
    usec = None
    with contextlib.suppress(ValueError):
        usec = int(raw_usec)
    if usec is None or usec <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive number; watchdog disabled", raw_usec)
        return None
    return usec


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment inside the datagram. STATUS is shown to
    # anyone who runs `systemctl status`: no URL password or token goes there either.
    return redact_text(" ".join(text.splitlines()))
