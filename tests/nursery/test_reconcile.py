"""nursery.reconcile: what a broker's answer to "do you have this order?" resolves to."""

from __future__ import annotations

from decimal import Decimal

import trio

from adapters.base import BrokerOrderSnapshot
from api.capabilities import Capabilities
from api.contracts import CommissionStructure
from api.enums import AssetClass, BrokerFeature, BrokerOrderStatus
from nursery.brokers import BrokerHandle
from nursery.reconcile import Resolution, find_order


class Answering:
    """An adapter whose `query` answers with a fixed snapshot (None: no such order)."""

    broker_id = "answering"
    capabilities = Capabilities(frozenset({AssetClass.EQUITY}), frozenset(BrokerFeature))
    commission = CommissionStructure(base_rate=Decimal(0))
    outlives_daemon = True  # a broker outside the daemon

    def __init__(self, status: BrokerOrderStatus | None) -> None:
        self.status = status

    async def query(self, client_order_id: str) -> BrokerOrderSnapshot | None:
        await trio.lowlevel.checkpoint()
        if self.status is None:
            return None
        return BrokerOrderSnapshot(client_order_id, "B-1", self.status, Decimal(0))


async def resolve(status: BrokerOrderStatus | None) -> Resolution:
    handle = BrokerHandle(Answering(status), "Answering")  # type: ignore[arg-type]
    now = trio.current_time()
    finding = await find_order(handle, "c-1", settle=0.05, until=now + 1.0, query_timeout=0.5)
    return finding.resolution


async def test_an_order_the_broker_holds_exists_one_it_rejected_is_refused_none_is_absent() -> None:
    assert await resolve(BrokerOrderStatus.ACCEPTED) is Resolution.EXISTS
    assert await resolve(BrokerOrderStatus.FILLED) is Resolution.EXISTS
    assert await resolve(BrokerOrderStatus.REJECTED) is Resolution.REFUSED  # nothing lives there
    assert await resolve(None) is Resolution.ABSENT
