"""Origin checks at the WebSocket handshake: browsers must come from ALLOWED_HOSTS, bots send no Origin.

The middleware is tested around a tiny consumer, and the ASGI application is
checked to put the bot-friendly check on /ws/v1/market only.
"""

from typing import Any

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import OriginValidator
from channels.testing import WebsocketCommunicator

from config.asgi import application
from config.origins import AllowedHostsBrowserOriginValidator, BrowserOriginValidator, OriginCheckByPath

ALLOWED = (b"origin", b"http://localhost:8000")
FOREIGN = (b"origin", b"https://evil.example")


class Welcome(AsyncWebsocketConsumer):
    """Accepts and says which path it served: reaching it means the origin check let the handshake through."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"welcome to {self.scope['path']}")


async def handshake(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/ws/v1/market") -> tuple[bool, str | None]:
    """Whether the handshake was accepted, and the first frame the app sent when it was."""
    ws = WebsocketCommunicator(app, path, headers=headers)
    try:
        connected, _ = await ws.connect()
        return connected, (await ws.receive_from()) if connected else None
    finally:
        await ws.disconnect()


async def test_a_foreign_origin_is_refused_at_the_handshake() -> None:
    ws = WebsocketCommunicator(AllowedHostsBrowserOriginValidator(Welcome.as_asgi()), "/ws/v1/market", headers=[FOREIGN])

    connected, _ = await ws.connect()

    # Closed before accept: the server answers the upgrade with HTTP 403, as channels' OriginValidator does.
    assert not connected
    assert await ws.receive_nothing()


async def test_an_allowed_origin_passes() -> None:
    assert await handshake(AllowedHostsBrowserOriginValidator(Welcome.as_asgi()), [ALLOWED]) == (True, "welcome to /ws/v1/market")


async def test_no_origin_passes_because_only_browsers_send_one() -> None:
    assert await handshake(AllowedHostsBrowserOriginValidator(Welcome.as_asgi()), [(b"user-agent", b"my-bot/1.0")]) == (
        True,
        "welcome to /ws/v1/market",
    )


@pytest.mark.parametrize("origin", [b"null", b"", b"file://", b"localhost:8000"])
async def test_an_origin_that_is_present_but_names_no_allowed_host_is_refused(origin: bytes) -> None:
    # `null` is what a sandboxed frame or a file: page sends: a browser, from nowhere we trust.
    assert await handshake(AllowedHostsBrowserOriginValidator(Welcome.as_asgi()), [(b"origin", origin)]) == (False, None)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (b"https://app.example.com", True),
        (b"https://example.com", True),
        (b"https://example.com.evil.test", False),
        (b"https://notexample.com", False),
        (b"http://127.0.0.1:8000", False),
    ],
)
async def test_allowed_hosts_are_matched_as_channels_matches_them(settings: Any, origin: bytes, allowed: bool) -> None:
    settings.ALLOWED_HOSTS = [".example.com"]
    app = AllowedHostsBrowserOriginValidator(Welcome.as_asgi())
    strict = OriginValidator(Welcome.as_asgi(), [".example.com"])

    assert (await handshake(app, [(b"origin", origin)]))[0] is allowed
    assert (await handshake(strict, [(b"origin", origin)]))[0] is allowed  # channels agrees on every present Origin


async def test_by_path_the_named_path_gets_its_check_and_every_other_path_the_default() -> None:
    app = OriginCheckByPath(
        {"/ws/v1/market": BrowserOriginValidator(Welcome.as_asgi(), ["localhost"])},
        default=OriginValidator(Welcome.as_asgi(), ["localhost"]),
    )

    assert await handshake(app, [], "/ws/v1/market") == (True, "welcome to /ws/v1/market")
    assert await handshake(app, [], "/ws/portfolio/") == (False, None)
    assert await handshake(app, [], "/ws/v1/market/other") == (False, None)
    assert await handshake(app, [ALLOWED], "/ws/portfolio/") == (True, "welcome to /ws/portfolio/")
    assert await handshake(app, [FOREIGN], "/ws/v1/market") == (False, None)


# --- the application as served -------------------------------------------------


def websocket_check() -> OriginCheckByPath:
    check = application.application_mapping["websocket"]
    assert isinstance(check, OriginCheckByPath)
    return check


async def test_the_market_api_lets_bots_without_an_origin_in(monkeypatch: pytest.MonkeyPatch) -> None:
    market = websocket_check().checks["/ws/v1/market"]
    assert isinstance(market, BrowserOriginValidator)
    # Behind the check, a tiny app instead of the router: what is tested is the check the application puts there.
    monkeypatch.setattr(market, "application", Welcome.as_asgi())

    assert await handshake(application, []) == (True, "welcome to /ws/v1/market")
    assert await handshake(application, [ALLOWED]) == (True, "welcome to /ws/v1/market")
    assert await handshake(application, [FOREIGN]) == (False, None)


@pytest.mark.django_db(transaction=True)
async def test_the_portfolio_stream_still_needs_an_allowed_origin() -> None:
    default = websocket_check().default
    assert isinstance(default, OriginValidator) and not isinstance(default, BrowserOriginValidator)

    assert await handshake(application, [], "/ws/portfolio/") == (False, None)
    assert await handshake(application, [FOREIGN], "/ws/portfolio/") == (False, None)
    # An allowed origin gets through to the consumer, which closes an anonymous connection with 4401.
    ws = WebsocketCommunicator(application, "/ws/portfolio/", headers=[ALLOWED])
    assert (await ws.connect())[0]
    assert await ws.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}
    await ws.disconnect()
