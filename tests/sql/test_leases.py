"""Daemon leases and orphan takeover in SQL (`sql.leases`), and the set of unanswered claims
(`open_claims`, migration 0009) that the takeover reads."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec

from api.contracts import OrderRoutingResponse
from api.enums import RoutingStatus
from sql import Store
from sql.leases import DaemonSeat
from tests.sql import T0, new_id, order_claim, query


def seat(name: str, state_dir: str | None = None) -> DaemonSeat:
    return DaemonSeat(str(uuid.uuid4()), name, "host-a", 1, state_dir or f"/srv/{uuid.uuid4().hex}")


def answer(order_id: str) -> OrderRoutingResponse:
    return OrderRoutingResponse(
        routing_id=new_id(),
        order_id=order_id,
        status=RoutingStatus.REJECTED,
        timestamp=T0 + timedelta(milliseconds=3),
        rejection_reason="no eligible broker",
    )


async def open_claims(url: str, order_id: str) -> int:
    ((count,),) = await query(url, "SELECT count(*) FROM open_claims WHERE order_id = %s", order_id)
    return int(count)


async def test_a_claim_is_open_until_its_answer_is_stored(
    store: Store, broker_id: str, migrated_database_url: str
) -> None:
    claim = order_claim(new_id(), broker_id)
    await store.claim_order(claim)
    assert await open_claims(migrated_database_url, claim.order_id) == 1
    assert await store.save_response(claim.order_id, answer(claim.order_id))
    assert await open_claims(migrated_database_url, claim.order_id) == 0
    order_id = new_id()
    answered = msgspec.structs.replace(order_claim(order_id, None), response=answer(order_id))
    await store.claim_order(answered)  # answered at claim time: never open
    assert await open_claims(migrated_database_url, answered.order_id) == 0


async def test_orphans_of_an_ended_lease_are_taken_at_once_and_only_once(
    store: Store, broker_id: str
) -> None:
    gone, survivor, late = seat("gone"), seat("survivor"), seat("late")
    for s in (gone, survivor, late):
        await store.register_daemon(s)
    claim = msgspec.structs.replace(order_claim(new_id(), broker_id), owner=gone.id)
    await store.claim_order(claim)
    kwargs = {"lease_s": 3600.0, "own_after_s": 3600.0, "only": [claim.order_id]}
    assert await store.take_orphans(survivor.id, judge=True, **kwargs) == []  # its lease is fresh
    await store.end_lease(gone.id)  # a clean stop
    taken = await store.take_orphans(survivor.id, judge=False, **kwargs)
    assert [order_id for order_id, _ in taken] == [claim.order_id]
    assert await store.take_orphans(late.id, judge=True, **kwargs) == []  # the survivor owns it now


async def test_a_lapsed_lease_is_judged_only_by_a_daemon_that_may_judge(store: Store, broker_id: str) -> None:
    dead, survivor = seat("dead"), seat("survivor")
    await store.register_daemon(dead)
    await store.register_daemon(survivor)
    claim = msgspec.structs.replace(order_claim(new_id(), broker_id), owner=dead.id)
    await store.claim_order(claim)
    kwargs = {"lease_s": 0.0, "own_after_s": 3600.0, "only": [claim.order_id]}
    assert await store.take_orphans(survivor.id, judge=False, **kwargs) == []
    taken = await store.take_orphans(survivor.id, judge=True, **kwargs)
    assert [order_id for order_id, _ in taken] == [claim.order_id]


async def test_registering_ends_the_leases_of_the_seats_predecessors(store: Store, broker_id: str) -> None:
    first = seat("d", state_dir="/srv/same")
    await store.register_daemon(first)
    claim = msgspec.structs.replace(order_claim(new_id(), broker_id), owner=first.id)
    await store.claim_order(claim)
    second = seat("d", state_dir="/srv/same")
    assert first.id in await store.register_daemon(second)
    assert await store.renew_lease(first.id) is None  # ended: it must register again
    taken = await store.take_orphans(
        second.id, lease_s=3600.0, own_after_s=3600.0, judge=False, only=[claim.order_id]
    )
    assert [order_id for order_id, _ in taken] == [claim.order_id]
