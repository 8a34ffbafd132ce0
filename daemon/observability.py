"""What operators see of one daemon, built once and wired by `daemon.app`: its metrics (with the
routing statistics that count broker attempts, the execution-update feed and the outbox
sampler), its liveness heartbeat, and the HTTP routes outside the API document (`/metrics`,
the console at `/`).

Nothing here changes what the daemon does with an order; every part only reads, counts or
shows. The background tasks (`Liveness.run`, `sample_outbox`) never raise into the root
nursery: a failed sample keeps the last figures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

import msgspec
import trio
from quart import Blueprint

from api.service import BrokerService
from daemon.console import ConsoleSources, console_blueprint
from daemon.feed import UpdatesFeed
from daemon.liveness import Liveness
from daemon.metrics import DaemonMetrics, MeteredRoutingStats, Sources
from daemon.scrape import metrics_blueprint
from nursery.brokers import BrokerHandle
from nursery.engine import ExecutionEngine
from sql.store import Store
from tca.peers import PeerStats

log = logging.getLogger(__name__)

__all__ = ["METRICS_TOKEN_VARIABLE", "Observability", "resolve_metrics_token"]

#: The environment variable holding the `/metrics` token: set, it replaces `rest.metrics_token`
#: (so the token can stay out of the configuration file, like `NATS_URL` and `DATABASE_URL`).
METRICS_TOKEN_VARIABLE = "BIS_METRICS_TOKEN"

#: How often the outbox is sampled (s), and how many unpublished rows one sample counts at most
#: (bis_outbox_depth saturates there: "at least that many").
OUTBOX_SAMPLE_S = 5.0
OUTBOX_SAMPLE_ROWS = 10_000

Recover = Callable[[BrokerHandle, datetime | None], Awaitable[None]]


def resolve_metrics_token(configured: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token `/metrics` requires: `$BIS_METRICS_TOKEN` when set (not empty), else the
    configured `rest.metrics_token`, else None (public). Never logged: `daemon.cli` registers
    both for masking."""
    env = os.environ if environ is None else environ
    return env.get(METRICS_TOKEN_VARIABLE) or configured or None


class Observability:
    def __init__(self, *, metrics_token: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        """`metrics_token`: the configured `rest.metrics_token` (`$BIS_METRICS_TOKEN` wins)."""
        self.metrics = DaemonMetrics()
        self.stats = MeteredRoutingStats(self.metrics)
        self.feed = UpdatesFeed(self.metrics)
        self.liveness = Liveness()
        #: Set while the NATS endpoints are subscribed (readiness: "subscriptions").
        self.serving = False
        self._metrics_token = resolve_metrics_token(metrics_token, environ)
        self._console: ConsoleSources | None = None

    def __repr__(self) -> str:
        return f"<Observability {self.metrics!r} {self.feed!r} {self.liveness!r}>"

    def bind(self, sources: Sources, service: BrokerService, peers: Callable[[], PeerStats]) -> None:
        """Point the scrape and the console at the daemon's state (once it exists). When the
        service is the execution engine, the pre-trade metrics follow its router's hooks (the
        gate and the risk client, set later by `daemon.pretrade.start_pretrade`)."""
        self.metrics.bind(sources)
        if isinstance(service, ExecutionEngine):
            self.metrics.bind_pretrade(service.router)
        writer = sources.store.writer_stats
        if hasattr(writer, "on_batch"):  # the writer reports each batch: exact batch sizes and durations
            writer.on_batch = self.metrics.observe_db_batch
        self._console = ConsoleSources(sources.handles, self.metrics, self.feed, service, peers)

    def counted_recover(self, recover: Recover) -> Recover:
        """`recover` (the engine's, after each broker connect), counting those that complete."""

        async def counted(handle: BrokerHandle, since: datetime | None) -> None:
            await recover(handle, since)
            self.metrics.reconciliations += 1

        return counted

    def blueprints(self) -> Sequence[Blueprint]:
        parts = [metrics_blueprint(self.metrics, self._metrics_token)]
        if self._console is not None:
            parts.append(console_blueprint(self._console))
        return parts

    def live(self) -> tuple[bool, bytes]:
        report = self.liveness.report()
        return report.status == "ok", msgspec.json.encode(report)

    async def sample_outbox(
        self,
        store: Store,
        every: float = OUTBOX_SAMPLE_S,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the unpublished outbox every `every` s into bis_outbox_depth and
        bis_outbox_oldest_unpublished_age_seconds; a failed read keeps the last figures."""
        task_status.started()
        while True:
            try:
                with trio.fail_after(every):
                    depth, oldest = await store.outbox_depth(OUTBOX_SAMPLE_ROWS)
            except Exception as exc:
                log.debug("outbox not sampled", extra={"error": repr(exc)})
            else:
                self.metrics.set_outbox(depth, oldest)
            await trio.sleep(every)
