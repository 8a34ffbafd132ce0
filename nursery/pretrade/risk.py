"""The Risk Analysis Service interface: each order is put to the service over NATS
request-reply before it is routed, once its broker is chosen.

Request (JSON, `[risk] subject`, default `risk.v1.AssessExecution`): the order as received,
its asset class, the chosen broker's pre-trade estimates, the order's reference price and
notional, and the account's open exposure at this gateway (`AssessExecutionRequest`).
Reply: `{"verdict": "APPROVE" | "REFUSE", "reason": "..."}` (`AssessExecutionReply`).

Contract of `RiskAssessor.assess`: it returns within `timeout_ms` (plus a scheduler tick), never
raises for the service's sake, and its `RiskVerdict` says what happened — APPROVED, REFUSED
(the order is refused, nothing is sent), or UNAVAILABLE (no answer in time, nobody listening,
an error reply, an unreadable answer): then the account's policy decides, fail-closed (refused)
or fail-open (routed). Off by default: the router does not call it unless configured.

The exposure is the sum over this daemon's open executions of the account (remaining quantity
x the order's price, else its average or arrival price), refreshed every `exposure_refresh_s`
by `run_exposure` (one pass over the open executions for all accounts), plus the day's gross
notional and order count from the safeguards' ledger when it runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import msgspec
import trio

from api.contracts import OrderRoutingRequest, WireOut
from api.enums import AssetClass, Side
from api.orders import BrokerOrder
from nursery.pretrade.checks import Refusal
from nursery.pretrade.config import RiskConfig, SafeguardsConfig
from nursery.pretrade.ledger import AccountLedger
from nursery.pretrade.record import RiskVerdict
from routing.strategies import CandidateScore

__all__ = [
    "AccountExposure",
    "AssessExecutionReply",
    "AssessExecutionRequest",
    "BrokerEstimates",
    "RiskAssessor",
]

log = logging.getLogger(__name__)

#: nats request: (subject, payload, timeout s) -> (reply payload, headers).
Requester = Callable[[str, bytes, float], Awaitable[tuple[bytes, dict[str, str]]]]


class BrokerEstimates(WireOut, frozen=True):
    """The chosen broker's pre-trade estimates (routing's figures for this order)."""

    broker_id: str
    score: float
    expected_commission: Decimal
    commission_bps: float
    spread_bps: float
    impact_bps: float
    participation: float
    fill_probability: float
    expected_time_ms: float


class AccountExposure(WireOut, frozen=True):
    account_id: str
    open_orders: int
    open_buy_notional: Decimal
    open_sell_notional: Decimal
    gross_notional_today: Decimal
    orders_today: int
    as_of: datetime


class AssessExecutionRequest(WireOut, frozen=True):
    request_id: str
    requested_at: datetime
    order: OrderRoutingRequest
    asset_class: AssetClass
    broker: BrokerEstimates
    exposure: AccountExposure
    reference_price: Decimal | None = None
    notional: Decimal | None = None


class AssessExecutionReply(msgspec.Struct, frozen=True, rename="camel"):
    verdict: str
    reason: str | None = None


_REPLY = msgspec.json.Decoder(AssessExecutionReply)
_ENCODER = msgspec.json.Encoder(decimal_format="number")
_ZERO = Decimal(0)


@dataclass(slots=True)
class _Open:
    orders: int = 0
    buy: Decimal = _ZERO
    sell: Decimal = _ZERO


def _open_notional(order: BrokerOrder, arrival: Decimal | None) -> Decimal:
    price = order.price or order.stop_price or order.average_price or arrival or _ZERO
    return (order.quantity - order.filled_quantity) * price


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RiskAssessor:
    def __init__(
        self,
        config: RiskConfig,
        request: Requester,
        *,
        safeguards: SafeguardsConfig | None = None,
        ledger: AccountLedger | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config = config
        self._request = request
        self._timeout = config.timeout_ms / 1000.0
        self._policies = {
            a.account_id: a.risk_failure_policy
            for a in (safeguards.accounts if safeguards is not None else ())
            if a.risk_failure_policy is not None
        }
        self._ledger = ledger
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self._open_as_of = clock()
        #: Verdicts by kind (APPROVED, REFUSED, UNAVAILABLE), for a metrics collector.
        self.verdicts: dict[str, int] = {"APPROVED": 0, "REFUSED": 0, "UNAVAILABLE": 0}

    def __repr__(self) -> str:
        return f"<RiskAssessor {self.config.subject} {self.verdicts}>"

    def policy(self, account_id: str) -> str:
        return self._policies.get(account_id, self.config.failure_policy)

    # --- exposure -------------------------------------------------------------------------

    def refresh_exposure(self, executions: Iterable[tuple[BrokerOrder, Decimal | None]]) -> None:
        """One pass over the open executions (order, arrival price): open notional per account."""
        totals: dict[str, _Open] = {}
        for order, arrival in executions:
            if order.status.is_final:
                continue
            entry = totals.get(order.account_id)
            if entry is None:
                entry = totals[order.account_id] = _Open()
            entry.orders += 1
            if order.side is Side.BUY:
                entry.buy += _open_notional(order, arrival)
            else:
                entry.sell += _open_notional(order, arrival)
        self._open, self._open_as_of = totals, self._clock()

    async def run_exposure(
        self,
        executions: Callable[[], Iterable[tuple[BrokerOrder, Decimal | None]]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh the exposure every `exposure_refresh_s` until cancelled."""
        self.refresh_exposure(executions())
        task_status.started()
        while True:
            await trio.sleep(self.config.exposure_refresh_s)
            self.refresh_exposure(executions())

    def exposure(self, account_id: str, day: date) -> AccountExposure:
        entry = self._open.get(account_id) or _Open()
        gross, count = self._ledger.today(account_id, day) if self._ledger is not None else (_ZERO, 0)
        return AccountExposure(
            account_id, entry.orders, entry.buy, entry.sell, gross, count, self._open_as_of
        )

    # --- the question -----------------------------------------------------------------------

    async def assess(
        self,
        request: OrderRoutingRequest,
        asset_class: AssetClass,
        score: CandidateScore | None,
        broker_id: str,
        reference: Decimal | None,
    ) -> RiskVerdict:
        """Ask the service (see the module's contract)."""
        now = self._clock()
        estimates = BrokerEstimates(
            broker_id=broker_id,
            score=score.score if score is not None else 0.0,
            expected_commission=score.commission if score is not None else _ZERO,
            commission_bps=score.commission_bps if score is not None else 0.0,
            spread_bps=score.spread_bps if score is not None else 0.0,
            impact_bps=score.impact_bps if score is not None else 0.0,
            participation=score.participation if score is not None else 0.0,
            fill_probability=score.fill_probability if score is not None else 0.0,
            expected_time_ms=score.expected_time_ms if score is not None else 0.0,
        )
        question = AssessExecutionRequest(
            request_id=str(uuid.uuid4()),
            requested_at=now,
            order=request,
            asset_class=asset_class,
            broker=estimates,
            exposure=self.exposure(request.account_id, now.date()),
            reference_price=reference,
            notional=request.quantity * reference if reference is not None else None,
        )
        started = time.perf_counter()
        answer: AssessExecutionReply | None = None
        failure = ""
        with trio.move_on_after(self._timeout) as scope:
            try:
                data, headers = await self._request(
                    self.config.subject, _ENCODER.encode(question), self._timeout
                )
            except Exception as exc:  # no responders, timeout, connection closed: all "no answer"
                failure = type(exc).__name__
            else:
                if "Nats-Service-Error-Code" in headers:
                    failure = f"error reply {headers.get('Nats-Service-Error-Code')}"
                else:
                    try:
                        answer = _REPLY.decode(data)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        failure = f"unreadable answer ({exc})"
        latency = round((time.perf_counter() - started) * 1000, 3)
        if scope.cancelled_caught:
            failure = f"no answer within {self.config.timeout_ms:g} ms"
        if answer is not None:
            verdict = answer.verdict.upper()
            if verdict in ("APPROVE", "APPROVED"):
                self.verdicts["APPROVED"] += 1
                return RiskVerdict("APPROVED", latency, answer.reason)
            if verdict in ("REFUSE", "REFUSED", "REJECT", "REJECTED"):
                self.verdicts["REFUSED"] += 1
                return RiskVerdict("REFUSED", latency, answer.reason, routed=False)
            failure = f"unknown verdict {answer.verdict!r}"
        self.verdicts["UNAVAILABLE"] += 1
        policy = self.policy(request.account_id)
        log.warning(
            "risk service unavailable",
            extra={"order_id": request.order_id, "reason": failure, "policy": f"fail-{policy}"},
        )
        return RiskVerdict("UNAVAILABLE", latency, failure, policy=policy, routed=policy == "open")


def refusal_of(verdict: RiskVerdict, timeout_ms: float) -> Refusal:
    """The refusal an order gets from a verdict that does not let it through."""
    if verdict.verdict == "REFUSED":
        why = f": {verdict.reason}" if verdict.reason else ""
        return Refusal("risk_service", f"the Risk Analysis Service refused the order{why}")
    return Refusal(
        "risk_service",
        f"the Risk Analysis Service is unavailable ({verdict.reason});"
        " the account's policy is fail-closed",
        limit=f"{timeout_ms:g} ms",
        value=f"{verdict.latency_ms:g} ms",
    )
