"""Bounded work per `/ws/v1/market` connection and per process (issue 13, finding 1), through config.asgi.application:
the request queue's bound, the anonymous limits per address and per process, the process-wide connection cap, and a
connection whose application the server cancels (as daphne does past its application close timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config import capacity
from config.asgi import application, websocket_app
from marketdata import services
from marketdata.api.consumer import MarketConsumer
from marketdata.delivery import streams
from tests.conftest import session_cookie, until
from tests.marketdata.api.test_consumer import HOST, ORIGIN, URL, Client, connect

pytestmark = pytest.mark.django_db(transaction=True)


@asynccontextmanager
async def opened(path: str = URL, *, address: str = "192.0.2.1", cookie: bytes | None = None) -> AsyncIterator[Client]:
    """A connection from `address` (the peer the server sees), whatever the server answers; always disconnected."""
    headers = [HOST, ORIGIN] + ([(b"cookie", cookie)] if cookie is not None else [])
    communicator = WebsocketCommunicator(application, path, headers=headers)
    communicator.scope["client"] = (address, 40000)
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected, "handshake refused"
        yield Client(communicator)
    finally:
        await communicator.disconnect()


async def refused_with(ws: Client) -> tuple[str, int]:
    """The error code, then the close code, of a connection refused at connect."""
    error = await ws.recv()
    assert error["type"] == "error", error
    return error["code"], await ws.closed_with()


# -- the request queue ---------------------------------------------------------------------


async def test_a_request_past_the_queue_bound_is_refused_rate_limited_and_closes_4429(
    instruments: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MARKET_WS_MAX_QUEUED_REQUESTS = 2
    entered, go = asyncio.Event(), asyncio.Event()
    handle = MarketConsumer._handle

    async def held_up(self: MarketConsumer, text: str | None, data: bytes | None) -> None:
        entered.set()
        await go.wait()  # the first request takes its time (a slow history, a slow database)
        await handle(self, text, data)

    monkeypatch.setattr(MarketConsumer, "_handle", held_up)
    async with connect() as ws:
        await ws.send({"op": "ping", "id": 1})
        await asyncio.wait_for(entered.wait(), 3)
        for n in (2, 3):  # waiting: the bound
            await ws.send({"op": "ping", "id": n})
        await ws.send({"op": "ping", "id": 4})
        error = await ws.recv()
        assert (error["type"], error["code"], error["id"]) == ("error", "rate_limited", 4)
        assert await ws.closed_with() == 4429
        go.set()


# -- anonymous connections -----------------------------------------------------------------


async def test_anonymous_connections_are_limited_per_address_with_4409(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_ANONYMOUS_PER_ADDRESS = 2
    async with opened() as a, opened() as b:
        assert ((await a.recv())["type"], (await b.recv())["type"]) == ("hello", "hello")
        async with opened() as third:
            assert await refused_with(third) == ("too_many_connections", 4409)
        async with opened(address="198.51.100.7") as elsewhere:  # another address has its own count
            assert (await elsewhere.recv())["type"] == "hello"
    async with opened() as again:  # the two closed: their places are free
        assert (await again.recv())["type"] == "hello"
    assert capacity.anonymous.total == 0


async def test_the_address_is_the_one_a_trusted_proxy_forwards(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_ANONYMOUS_PER_ADDRESS = 1
    settings.TRUSTED_PROXIES = ["127.0.0.1"]

    @asynccontextmanager
    async def via_proxy(client: str) -> AsyncIterator[Client]:
        communicator = WebsocketCommunicator(application, URL, headers=[HOST, ORIGIN, (b"x-forwarded-for", client.encode())])
        communicator.scope["client"] = ("127.0.0.1", 40000)
        try:
            assert (await communicator.connect(timeout=5))[0]
            yield Client(communicator)
        finally:
            await communicator.disconnect()

    async with via_proxy("203.0.113.1") as a, via_proxy("203.0.113.2") as b:
        assert ((await a.recv())["type"], (await b.recv())["type"]) == ("hello", "hello")
        async with via_proxy("203.0.113.1") as again:
            assert await refused_with(again) == ("too_many_connections", 4409)


async def test_anonymous_connections_are_limited_per_process_with_1013_and_users_still_get_in(
    instruments: Any, alice: Any, settings: Any
) -> None:
    settings.MARKET_WS_ANONYMOUS_MAX = 2
    cookie = await database_sync_to_async(session_cookie)(alice)
    async with opened(address="192.0.2.1") as a, opened(address="192.0.2.2") as b:
        assert ((await a.recv())["type"], (await b.recv())["type"]) == ("hello", "hello")
        async with opened(address="192.0.2.3") as third:
            assert await refused_with(third) == ("too_many_connections", 1013)
        async with opened(address="192.0.2.3", cookie=cookie) as signed_in:
            assert (await signed_in.recv())["user"] == "alice"


async def test_an_anonymous_connection_that_authenticates_gives_its_place_back(instruments: Any, alice: Any, settings: Any) -> None:
    settings.MARKET_WS_ANONYMOUS_PER_ADDRESS = 1
    _, token = await database_sync_to_async(services.token_create)(user=alice, name="bot")
    async with opened() as bot:
        assert (await bot.recv())["type"] == "hello"
        assert (await bot.request({"op": "auth", "id": 1, "token": token}))["type"] == "authenticated"
        async with opened() as anonymous:
            assert (await anonymous.recv())["type"] == "hello"


# -- the process-wide cap ------------------------------------------------------------------


async def test_connections_past_ws_max_connections_are_closed_1013_on_both_paths(
    instruments: Any, alice: Any, alice_portfolio: Any, settings: Any
) -> None:
    settings.WS_MAX_CONNECTIONS = 1
    cookie = await database_sync_to_async(session_cookie)(alice)
    async with opened() as first:
        assert (await first.recv())["type"] == "hello"
        for path in (URL, "/ws/portfolio/"):
            async with opened(path, cookie=cookie) as refused:
                assert await refused.closed_with() == 1013
    async with opened("/ws/portfolio/", cookie=cookie) as dashboard:
        assert (await dashboard.recv())["type"] == "snapshot"
    assert capacity.refusals.counts["process"] >= 2


# -- a connection the server cancels -------------------------------------------------------


async def test_a_connection_whose_application_the_server_cancels_leaves_the_hub_and_every_count(instruments: Any) -> None:
    hub = streams.market_hub()
    before = len(hub.sinks())
    communicator = WebsocketCommunicator(application, URL, headers=[HOST, ORIGIN])
    communicator.scope["client"] = ("192.0.2.9", 40000)
    assert (await communicator.connect(timeout=5))[0]
    ws = Client(communicator)
    await ws.recv()
    await ws.subscribe("ticker:BTC-USD", "ticker:AAPL")
    assert len(hub.sinks()) == before + 1
    assert capacity.anonymous.total == 1
    assert websocket_app.open == 1
    tasks = [task for task in asyncio.all_tasks() if "MarketConsumer." in repr(task.get_coro())]
    assert len(tasks) >= 2  # the worker and the heartbeat, at least
    # What daphne does to an instance that did not finish in time: cancel it, with no websocket.disconnect.
    communicator.future.cancel()
    await until(lambda: communicator.future.done(), what="the application to end")
    assert len(hub.sinks()) == before
    assert capacity.anonymous.total == 0
    assert websocket_app.open == 0
    await until(lambda: all(task.done() for task in tasks), what="the connection's tasks to end")
