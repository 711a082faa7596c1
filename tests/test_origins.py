"""Origin checks at the WebSocket handshake: a page may open our sockets only from its own origin; bots send no Origin.

The middleware is tested around a tiny consumer; the ASGI application is
checked to put the bot-friendly check on /ws/v1/market only, and a real daphne
answers a page from another port of our host with HTTP 403.
"""

from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator
from websockets.exceptions import InvalidStatus

from config.asgi import application
from config.origins import OriginCheckByPath, SameOriginValidator
from portfolio.models import Portfolio
from tests.conftest import session_cookie
from tests.servers import live_stack

HOST = (b"host", b"localhost:8000")
OWN = (b"origin", b"http://localhost:8000")
FOREIGN = (b"origin", b"https://evil.example")
Headers = list[tuple[bytes, bytes]]


class Welcome(AsyncWebsocketConsumer):
    """Accepts and says which path it served: reaching it means the origin check let the handshake through."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"welcome to {self.scope['path']}")


async def handshake(app: Any, headers: Headers, path: str = "/ws/v1/market", scheme: str = "ws") -> tuple[bool, str | None]:
    """Whether the handshake was accepted, and the first frame the app sent when it was."""
    ws = WebsocketCommunicator(app, path, headers=headers)
    ws.scope["scheme"] = scheme
    try:
        connected, _ = await ws.connect()
        return connected, (await ws.receive_from()) if connected else None
    finally:
        await ws.disconnect()


async def passes(headers: Headers, *, scheme: str = "ws", allow_missing: bool = False) -> bool:
    return (await handshake(SameOriginValidator(Welcome.as_asgi(), allow_missing=allow_missing), headers, scheme=scheme))[0]


async def test_a_foreign_origin_is_refused_before_accept() -> None:
    ws = WebsocketCommunicator(SameOriginValidator(Welcome.as_asgi()), "/ws/v1/market", headers=[HOST, FOREIGN])

    connected, _ = await ws.connect()

    # Closed before accept: the server answers the upgrade with HTTP 403, as channels' OriginValidator does.
    assert not connected
    assert await ws.receive_nothing()


async def test_a_refused_handshake_is_logged_with_both_origins(caplog: pytest.LogCaptureFixture) -> None:
    # A proxy that rewrites Host to its upstream makes every page's socket fail: the log says why.
    with caplog.at_level("WARNING", logger="config.origins"):
        assert not await passes([(b"host", b"127.0.0.1:8000"), OWN])

    [record] = caplog.records
    assert "'http://localhost:8000' is not the socket's own origin 'http://127.0.0.1:8000'" in record.getMessage()


async def test_the_pages_own_origin_passes() -> None:
    assert await handshake(SameOriginValidator(Welcome.as_asgi()), [HOST, OWN]) == (True, "welcome to /ws/v1/market")


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        # The finding: another port of our own host (channels compared hosts only).
        (b"127.0.0.1:8000", b"http://127.0.0.1:1"),
        (b"localhost:8000", b"http://localhost"),
        (b"localhost", b"http://localhost:8000"),
        # An https page does not own a plain ws socket of the same host and port.
        (b"localhost:8000", b"https://localhost:8000"),
        (b"localhost:8000", b"https://evil.example"),
        (b"localhost:8000", b"http://evil.example:8000"),
        (b"localhost:8000", b"http://localhost.evil.example:8000"),
        # `null` is what a sandboxed frame or a file: page sends: a browser, from nowhere we trust.
        (b"localhost:8000", b"null"),
        (b"localhost:8000", b""),
        (b"localhost:8000", b"localhost:8000"),
        (b"localhost:8000", b"file://"),
    ],
)
async def test_an_origin_other_than_the_pages_own_is_refused(host: bytes, origin: bytes) -> None:
    assert not await passes([(b"host", host), (b"origin", origin)])


async def test_a_page_served_over_tls_must_have_an_https_origin() -> None:
    assert await passes([HOST, (b"origin", b"https://localhost:8000")], scheme="wss")
    assert not await passes([HOST, OWN], scheme="wss")


async def test_a_host_outside_allowed_hosts_has_no_own_origin(settings: Any) -> None:
    # DNS rebinding: a name of the attacker's resolves to us, and its page's Origin matches its Host.
    settings.ALLOWED_HOSTS = ["localhost"]
    assert not await passes([(b"host", b"rebound.evil.example:8000"), (b"origin", b"http://rebound.evil.example:8000")])
    assert not await passes([OWN])  # no Host header at all
    assert await passes([HOST, OWN])


async def test_the_tls_proxy_header_counts_only_when_configured(settings: Any) -> None:
    proto = (b"x-forwarded-proto", b"https")
    https_page = (b"origin", b"https://localhost:8000")
    assert not await passes([HOST, proto, https_page])  # SECURE_PROXY_SSL_HEADER unset: the header is anybody's

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await passes([HOST, proto, https_page])
    assert not await passes([HOST, proto, OWN])
    assert not await passes([HOST, (b"x-forwarded-proto", b"http"), https_page])
    # The header, when present, decides even over a direct wss (as request.is_secure() does).
    assert not await passes([HOST, (b"x-forwarded-proto", b"http"), https_page], scheme="wss")


async def test_csrf_trusted_origins_are_allowed_too(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.example.org"]

    assert await passes([HOST, (b"origin", b"https://app.example.com")])
    assert await passes([HOST, (b"origin", b"https://a.example.org")])
    assert await passes([HOST, (b"origin", b"https://example.org")])
    assert not await passes([HOST, (b"origin", b"http://app.example.com")])
    assert not await passes([HOST, (b"origin", b"https://app.example.com:8443")])
    assert not await passes([HOST, (b"origin", b"http://a.example.org")])
    assert not await passes([HOST, (b"origin", b"https://example.org.evil.example")])


async def test_no_origin_passes_only_where_bots_are_welcome() -> None:
    bot = [HOST, (b"user-agent", b"my-bot/1.0")]
    assert await passes(bot, allow_missing=True)
    assert await passes([(b"user-agent", b"my-bot/1.0")], allow_missing=True)  # a bot's Host does not matter either
    assert not await passes(bot)
    # Bots are let in without an Origin, not with a wrong one.
    assert not await passes([HOST, FOREIGN], allow_missing=True)


async def test_by_path_the_named_path_gets_its_check_and_every_other_path_the_default() -> None:
    app = OriginCheckByPath(
        {"/ws/v1/market": SameOriginValidator(Welcome.as_asgi(), allow_missing=True)},
        default=SameOriginValidator(Welcome.as_asgi()),
    )

    assert await handshake(app, [HOST], "/ws/v1/market") == (True, "welcome to /ws/v1/market")
    assert await handshake(app, [HOST], "/ws/portfolio/") == (False, None)
    assert await handshake(app, [HOST], "/ws/v1/market/other") == (False, None)
    assert await handshake(app, [HOST, OWN], "/ws/portfolio/") == (True, "welcome to /ws/portfolio/")
    assert await handshake(app, [HOST, FOREIGN], "/ws/v1/market") == (False, None)


# --- the application as served -------------------------------------------------


def websocket_check() -> OriginCheckByPath:
    check = application.application_mapping["websocket"]
    assert isinstance(check, OriginCheckByPath)
    return check


async def test_the_market_api_lets_bots_without_an_origin_in(monkeypatch: pytest.MonkeyPatch) -> None:
    market = websocket_check().checks["/ws/v1/market"]
    assert isinstance(market, SameOriginValidator) and market.allow_missing
    # Behind the check, a tiny app instead of the router: what is tested is the check the application puts there.
    monkeypatch.setattr(market, "application", Welcome.as_asgi())

    assert await handshake(application, [HOST]) == (True, "welcome to /ws/v1/market")
    assert await handshake(application, [HOST, OWN]) == (True, "welcome to /ws/v1/market")
    assert await handshake(application, [HOST, FOREIGN]) == (False, None)
    assert await handshake(application, [(b"host", b"localhost:8000"), (b"origin", b"http://localhost:1")]) == (False, None)


@pytest.mark.django_db(transaction=True)
async def test_the_portfolio_stream_refuses_another_port_of_our_host_even_with_a_valid_session(
    alice: Any, alice_portfolio: Portfolio
) -> None:
    default = websocket_check().default
    assert isinstance(default, SameOriginValidator) and not default.allow_missing
    cookie = (b"cookie", await database_sync_to_async(session_cookie)(alice))
    host = (b"host", b"127.0.0.1:8000")

    assert await handshake(application, [host, cookie], "/ws/portfolio/") == (False, None)
    assert await handshake(application, [host, cookie, FOREIGN], "/ws/portfolio/") == (False, None)
    assert await handshake(application, [host, cookie, (b"origin", b"http://127.0.0.1:1")], "/ws/portfolio/") == (False, None)
    # The page's own origin reaches the consumer, which sends alice her snapshot.
    ws = WebsocketCommunicator(application, "/ws/portfolio/", headers=[host, cookie, (b"origin", b"http://127.0.0.1:8000")])
    try:
        assert (await ws.connect())[0]
        assert '"snapshot"' in await ws.receive_from(timeout=5)
    finally:
        await ws.disconnect()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_daphne_answers_a_page_on_another_port_with_403(
    alice: Any, alice_portfolio: Portfolio, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    cookie = (await database_sync_to_async(session_cookie)(alice)).decode()
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        url = base.replace("http", "ws", 1) + "/ws/portfolio/"
        for origin in ("http://127.0.0.1:1", base.replace("http:", "https:"), "http://localhost" + base[len("http://127.0.0.1") :]):
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin}, open_timeout=10):
                    pass
            assert refused.value.response.status_code == 403, origin
        async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": base}, open_timeout=10) as ws:
            assert '"snapshot"' in str(await ws.recv(decode=True))
