"""The live portfolio stream, through the full ASGI application (origin check, session auth, router)."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from marketdata.delivery import streams
from marketdata.delivery.history import market_store
from marketdata.events import PriceUpdate
from marketdata.models import DailyClose, Instrument
from portfolio import services
from portfolio.models import Portfolio
from tests.conftest import T0, count_queries, publish_price, record, session_cookie, ticker_message

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost:8000")
HOST = (b"host", b"localhost:8000")  # the page's own origin is its Host (config/origins.py)


@asynccontextmanager
async def stream(user: Any = None, origin: tuple[bytes, bytes] = ORIGIN) -> AsyncIterator[WebsocketCommunicator]:
    headers = [HOST, origin]
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/portfolio/", headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def receive(communicator: WebsocketCommunicator, timeout: float = 3) -> dict[str, Any]:  # noqa: ASYNC109
    return json.loads(await communicator.receive_from(timeout=timeout))


async def price(
    symbol: str, value: str, seq: int, ms: int = 0, epoch: str = "e1", reference: str | None = None, replay: bool = False
) -> None:
    ts = T0 + timedelta(minutes=1, milliseconds=ms)
    update = PriceUpdate(
        symbol, seq, epoch, D(value), None, None, ts, "test", 1, reference=None if reference is None else D(reference), replay=replay
    )
    await publish_price(update)


def rows_by_key(portfolio: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in portfolio["rows"]}


async def test_anonymous_connections_are_closed_as_not_authenticated() -> None:
    async with stream() as ws:
        connected, _ = await ws.connect()
        assert connected
        assert await ws.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}


async def test_a_foreign_origin_is_refused_before_the_handshake(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice, origin=(b"origin", b"https://evil.example")) as ws:
        connected, _ = await ws.connect()
        assert not connected


async def test_snapshot_holds_the_users_rows_cash_and_totals(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        assert (await ws.connect())[0]
        snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot"
    assert (snapshot["combined"], snapshot["combined_currency"]) == (None, "USD")  # one portfolio: nothing to combine
    [portfolio] = snapshot["portfolios"]
    assert (portfolio["id"], portfolio["name"], portfolio["currency"]) == (alice_portfolio.pk, "Alice growth", "USD")
    rows = rows_by_key(portfolio)
    assert list(rows) == ["AAPL", "BTC-USD", "cash:USD"]
    # AAPL: 10 bought at 150 (the 1.00 fee is not cost), priced 200 → value 2000, cost 1500, P&L 500 (33.33 %).
    # No previous close is known yet, so the day change is unknown, not zero.
    assert rows["AAPL"] | {"price_ts": None} == {
        "key": "AAPL",
        "kind": "holding",
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "asset_class": "equity",
        "currency": "USD",
        "fx_rate": "1",
        "quantity": "10",
        "average_cost": "150",
        "price": "200",
        "price_ts": None,
        "price_seq": 0,  # the stored quote's
        "price_epoch": "",
        "price_replay": False,
        "cost": "1500.00",
        "market_value": "2000.00",
        "unrealised_pnl": "500.00",
        "unrealised_pnl_pct": "33.33",
        "day_change": None,
        "day_change_pct": None,
        "status": "no_reference",
    }
    assert rows["AAPL"]["price_ts"] == int(T0.timestamp() * 1000)
    # Cash: 25000 − 1501 − 20000 = 3499.
    assert (rows["cash:USD"]["kind"], rows["cash:USD"]["quantity"], rows["cash:USD"]["market_value"]) == ("cash", "3499.00", "3499.00")
    # BTC: 0.5 at 40000 → 20000 cost, 30000 value. Total 2000 + 30000 + 3499 = 35499.
    totals = portfolio["totals"]
    assert {k: totals[k] for k in ("total_value", "market_value", "cash", "cost", "unrealised_pnl", "fees", "net_deposits")} == {
        "total_value": "35499.00",
        "market_value": "32000.00",
        "cash": "3499.00",
        "cost": "21500.00",
        "unrealised_pnl": "10500.00",
        "fees": "1.00",
        "net_deposits": "25000.00",
    }
    allocation = {s["key"]: s["weight"] for s in portfolio["allocation"]["asset_class"]}
    assert allocation == {"crypto": "84.51", "cash": "9.86", "equity": "5.63"}


async def test_a_price_event_revalues_without_any_database_query(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        with count_queries() as queries:
            await price("AAPL", "210", seq=1, replay=True)
            update = await receive(ws)
        assert queries == []
    assert update["type"] == "update"
    [portfolio] = update["portfolios"]
    assert list(rows_by_key(portfolio)) == ["AAPL"]  # only the changed row
    assert rows_by_key(portfolio)["AAPL"]["market_value"] == "2100.00"
    assert rows_by_key(portfolio)["AAPL"]["price_ts"] == int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    # Where the price came from travels with it: its stream position, and whether a recorded session is replaying.
    assert {k: rows_by_key(portfolio)["AAPL"][k] for k in ("price_seq", "price_epoch", "price_replay")} == {
        "price_seq": 1,
        "price_epoch": "e1",
        "price_replay": True,
    }
    assert (portfolio["totals"]["market_value"], portfolio["totals"]["total_value"]) == ("32100.00", "35599.00")


async def test_a_burst_of_prices_becomes_one_frame_with_the_latest(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        for seq in range(1, 21):
            await price("AAPL", str(200 + seq), seq=seq, ms=seq)
        await price("BTC-USD", "50000", seq=1)
        update = await receive(ws)
        assert await ws.receive_nothing(timeout=0.5)
    rows = rows_by_key(update["portfolios"][0])
    assert (rows["AAPL"]["price"], rows["BTC-USD"]["price"]) == ("220", "50000")


async def test_stale_or_duplicate_prices_are_ignored(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await price("AAPL", "210", seq=5)
        assert rows_by_key((await receive(ws))["portfolios"][0])["AAPL"]["price"] == "210"
        await price("AAPL", "999", seq=4)
        await price("AAPL", "999", seq=5)
        assert await ws.receive_nothing(timeout=0.5)


async def test_day_change_follows_the_reference_carried_by_the_price(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await price("AAPL", "210", seq=1, reference="205")
        row = rows_by_key((await receive(ws))["portfolios"][0])["AAPL"]
    # 10 × (210 − 205) = 50.00, against 2050 → 2.44 %
    assert (row["day_change"], row["day_change_pct"], row["status"]) == ("50.00", "2.44", "ok")


async def test_alice_never_receives_bobs_portfolio(alice: Any, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        snapshot = await receive(ws)
        assert [p["id"] for p in snapshot["portfolios"]] == [alice_portfolio.pk]
        await price("MSFT", "500", seq=1)  # only bob holds MSFT
        aapl = await Instrument.objects.aget(symbol="AAPL")
        await database_sync_to_async(record)(bob_portfolio, "buy", "1", aapl, price="1")
        assert await ws.receive_nothing(timeout=0.6)


async def test_a_user_without_portfolios_gets_an_empty_snapshot(charlie: Any, instruments: Any) -> None:
    async with stream(charlie) as ws:
        await ws.connect()
        snapshot = await receive(ws)
    assert (snapshot["portfolios"], snapshot["combined"]) == ([], None)


async def test_a_back_dated_trade_reloads_the_stream(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        msft = await Instrument.objects.aget(symbol="MSFT")
        await database_sync_to_async(record)(alice_portfolio, "buy", "2", msft, price="350", executed_at=T0 - timedelta(days=30))
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        rows = rows_by_key(snapshot["portfolios"][0])
        assert (rows["MSFT"]["market_value"], rows["cash:USD"]["quantity"]) == ("800.00", "2799.00")  # 3499 − 700
        # ...and the stream now follows the new symbol.
        await price("MSFT", "410", seq=1)
        update = await receive(ws)
        assert rows_by_key(update["portfolios"][0])["MSFT"]["market_value"] == "820.00"


async def test_a_deleted_portfolio_leaves_the_stream(alice: Any, alice_portfolio: Portfolio) -> None:
    async with stream(alice) as ws:
        await ws.connect()
        await receive(ws)
        await database_sync_to_async(services.portfolio_delete)(portfolio=alice_portfolio)
        assert (await receive(ws))["portfolios"] == []
        await price("AAPL", "250", seq=1)  # no longer held: nothing to send
        assert await ws.receive_nothing(timeout=0.5)


def _euro_portfolio(alice: Any) -> Portfolio:
    # 10 AAPL bought at 200 USD when 1 USD cost 0.90 EUR: cost 1800 EUR. EUR/USD is 1.10 in the fixtures.
    euro = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")
    record(euro, "buy", "10", Instrument.objects.get(symbol="AAPL"), price="200", fx_rate="0.9", executed_at=T0)
    return euro


async def test_an_fx_tick_revalues_the_foreign_holdings(alice: Any, alice_portfolio: Portfolio) -> None:
    euro = await database_sync_to_async(_euro_portfolio)(alice)
    async with stream(alice) as ws:
        await ws.connect()
        snapshot = await receive(ws)
        row = rows_by_key(next(p for p in snapshot["portfolios"] if p["id"] == euro.pk))["AAPL"]
        # 10 × 200 USD / 1.10 = 1818.18 EUR; cost 1800 EUR → +18.18
        assert (row["market_value"], row["cost"], row["unrealised_pnl"], row["fx_rate"]) == ("1818.18", "1800.00", "18.18", "0.90909091")
        await price("EUR/USD", "1.25", seq=1)
        update = await receive(ws)
    [changed] = update["portfolios"]  # the USD portfolio needs no EUR/USD
    assert changed["id"] == euro.pk
    # 2000 / 1.25 = 1600 EUR: the stock did not move, the euro did.
    assert rows_by_key(changed)["AAPL"]["market_value"] == "1600.00"
    assert rows_by_key(changed)["AAPL"]["unrealised_pnl"] == "-200.00"
    # The combined view is in the first portfolio's currency ("Alice euro" sorts first): 20 × 200 USD / 1.25 = 3200 EUR.
    assert rows_by_key(update["combined"])["AAPL"]["market_value"] == "3200.00"


async def test_a_missing_rate_shows_as_no_rate_and_stays_out_of_the_totals(alice: Any, alice_portfolio: Portfolio) -> None:
    await database_sync_to_async(record)(alice_portfolio, "deposit", "100000", currency="JPY", fx_rate="0.0064")
    async with stream(alice) as ws:
        await ws.connect()
        portfolio = (await receive(ws))["portfolios"][0]
    row = rows_by_key(portfolio)["cash:JPY"]
    assert (row["status"], row["market_value"], row["quantity"]) == ("no_rate", None, "100000.00")
    assert {"key": "cash:JPY", "reason": "no_rate"} in portfolio["totals"]["missing"]
    assert portfolio["totals"]["total_value"] == "35499.00"  # unchanged: not counted as zero, not guessed


async def test_the_combined_view_follows_the_chosen_currency(alice: Any, alice_portfolio: Portfolio) -> None:
    await database_sync_to_async(_euro_portfolio)(alice)
    async with stream(alice) as ws:
        await ws.connect()
        snapshot = await receive(ws)
        assert snapshot["combined"]["currency"] == "EUR" and snapshot["view_currencies"] == ["EUR", "USD"]
        # 20 AAPL × 200 USD / 1.10 = 3636.36 EUR
        assert rows_by_key(snapshot["combined"])["AAPL"]["market_value"] == "3636.36"
        await ws.send_to(text_data='{"type": "view", "currency": "USD"}')
        snapshot = await receive(ws)
        assert (snapshot["combined_currency"], snapshot["combined"]["currency"]) == ("USD", "USD")
        assert rows_by_key(snapshot["combined"])["AAPL"]["market_value"] == "4000.00"
        await ws.send_to(text_data='{"type": "view", "currency": "XYZ"}')
        error = await receive(ws)
    assert (error["type"], error["code"]) == ("error", "unknown_currency")


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
    assert rows_by_key(update["portfolios"][0])["AAPL"]["price"] == "250"


# ------------------------------------------------------------------ the delivery core


async def test_each_price_is_decoded_once_per_process_however_many_dashboards_hold_it(alice: Any, alice_portfolio: Portfolio) -> None:
    hub = streams.market_hub()
    async with AsyncExitStack() as stack:
        dashboards = [await stack.enter_async_context(stream(alice)) for _ in range(12)]
        for ws in dashboards:
            assert (await ws.connect())[0]
            await receive(ws)
        decodes, encodes = hub.stats.decodes, hub.stats.encodes
        for seq in range(1, 6):
            await price("AAPL", str(200 + seq), seq=seq, ms=seq)
        for ws in dashboards:
            last = None
            while last != "205":
                last = rows_by_key((await receive(ws))["portfolios"][0])["AAPL"]["price"]
    assert hub.stats.decodes - decodes == 5  # once per price, not once per dashboard
    assert hub.stats.encodes == encodes  # no API frame was made for dashboards


async def test_the_dashboard_tick_path_never_leaves_the_event_loop(
    alice: Any, alice_portfolio: Portfolio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Channels >= 4.2 hops to a thread on every channel-layer dispatch; prices reach dashboards from the hub instead.
    hops: list[object] = []
    call = SyncToAsync.__call__

    async def counting(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(self.func)
        return await call(self, *args, **kwargs)

    async with stream(alice) as ws:
        assert (await ws.connect())[0]
        await receive(ws)
        monkeypatch.setattr(SyncToAsync, "__call__", counting)
        for seq in range(1, 11):
            await price("BTC-USD", str(60000 + seq), seq=seq, ms=seq)
        while rows_by_key((await receive(ws))["portfolios"][0])["BTC-USD"]["price"] != "60010":
            pass
        assert hops == []
        await database_sync_to_async(lambda: None)()
        assert len(hops) == 1, "the spy sees a thread hop"


async def test_connecting_reads_the_database_a_fixed_number_of_times_whatever_the_books_hold(
    alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    async def connect_queries() -> int:
        with count_queries() as queries:
            async with stream(alice) as ws:
                assert (await ws.connect())[0]
                await receive(ws)
        return len(queries)

    def portfolios(*names: str) -> None:
        for name in names:
            portfolio = services.portfolio_create(owner_id=alice.pk, name=name)
            record(portfolio, "deposit", "10000", currency="USD", executed_at=T0)
            for symbol in ("MSFT", "AAPL", "BTC-USD"):
                record(portfolio, "buy", "1", instruments[symbol], price="100", executed_at=T0 + timedelta(days=1))

    one = await connect_queries()
    # From two portfolios on, a combined view: its past figures read the ledgers and the FX history, in fixed queries.
    await database_sync_to_async(portfolios)("Second")
    small = await connect_queries()
    assert small == one + 3  # the ledgers, the FX pairs, the FX closes
    await database_sync_to_async(portfolios)("Third", "Fourth")
    assert await connect_queries() == small


@pytest.mark.redis
async def test_a_dashboard_that_missed_prices_while_the_hub_was_away_gets_a_fresh_snapshot(
    alice: Any, alice_portfolio: Portfolio, redis_layer: dict[str, Any]
) -> None:
    hub = streams.market_hub()
    redis = aioredis.Redis.from_url(redis_layer["CONFIG"]["hosts"][0]["address"])
    try:
        async with stream(alice) as ws:
            assert (await ws.connect())[0]
            await receive(ws)
            await price("AAPL", "210", seq=1)
            assert rows_by_key((await receive(ws))["portfolios"][0])["AAPL"]["price"] == "210"
            # Published while the hub was away: in the history, never heard live.
            lost = PriceUpdate("AAPL", 2, "e1", D("222"), None, None, T0 + timedelta(minutes=2), "test", 1)
            await market_store().append([ticker_message(lost)])
            await redis.client_kill_filter(_id=hub.connection_id)
            # The hub tells each symbol as Redis confirms it again: a snapshot follows (more, if the
            # confirmations come apart), and one of them carries the price the dashboard never heard.
            while True:
                frame = await receive(ws, timeout=10)
                assert frame["type"] == "snapshot", frame
                row = rows_by_key(frame["portfolios"][0])["AAPL"]
                if row["price_seq"] == 2:
                    break
            assert (row["price"], row["market_value"]) == ("222", "2220.00")
            # And it runs live again.
            await price("AAPL", "230", seq=3, ms=120_001)
            assert rows_by_key((await receive(ws, timeout=5))["portfolios"][0])["AAPL"]["price"] == "230"
    finally:
        await redis.aclose()


def _euro_and_history(alice: Any, alice_portfolio: Portfolio, *, closes: dict[str, str]) -> Portfolio:
    """Alice's USD portfolio with a past of every kind on two days, a EUR one beside it, and EUR/USD daily closes."""
    aapl = Instrument.objects.get(symbol="AAPL")
    # Besides the fixture's 25000 deposit (4 January) and 1 USD fee (5 January), on 5 January:
    record(alice_portfolio, "sell", "5", aapl, price="170", executed_at=T0 + timedelta(hours=1))  # realised 5 × (170 − 150) = 100
    record(alice_portfolio, "dividend", "10", aapl, price="1", executed_at=T0 + timedelta(hours=1))
    record(alice_portfolio, "interest", "4", executed_at=T0 + timedelta(hours=1))
    euro = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")  # sorts first: the view is in EUR
    record(euro, "deposit", "1000", currency="EUR", executed_at=T0)
    fx = Instrument.objects.get(symbol="EUR/USD")
    for day, close in closes.items():
        DailyClose.objects.create(instrument=fx, date=date.fromisoformat(day), close=D(close), source="test")
    return euro


PAST = ("realised_pnl", "dividends", "interest", "fees", "net_deposits")


async def test_past_figures_in_the_combined_view_are_converted_at_their_days_rates(alice: Any, alice_portfolio: Portfolio) -> None:
    # EUR/USD closed at 1.25 on 4 January (1 USD = 0.80 EUR) and 2.00 on 5 January (0.50 EUR); live it is 1.10.
    await database_sync_to_async(_euro_and_history)(alice, alice_portfolio, closes={"2026-01-04": "1.25", "2026-01-05": "2.00"})
    async with stream(alice) as ws:
        await ws.connect()
        snapshot = await receive(ws)
    combined = snapshot["combined"]
    assert combined["currency"] == "EUR"
    # 25000 USD × 0.80 + 1000 EUR; 100 USD, 10 USD, 4 USD and the 1 USD fee of 5 January × 0.50.
    assert {name: combined["totals"][name] for name in PAST} == {
        "realised_pnl": "50.00",
        "dividends": "5.00",
        "interest": "2.00",
        "fees": "0.50",
        "net_deposits": "21000.00",
    }
    assert combined["past_fx"] == []  # every day had its close
    # A portfolio's own view is untouched: in its base currency, as the ledger booked it.
    usd = next(p for p in snapshot["portfolios"] if p["id"] == alice_portfolio.pk)["totals"]
    assert {name: usd[name] for name in PAST} == {
        "realised_pnl": "100.00",
        "dividends": "10.00",
        "interest": "4.00",
        "fees": "1.00",
        "net_deposits": "25000.00",
    }


async def test_an_fx_tick_moves_the_combined_market_value_but_not_its_past_figures(alice: Any, alice_portfolio: Portfolio) -> None:
    await database_sync_to_async(_euro_and_history)(alice, alice_portfolio, closes={"2026-01-04": "1.25", "2026-01-05": "2.00"})
    async with stream(alice) as ws:
        await ws.connect()
        before = (await receive(ws))["combined"]["totals"]
        await price("EUR/USD", "1.25", seq=1)
        after = (await receive(ws))["combined"]["totals"]
    # Live figures move with FX: 5 AAPL × 200 + 0.5 BTC × 60000 = 31000 USD, at 1.10 then at 1.25.
    assert (before["market_value"], after["market_value"]) == ("28181.82", "24800.00")
    assert {name: after[name] for name in PAST} == {name: before[name] for name in PAST}  # past figures do not


async def test_past_figures_without_a_close_of_their_day_convert_at_todays_rate_and_say_so(alice: Any, alice_portfolio: Portfolio) -> None:
    # No close before 5 January: the 25000 USD deposit of 4 January waits for today's rate, and the view says so.
    await database_sync_to_async(_euro_and_history)(alice, alice_portfolio, closes={"2026-01-05": "2.00"})
    async with stream(alice) as ws:
        await ws.connect()
        combined = (await receive(ws))["combined"]
        # 25000 / 1.10 = 22727.27 + 1000
        assert combined["totals"]["net_deposits"] == "23727.27"
        assert combined["totals"]["fees"] == "0.50"
        [note] = combined["past_fx"]
        assert note == {
            "portfolio": alice_portfolio.pk,
            "name": "Alice growth",
            "pair": "USD/EUR",
            "from": "2026-01-04",
            "to": "2026-01-04",
            "days": 1,
            "message": "converted at today's rate: no USD/EUR history on 2026-01-04",
        }
        await price("EUR/USD", "1.25", seq=1)
        totals = (await receive(ws))["combined"]["totals"]
    assert (totals["net_deposits"], totals["fees"]) == ("21000.00", "0.50")  # 25000 / 1.25 + 1000: that part is live


# ---------------------------------------------------------------- watchlist and alerts


async def test_watched_symbols_come_in_the_snapshot_and_move_live(alice: Any, alice_portfolio: Portfolio, instruments: Any) -> None:
    await database_sync_to_async(services.watchlist_add)(user=alice, instrument=instruments["MSFT"])
    async with stream(alice) as ws:
        assert (await ws.connect())[0]
        snapshot = await receive(ws)
        assert [(r["symbol"], r["price"], r["name"]) for r in snapshot["watchlist"]] == [("MSFT", "400", "Microsoft Corp.")]
        await price("MSFT", "410", seq=1, reference="400")
        update = await receive(ws)
    assert update["type"] == "update" and update["portfolios"] == []  # alice holds no MSFT
    assert [(r["symbol"], r["price"], r["day_change"], r["day_change_pct"]) for r in update["watchlist"]] == [("MSFT", "410", "10", "2.50")]


async def test_adding_to_the_watchlist_sends_a_fresh_snapshot_with_it(alice: Any, alice_portfolio: Portfolio, instruments: Any) -> None:
    async with stream(alice) as ws:
        assert (await ws.connect())[0]
        assert (await receive(ws))["watchlist"] == []
        await database_sync_to_async(services.watchlist_add)(user=alice, instrument=instruments["SAP"])
        snapshot = await receive(ws)
        assert [r["symbol"] for r in snapshot["watchlist"]] == ["SAP"]
        await price("SAP", "231", seq=1)
        assert [r["price"] for r in (await receive(ws))["watchlist"]] == ["231"]


async def test_an_alert_that_fires_reaches_its_owners_dashboard_and_nobody_elses(
    alice: Any, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio, instruments: Any
) -> None:
    alert = await database_sync_to_async(services.alert_create)(
        user=alice, instrument=instruments["AAPL"], kind="price_above", threshold=D("210")
    )
    async with stream(alice) as alice_ws, stream(bob) as bob_ws:
        assert (await alice_ws.connect())[0] and (await bob_ws.connect())[0]
        await receive(alice_ws), await receive(bob_ws)
        await database_sync_to_async(services.alert_fire)(alert_id=alert.pk, value=D("210.5"), fired_at=T0)
        frame = await receive(alice_ws)
        assert frame["type"] == "alert"
        note = frame["notification"]
        assert (note["symbol"], note["message"], note["value"], note["fired_at"], note["read"]) == (
            "AAPL",
            "AAPL at or above 210: now 210.5",
            "210.5",
            1767623400000,  # 2026-01-05 14:30 UTC
            False,
        )
        assert await bob_ws.receive_nothing(timeout=0.3)


async def test_a_held_symbol_added_to_the_watchlist_shows_the_live_price_at_once(
    alice: Any, alice_portfolio: Portfolio, instruments: Any
) -> None:
    async with stream(alice) as ws:
        assert (await ws.connect())[0]
        await receive(ws)
        await price("AAPL", "212", seq=1)  # alice holds AAPL: her book has this price, the stored quote still 200
        await receive(ws)
        await database_sync_to_async(services.watchlist_add)(user=alice, instrument=instruments["AAPL"])
        snapshot = await receive(ws)
    assert [(r["symbol"], r["price"]) for r in snapshot["watchlist"]] == [("AAPL", "212")]
