"""Wiring of the pre-trade checks into the daemon (`nursery.pretrade`): the gate and (when
`[risk] enabled`) the Risk Analysis Service client on the router,
its state read from PostgreSQL before the first order (engaged kill switches, the day's routed
notional per account), and the task that keeps the kill switches in step with the other
daemons.

`start_pretrade` raises if the stored kill switches cannot be read: a daemon must not take
orders blind to an engaged switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time
from decimal import Decimal

import trio

from api.orders import BrokerOrder
from daemon.bus import NatsBus
from daemon.config import Config
from nursery.engine import ExecutionEngine
from nursery.pretrade.admin import KILL_SWITCH_CHANGED, KillSwitchAdmin
from nursery.pretrade.gate import PreTradeGate, QuoteView
from nursery.pretrade.risk import RiskAssessor
from sql import pretrade as rows

__all__ = ["PreTrade", "start_pretrade"]

log = logging.getLogger(__name__)


class PreTrade:
    """The gate (its counters are what a metrics collector reads: `gate.rejections`,
    `gate.kill_switches.gauge()`), the kill-switch admin, and the Risk Analysis Service's
    client when configured (`risk.verdicts`)."""

    def __init__(
        self,
        gate: PreTradeGate,
        admin: KillSwitchAdmin,
        risk: RiskAssessor | None = None,
        open_executions: Callable[[], Iterable[tuple[BrokerOrder, Decimal | None]]] | None = None,
    ) -> None:
        self.gate = gate
        self.admin = admin
        self.risk = risk
        self._open_executions = open_executions

    def __repr__(self) -> str:
        return f"<PreTrade {self.gate!r}>"

    async def run(
        self, bus: NatsBus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the other daemons' kill-switch changes and reload the stored ones."""
        send, receive = trio.open_memory_channel[tuple[str, bytes]](256)
        await bus.subscribe([KILL_SWITCH_CHANGED], send)
        async with trio.open_nursery() as nursery:
            if self.risk is not None and self._open_executions is not None:
                await nursery.start(self.risk.run_exposure, self._open_executions)
            await nursery.start(self.admin.run, receive)
            task_status.started()


async def start_pretrade(
    config: Config, market: QuoteView, engine: ExecutionEngine, bus: NatsBus, database_url: str
) -> PreTrade:
    """Build the gate, load its state, and put it on the engine's router."""
    gate = PreTradeGate(config.safeguards, market)
    admin = KillSwitchAdmin(
        gate.kill_switches,
        database_url,
        cancel=engine.cancel_order,
        announce=bus.publish,
        reload_s=config.safeguards.kill_switch_reload_s,
    )
    await admin.load()
    if config.safeguards.enabled:
        now = datetime.now(UTC)
        start = datetime.combine(now.date(), time(0), tzinfo=UTC)
        with trio.fail_after(30.0):
            totals = await trio.to_thread.run_sync(
                rows.daily_totals, database_url, start, abandon_on_cancel=True
            )
        gate.ledger.seed(now.date(), totals)
        log.info(
            "safeguards on",
            extra={
                "accounts_today": len(totals),
                "max_order_notional": str(config.safeguards.max_order_notional),
            },
        )
    else:
        log.warning("safeguards off ([safeguards] enabled = false): only the kill switches apply")
    # The engine builds its router; the gate and the risk client are its pre-routing hooks.
    router = engine.router
    router.pre_trade = gate
    risk = None
    if config.risk.enabled:

        async def ask(subject: str, payload: bytes, timeout: float) -> tuple[bytes, dict[str, str]]:
            return await bus.request(subject, payload, timeout=timeout)

        risk = RiskAssessor(config.risk, ask, safeguards=config.safeguards, ledger=gate.ledger)
        router.risk = risk
        log.info(
            "risk service on",
            extra={
                "subject": config.risk.subject,
                "timeout_ms": config.risk.timeout_ms,
                "policy": config.risk.failure_policy,
            },
        )
    return PreTrade(gate, admin, risk, router.open_executions)
