"""config/health.py through config.asgi.application: /healthz, /readyz (Redis, the database, the fan-out hub) and
/metrics with its access rules (a bearer token, or this machine only)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from config.asgi import application
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

Headers = list[tuple[bytes, bytes]]


async def get(
    path: str, *, client: str = "127.0.0.1", headers: Headers | None = None, method: str = "GET", host: bytes = b"10.1.2.3:8000"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP request to the ASGI application: (status, headers, body). The Host is an address not in ALLOWED_HOSTS,
    as a load balancer's probe sends."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", host), *(headers or [])],
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
    }
    messages: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if requested:
            await asyncio.Event().wait()  # no disconnect: Django cancels this once it has answered
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await application(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


# -- /healthz ------------------------------------------------------------------------------


async def test_healthz_answers_200_to_a_probe_by_address_without_checking_anything(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True  # a plain-HTTP probe is not redirected either
    status, headers, body = await get("/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "alive"}
    assert headers[b"cache-control"] == b"no-store"


async def test_a_probe_answers_get_only() -> None:
    status, headers, _ = await get("/healthz", method="POST")
    assert status == 405 and headers[b"allow"] == b"GET, HEAD"


# -- /readyz -------------------------------------------------------------------------------


async def test_readyz_is_ready_with_redis_and_the_database_up(redis_layer: Any) -> None:
    status, _, body = await get("/readyz")
    answer = json.loads(body)
    assert status == 200, answer
    assert answer["status"] == "ready"
    assert answer["checks"]["redis"] == "ok" and answer["checks"]["database"] == "ok"
    assert answer["checks"]["fanout"].startswith("ok")


async def test_readyz_answers_503_naming_redis_when_redis_is_not_there(redis_layer: Any) -> None:
    from prometheus_client import REGISTRY

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    redis_layer["CONFIG"]["hosts"][0]["address"] = nowhere
    counted = REGISTRY.get_sample_value("livefolio_redis_errors_total", {"component": "readyz"}) or 0.0
    status, _, body = await get("/readyz")
    answer = json.loads(body)
    assert status == 503, answer
    assert answer["status"] == "unavailable"
    assert answer["checks"]["redis"].startswith(f"failed: ConnectionError: {nowhere}: "), answer
    assert answer["checks"]["database"] == "ok"
    assert REGISTRY.get_sample_value("livefolio_redis_errors_total", {"component": "readyz"}) == counted + 1


async def test_readyz_checks_every_shard_and_names_the_one_down(redis_layer: Any) -> None:
    working = redis_layer["CONFIG"]["hosts"][0]
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    redis_layer["CONFIG"]["hosts"] = [working, {**working, "address": nowhere}]
    status, _, body = await get("/readyz")
    answer = json.loads(body)
    assert status == 503 and answer["checks"]["redis"].startswith(f"failed: ConnectionError: {nowhere}: "), answer
    redis_layer["CONFIG"]["hosts"] = [working]
    status, _, body = await get("/readyz")
    assert status == 200, body


async def test_readyz_answers_503_naming_the_database_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError

    from config import health

    def down() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(health, "_query_database", down)
    status, _, body = await get("/readyz")
    answer = json.loads(body)
    assert status == 503
    assert answer["checks"]["database"] == "failed: OperationalError: connection refused"
    assert answer["checks"]["redis"] == "not used"  # the in-memory layer of these tests


# -- /metrics ------------------------------------------------------------------------------


async def test_metrics_answer_a_scrape_from_this_machine_without_a_token() -> None:
    status, headers, body = await get("/metrics")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    assert b"livefolio_ws_connections" in body and b"livefolio_hub_deliveries_total" in body


@pytest.mark.parametrize(
    ("client", "headers"),
    [("203.0.113.9", []), ("127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")]), ("::1", [(b"forwarded", b"for=203.0.113.9")])],
    ids=["another machine", "through a proxy on this machine", "through a proxy, Forwarded"],
)
async def test_metrics_without_a_token_refuse_anything_but_this_machine(client: str, headers: Headers) -> None:
    status, _, body = await get("/metrics", client=client, headers=headers)
    assert status == 403
    assert b"METRICS_TOKEN" in body and b"livefolio_" not in body


async def test_metrics_with_a_token_need_it_and_take_it_from_anywhere(settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    status, headers, body = await get("/metrics")
    assert status == 401 and headers[b"www-authenticate"].startswith(b"Bearer")
    assert b"livefolio_" not in body
    status, _, _ = await get("/metrics", headers=[(b"authorization", b"Bearer wrong")])
    assert status == 401
    status, _, body = await get("/metrics", client="203.0.113.9", headers=[(b"authorization", b"Bearer s3cret-scrape-token")])
    assert status == 200 and b"livefolio_ws_connections" in body


async def test_other_paths_still_go_to_django() -> None:
    status, _, _ = await get("/accounts/login/", host=b"localhost:8000")
    assert status == 200
