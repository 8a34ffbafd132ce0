"""Failover time and the cost of broker supervision, in-process, with same-run baselines.

    .venv/bin/python bench/failover.py            # default: about a minute on 2 cores
    .venv/bin/python bench/failover.py --quick    # smoke run, ~25 s
    make bench BENCH_ARGS=--quick

One `trio.run` assembles the engine the way tests/nursery/test_failover.py does: a real Store on
PostgreSQL (a fresh `bis_bench_<random>` database on DATABASE_URL's server, dropped at the end;
else an embedded pgserver in a temporary directory), migrations applied, a SimulatedMarket that
never ticks, two FaultyBroker venues with zero latency (A cheaper, so tried first; B), the real
ExecutionEngine and supervise_brokers, and a publish channel that a task drains. No NATS.

1. Failover time: N orders (default 50), one after another, while A is told to HANG_ON_SUBMIT,
   REJECT or TIMEOUT(reached=False) on every submit (injected with times=N). Measured:
   `engine.route_order` from the call to the ACCEPTED answer at B. Baseline: the same orders
   with B preferred (A healthy, ranked second), i.e. straight to B. An unknown outcome costs the
   attempt deadline (or the TIMEOUT's delay) plus the settle window by design: they are short
   here (0.1 s each) and subtracted to show what failing over itself costs. A's circuit breaker is
   set never to open (otherwise it opens after 5 failures and the rest skip A); a last scenario
   repeats HANG_ON_SUBMIT with the daemon's default breaker to show that.
2. Supervision overhead: M orders (default 2,000) to A (healthy), sequentially and again from 32
   concurrent tasks, half of them with A's and B's rate limiters as the daemon would run them with
   generous limits (1,000,000/s), half with the baseline: no limits (the limiter's fast path);
   the breaker and `place` are in both. The two alternate in blocks (ABBA...), so a drift hits
   both alike, and the tables are ANALYZEd before each block (see `Stack.analyze`). Then
   `nursery.placement.place` alone against a bare `adapter.submit` in a tight loop (a third venue
   outside the engine), and the parts of `place` on their own.

Every order is a LIMIT buy far below the market (it rests, so a live order stays countable). The
exit status is 1 if any order ended in an unexpected state (for a failover: anything but
ACCEPTED at B with exactly one live order, none at A), 130 on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import shutil
import signal
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

# bench/ for `_common`, and the repository in front of it: a script in bench/ named like a package
# (bench/routing.py) must not shadow that package (`routing`), with or without PYTHONPATH.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import trio
from _common import percentile, print_table

from adapters.base import SubmitRequest
from adapters.simulated import SimulatedBroker, SimulatedMarket
from adapters.simulated.config import MarketConfig, SimulatedBrokerConfig, default_instruments
from adapters.simulated.view import DirectView
from api.capabilities import RateLimits
from api.contracts import CommissionStructure, OrderRoutingRequest, OrderRoutingResponse
from api.enums import (
    AssetClass,
    BrokerFeature,
    ExecutionStrategy,
    OrderType,
    RoutingStatus,
    Side,
    TimeInForce,
    Urgency,
)
from api.events import AnyBrokerEvent
from nursery import reconcile
from nursery.breaker import CircuitBreaker
from nursery.brokers import BrokerHandle
from nursery.engine import ExecutionEngine
from nursery.identity import client_order_id, execution_id
from nursery.placement import Outcome, place
from nursery.ratelimit import RateLimiter, describe_limits
from sql.records import OutboxEvent
from tests.support.engine_stack import engine_stack
from tests.support.faults import Fault, FaultyBroker

DEADLINE = 0.1  # s, every attempt (the engine's attempt_deadline, whatever the urgency)
SETTLE = 0.1  # s, both brokers' settle window (how long an order may still arrive)
TIMEOUT_DELAY = 0.02  # s, how long A takes to answer OutcomeUnknown under TIMEOUT
RECONCILE_BUDGET = 5.0  # s, the daemon's default
A_ID, B_ID, M_ID = "bench-a", "bench-b", "bench-m"
LIMIT_PRICE = Decimal("1.00")  # a buy far below every equity's market: it rests


# --- the stack ------------------------------------------------------------------------------


def venue(broker_id: str, rate: str) -> SimulatedBrokerConfig:
    return SimulatedBrokerConfig(
        broker_id=broker_id,
        name=broker_id,
        asset_classes=(AssetClass.EQUITY,),
        features=tuple(BrokerFeature),
        commission=CommissionStructure(base_rate=Decimal(rate)),
        venue=broker_id.upper(),
        seed=7,
    )  # latency: median 0 (the default), so a request completes without a checkpoint


def never_opening_breaker() -> CircuitBreaker:
    """A breaker that counts but never opens: every order of a scenario still tries A."""
    return CircuitBreaker(failure_threshold=2**31, min_calls=2**31, clock=trio.current_time)


def daemon_breaker() -> CircuitBreaker:
    """What BrokerHandle gives a broker by default (5 consecutive failures, 10 s cooldown)."""
    return CircuitBreaker(clock=trio.current_time)


@dataclass
class Stack:
    engine: ExecutionEngine
    a: FaultyBroker
    b: FaultyBroker
    ha: BrokerHandle
    hb: BrokerHandle
    market: SimulatedMarket
    published: list[int]  # [count], the drain task's counter
    database_url: str

    async def analyze(self) -> None:
        """ANALYZE, as autovacuum does on a database that runs for longer than this benchmark.
        Never-analyzed tables (or statistics from when they were tiny) make the engine's
        `UPDATE ... FROM unnest(...)` writes and the foreign-key checks scan routed_orders and
        broker_orders sequentially: every order then costs more than the one before, a drift
        that is not what this benchmark measures. Run before each measured block, never timed."""
        await trio.to_thread.run_sync(analyze, self.database_url)


@contextlib.asynccontextmanager
async def open_stack(database_url: str) -> AsyncIterator[Stack]:
    market = SimulatedMarket(MarketConfig(seed=3, tick_interval_ms=None, instruments=default_instruments()))
    a = FaultyBroker(venue(A_ID, "0.0001"), market)  # cheaper: tried first
    b = FaultyBroker(venue(B_ID, "0.0009"), market)
    published = [0]

    async def count_published(receive: trio.MemoryReceiveChannel[OutboxEvent]) -> None:
        async for _ in receive:
            published[0] += 1

    async with (
        engine_stack(
            database_url,
            [a, b],
            DirectView(market),
            deadline=DEADLINE,
            settle=SETTLE,
            recover=False,
            unknown_policy="adopt",
            reconcile_budget=RECONCILE_BUDGET,
        ) as built,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(count_published, built.published)
        ha, hb = built.handles
        try:
            yield Stack(built.engine, a, b, ha, hb, market, published, database_url)
        finally:
            nursery.cancel_scope.cancel()


def resting_order(order_id: str, preferred: tuple[str, ...] = ()) -> OrderRoutingRequest:
    return OrderRoutingRequest(
        order_id=order_id,
        account_id="ACC-BENCH",
        symbol="AAPL",
        side=Side.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(10),
        price=LIMIT_PRICE,
        urgency=Urgency.HIGH,
        # The cheaper broker first, always: SMART would (rightly) learn from the injected faults
        # and move orders to B, and the scenarios measure failover from A.
        execution_strategy=ExecutionStrategy.LOWEST_COST,
        preferred_brokers=preferred,
    )


# --- part 1: failover time ------------------------------------------------------------------


@dataclass
class Scenario:
    label: str
    a_told: str
    waits: float  # s of deliberate waiting per failover (deadline or delay, plus settle)
    latencies: list[float] = field(default_factory=list)  # s, sorted after the run
    tried_at_a: int = 0  # orders whose first attempt went to A (attempt 2 at B)
    a_submits: int = 0
    a_queries: int = 0
    problems: list[str] = field(default_factory=list)
    #: per order (trio times): request, submit at A, first and last query at A, submit at B, answer
    marks: list[tuple[float, float | None, float | None, float | None, float | None, float]] = field(
        default_factory=list
    )

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1e3


async def failover_scenario(
    stack: Stack,
    run: str,
    tag: str,
    scenario: Scenario,
    count: int,
    *,
    inject: Callable[[FaultyBroker], object] | None,
    preferred: tuple[str, ...] = (),
    breaker: Callable[[], CircuitBreaker] = never_opening_breaker,
    expect_failover: bool = True,
) -> Scenario:
    a, b, engine = stack.a, stack.b, stack.engine
    stack.ha.breaker = breaker()
    stack.hb.breaker = daemon_breaker()
    a_live_before, b_live_before = set(a.live_orders()), set(b.live_orders())
    a_submits, a_queries = len(a.submits), len(a.queries)
    if inject is not None:
        inject(a)
    responses: list[tuple[OrderRoutingRequest, OrderRoutingResponse]] = []
    spans: list[tuple[float, float]] = []
    await stack.analyze()
    gc.collect()
    for i in range(count):
        request = resting_order(f"f{run}-{tag}-{i:05d}", preferred)
        at = trio.current_time()
        started = time.perf_counter()
        response = await engine.route_order(request)
        scenario.latencies.append(time.perf_counter() - started)
        spans.append((at, trio.current_time()))
        responses.append((request, response))
    await trio.sleep(SETTLE + 0.2)  # late arrivals, zombie cancels, event processing
    leftover = sum(f.times for f in a.faults.pending())
    a.faults.clear()
    scenario.latencies.sort()
    scenario.a_submits = len(a.submits) - a_submits
    scenario.a_queries = len(a.queries) - a_queries
    # Where the time goes, from the venues' own records of each call (trio times).
    a_submit_at = {c.client_order_id: c.at for c in a.submits[a_submits:]}
    b_submit_at = {c.client_order_id: c.at for c in b.submits}
    a_query_at: dict[str, list[float]] = {}
    for c in a.queries[a_queries:]:
        a_query_at.setdefault(c.client_order_id, []).append(c.at)
    for (request, _), (begun, answered) in zip(responses, spans, strict=True):
        first, second = (client_order_id(execution_id(request.order_id, n)) for n in (1, 2))
        queries = a_query_at.get(first, [])
        scenario.marks.append(
            (
                begun,
                a_submit_at.get(first),
                queries[0] if queries else None,
                queries[-1] if queries else None,
                b_submit_at.get(second, b_submit_at.get(first)),
                answered,
            )
        )
    a_new = set(a.live_orders()) - a_live_before
    b_new = set(b.live_orders()) - b_live_before
    expected_at_b: set[str] = set()
    for request, response in responses:
        status = (response.status, response.selected_broker)
        if status != (RoutingStatus.ACCEPTED, B_ID):
            scenario.problems.append(
                f"{request.order_id}: {response.status} at {response.selected_broker} "
                f"({response.rejection_reason}), expected ACCEPTED at {B_ID}"
            )
            continue
        if response.execution_id == execution_id(request.order_id, 2):
            scenario.tried_at_a += 1
        elif response.execution_id != execution_id(request.order_id, 1):
            scenario.problems.append(f"{request.order_id}: unexpected execution {response.execution_id}")
        assert response.execution_id is not None
        expected_at_b.add(client_order_id(response.execution_id))
    if a_new:
        scenario.problems.append(f"{len(a_new)} live orders at {A_ID} (expected none)")
    if b_new != expected_at_b:
        scenario.problems.append(
            f"live orders at {B_ID}: {len(b_new)} new, {len(b_new & expected_at_b)} of them the "
            f"{len(expected_at_b)} accepted ones (expected exactly those)"
        )
    if expect_failover and scenario.tried_at_a != count:
        scenario.problems.append(f"only {scenario.tried_at_a} of {count} orders were tried at {A_ID} first")
    if expect_failover and leftover:
        scenario.problems.append(f"{leftover} injected faults left unused at {A_ID}")
    return scenario


async def part_failover(stack: Stack, run: str, count: int) -> list[Scenario]:
    print(f"failover: {count} orders per scenario ...", flush=True)
    out = [
        await failover_scenario(
            stack,
            run,
            "bl",
            Scenario("baseline: straight to B", "healthy, B preferred", 0.0),
            count,
            inject=None,
            preferred=(B_ID,),
            expect_failover=False,
        ),
        await failover_scenario(
            stack,
            run,
            "rj",
            Scenario("A rejects", "REJECT", 0.0),
            count,
            inject=lambda a: a.inject(Fault.REJECT, times=count),
        ),
        await failover_scenario(
            stack,
            run,
            "to",
            Scenario(
                "A times out", f"TIMEOUT(reached=False, delay={TIMEOUT_DELAY:g})", TIMEOUT_DELAY + SETTLE
            ),
            count,
            inject=lambda a: a.inject(Fault.TIMEOUT, times=count, delay=TIMEOUT_DELAY, reached=False),
        ),
        await failover_scenario(
            stack,
            run,
            "hg",
            Scenario("A hangs", "HANG_ON_SUBMIT", DEADLINE + SETTLE),
            count,
            inject=lambda a: a.inject(Fault.HANG_ON_SUBMIT, times=count),
        ),
        await failover_scenario(
            stack,
            run,
            "hd",
            Scenario("A hangs, daemon's breaker", "HANG_ON_SUBMIT", DEADLINE + SETTLE),
            count,
            inject=lambda a: a.inject(Fault.HANG_ON_SUBMIT, times=count),
            breaker=daemon_breaker,
            expect_failover=False,  # the breaker opens after 5: the rest go straight to B
        ),
    ]
    stack.ha.breaker = daemon_breaker()  # closed again for what follows
    return out


# --- part 2: supervision overhead on the route round trip -----------------------------------


@dataclass
class Block:
    latencies: list[float] = field(default_factory=list)  # s
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


@dataclass
class Variant:
    label: str
    limits: RateLimits
    limiters: dict[str, RateLimiter] = field(default_factory=dict)
    blocks: dict[str, list[Block]] = field(default_factory=lambda: {"sequential": [], "concurrent": []})

    def pooled(self, kind: str) -> list[float]:
        return sorted(x for block in self.blocks[kind] for x in block.latencies)

    def rate(self, kind: str) -> float:
        blocks = self.blocks[kind]
        elapsed = sum(b.elapsed for b in blocks)
        return sum(len(b.latencies) for b in blocks) / elapsed if elapsed else 0.0


def check_at_a(request: OrderRoutingRequest, response: OrderRoutingResponse, problems: list[str]) -> None:
    if (response.status, response.selected_broker) != (RoutingStatus.ACCEPTED, A_ID):
        problems.append(
            f"{request.order_id}: {response.status} at {response.selected_broker} "
            f"({response.rejection_reason}), expected ACCEPTED at {A_ID}"
        )


async def route_sequential(
    stack: Stack, requests: Sequence[OrderRoutingRequest], problems: list[str]
) -> Block:
    block = Block()
    engine = stack.engine
    started = time.perf_counter()
    for request in requests:
        t0 = time.perf_counter()
        response = await engine.route_order(request)
        block.latencies.append(time.perf_counter() - t0)
        check_at_a(request, response, problems)
    block.elapsed = time.perf_counter() - started
    return block


async def route_concurrent(
    stack: Stack, requests: Sequence[OrderRoutingRequest], tasks: int, problems: list[str]
) -> Block:
    block = Block()
    engine = stack.engine
    it = iter(requests)

    async def requester() -> None:
        for request in it:  # shared: each task takes the next request when its reply is in
            t0 = time.perf_counter()
            response = await engine.route_order(request)
            block.latencies.append(time.perf_counter() - t0)
            check_at_a(request, response, problems)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(requester)
    block.elapsed = time.perf_counter() - started
    return block


def split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


async def part_overhead(
    stack: Stack, run: str, variants: list[Variant], *, orders: int, tasks: int, warmup: int, rounds: int,
    problems: list[str],
) -> None:  # fmt: skip
    for variant in variants:
        variant.limiters = {
            h.broker_id: RateLimiter(variant.limits, broker_id=h.broker_id) for h in (stack.ha, stack.hb)
        }
    stack.ha.breaker, stack.hb.breaker = daemon_breaker(), daemon_breaker()
    serial = iter(range(10**9))

    def requests(tag: str, count: int) -> list[OrderRoutingRequest]:
        return [resting_order(f"f{run}-{tag}-{next(serial):07d}") for _ in range(count)]

    def use(variant: Variant) -> None:
        stack.ha.limiter = variant.limiters[A_ID]
        stack.hb.limiter = variant.limiters[B_ID]

    # `orders` (and `warmup`) per mode, shared evenly by the variants: M = 2,000 means 1,000
    # through each variant, sequentially and again concurrently.
    per_variant = -(-orders // len(variants))
    warm_per_variant = -(-warmup // len(variants))
    for kind in ("sequential", "concurrent"):
        print(
            f"overhead, {kind}: {orders:,} orders"
            + (f" from {tasks} tasks" if kind == "concurrent" else "")
            + f", {per_variant:,} through each variant in {rounds} alternating blocks ...",
            flush=True,
        )
        for variant in variants:  # warm-up, not measured
            use(variant)
            warm = requests("w" + kind[0], warm_per_variant)
            if kind == "sequential":
                await route_sequential(stack, warm, problems)
            else:
                await route_concurrent(stack, warm, tasks, problems)
        for index, size in enumerate(split(per_variant, rounds)):
            order = variants if index % 2 == 0 else variants[::-1]  # ABBA: drift hits both alike
            for variant in order:
                use(variant)
                batch = requests(kind[0] + str(index), size)
                await stack.analyze()
                gc.collect()
                if kind == "sequential":
                    block = await route_sequential(stack, batch, problems)
                else:
                    block = await route_concurrent(stack, batch, tasks, problems)
                variant.blocks[kind].append(block)
    use(variants[0])


# --- part 2b: place() against a bare adapter.submit ----------------------------------------


@dataclass
class Micro:
    label: str
    per_call: list[float] = field(default_factory=list)  # s per call, one value per block


async def part_micro(
    market: SimulatedMarket, run: str, calls: int, limits: RateLimits, problems: list[str]
) -> list[Micro]:
    """A third venue, outside the engine (its events go nowhere: its forwarding task blocks on
    the first one, so no other task does work between the calls)."""
    print(f"place() against a bare adapter.submit: {calls:,} calls each ...", flush=True)
    adapter = SimulatedBroker(venue(M_ID, "0.0001"), market)
    handle = BrokerHandle(adapter, M_ID, settle=SETTLE)
    limited = RateLimiter(limits, broker_id=M_ID)
    unlimited = handle.limiter
    serial = iter(range(10**9))

    def batch(count: int) -> list[SubmitRequest]:
        out = []
        for _ in range(count):
            execution = execution_id(f"f{run}-m-{next(serial)}", 1)
            out.append(
                SubmitRequest(
                    client_order_id=client_order_id(execution),
                    account_id="ACC-BENCH",
                    symbol="AAPL",
                    asset_class=AssetClass.EQUITY,
                    side=Side.BUY,
                    order_type=OrderType.LIMIT,
                    quantity=Decimal(10),
                    time_in_force=TimeInForce.DAY,
                    price=LIMIT_PRICE,
                )
            )
        return out

    async def bare(requests: Sequence[SubmitRequest]) -> float:
        started = time.perf_counter()
        for request in requests:
            await adapter.submit(request)
        return time.perf_counter() - started

    async def placed(requests: Sequence[SubmitRequest]) -> float:
        deadline = trio.current_time() + 3600.0
        started = time.perf_counter()
        for request in requests:
            placement = await place(handle, request, deadline)
            if placement.outcome is not Outcome.CONFIRMED:
                problems.append(f"place() at {M_ID}: {placement.outcome} {placement.reason}")
        return time.perf_counter() - started

    async def place_unlimited(requests: Sequence[SubmitRequest]) -> float:
        handle.limiter = unlimited
        return await placed(requests)

    async def place_limited(requests: Sequence[SubmitRequest]) -> float:
        handle.limiter = limited
        return await placed(requests)

    # What place() adds, piece by piece (each loop alone, no submit):
    breaker = CircuitBreaker(clock=trio.current_time)
    limiter_free, limiter_limited = (
        RateLimiter(RateLimits(), broker_id=M_ID),
        RateLimiter(limits, broker_id=M_ID),
    )

    async def checkpoint(requests: Sequence[object]) -> float:
        started = time.perf_counter()
        for _ in requests:
            await trio.lowlevel.checkpoint()
        return time.perf_counter() - started

    async def cancel_scope(requests: Sequence[object]) -> float:
        started = time.perf_counter()
        for _ in requests:
            with trio.move_on_at(trio.current_time() + 3600.0):  # noqa: ASYNC100  (its cost alone)
                pass
        return time.perf_counter() - started

    async def breaker_calls(requests: Sequence[object]) -> float:
        started = time.perf_counter()
        for _ in requests:
            breaker.allow()
            breaker.record_success()
        return time.perf_counter() - started

    async def acquire_free(requests: Sequence[object]) -> float:
        deadline = trio.current_time() + 3600.0
        started = time.perf_counter()
        for _ in requests:
            await limiter_free.acquire(deadline)
        return time.perf_counter() - started

    async def acquire_limited(requests: Sequence[object]) -> float:
        deadline = trio.current_time() + 3600.0
        started = time.perf_counter()
        for _ in requests:
            await limiter_limited.acquire(deadline)
        return time.perf_counter() - started

    runs: list[tuple[Micro, Callable[..., Awaitable[float]], bool]] = [  # (figure, loop, submits?)
        (Micro("adapter.submit, bare"), bare, True),
        (Micro("place(), no limits"), place_unlimited, True),
        (Micro(f"place(), {describe_limits(limits)}"), place_limited, True),
        (Micro("  part: trio checkpoint"), checkpoint, False),
        (Micro("  part: empty move_on_at scope"), cancel_scope, False),
        (Micro("  part: breaker allow + record_success"), breaker_calls, False),
        (Micro("  part: limiter.acquire, no limits"), acquire_free, False),
        (Micro(f"  part: limiter.acquire, {describe_limits(limits)}"), acquire_limited, False),
    ]
    nowhere, _never_read = trio.open_memory_channel[AnyBrokerEvent](0)
    block = 1000
    async with trio.open_nursery() as nursery:
        await nursery.start(adapter.run, nowhere)
        for _, fn, submits in runs:  # warm-up
            await fn(batch(200) if submits else range(200))
        for index, size in enumerate(split(calls, max(1, math.ceil(calls / block)))):
            order = runs if index % 2 == 0 else runs[::-1]
            inputs = [batch(size) if submits else range(size) for _, _, submits in order]
            gc.collect()
            gc.disable()  # as timeit does: a collection of the growing heap is not place()'s cost
            try:
                for (micro, fn, _), requests in zip(order, inputs, strict=True):
                    micro.per_call.append(await fn(requests) / size)
            finally:
                gc.enable()
        nursery.cancel_scope.cancel()
    return [micro for micro, _, _ in runs]


# --- running and reporting -----------------------------------------------------------------


@dataclass
class Settings:
    failovers: int
    orders: int
    tasks: int
    warmup: int
    rounds: int
    micro: int
    limits: RateLimits


@dataclass
class Results:
    scenarios: list[Scenario] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    micro: list[Micro] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    published: int = 0
    interrupted: bool = False


async def measure(database_url: str, settings: Settings, results: Results) -> None:
    run = uuid.uuid4().hex[:6]
    async with trio.open_nursery() as root:

        async def on_signal() -> None:
            # Ctrl-C or SIGTERM: cancel everything, clean up, exit 130. (A second Ctrl-C gets
            # trio's own KeyboardInterrupt.)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    results.interrupted = True
                    root.cancel_scope.cancel()
                    return

        root.start_soon(on_signal)
        async with open_stack(database_url) as stack:
            # Warm-up (not measured): both brokers, the database's caches (see Stack.analyze).
            for i in range(20):
                await stack.engine.route_order(resting_order(f"f{run}-wa-{i:05d}"))
                await stack.engine.route_order(resting_order(f"f{run}-wb-{i:05d}", (B_ID,)))
            results.scenarios = await part_failover(stack, run, settings.failovers)
            results.variants = [
                Variant("baseline: no limits", RateLimits()),
                Variant(f"daemon: {describe_limits(settings.limits)}", settings.limits),
            ]
            await part_overhead(
                stack,
                run,
                results.variants,
                orders=settings.orders,
                tasks=settings.tasks,
                warmup=settings.warmup,
                rounds=settings.rounds,
                problems=results.problems,
            )
            if settings.micro:
                results.micro = await part_micro(
                    stack.market, run, settings.micro, settings.limits, results.problems
                )
            await trio.sleep(0.2)
            results.published = stack.published[0]
        root.cancel_scope.cancel()


def report(results: Results, settings: Settings) -> int:
    print()
    print(
        f"1. failover time: request -> ACCEPTED at {B_ID}, {settings.failovers} orders one after another "
        f"per scenario. attempt deadline {DEADLINE * 1e3:.0f} ms, settle window {SETTLE * 1e3:.0f} ms "
        f"(reconciliation polls every {reconcile.POLL_INTERVAL * 1e3:.0f} ms), TIMEOUT delay "
        f"{TIMEOUT_DELAY * 1e3:.0f} ms; waits = the deliberate waiting per failover (deadline or delay, "
        "plus settle); A's breaker never opens except in the last row."
    )
    base = results.scenarios[0]
    rows = []
    for s in results.scenarios:
        net = s.ms(50) - s.waits * 1e3
        show_net = s is not base and s.tried_at_a == len(s.latencies)
        rows.append(
            [
                s.label,
                s.a_told,
                f"{s.tried_at_a}/{len(s.latencies)}",
                f"{s.a_queries / len(s.latencies):.1f}" if s.latencies else "-",
                f"{s.ms(50):,.1f}",
                f"{s.ms(90):,.1f}",
                f"{s.ms(100):,.1f}",
                f"{s.waits * 1e3:,.0f}",
                f"{net:,.1f}" if show_net else "",
                f"{net - base.ms(50):+,.1f}" if show_net else "",
                "ok" if not s.problems else f"{len(s.problems)} PROBLEMS",
            ]
        )
    print_table(
        ["scenario", "A told", "tried A", "queries/order", "p50 ms", "p90 ms", "max ms", "waits ms",
         "p50-waits", "-baseline p50", "check"],
        rows,
    )  # fmt: skip
    print(
        "   where a failover's time goes: medians in ms over the orders tried at A first (all orders "
        "for the baseline), from the trio times at which the venues recorded each call"
    )
    rows = []
    for s in results.scenarios:
        cols: list[list[float]] = [[], [], [], [], [], []]
        for begun, a_sub, q_first, q_last, b_sub, answered in s.marks:
            if s is not base and a_sub is None:
                continue  # not tried at A (the breaker was open)
            first_call = a_sub if a_sub is not None else b_sub
            if first_call is None or b_sub is None:
                continue
            cols[0].append(first_call - begun)
            if a_sub is not None:
                if q_first is not None and q_last is not None:
                    cols[1].append(q_first - a_sub)
                    cols[2].append(q_last - q_first)
                    cols[3].append(b_sub - q_last)
                else:
                    cols[3].append(b_sub - a_sub)
            cols[4].append(answered - b_sub)
            cols[5].append(answered - begun)

        def med(values: list[float]) -> str:
            return f"{sorted(values)[len(values) // 2] * 1e3:,.1f}" if values else "-"

        rows.append([s.label, str(len(cols[5])), *(med(c) for c in cols)])
    print_table(
        ["scenario", "orders", "request->1st submit", "A submit->1st query", "1st->last query",
         "A done->submit at B", "B submit->ACCEPTED", "total"],
        rows,
    )  # fmt: skip

    print()
    print(
        f"2. supervision overhead on engine.route_order (A healthy, zero latency, breaker and place() "
        f"in both): {settings.orders:,} orders per mode, half through each variant in {settings.rounds} "
        f"alternating blocks (+ {settings.warmup} warm-up); concurrent = {settings.tasks} tasks."
    )
    base_v, daemon_v = results.variants
    rows = []

    def us(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e6:,.0f}"

    for v in results.variants:
        seq, conc = v.pooled("sequential"), v.pooled("concurrent")
        rows.append(
            [v.label, us(seq, 50), us(seq, 99), f"{v.rate('sequential'):,.0f}", us(conc, 50), us(conc, 99),
             f"{v.rate('concurrent'):,.0f}"]
        )  # fmt: skip

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}x" if b else "-"

    def pratio(kind: str, q: float) -> str:
        return ratio(percentile(daemon_v.pooled(kind), q), percentile(base_v.pooled(kind), q))

    rows.append(
        ["daemon / baseline", pratio("sequential", 50), pratio("sequential", 99),
         ratio(daemon_v.rate("sequential"), base_v.rate("sequential")), pratio("concurrent", 50),
         pratio("concurrent", 99), ratio(daemon_v.rate("concurrent"), base_v.rate("concurrent"))]
    )  # fmt: skip
    print_table(
        [
            "variant",
            "seq p50 us",
            "seq p99 us",
            "seq orders/s",
            "conc p50 us",
            "conc p99 us",
            "conc orders/s",
        ],
        rows,
    )
    for kind in ("sequential", "concurrent"):
        per_block = [
            d.rate / b.rate for b, d in zip(base_v.blocks[kind], daemon_v.blocks[kind], strict=True) if b.rate
        ]
        if per_block:
            print(
                f"   {kind} orders/s, daemon/baseline per block pair: "
                + ", ".join(f"{r:.3f}" for r in per_block)
                + " (the spread is the noise)"
            )

    if results.micro:
        print()
        bare_best = min(results.micro[0].per_call)
        print(
            f"   place() alone against a bare adapter.submit (zero latency, resting order), tight loop, "
            f"{len(results.micro[0].per_call)} alternating blocks: us per call, best block / median block; "
            "then the parts of place() on their own"
        )
        rows = []

        def middle(values: list[float]) -> float:
            return sorted(values)[len(values) // 2]

        bare_middle = middle(results.micro[0].per_call)
        for m in results.micro:
            best, typical = min(m.per_call), middle(m.per_call)
            is_place = m.label.startswith("place")
            rows.append(
                [
                    m.label,
                    f"{best * 1e6:.1f}",
                    f"{typical * 1e6:.1f}",
                    f"{(best - bare_best) * 1e6:+.1f}" if is_place else "",
                    f"{(typical - bare_middle) * 1e6:+.1f}" if is_place else "",
                ]
            )
        print_table(["loop", "best us", "median us", "over bare, best", "over bare, median"], rows)

    problems = [p for s in results.scenarios for p in (f"{s.label}: {x}" for x in s.problems)]
    problems += results.problems
    if problems:
        print(f"\n{len(problems)} unexpected states:")
        for p in problems[:20]:
            print(f"  {p}")
        return 1
    return 0


@contextlib.contextmanager
def database(tmp: Path) -> Iterator[tuple[str, str]]:
    """(conninfo, note): a fresh `bis_bench_<random>` database on DATABASE_URL's server, dropped
    at the end; else an embedded pgserver in `tmp`, stopped at the end."""
    from daemon.servers import database_url_from_env, embedded_postgres

    server_url = database_url_from_env()
    if server_url is None:
        with warnings.catch_warnings():  # platformdirs, inside pgserver: XDG_RUNTIME_DIR not set
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            with embedded_postgres(tmp / "pgdata") as url:
                yield url, "embedded (pgserver, in a temp dir)"
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"bis_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(server_url, dbname=name), "DATABASE_URL server, fresh database"
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def db_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings"
            " WHERE name IN ('fsync', 'synchronous_commit', 'server_version')"
        ).fetchall()
    return {str(n): str(s) for n, s in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failovers", type=int, default=50, help="orders per failover scenario (default 50)")
    parser.add_argument(
        "--orders",
        type=int,
        default=2000,
        help="part 2: orders per mode (sequential, concurrent), half through each variant (default 2000)",
    )
    parser.add_argument("--concurrent", type=int, default=32, help="concurrent routing tasks (default 32)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="part 2 warm-up orders per mode (default 100)"
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="alternating blocks per variant and mode (default 10)"
    )
    parser.add_argument(
        "--micro", type=int, default=10000, help="calls per loop in the place() timing (0: skip)"
    )
    parser.add_argument(
        "--limit-per-second",
        type=int,
        default=1_000_000,
        help="the daemon variant's limit (default 1,000,000/s)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.failovers, args.orders, args.warmup, args.micro = (
            min(args.failovers, 20), min(args.orders, 300), min(args.warmup, 50), min(args.micro, 3000)
        )  # fmt: skip
    if (
        min(args.failovers, args.orders, args.concurrent, args.rounds, args.limit_per_second) < 1
        or args.micro < 0
    ):
        parser.error("counts must be positive")
    settings = Settings(
        failovers=args.failovers,
        orders=args.orders,
        tasks=args.concurrent,
        warmup=args.warmup,
        rounds=min(args.rounds, max(1, args.orders // 2)),
        micro=args.micro,
        limits=RateLimits(requests_per_second=args.limit_per_second),
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    results = Results()
    tmp = Path(tempfile.mkdtemp(prefix="bis-bench-failover-"))
    signal.signal(signal.SIGTERM, interrupt)  # outside trio.run: clean up like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # trio delivers Ctrl-C safely
    try:
        with database(tmp) as (url, note):
            from sql.migrate import apply_migrations

            apply_migrations(url)
            pg = db_settings(url)
            print(
                f"bench/failover.py: PostgreSQL {pg.get('server_version', '?')} {note} "
                f"(fsync={pg.get('fsync')}, synchronous_commit={pg.get('synchronous_commit')}); "
                f"setup {time.monotonic() - started:.1f} s",
                flush=True,
            )
            try:
                trio.run(measure, url, settings, results)
            except BaseException:
                # Cancelled mid-order, the engine can fail with something other than Cancelled
                # (its store's writer stopped first: WriterClosed): still an interruption.
                if not results.interrupted:
                    raise
            finally:
                # a second Ctrl-C (or a SIGTERM) must not interrupt the cleanup half-way
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if results.interrupted:
        raise KeyboardInterrupt
    status = report(results, settings)
    total = time.monotonic() - started
    print(
        f"\n{results.published:,} execution updates published (drained); "
        f"total {total:.0f} s; exit status {status}"
    )
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (everything started was stopped)", file=sys.stderr)
        sys.exit(130)
    except BaseExceptionGroup as group:  # trio may wrap the KeyboardInterrupt
        if (
            group.subgroup(KeyboardInterrupt) is not None
            and group.subgroup(lambda e: not isinstance(e, (KeyboardInterrupt, BaseExceptionGroup))) is None
        ):
            print("\ninterrupted (everything started was stopped)", file=sys.stderr)
            sys.exit(130)
        raise
