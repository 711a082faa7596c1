"""`run_feeds` end to end: a one-second synthetic run against the test database.

The command runs its own event loop (`asyncio.run`). The in-memory layer's
queues only bind to a loop when a receiver has to wait, so a channel subscribed
before the run can be drained afterwards without waiting on any loop.
"""

import re
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from marketdata.events import Trade
from marketdata.feeds import native
from marketdata.feeds.configured import DEFAULT_START_PRICE, synthetic_instrument
from marketdata.models import AssetClass, Candle, Feed, FeedKind, Instrument, Quote, SymbolAlias
from marketdata.worker.references import minute_of
from tests.conftest import T0, listen
from tests.servers import free_port

SUMMARY = re.compile(
    r"^run_feeds: stopped: (?P<events>\d+) events in [\d.]+ s, (?P<broadcasts>\d+) broadcasts across (?P<symbols>\d+) symbols, "
    r"(?P<rows>\d+) quotes written in (?P<batches>\d+) batches, (?P<candles>\d+) candles$"
)
# What run_feeds ran by default before feeds were configured: a seeded walk, 20 ticks a second.
FAST = {"seed": 1, "ticks_per_second": 20}


def priced(symbol: str, asset_class: str, price: str) -> Instrument:
    instrument = Instrument.objects.create(symbol=symbol, name=symbol, asset_class=asset_class, quote_currency="USD")
    Quote.objects.create(instrument=instrument, price=Decimal(price), exchange_ts=T0, seq=0, source="test")
    return Instrument.objects.select_related("quote").get(pk=instrument.pk)


def feed(name: str = "synthetic", *, options: dict[str, Any] | None = None, symbols: str = "", enabled: bool = True) -> Feed:
    """The feed `name` as configured in the admin (migration 0003 makes "synthetic"; a transactional test's flush drops it)."""
    row, _ = Feed.objects.update_or_create(
        name=name,
        defaults={"kind": FeedKind.SYNTHETIC, "options": FAST if options is None else options, "symbols": symbols, "enabled": enabled},
    )
    return row


def run_feeds(*args: str) -> list[str]:
    out = StringIO()
    call_command("run_feeds", *args, stdout=out)
    return out.getvalue().splitlines()


START = re.compile(r"run_feeds: (?P<feeds>.+); epoch (?P<epoch>\d+); Ctrl-C to stop")


@pytest.mark.django_db(transaction=True)
def test_a_short_run_stores_synthetic_quotes_for_active_instruments_and_broadcasts_them(instruments: dict[str, Instrument]) -> None:
    feed()
    Instrument.objects.filter(symbol="SAP").update(is_active=False)
    aapl, fx, sap = listen("AAPL"), listen("EUR/USD"), listen("SAP")

    lines = run_feeds("--duration", "1")

    assert len(lines) == 2
    start = START.fullmatch(lines[0])
    assert start, lines[0]
    assert start["feeds"] == "synthetic (synthetic)"
    summary = SUMMARY.fullmatch(lines[1])
    assert summary, lines[1]
    assert int(summary["events"]) > 0
    assert summary["symbols"] == "4"
    # Every batch holds each symbol at most once; whether a mid-run flush fell inside the second is timing.
    assert 4 <= int(summary["rows"]) <= 4 * int(summary["batches"])

    quotes = {q.instrument.symbol: q for q in Quote.objects.select_related("instrument")}
    active = ["AAPL", "BTC-USD", "EUR/USD", "MSFT"]
    for symbol in active:
        assert (quotes[symbol].source, quotes[symbol].epoch) == ("synthetic", start["epoch"]), symbol
        assert quotes[symbol].seq > 0, symbol
    assert (quotes["SAP"].source, quotes["SAP"].seq, quotes["SAP"].epoch) == ("test", 0, "")
    # FX is quote-only: bid and ask around a mid price.
    assert quotes["EUR/USD"].bid is not None and quotes["EUR/USD"].bid < quotes["EUR/USD"].price < quotes["EUR/USD"].ask

    aapl_updates = aapl.take()
    assert aapl_updates, "no AAPL price reached the subscriber"
    assert {m["ch"] for m in aapl_updates} == {"ticker:AAPL"}
    assert {m["data"]["replay"] for m in aapl_updates} == {False}
    seqs = [m["seq"] for m in aapl_updates]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == quotes["AAPL"].seq  # the stored quote is the last one broadcast
    assert fx.take()
    assert sap.take() == []

    # Each active symbol's minute is stored as a candle closing at its last price (at the latest on shutdown).
    latest = {c.instrument.symbol: c for c in Candle.objects.select_related("instrument").order_by("start")}
    assert sorted(latest) == active
    for symbol in active:
        candle = latest[symbol]
        assert (candle.start, candle.close) == (minute_of(quotes[symbol].exchange_ts), quotes[symbol].price), symbol
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high, symbol
    # Trades carry volume; FX only quotes, so its candles have none.
    assert latest["AAPL"].trades > 0 and latest["AAPL"].volume > 0
    assert (latest["EUR/USD"].trades, latest["EUR/USD"].volume) == (0, 0)
    assert int(summary["candles"]) == Candle.objects.count()


@pytest.mark.django_db(transaction=True)
def test_references_are_loaded_from_stored_candles_and_stored_with_the_quotes(instruments: dict[str, Instrument], settings: Any) -> None:
    feed(symbols="BTC-USD AAPL")
    settings.HISTORY_RETENTION_DAYS = 30
    now = datetime.now(UTC)
    Instrument.objects.filter(symbol="AAPL").update(exchange_timezone="America/New_York")

    def candle(symbol: str, start: datetime, close: str) -> Candle:
        price = Decimal(close)
        return Candle(instrument=instruments[symbol], start=minute_of(start), open=price - 5, high=price + 10, low=price - 10, close=price)

    Candle.objects.bulk_create(
        [
            candle("BTC-USD", now - timedelta(hours=24, minutes=5), "59000"),
            candle("AAPL", now - timedelta(days=2), "190"),
            candle("AAPL", now - timedelta(days=60), "1"),
        ]
    )

    run_feeds("--duration", "0.5")

    references = dict(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", "reference_price"))
    assert references == {"AAPL": Decimal("190"), "BTC-USD": Decimal("59000")}
    # The 60-day-old candle is past the retention: the first minute recorded prunes it.
    assert not Candle.objects.filter(close=Decimal("1")).exists()


@pytest.mark.django_db(transaction=True)
def test_only_the_feeds_symbols_are_run(instruments: dict[str, Instrument]) -> None:
    feed(symbols="BTC-USD")

    lines = run_feeds("--duration", "0.3")

    assert lines[0].startswith("run_feeds: synthetic (synthetic); epoch ")
    assert list(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", flat=True)) == ["BTC-USD"]
    assert set(Candle.objects.values_list("instrument__symbol", flat=True)) == {"BTC-USD"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("symbols", "refused"), [("AAPL NOPE", "NOPE"), ("SAP", "SAP")])
def test_a_symbol_without_an_active_instrument_is_refused_by_name(instruments: dict[str, Instrument], symbols: str, refused: str) -> None:
    Instrument.objects.filter(symbol="SAP").update(is_active=False)
    feed(symbols=symbols)
    with pytest.raises(CommandError, match=rf"^feed synthetic: .*\b{refused}\b"):
        run_feeds("--duration", "0.3")


@pytest.mark.django_db(transaction=True)
def test_several_feeds_run_merged_into_one_worker(instruments: dict[str, Instrument]) -> None:
    feed(enabled=False)
    feed("walk-a", symbols="AAPL")
    feed("walk-b", options={"seed": 2, "ticks_per_second": 10}, symbols="BTC-USD, EUR/USD")
    btc = listen("BTC-USD")

    lines = run_feeds("--duration", "0.5")

    start = START.fullmatch(lines[0])
    assert start and start["feeds"] == "walk-a (synthetic), walk-b (synthetic)", lines[0]
    summary = SUMMARY.fullmatch(lines[1])
    assert summary and summary["symbols"] == "3", lines[1]
    stored = dict(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", "epoch"))
    assert stored == dict.fromkeys(["AAPL", "BTC-USD", "EUR/USD"], start["epoch"])  # one worker, one epoch
    assert [m["seq"] for m in btc.take()][:2] == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_feed_picks_feeds_by_name_even_disabled_ones(instruments: dict[str, Instrument]) -> None:
    feed()
    feed("walk-b", symbols="MSFT", enabled=False)

    lines = run_feeds("--feed", "walk-b", "--duration", "0.3")

    assert lines[0].startswith("run_feeds: walk-b (synthetic); epoch ")
    assert list(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", flat=True)) == ["MSFT"]


def test_an_unknown_feed_name_is_refused_by_name(instruments: dict[str, Instrument]) -> None:
    feed()
    with pytest.raises(CommandError, match=r"^no feed named nope, other$"):
        run_feeds("--feed", "synthetic", "other", "nope", "--duration", "1")


def test_without_active_instruments_it_points_at_seed_demo(instruments: dict[str, Instrument]) -> None:
    feed()
    Instrument.objects.update(is_active=False)
    with pytest.raises(CommandError, match=r"^feed synthetic: no active instruments to walk; .*manage\.py seed_demo"):
        run_feeds("--duration", "1")


def test_an_empty_database_points_at_seed_demo(db: None) -> None:
    feed()
    with pytest.raises(CommandError, match=r"run `manage\.py seed_demo`"):
        run_feeds("--duration", "1")


def test_without_enabled_feeds_it_points_at_the_admin(instruments: dict[str, Instrument]) -> None:
    feed(enabled=False)
    with pytest.raises(CommandError, match=r"^no enabled feeds: add one in the admin \(Market data → Feeds\)"):
        run_feeds("--duration", "1")


def test_without_any_feed_seed_demo_makes_the_synthetic_one_it_points_at(db: None) -> None:
    Feed.objects.all().delete()
    with pytest.raises(CommandError, match=r"^no enabled feeds: .* or run `manage\.py seed_demo`$"):
        run_feeds("--duration", "1")

    call_command("seed_demo", stdout=StringIO())

    assert list(Feed.objects.filter(enabled=True).values_list("name", "kind")) == [("synthetic", "synthetic")]


@pytest.mark.parametrize(
    ("options", "args", "message"),
    [
        ({"ticks_per_second": 0}, [], "feed synthetic: ticks_per_second must be positive"),
        ({"ticks_per_second": -2}, [], "feed synthetic: ticks_per_second must be positive"),
        ({"volatility": -0.1}, [], "feed synthetic: volatility must not be negative"),
        ({"tick_rate": 20}, [], "feed synthetic: 'tick_rate' is not an option of a synthetic feed"),
        (FAST, ["--conflation-ms", "0"], "--conflation-ms must be at least 1"),
    ],
)
def test_bad_rates_are_refused_before_anything_runs(
    instruments: dict[str, Instrument], options: dict[str, Any], args: list[str], message: str
) -> None:
    feed(options=options)
    with pytest.raises(CommandError, match=re.escape(message)):
        run_feeds(*args, "--duration", "1")
    assert not Quote.objects.filter(source="synthetic").exists()


@pytest.mark.django_db(transaction=True)
def test_a_sub_cent_coin_keeps_a_positive_price(instruments: dict[str, Instrument]) -> None:
    shib = priced("SHIB-USD", AssetClass.CRYPTO, "0.00001234")
    feed(symbols="SHIB-USD")

    run_feeds("--duration", "0.3")

    quote = Quote.objects.get(instrument=shib)
    assert quote.source == "synthetic"
    assert Decimal("0.000012") < quote.bid < quote.ask < Decimal("0.000013")


@pytest.mark.parametrize(
    ("asset_class", "price", "places"),
    [
        (AssetClass.EQUITY, "271.50", 2),
        (AssetClass.EQUITY, "1.5", 4),
        (AssetClass.CRYPTO, "0.5", 4),
        (AssetClass.CRYPTO, "0.00001234", 8),
        (AssetClass.FX, "1.15420", 5),
        (AssetClass.FX, "156.420", 5),
        (AssetClass.FX, "0.0000612", 8),
    ],
)
def test_synthetic_prices_are_quoted_to_at_least_four_significant_digits(db: None, asset_class: str, price: str, places: int) -> None:
    synthetic = synthetic_instrument(priced("X", asset_class, price))
    assert (synthetic.start_price, synthetic.places, synthetic.quote_only) == (Decimal(price), places, asset_class == AssetClass.FX)


@pytest.mark.parametrize("price", ["0", "-0.0001"])
def test_a_stored_price_of_zero_or_below_restarts_from_the_default(db: None, price: str) -> None:
    assert synthetic_instrument(priced("X", AssetClass.CRYPTO, price)).start_price == DEFAULT_START_PRICE


def test_an_instrument_without_a_quote_starts_from_the_default(db: None) -> None:
    bare = Instrument.objects.create(symbol="NEW", name="New", asset_class=AssetClass.EQUITY, quote_currency="USD")
    assert synthetic_instrument(bare).start_price == DEFAULT_START_PRICE


@pytest.mark.django_db(transaction=True)
def test_metrics_port_serves_the_workers_metrics_while_it_runs_and_stops_with_it(instruments: dict[str, Instrument]) -> None:
    feed()
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    out: list[str] = []
    runner = threading.Thread(target=lambda: out.extend(run_feeds("--duration", "4", "--metrics-port", str(port))))
    runner.start()
    seen = ""
    deadline = time.monotonic() + 10
    try:
        while 'livefolio_worker_windows_total{worker="run_feeds"}' not in seen and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    seen = response.read().decode()
            except OSError:
                time.sleep(0.1)  # not listening yet: the command is still starting
    finally:
        runner.join(timeout=20)
    assert 'livefolio_worker_windows_total{worker="run_feeds"}' in seen, seen[:500]
    assert 'livefolio_feed_last_update_timestamp_seconds{symbol="AAPL"}' in seen
    assert f"run_feeds: metrics at {url}" in out
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


# ---------------------------------------------------------------- --symbols: splitting the symbols across workers


@pytest.mark.django_db(transaction=True)
def test_symbols_limits_the_worker_to_those_instruments_named_by_symbol_or_alias(instruments: dict[str, Instrument]) -> None:
    feed()
    SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=instruments["BTC-USD"])
    aapl, msft = listen("AAPL"), listen("MSFT")

    lines = run_feeds("--symbols", "AAPL", "BTCUSDT", "--duration", "0.5")

    assert lines[0].startswith("run_feeds: synthetic (synthetic); epoch "), lines
    assert lines[1] == "run_feeds: only AAPL, BTC-USD (--symbols); the feeds' other symbols are left out"
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary and summary["symbols"] == "2", lines[-1]
    assert set(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", flat=True)) == {"AAPL", "BTC-USD"}
    assert aapl.take() and not msft.take()


@pytest.mark.django_db(transaction=True)
def test_symbols_filters_a_recorded_feed_through_the_symbol_map(instruments: dict[str, Instrument], tmp_path: Path) -> None:
    """Feeds other than the synthetic one are filtered by symbol as their events are resolved (`SymbolMap.wanted`)."""
    path = tmp_path / "session.jsonl"
    with path.open("w") as out:
        for i in range(20):
            for symbol in ("AAPL", "MSFT", "BTC-USD"):
                out.write(native.encode(Trade(symbol, T0 + timedelta(seconds=i), Decimal(100 + i), Decimal(1), "file")) + "\n")
    feed(enabled=False)
    Feed.objects.create(name="recorded", kind=FeedKind.REPLAY, options={"paths": [str(path)], "speed": "max"}, enabled=True)

    lines = run_feeds("--symbols", "MSFT", "--duration", "10")  # the file ends first

    summary = SUMMARY.fullmatch(lines[-1])
    assert summary and summary["events"] == "20" and summary["symbols"] == "1", lines[-1]
    assert list(Quote.objects.filter(source="file").values_list("instrument__symbol", "price")) == [("MSFT", Decimal(119))]


@pytest.mark.django_db(transaction=True)
def test_a_feed_with_none_of_the_symbols_is_left_out(instruments: dict[str, Instrument]) -> None:
    feed(enabled=False)
    feed("walk-a", symbols="AAPL")
    feed("walk-b", options={"seed": 2, "ticks_per_second": 10}, symbols="BTC-USD, EUR/USD")

    lines = run_feeds("--symbols", "EUR/USD", "--duration", "0.3")

    start = START.fullmatch(lines[0])
    assert start and start["feeds"] == "walk-b (synthetic)", lines[0]
    assert list(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", flat=True)) == ["EUR/USD"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "AAPL", "NOPE", "TSLA"], "--symbols: no instrument or alias NOPE, TSLA"),
        (["--symbols", "SAP"], "--symbols: no instrument or alias SAP"),  # inactive: it gets no prices
        (["--feed", "walk-a", "--symbols", "MSFT"], "--symbols MSFT: none of the feeds (walk-a) has them"),
    ],
)
def test_symbols_nobody_can_publish_are_refused_by_name(instruments: dict[str, Instrument], args: list[str], message: str) -> None:
    Instrument.objects.filter(symbol="SAP").update(is_active=False)
    feed()
    feed("walk-a", symbols="AAPL")
    with pytest.raises(CommandError, match=f"^{re.escape(message)}$"):
        run_feeds(*args, "--duration", "1")
    assert not Quote.objects.filter(source="synthetic").exists()
