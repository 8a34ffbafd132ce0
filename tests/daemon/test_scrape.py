"""GET /metrics on the REST app: public by default, only the metrics token opens it when set, and
the console's read-only routes need no token while the API's do."""

from __future__ import annotations

from quart_trio import QuartTrio

from daemon.metrics import DaemonMetrics
from daemon.rest import create_app
from daemon.scrape import metrics_blueprint
from tests.api.fake_service import FakeBrokerService

REST_TOKEN = "rest-token"
METRICS_TOKEN = "metrics-token"


def app_with(metrics_token: str | None) -> QuartTrio:
    return create_app(
        FakeBrokerService(),
        tokens=frozenset({REST_TOKEN}),
        blueprints=[metrics_blueprint(DaemonMetrics(), metrics_token)],
    )


async def status_of(app: QuartTrio, authorization: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": authorization} if authorization else {}
    response = await app.test_client().get("/metrics", headers=headers)
    return response.status_code, (await response.get_data(as_text=True))


async def test_metrics_are_public_without_a_metrics_token_even_when_the_api_needs_one() -> None:
    app = app_with(None)
    status, body = await status_of(app)
    assert status == 200
    assert "# TYPE bis_route_order_duration_seconds histogram" in body
    assert (await app.test_client().get("/brokers")).status_code == 401  # the API still needs its token


async def test_the_metrics_token_and_only_it_opens_metrics() -> None:
    app = app_with(METRICS_TOKEN)
    assert (await status_of(app))[0] == 401
    assert (await status_of(app, f"Bearer {REST_TOKEN}"))[0] == 401
    assert (await status_of(app, "Bearer wrong"))[0] == 401
    assert (await status_of(app, f"Bearer {METRICS_TOKEN}"))[0] == 200
    opened = await app.test_client().get("/brokers", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert opened.status_code == 401  # the metrics token opens nothing else
