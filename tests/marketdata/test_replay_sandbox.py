"""`replay_feed --sandbox NAME`: a past day replayed into its own channels, with nothing live touched.

The same small native recording goes through the sandbox and (for contrast) through the default,
live-path replay, which does write quotes, candles and portfolio history and publishes live.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from marketdata.api.channels import market_channels
from marketdata.delivery import streams
from marketdata.delivery.history import market_store
from marketdata.models import Candle, Instrument, Quote
from portfolio import services
from portfolio.models import Portfolio, PortfolioValue
from tests.conftest import Tap, record, until

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = "day1"
DAY = "2025-11-03"
LAST = "101.5"  # the recording's last trade


def line(kind: str, ts: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "ts": f"{DAY}T{ts}Z", "symbol": "BTC-USD", **fields, "source": "test"}, separators=(",", ":"))


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    return write_recording(tmp_path / "btc-day1.jsonl")


def write_recording(path: Path) -> Path:
    """Three minutes of BTC-USD in native JSONL: a book, a quote and four trades (the last minute left open)."""
    lines = [
        line("book", "00:00:00.000000", bids=[["99", "1"], ["98", "2"]], asks=[["101", "1"], ["102", "3"]], update_id=1),
        line("quote", "00:00:01.000000", bid="99", ask="101"),
        line("trade", "00:00:10.000000", price="100", size="0.5", side="buy"),
        line("trade", "00:00:40.000000", price="100.5", size="0.25", side="sell"),
        line("trade", "00:01:05.000000", price="99.5", size="1", side="sell"),
        line("trade", "00:02:01.000000", price=LAST, size="2", side="buy"),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def btc_portfolio(alice: Any, instruments: dict[str, Instrument]) -> Portfolio:
    """Holds BTC-USD only, so the replay's prices value it whole: a live replay records its value each minute."""
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Alice crypto")
    record(portfolio, "deposit", "1000")
    record(portfolio, "buy", "2", instruments["BTC-USD"], price="90")
    return portfolio


def replay_feed(*args: str) -> list[str]:
    out = StringIO()
    call_command("replay_feed", *args, "--speed", "max", "--no-progress", stdout=out)
    return out.getvalue().splitlines()


def names(session: str = "") -> list[str]:
    return [channel.name for channel in market_channels("BTC-USD", session)]


def tap(channels: list[str]) -> Tap:
    sink = Tap()
    async_to_sync(streams.subscribe_market)(sink, channels)
    return sink


def live_candle(instrument: Instrument) -> Candle:
    """A live minute the database holds (long before the replayed day)."""
    start = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)
    return Candle.objects.create(instrument=instrument, start=start, open=7, high=7, low=7, close=7, volume=1, trades=1)


def test_a_sandbox_replay_publishes_on_its_session_channels_and_leaves_every_live_thing_alone(
    btc_portfolio: Portfolio, instruments: dict[str, Instrument], recording: Path
) -> None:
    stored = live_candle(instruments["BTC-USD"])
    live, session = tap(names()), tap(names(SESSION))

    lines = replay_feed(str(recording), "--sandbox", SESSION)

    assert lines[1] == f"replay_feed: sandbox {SESSION}, nothing live touched; watch it at /market/<symbol>/?session={SESSION}"
    assert re.search(r"6 events read, 6 published", lines[-1]), lines[-1]
    messages = session.take()
    assert {m["ch"] for m in messages} == {
        f"ticker:BTC-USD?session={SESSION}",
        f"trades:BTC-USD?session={SESSION}",
        f"candles:BTC-USD@1m?session={SESSION}",
        f"book:BTC-USD@depth=1?session={SESSION}",
        f"book:BTC-USD@depth=10?session={SESSION}",
        f"book:BTC-USD@depth=50?session={SESSION}",
    }
    tickers = [m for m in messages if m["ch"].startswith("ticker:")]
    assert tickers[-1]["data"]["last"] == LAST and all(m["data"]["replay"] for m in tickers)
    assert [m["seq"] for m in tickers] == list(range(1, len(tickers) + 1))
    assert live.take() == []

    # The live state is as it was: no message in its history, the stored quote, no new candle, no portfolio value.
    store = market_store()
    for name in names():
        assert async_to_sync(store.head)(name) == ("", 0), name
    assert async_to_sync(store.head)(f"ticker:BTC-USD?session={SESSION}") == (tickers[-1]["epoch"], len(tickers))
    quote = Quote.objects.get(instrument__symbol="BTC-USD")
    assert (quote.price, quote.source) == (Decimal("60000"), "test")
    assert list(Candle.objects.all()) == [stored]
    assert not PortfolioValue.objects.exists()

    # The session's candles are its own minutes only; the live channel's come with the database's.
    candles = async_to_sync(store.snapshot)(f"candles:BTC-USD@1m?session={SESSION}")["data"]["candles"]
    assert [(c["close"], c["closed"]) for c in candles] == [("100.5", True), ("99.5", True), (LAST, False)]
    live_candles = async_to_sync(store.snapshot)("candles:BTC-USD@1m")["data"]["candles"]
    assert [c["close"] for c in live_candles] == ["7"]


def test_the_default_replay_still_takes_the_live_path(btc_portfolio: Portfolio, recording: Path) -> None:
    live, session = tap(names()), tap(names(SESSION))

    replay_feed(str(recording))

    assert any(m["ch"] == "ticker:BTC-USD" and m["data"]["last"] == LAST for m in live.take())
    assert session.take() == []
    assert Quote.objects.get(instrument__symbol="BTC-USD").price == Decimal(LAST)
    assert Candle.objects.filter(instrument__symbol="BTC-USD").count() == 3
    assert PortfolioValue.objects.filter(portfolio=btc_portfolio).exists()  # the minute hooks ran


def test_a_bad_sandbox_name_or_a_sandbox_creating_instruments_is_refused(instruments: dict[str, Instrument], recording: Path) -> None:
    with pytest.raises(CommandError, match="--sandbox: 'Day 1' is not a session name"):
        replay_feed(str(recording), "--sandbox", "Day 1")
    with pytest.raises(CommandError, match="--create-instruments cannot go with it"):
        replay_feed(str(recording), "--sandbox", SESSION, "--create-instruments")
    assert not Candle.objects.exists()


@pytest.mark.redis
async def test_on_redis_a_sandbox_has_its_own_stream_keys_that_expire_and_feeds_no_recorder(
    redis_layer: dict[str, Any], redis_url: str, layer_prefix: str, instruments: dict[str, Instrument], recording: Path
) -> None:
    live, session = Tap(), Tap()
    await streams.subscribe_market(live, names())
    await streams.subscribe_market(session, names(SESSION))
    await streams.tape_listen()  # a record_feed is listening
    try:
        await sync_to_async(replay_feed)(str(recording), "--sandbox", SESSION)
        await until(lambda: any(m["ch"].startswith("ticker:") and m["data"]["last"] == LAST for m in session.messages), what="the session")
        assert live.messages == []  # published after the session's on the same connection, it would be here by now
    finally:
        streams.unsubscribe_market(live, names())
        streams.unsubscribe_market(session, names(SESSION))

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = sorted([key async for key in client.scan_iter(f"{layer_prefix}:*")])
        sandboxed = [key for key in keys if f"?session={SESSION}" in key]
        assert f"{layer_prefix}:hist:ticker:BTC-USD?session={SESSION}" in sandboxed
        assert f"{layer_prefix}:snap:candles:BTC-USD@1m?session={SESSION}" in sandboxed
        assert set(keys) - set(sandboxed) == {f"{layer_prefix}:tape:listening"}  # nothing live, nothing taped
        ttl = settings.MARKETDATA_SANDBOX_TTL_SECONDS
        for key in sandboxed:
            assert 0 < await client.ttl(key) <= ttl, key
    finally:
        await client.aclose()
