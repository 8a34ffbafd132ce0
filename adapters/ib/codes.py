"""IB's message codes, classified at one place (pure).

TWS reports errors, warnings and connection news all as `error(reqId, code, message)`. What
the adapter makes of each code:

    code                 meaning                                     the adapter
    326                  client id already in use                    AuthenticationFailed (config)
    100                  pacing: too many messages per second        logged; TWS disconnects
    200                  no / ambiguous security definition          submit: BrokerRejected
    201, 203, 103, ...   order rejected (any other order error)      BrokerRejected / OrderRejected
    202                  order cancelled                             OrderCanceled
    10147                cancel: order id not found                  CancelRejected
    10148                cancel: order cannot be cancelled (final)   CancelRejected, or done when
                                                                     the order is already cancelled
    1100                 TWS lost its connection to IB               status DISCONNECTED, no orders
    1101                 restored, data lost                         CONNECTED, recover fills/orders
    1102                 restored, data maintained                   CONNECTED, recover anyway
    2103/2105/2157/2110  a data farm (or TWS-server link) broken     DEGRADED (an issue)
    2104/2106/2107/      farm OK / inactive but available            CONNECTED once none is broken
    2108/2158
    other 2100-2199      warnings                                    logged

`LinkState` folds connectivity and farm codes into the broker's connection status.
"""

from __future__ import annotations

from enum import StrEnum

from api.enums import ConnectionStatus

CLIENT_ID_IN_USE = 326
PACING_VIOLATION = 100
NO_SECURITY_DEFINITION = 200
ORDER_CANCELED = 202
CANCEL_NOT_FOUND = 10147
CANCEL_NOT_ALLOWED = 10148
CONNECTIVITY_LOST = 1100
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102

#: Answers to a cancel request, not changes of the order.
CANCEL_ANSWERS = frozenset({CANCEL_NOT_FOUND, CANCEL_NOT_ALLOWED})

#: Farm code -> (farm family, broken?). The farm's name follows the last ':' of the message.
FARMS: dict[int, tuple[str, bool]] = {
    2103: ("market data", True),
    2104: ("market data", False),
    2108: ("market data", False),
    2105: ("historical data", True),
    2106: ("historical data", False),
    2107: ("historical data", False),
    2157: ("security definition", True),
    2158: ("security definition", False),
    2110: ("TWS-server link", True),
}
_SERVER_LINK = "TWS-server link"


class CodeKind(StrEnum):
    CLIENT_ID_IN_USE = "CLIENT_ID_IN_USE"
    PACING = "PACING"
    CONNECTIVITY = "CONNECTIVITY"
    FARM = "FARM"
    CANCEL_ANSWER = "CANCEL_ANSWER"
    CANCELED = "CANCELED"
    WARNING = "WARNING"
    ERROR = "ERROR"


def classify(code: int) -> CodeKind:
    if code == CLIENT_ID_IN_USE:
        return CodeKind.CLIENT_ID_IN_USE
    if code == PACING_VIOLATION:
        return CodeKind.PACING
    if code in (CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
        return CodeKind.CONNECTIVITY
    if code in FARMS:
        return CodeKind.FARM
    if code in CANCEL_ANSWERS:
        return CodeKind.CANCEL_ANSWER
    if code == ORDER_CANCELED:
        return CodeKind.CANCELED
    if is_warning(code):
        return CodeKind.WARNING
    return CodeKind.ERROR


def is_warning(code: int) -> bool:
    """Codes that leave an order live (ib_async's own list, and the 2100 range)."""
    return code in {105, 110, 165, 321, 329, 399, 404, 434, 492, 10167} or 2100 <= code < 2200


def is_rejection(code: int) -> bool:
    """An error code that, attached to an order that never filled, means IB refused it."""
    return bool(code) and not is_warning(code) and code != ORDER_CANCELED and code not in CANCEL_ANSWERS


class LinkState:
    """The connection status the codes seen so far imply (pure; one per API connection)."""

    def __init__(self) -> None:
        self.ib_reachable = True
        self.broken: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"<LinkState {self.status} broken={sorted(self.broken)}>"

    @property
    def status(self) -> ConnectionStatus:
        if not self.ib_reachable:
            return ConnectionStatus.DISCONNECTED
        if self.broken:
            return ConnectionStatus.DEGRADED
        return ConnectionStatus.CONNECTED

    def apply(self, code: int, message: str) -> ConnectionStatus | None:
        """Fold one code in; the new status if it changed, else None."""
        before = self.status
        if code == CONNECTIVITY_LOST:
            self.ib_reachable = False
        elif code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
            self.ib_reachable = True
            self.broken.pop((_SERVER_LINK, ""), None)
        elif code in FARMS:
            family, broken = FARMS[code]
            farm = message.rpartition(":")[2].strip() if ":" in message else ""
            if broken:
                self.broken[(family, farm)] = message
            else:
                for key in [k for k in self.broken if k[0] == family and (not farm or k[1] in ("", farm))]:
                    del self.broken[key]
                self.broken.pop((_SERVER_LINK, ""), None)  # a farm answering: the link works
        else:
            return None
        after = self.status
        return after if after is not before else None
