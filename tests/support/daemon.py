"""A real daemon process for end-to-end tests, configured by a TOML file the test writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemon.servers import free_port
from tests.support.polling import NotReached, poll_until

REPO = Path(__file__).resolve().parents[2]

TEST_TOKEN = "e2e-secret-token"

#: Brokers of the end-to-end tests: zero latency, distinct costs and capabilities.
BROKERS_TOML = """
[[brokers]]
broker_id = "sim-cheap"
name = "Simulated Cheap"
asset_classes = ["EQUITY", "CRYPTO"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS", "STOP_ORDERS"]
commission = { baseRate = "0.0001", minCommission = "0.35" }
venue = "CHEAP"
seed = 1

[[brokers]]
broker_id = "sim-fast"
name = "Simulated Fast"
asset_classes = ["EQUITY", "FOREX"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS", "STOP_ORDERS", "STOP_LIMIT_ORDERS"]
venue = "FAST"
seed = 2
[brokers.commission]
baseRate = "0.0008"
minCommission = "1"
tieredRates = [{ volumeThreshold = "1000000", rate = "0.0005" }]

[[brokers]]
broker_id = "sim-reject"
name = "Simulated Always Rejects"
asset_classes = ["EQUITY"]
features = ["MARKET_ORDERS", "LIMIT_ORDERS"]
commission = { baseRate = "0.01", minCommission = "5" }
venue = "REJ"
seed = 3
reject_rate = 1.0
"""


#: The end-to-end tests send deliberately absurd orders to exercise routing (a limit at 100000,
#: 1000 BTC, floods from one account); the safeguards are tested on their own
#: (tests/nursery/pretrade, tests/e2e/test_safeguards.py).
SAFEGUARDS_OFF = """
[safeguards]
enabled = false
"""


def write_config(
    path: Path,
    *,
    state_dir: Path,
    nats_url: str,
    database_url: str,
    rest_port: int,
    instance: str,
    brokers_toml: str = BROKERS_TOML,
    service_toml: str = "",
    safeguards_toml: str = SAFEGUARDS_OFF,
) -> Path:
    """`service_toml`: more keys of the [service] section (TOML lines), e.g. deadlines.
    `safeguards_toml`: the [safeguards] section (default: off, see `SAFEGUARDS_OFF`)."""
    text = f"""
[service]
state_dir = {json.dumps(str(state_dir))}
instance_id = {json.dumps(instance)}
log_level = "INFO"
shutdown_grace_s = 5.0
{service_toml}

[nats]
url = {json.dumps(nats_url)}

[database]
url = {json.dumps(database_url)}
views_refresh_s = 2.0

[rest]
host = "127.0.0.1"
port = {rest_port}
tokens = [{json.dumps(TEST_TOKEN)}]

[market_data]
prefix = {json.dumps("marketdata." + instance)}

{safeguards_toml}

[market]
seed = 11
tick_interval_ms = 20.0
{brokers_toml}
"""
    path.write_text(text)
    return path


class DaemonProcess:
    def __init__(
        self,
        workdir: Path,
        nats_url: str,
        database_url: str,
        instance: str = "e2e",
        brokers_toml: str = BROKERS_TOML,
        service_toml: str = "",
        safeguards_toml: str = SAFEGUARDS_OFF,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = workdir / "state"
        self.rest_port = free_port()
        self.config = write_config(
            workdir / "config.toml",
            state_dir=self.state_dir,
            nats_url=nats_url,
            database_url=database_url,
            rest_port=self.rest_port,
            instance=instance,
            brokers_toml=brokers_toml,
            service_toml=service_toml,
            safeguards_toml=safeguards_toml,
        )
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runtime: dict[str, Any] = {}

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def nats_url(self) -> str:
        return str(self.runtime["nats_url"])

    def start(self, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        runtime = self.state_dir / "runtime.json"
        runtime.unlink(missing_ok=True)
        full_env = {**os.environ, **(env or {})}
        full_env.pop("NATS_URL", None)
        full_env.pop("DATABASE_URL", None)
        # The daemon also writes runtime.json to the user's state directory: the test's own.
        full_env.setdefault("XDG_STATE_HOME", str(self.workdir / "xdg-state"))
        with open(self.log_path, "ab") as log:
            self.proc = proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config)],
                cwd=REPO,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def written() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}:\n{self.log()}")
            return runtime.exists()

        try:
            poll_until(written, what=f"the daemon's {runtime}", timeout=timeout)
        except NotReached as exc:
            self.stop()
            raise RuntimeError(f"daemon not ready: {exc}\n{self.log()}") from None
        self.runtime = json.loads(runtime.read_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                raise RuntimeError(f"daemon did not stop within {timeout}s:\n{self.log()}") from None
        return proc.returncode

    def kill(self) -> int:
        """SIGKILL, as a crash: nothing is flushed, nothing is answered. Returns the exit code."""
        return self.stop(signal.SIGKILL, timeout=10.0)

    @property
    def alive(self) -> bool:
        """The process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself (after a signal the test sent)."""
        proc, self.proc = self.proc, None
        assert proc is not None
        return proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
