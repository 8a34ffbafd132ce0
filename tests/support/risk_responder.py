"""A small Risk Analysis Service on NATS for tests, run as its own process (as a separate
service would be): answers requests on `--subject` according to the mode written in
`--mode-file`, read at each request:

    approve   {"verdict": "APPROVE", "reason": "within limits"}
    refuse    {"verdict": "REFUSE", "reason": "exposure limit of the desk reached"}
    slow      approves after `--delay` seconds (past the gateway's deadline)
    garbage   a reply that is not JSON

Every request received is appended to `--log` (one JSON line each). `RiskResponder` starts and
stops it from a test: `with RiskResponder(url, tmp_path) as responder: responder.mode = ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.polling import NotReached, poll_until

REPO = Path(__file__).resolve().parents[2]


class RiskResponder:
    def __init__(self, url: str, workdir: Path, subject: str, delay: float = 1.0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.subject = subject
        self.delay = delay
        self._mode_file = workdir / "mode"
        self._log = workdir / "requests.jsonl"
        self._ready = workdir / "ready"
        self._proc: subprocess.Popen[bytes] | None = None
        self.mode = "approve"

    def __repr__(self) -> str:
        return f"<RiskResponder {self.subject} mode={self.mode}>"

    @property
    def mode(self) -> str:
        return self._mode_file.read_text()

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode_file.write_text(mode)

    @property
    def requests(self) -> list[Any]:
        if not self._log.exists():
            return []
        return [json.loads(line) for line in self._log.read_text().splitlines() if line]

    def __enter__(self) -> RiskResponder:
        self._proc = subprocess.Popen(
            [
                sys.executable, "-m", "tests.support.risk_responder", "--url", self.url,
                "--subject", self.subject, "--mode-file", str(self._mode_file), "--log", str(self._log),
                "--delay", str(self.delay), "--ready", str(self._ready),
            ],
            cwd=REPO,
        )  # fmt: skip
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"risk responder exited with {proc.returncode}")
            return self._ready.exists()

        try:
            poll_until(ready, what="the risk responder's ready file", timeout=15, interval=0.02)
        except (NotReached, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"risk responder did not start: {exc}") from None
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _record_and_read_mode(log: Path, request: bytes, mode_file: Path) -> str:
    """Append the request to the log; the mode to answer in (tiny local files: no await)."""
    with log.open("a") as out:
        out.write(request.decode() + "\n")
    return mode_file.read_text().strip() if mode_file.exists() else "approve"


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def _serve(args: argparse.Namespace) -> None:
    import nats

    nc = await nats.connect(servers=[args.url])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    mode_file, log = Path(args.mode_file), Path(args.log)

    async def answer(msg: Any) -> None:
        mode = _record_and_read_mode(log, msg.data, mode_file)
        if mode == "slow":
            await asyncio.sleep(args.delay)
        if mode == "garbage":
            await msg.respond(b"not json")
            return
        if mode == "refuse":
            body = {"verdict": "REFUSE", "reason": "exposure limit of the desk reached"}
        else:
            body = {"verdict": "APPROVE", "reason": "within limits"}
        await msg.respond(json.dumps(body).encode())

    await nc.subscribe(args.subject, cb=answer)
    await nc.flush()
    _write(Path(args.ready), str(os.getpid()))
    await stop.wait()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--url", "--subject", "--mode-file", "--log", "--ready"):
        parser.add_argument(name, required=True)
    parser.add_argument("--delay", type=float, default=1.0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
