"""`marketdata.delivery.outage`: a socket whose connect fails on an outage is closed with 1013 at once, even when the
channel layer's receive does not end when cancelled (seen with channels-redis after a Redis restart)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.exceptions
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator

from config.asgi import application
from marketdata.delivery import outage, streams
from tests.conftest import _use_layer, session_cookie, until
from tests.marketdata.api.test_consumer import HOST, ORIGIN

pytestmark = pytest.mark.django_db(transaction=True)


class StubbornLayer(InMemoryChannelLayer):
    """A layer whose receive goes on after its first cancellation, as the lock holder of channels-redis was seen to."""

    ignored = 0

    async def receive(self, channel: str) -> dict[str, Any]:
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            StubbornLayer.ignored += 1
            return await super().receive(channel)  # until cancelled again


@pytest.fixture
def stubborn_layer() -> None:
    StubbornLayer.ignored = 0
    _use_layer({"BACKEND": f"{__name__}.StubbornLayer"})


async def test_a_dashboard_whose_connect_meets_a_redis_outage_is_closed_1013_at_once_despite_a_stubborn_receive(
    alice: Any, alice_portfolio: Any, stubborn_layer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def redis_down(channel_name: str, user_id: int) -> None:
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(streams, "subscribe_user", redis_down)
    cookie = await asyncio.to_thread(session_cookie, alice)
    communicator = WebsocketCommunicator(application, "/ws/portfolio/", headers=[HOST, ORIGIN, (b"cookie", cookie)])
    try:
        connected, _ = await communicator.connect(timeout=3)
        assert connected
        closed = await communicator.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": 1013, "reason": "service unavailable, try again later"}
        assert StubbornLayer.ignored == 1
        # The receive left behind is cancelled again, and ends.
        await until(lambda: outage.receives_left_behind() == 0, timeout=5, what="the stubborn receive to end")
    finally:
        await communicator.disconnect()
