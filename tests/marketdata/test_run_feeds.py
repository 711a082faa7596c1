"""`run_feeds` end to end: a one-second synthetic run against the test database.

The command runs its own event loop (`asyncio.run`). The in-memory layer's
queues only bind to a loop when a receiver has to wait, so a channel subscribed
before the run can be drained afterwards without waiting on any loop.
"""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from marketdata import groups
from marketdata.management.commands.run_feeds import DEFAULT_START_PRICE, synthetic_instrument
from marketdata.models import AssetClass, Instrument, PriceMark, Quote
from marketdata.references import minute_of
from tests.conftest import T0, listen, received

SUMMARY = re.compile(
    r"^run_feeds: stopped: (?P<events>\d+) events in [\d.]+ s, (?P<broadcasts>\d+) broadcasts across (?P<symbols>\d+) symbols, "
    r"(?P<rows>\d+) quotes written in (?P<batches>\d+) batches, (?P<marks>\d+) price marks$"
)


def priced(symbol: str, asset_class: str, price: str) -> Instrument:
    instrument = Instrument.objects.create(symbol=symbol, name=symbol, asset_class=asset_class, quote_currency="USD")
    Quote.objects.create(instrument=instrument, price=Decimal(price), exchange_ts=T0, seq=0, source="test")
    return Instrument.objects.select_related("quote").get(pk=instrument.pk)


def run_feeds(*args: str) -> list[str]:
    out = StringIO()
    call_command("run_feeds", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db(transaction=True)
def test_a_short_run_stores_synthetic_quotes_for_active_instruments_and_broadcasts_them(instruments: dict[str, Instrument]) -> None:
    Instrument.objects.filter(symbol="SAP").update(is_active=False)
    aapl_channel = listen(groups.symbol_group("AAPL"))
    fx_channel = listen(groups.symbol_group("EUR/USD"))
    sap_channel = listen(groups.symbol_group("SAP"))

    lines = run_feeds("--duration", "1", "--seed", "1", "--tick-rate", "20")

    assert len(lines) == 2
    start = re.fullmatch(r"run_feeds: 4 instruments, 20 ticks/s each, epoch (?P<epoch>\d+); Ctrl-C to stop", lines[0])
    assert start, lines[0]
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

    aapl_updates = received(aapl_channel)
    assert aapl_updates, "no AAPL broadcast reached the subscriber"
    assert {m["type"] for m in aapl_updates} == {"md.price"}
    seqs = [m["seq"] for m in aapl_updates]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == quotes["AAPL"].seq  # the stored quote is the last one broadcast
    assert received(fx_channel)
    assert received(sap_channel) == []

    # Each active symbol's last price is marked for its minute (stored at the latest on shutdown).
    latest_marks = {m.instrument.symbol: m for m in PriceMark.objects.select_related("instrument").order_by("minute")}
    assert sorted(latest_marks) == active
    for symbol in active:
        assert (latest_marks[symbol].minute, latest_marks[symbol].price) == (minute_of(quotes[symbol].exchange_ts), quotes[symbol].price)
    assert int(summary["marks"]) == PriceMark.objects.count()


@pytest.mark.django_db(transaction=True)
def test_references_are_loaded_from_stored_marks_and_stored_with_the_quotes(instruments: dict[str, Instrument], settings: Any) -> None:
    settings.HISTORY_RETENTION_DAYS = 30
    now = datetime.now(UTC)
    Instrument.objects.filter(symbol="AAPL").update(exchange_timezone="America/New_York")
    PriceMark.objects.bulk_create(
        [
            PriceMark(instrument=instruments["BTC-USD"], minute=minute_of(now - timedelta(hours=24, minutes=5)), price=Decimal("59000")),
            PriceMark(instrument=instruments["AAPL"], minute=minute_of(now - timedelta(days=2)), price=Decimal("190")),
            PriceMark(instrument=instruments["AAPL"], minute=minute_of(now - timedelta(days=60)), price=Decimal("1")),
        ]
    )

    run_feeds("--symbols", "BTC-USD", "AAPL", "--duration", "0.5", "--seed", "1", "--tick-rate", "20")

    references = dict(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", "reference_price"))
    assert references == {"AAPL": Decimal("190"), "BTC-USD": Decimal("59000")}
    # The 60-day-old mark is past the retention: the first minute recorded prunes it.
    assert not PriceMark.objects.filter(price=Decimal("1")).exists()


@pytest.mark.django_db(transaction=True)
def test_only_the_requested_symbols_are_run(instruments: dict[str, Instrument]) -> None:
    lines = run_feeds("--symbols", "BTC-USD", "--duration", "0.3", "--seed", "1", "--tick-rate", "20")

    assert lines[0].startswith("run_feeds: 1 instruments,")
    assert list(Quote.objects.filter(source="synthetic").values_list("instrument__symbol", flat=True)) == ["BTC-USD"]


def test_an_unknown_symbol_is_refused_by_name(instruments: dict[str, Instrument]) -> None:
    with pytest.raises(CommandError, match=r"^not an active instrument: NOPE$"):
        run_feeds("--symbols", "AAPL", "NOPE", "--duration", "1")


def test_an_inactive_symbol_is_refused_by_name(instruments: dict[str, Instrument]) -> None:
    Instrument.objects.filter(symbol="SAP").update(is_active=False)
    with pytest.raises(CommandError, match=r"^not an active instrument: SAP$"):
        run_feeds("--symbols", "SAP", "--duration", "1")


def test_without_active_instruments_it_points_at_seed_demo(instruments: dict[str, Instrument]) -> None:
    Instrument.objects.update(is_active=False)
    with pytest.raises(CommandError, match=r"no active instruments: .*manage\.py seed_demo"):
        run_feeds("--duration", "1")


def test_an_empty_database_points_at_seed_demo(db: None) -> None:
    with pytest.raises(CommandError, match=r"run `manage\.py seed_demo`"):
        run_feeds("--duration", "1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tick-rate", "0"], "ticks_per_second must be positive"),
        (["--tick-rate", "-2"], "ticks_per_second must be positive"),
        (["--volatility", "-0.1"], "volatility must not be negative"),
        (["--conflation-ms", "0"], "--conflation-ms must be at least 1"),
    ],
)
def test_bad_rates_are_refused_before_anything_runs(instruments: dict[str, Instrument], args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        run_feeds(*args, "--duration", "1")
    assert not Quote.objects.filter(source="synthetic").exists()


@pytest.mark.django_db(transaction=True)
def test_a_sub_cent_coin_keeps_a_positive_price(instruments: dict[str, Instrument]) -> None:
    shib = priced("SHIB-USD", AssetClass.CRYPTO, "0.00001234")

    run_feeds("--symbols", "SHIB-USD", "--duration", "0.3", "--seed", "1", "--tick-rate", "20")

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
