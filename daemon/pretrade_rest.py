"""REST for operators of the pre-trade checks (a blueprint of the REST app: `create_app(
blueprints=...)`; outside the OMS contract's OpenAPI document, like the console):

    GET  /admin/kill-switches                   200 {"engaged": [...], "unpersisted": [...]}
    PUT  /admin/kill-switches                   200 KillSwitchResult; 400 naming each bad field
         {"scope": "ACCOUNT"|"GLOBAL", "accountId"?, "engaged", "reason"?, "cancelOpenOrders"?}
    GET  /admin/orders/<orderId>/explanation    200 ExplainOrder's answer; 404

Every route needs `Authorization: Bearer <token>` when tokens are configured (401 otherwise), as
the rest of the API; a request refused for any reason changes nothing.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Response, request
from quart_trio.wrappers import TrioResponse

from api.codec import encode
from api.contracts import ErrorBody
from api.validation import convert_fields
from nursery.pretrade.admin import KillSwitchAdmin, decode_set_kill_switch
from nursery.pretrade.explain import ExplainOrderRequest, OrderExplainer

__all__ = ["pretrade_blueprint"]

_UNAUTHORIZED = encode(ErrorBody(message="Authentication required"))


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return TrioResponse(body, status=status, headers=headers, content_type="application/json")


def pretrade_blueprint(
    admin: KillSwitchAdmin, explainer: OrderExplainer, tokens: frozenset[str]
) -> Blueprint:
    blueprint = Blueprint("pretrade", __name__)
    expected = tuple(token.encode() for token in tokens)

    @blueprint.before_request
    async def authenticate() -> Response | None:
        if not expected:
            return None
        scheme, _, presented = (request.headers.get("Authorization") or "").partition(" ")
        given = presented.strip().encode("utf-8", "surrogatepass")
        matched = False
        for token in expected:
            matched |= hmac.compare_digest(given, token)
        if scheme.lower() == "bearer" and given and matched:
            return None
        return _json(_UNAUTHORIZED, 401, {"WWW-Authenticate": "Bearer"})

    @blueprint.get("/admin/kill-switches")
    async def list_kill_switches() -> Response:
        return _json(encode(admin.listed()))

    @blueprint.put("/admin/kill-switches")
    async def set_kill_switch() -> Response:
        body = decode_set_kill_switch(await request.get_data(cache=False))
        return _json(encode(await admin.set(body)))

    @blueprint.get("/admin/orders/<orderId>/explanation")
    async def explain_order(orderId: str) -> Response:
        query = convert_fields({"orderId": orderId}, ExplainOrderRequest)
        return _json(encode(await explainer.explain(query)))

    return blueprint
