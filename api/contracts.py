"""Wire contracts: msgspec Structs matching the spec's OpenAPI schemas field for field.

Field names are snake_case here and camelCase on the wire (`rename="camel"`). Money and quantities
are `Decimal` inside and JSON numbers outside (the spec's `double`): decoding from JSON keeps the
exact decimal text, encoding writes the decimal digits (see `api.codec`).

Fields marked "extension" are additions to the spec's schemas; `api/openapi.json` documents them.
Response structs omit fields whose value is `None` (OpenAPI 3.0 has no implicit null).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from api.enums import (
    AssetClass,
    BrokerFeature,
    BrokerListStatus,
    CancellationStatus,
    ConnectionStatus,
    ExecutionStatus,
    ExecutionStrategy,
    IssueType,
    OrderType,
    RecommendationType,
    RoutingStatus,
    Side,
    TCABenchmark,
    TimeInForce,
    Urgency,
)


class Wire(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """Base of every request: camelCase names, unknown fields are an error (a typo'd
    `timeInForce` must not silently become DAY)."""


class WireOut(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """Base of every response and published message."""


# --- requests -----------------------------------------------------------------------------


class OrderRoutingRequest(Wire, frozen=True):
    order_id: str
    account_id: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    preferred_brokers: tuple[str, ...] = ()
    execution_strategy: ExecutionStrategy = ExecutionStrategy.SMART
    urgency: Urgency = Urgency.MEDIUM


class CancelOrderRequest(Wire, frozen=True):
    order_id: str
    broker_id: str
    broker_order_id: str | None = None
    reason: str | None = None


class GetExecutionRequest(Wire, frozen=True):
    """NATS `GetExecution`: exactly one of the two ids."""

    execution_id: str | None = None
    order_id: str | None = None


class GetBrokerStatusRequest(Wire, frozen=True):
    broker_id: str


class ListBrokersRequest(Wire, frozen=True):
    status: BrokerListStatus | None = None
    asset_class: AssetClass | None = None


class MaintenanceRequest(Wire, frozen=True):
    """Extension (operator): take a broker out of routing for maintenance, or bring it back.
    Open orders at it keep being tracked; new orders avoid it."""

    enabled: bool
    reason: str | None = None


class SetMaintenanceRequest(Wire, frozen=True):
    """NATS `admin.SetMaintenance`: MaintenanceRequest plus the broker."""

    broker_id: str
    enabled: bool
    reason: str | None = None


class TCARequest(Wire, frozen=True):
    order_id: str
    execution_id: str | None = None
    benchmark: TCABenchmark = TCABenchmark.ARRIVAL_PRICE


# --- responses ----------------------------------------------------------------------------


class OrderRoutingResponse(WireOut, frozen=True):
    routing_id: str
    order_id: str
    status: RoutingStatus
    timestamp: datetime
    selected_broker: str | None = None
    broker_order_id: str | None = None
    rejection_reason: str | None = None
    estimated_execution_time: float | None = None
    execution_id: str | None = None  # extension: the id to pass to GetExecution


class Fill(WireOut, frozen=True):
    fill_id: str
    quantity: Decimal
    price: Decimal
    timestamp: datetime
    venue: str
    #: Extension: true for a fill the broker never reported as such, booked from its cumulative
    #: quantity and average price after a reconnect (absent, i.e. false, otherwise).
    reconstructed: bool = False


class ExecutionAttempt(WireOut, frozen=True):
    """Extension: one broker attempt of an order (several after a failover), for "why did this
    go to broker X?"."""

    attempt: int
    execution_id: str
    broker_id: str
    client_order_id: str
    status: ExecutionStatus
    started_at: datetime
    broker_order_id: str | None = None
    reason: str | None = None


class RoutingCandidate(WireOut, frozen=True):
    """Extension: one eligible broker in a routing decision, with its score (lower is better)
    and the components it was computed from (`docs/routing.md`)."""

    broker_id: str
    rank: int
    preferred: bool
    score: float
    expected_commission: Decimal
    commission_bps: float
    spread_bps: float
    impact_bps: float
    participation: float
    latency_p50_ms: float
    latency_p95_ms: float
    time_to_fill_ms: float
    fill_probability: float
    fill_rate: float
    reject_rate: float
    expected_execution_time_ms: float | None = None


class IneligibleBroker(WireOut, frozen=True):
    """Extension: a broker that could not take the order, and why."""

    broker_id: str
    reason: str


class SmartWeights(WireOut, frozen=True):
    """Extension: SMART's weights at the order's urgency (cost and impact per bps; speed per
    second of expected time; miss per unit of non-fill probability; tail on the p95 latency),
    and the participation rate the impact model assumes."""

    cost: float
    impact: float
    speed: float
    miss: float
    tail: float
    participation: float


class RoutingDecision(WireOut, frozen=True):
    """Extension: why the order went where it went — the strategy and urgency, the weights
    the urgency gave SMART, every eligible broker ranked with its score and components, and
    every ineligible one with its reason. `chosen` is the first-ranked broker (a failover then
    took the next ones in order; `attempts` says which)."""

    decided_at: datetime
    strategy: ExecutionStrategy
    urgency: Urgency
    candidates: tuple[RoutingCandidate, ...]
    ineligible: tuple[IneligibleBroker, ...]
    measured: bool
    chosen: str | None = None
    notional: Decimal | None = None
    reference_price: Decimal | None = None
    weights: SmartWeights | None = None


class ExecutionDetails(WireOut, frozen=True):
    execution_id: str
    order_id: str
    broker_id: str
    status: ExecutionStatus
    total_quantity: Decimal
    filled_quantity: Decimal
    fees: Decimal
    start_time: datetime
    fills: tuple[Fill, ...]  # always present, [] before the first fill
    broker_order_id: str | None = None
    average_price: Decimal | None = None
    end_time: datetime | None = None
    market_impact: float | None = None
    # extensions
    symbol: str | None = None
    side: Side | None = None
    client_order_id: str | None = None
    rejection_reason: str | None = None
    attempt: int | None = None
    attempts: tuple[ExecutionAttempt, ...] = ()
    routing_decision: RoutingDecision | None = None


class CancelOrderResponse(WireOut, frozen=True):
    request_id: str
    order_id: str
    status: CancellationStatus
    timestamp: datetime
    rejection_reason: str | None = None


class TieredRate(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    volume_threshold: Decimal
    rate: Decimal


class CommissionStructure(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    """`base_rate` and tier `rate`s are fractions of notional (0.0005 = 5 bps); `min_commission`
    is in the instrument's quote currency; `volume_threshold` is traded notional in the period
    (see `api.commission`)."""

    base_rate: Decimal
    min_commission: Decimal = Decimal(0)
    tiered_rates: tuple[TieredRate, ...] = ()


class LatencyStats(msgspec.Struct, frozen=True, rename="camel"):
    average_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0


class BrokerInfo(WireOut, frozen=True):
    id: str
    name: str
    status: BrokerListStatus
    supported_asset_classes: tuple[AssetClass, ...]
    features: tuple[BrokerFeature, ...]
    commission_structure: CommissionStructure
    latency_stats: LatencyStats


class BrokerIssue(WireOut, frozen=True):
    type: IssueType
    message: str
    timestamp: datetime


class BrokerStatus(WireOut, frozen=True):
    broker_id: str
    status: ConnectionStatus
    uptime: float
    current_load: float
    issues: tuple[BrokerIssue, ...] = ()
    last_connected: datetime | None = None


class TCARecommendation(WireOut, frozen=True):
    type: RecommendationType
    description: str
    estimated_improvement_bps: float


class TCAShortfall(WireOut, frozen=True):
    """Extension: the implementation shortfall of the order, each component in price currency
    and in bps of the paper value (intended quantity x decision price), docs/tca.md.

    CFA/Perold: `delayCost` (filled shares only) + `realizedCost` + `missedOpportunityCost` +
    `explicitCost` = `total`. Wagner: `delayCost` + `opportunityDelay` (= the delay on every
    intended share) + `realizedCost` (his trading cost) + `wagnerOpportunityCost` +
    `explicitCost` = `total`. Perold's two-part view: `executionCost` (= delay + realized) +
    `missedOpportunityCost` + `explicitCost`. The arrival-price parts are absent when the
    arrival price is unknown (the response's `unavailable` says why)."""

    paper_value: float
    decision_price: float
    filled_quantity: float
    unfilled_quantity: float
    total: float
    total_bps: float
    explicit_cost: float
    explicit_cost_bps: float
    execution_cost: float
    execution_cost_bps: float
    missed_opportunity_cost: float
    missed_opportunity_cost_bps: float
    arrival_price: float | None = None
    end_price: float | None = None
    delay_cost: float | None = None
    delay_cost_bps: float | None = None
    opportunity_delay: float | None = None
    opportunity_delay_bps: float | None = None
    realized_cost: float | None = None
    realized_cost_bps: float | None = None
    wagner_opportunity_cost: float | None = None
    wagner_opportunity_cost_bps: float | None = None


class TCAResponse(WireOut, frozen=True):
    """The spec's TCAResponse; the fields after `recommendations` are extensions (absent when
    unavailable: `unavailable` names every absent figure and why)."""

    order_id: str
    execution_id: str
    benchmark: TCABenchmark
    benchmark_price: float | None = None
    average_execution_price: float | None = None
    slippage_bps: float | None = None
    market_impact_bps: float | None = None
    total_cost_bps: float | None = None
    savings_opportunity_bps: float | None = None
    execution_quality_score: float | None = None
    broker_performance_rank: int | None = None
    recommendations: tuple[TCARecommendation, ...] = ()
    #: Fees in bps of the executed notional (`implementationShortfall.explicitCostBps` is the
    #: same fees in bps of the paper value).
    fees_bps: float | None = None
    implementation_shortfall: TCAShortfall | None = None
    #: The measure `brokerPerformanceRank` ranks by, how many brokers are ranked, and the
    #: brokers whose confidence intervals overlap this broker's (they share or straddle its rank).
    ranked_by: str | None = None
    ranked_brokers: int | None = None
    rank_tied_with: tuple[str, ...] = ()
    #: Every figure that is absent, with its reason (e.g. {"benchmarkPrice": "no market trades
    #: in the window"}).
    unavailable: dict[str, str] = {}


class ExecutionUpdate(WireOut, frozen=True):
    """Published on `trading.broker.v1.executions.<brokerId>.<status>.<orderId>` (the spec's
    StreamExecutionUpdates message). `sequence` numbers the updates of one execution from 1."""

    execution_id: str
    order_id: str
    broker_id: str
    status: ExecutionStatus
    filled_quantity: Decimal
    timestamp: datetime
    sequence: int
    latest_fill: Fill | None = None
    average_price: Decimal | None = None
    broker_order_id: str | None = None
    reason: str | None = None


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """The REST 400 body, also the payload of every NATS error reply."""

    message: str
    errors: tuple[FieldError, ...] = ()
