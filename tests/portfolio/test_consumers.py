"""The live portfolio stream, through the full ASGI application (origin check, session auth, router)."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db.backends.utils import CursorWrapper

from config.asgi import application
from marketdata import streams
from marketdata.events import PriceUpdate
from marketdata.models import Instrument
from portfolio import services
from portfolio.models import Portfolio
from tests.conftest import T0, session_cookie

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost:8000")


@asynccontextmanager
async def stream(user: Any = None, origin: tuple[bytes, bytes] = ORIGIN) -> AsyncIterator[WebsocketCommunicator]:
    headers = [origin]
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/portfolio/", headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def receive(communicator: WebsocketCommunicator, timeout: float = 3) -> dict[str, Any]:  # noqa: ASYNC109
    return json.loads(await communicator.receive_from(timeout=timeout))


async def price(symbol: str, value: str, seq: int, ms: int = 0, epoch: str = "e1") -> None:
    update = PriceUpdate(symbol, seq, epoch, D(value), None, None, T0 + timedelta(minutes=1, milliseconds=ms), "test", 1)
    await streams.publish_price(update)


def rows_by_symbol(portfolio: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["symbol"]: row for row in portfolio["rows"]}


@contextmanager
def count_queries() -> Iterator[list[str]]:
    """Every SQL statement from any thread (database_sync_to_async runs queries off the event loop)."""
    seen: list[str] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(sql)
        return original(self, sql, *args, **kwargs)

    CursorWrapper._execute_with_wrappers = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        CursorWrapper._execute_with_wrappers = original  # type: ignore[method-assign]


async def test_anonymous_connections_are_closed_as_not_authenticated() -> None:
    async with stream() as ws:
        connected, _ = await ws.connect()
        assert connected
        assert await ws.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}


async def test_a_foreign_origin_is_refused_before_the_handshake(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice, origin=(b"origin", b"https://evil.example")) as ws:
        connected, _ = await ws.connect()
        assert not connected


async def test_snapshot_holds_the_users_rows_and_totals(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        assert (await ws.connect())[0]
        snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot"
    [portfolio] = snapshot["portfolios"]
    assert (portfolio["id"], portfolio["name"], portfolio["base_currency"]) == (alice_portfolio.pk, "Alice growth", "USD")
    rows = rows_by_symbol(portfolio)
    # AAPL: 10 bought at 150 + 1 fee, priced 200 → value 2000, cost 1501, P&L 499 (33.24 %)
    assert rows["AAPL"] | {"price_ts": None} == {
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "currency": "USD",
        "quantity": "10",
        "average_cost": "150.1",
        "price": "200",
        "price_ts": None,
        "cost": "1501.00",
        "market_value": "2000.00",
        "pnl": "499.00",
        "pnl_pct": "33.24",
    }
    assert rows["AAPL"]["price_ts"] == int(T0.timestamp() * 1000)
    # BTC: 0.5 at 40000 → 20000 cost, 30000 value
    assert portfolio["totals"] == {
        "currency": "USD",
        "market_value": "32000.00",
        "cost": "21501.00",
        "pnl": "10499.00",
        "pnl_pct": "48.83",
        "excluded": [],
    }


async def test_a_price_event_revalues_without_any_database_query(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        with count_queries() as queries:
            await price("AAPL", "210", seq=1)
            update = await receive(ws)
        assert queries == []
    assert update["type"] == "update"
    [portfolio] = update["portfolios"]
    assert list(rows_by_symbol(portfolio)) == ["AAPL"]  # only the changed row
    assert rows_by_symbol(portfolio)["AAPL"]["market_value"] == "2100.00"
    assert rows_by_symbol(portfolio)["AAPL"]["price_ts"] == int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    assert portfolio["totals"]["market_value"] == "32100.00"


async def test_a_burst_of_prices_becomes_one_frame_with_the_latest(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        for seq in range(1, 21):
            await price("AAPL", str(200 + seq), seq=seq, ms=seq)
        await price("BTC-USD", "50000", seq=1)
        update = await receive(ws)
        assert await ws.receive_nothing(timeout=0.5)
    rows = rows_by_symbol(update["portfolios"][0])
    assert (rows["AAPL"]["price"], rows["BTC-USD"]["price"]) == ("220", "50000")


async def test_stale_or_duplicate_prices_are_ignored(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await price("AAPL", "210", seq=5)
        assert rows_by_symbol((await receive(ws))["portfolios"][0])["AAPL"]["price"] == "210"
        await price("AAPL", "999", seq=4)
        await price("AAPL", "999", seq=5)
        assert await ws.receive_nothing(timeout=0.5)


async def test_alice_never_receives_bobs_portfolio(alice: Any, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        snapshot = await receive(ws)
        assert [p["id"] for p in snapshot["portfolios"]] == [alice_portfolio.pk]
        await price("MSFT", "500", seq=1)  # only bob holds MSFT
        await database_sync_to_async(services.transaction_record)(
            portfolio=bob_portfolio,
            instrument=await Instrument.objects.aget(symbol="AAPL"),
            side="buy",
            quantity=D(1),
            price=D(1),
            executed_at=T0,
        )
        assert await ws.receive_nothing(timeout=0.6)


async def test_a_user_without_portfolios_gets_an_empty_snapshot(charlie: Any) -> None:
    async with stream(charlie) as ws:
        await ws.connect()
        assert await receive(ws) == {"type": "snapshot", "portfolios": []}


async def test_a_recorded_transaction_reloads_the_stream(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        msft = await Instrument.objects.aget(symbol="MSFT")
        await database_sync_to_async(services.transaction_record)(
            portfolio=alice_portfolio, instrument=msft, side="buy", quantity=D(2), price=D(350), executed_at=T0
        )
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert rows_by_symbol(snapshot["portfolios"][0])["MSFT"]["market_value"] == "800.00"
        # ...and the stream now follows the new symbol.
        await price("MSFT", "410", seq=1)
        update = await receive(ws)
        assert rows_by_symbol(update["portfolios"][0])["MSFT"]["market_value"] == "820.00"


async def test_a_deleted_portfolio_leaves_the_stream(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await database_sync_to_async(services.portfolio_delete)(portfolio=alice_portfolio)
        assert await receive(ws) == {"type": "snapshot", "portfolios": []}
        await price("AAPL", "250", seq=1)  # no longer held: nothing to send
        assert await ws.receive_nothing(timeout=0.5)


async def test_rows_in_another_currency_are_reported_as_excluded(alice: Any, alice_portfolio: Portfolio) -> None:
    sap = await Instrument.objects.aget(symbol="SAP")
    await database_sync_to_async(services.transaction_record)(
        portfolio=alice_portfolio, instrument=sap, side="buy", quantity=D(1), price=D(200), executed_at=T0
    )
    async with stream(alice) as ws:
        await ws.connect()
        totals = (await receive(ws))["portfolios"][0]["totals"]
    assert totals["excluded"] == ["SAP"] and totals["market_value"] == "32000.00"


async def test_ping_gets_pong_and_garbage_gets_a_clear_error(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await ws.send_to(text_data='{"type": "ping"}')
        assert await receive(ws) == {"type": "pong"}
        await ws.send_to(text_data="{not json")
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "bad_json" and "not JSON" in error["message"]
        await ws.send_to(text_data="{}")
        assert (await receive(ws))["code"] == "unknown_message"
        await ws.send_to(text_data='{"type": "ping"}')
        assert await receive(ws) == {"type": "pong"}  # still open


@pytest.mark.redis
async def test_an_idle_consumer_on_the_real_redis_layer_still_receives(
    alice: Any, alice_portfolio: Portfolio, redis_layer: dict[str, Any]
) -> None:
    # redis-py 8's 5 s default socket timeout would kill the blocking BZPOPMIN while idle (channels_redis#422).
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await asyncio.sleep(7)  # the condition under test: idle longer than the old 5 s timeout
        await price("AAPL", "250", seq=1)
        update = await receive(ws, timeout=5)
    assert rows_by_symbol(update["portfolios"][0])["AAPL"]["price"] == "250"
