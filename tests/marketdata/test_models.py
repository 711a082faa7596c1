from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from marketdata.models import AssetClass, Candle, Feed, FeedKind, Instrument, SymbolAlias

D = Decimal


def aapl(**fields: str) -> Instrument:
    return Instrument(**{"symbol": "AAPL", "name": "Apple", "asset_class": AssetClass.EQUITY, "quote_currency": "USD", **fields})


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo"])
def test_an_iana_time_zone_is_accepted(zone: str) -> None:
    aapl(exchange_timezone=zone).full_clean(validate_unique=False)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "EST5EDT6", "../etc/passwd", ""])
def test_anything_else_is_refused_by_name(zone: str) -> None:
    with pytest.raises(ValidationError) as error:
        aapl(exchange_timezone=zone).full_clean(validate_unique=False)
    assert "exchange_timezone" in error.value.message_dict


def test_the_trading_day_defaults_to_utc() -> None:
    assert aapl().exchange_timezone == "UTC"


@pytest.mark.parametrize(("asset_class", "always_open"), [(c, c in {AssetClass.CRYPTO, AssetClass.FX}) for c in AssetClass])
def test_only_crypto_and_fx_are_always_open(asset_class: str, always_open: bool) -> None:
    assert aapl(asset_class=asset_class).always_open is always_open


@pytest.mark.parametrize(
    ("symbols", "parsed"),
    [
        ("", []),
        ("BTCUSDT", ["BTCUSDT"]),
        ("BTCUSDT ETHUSDT", ["BTCUSDT", "ETHUSDT"]),
        (" BTC-USD,ETH-USD ,\n SOL-USD ", ["BTC-USD", "ETH-USD", "SOL-USD"]),
    ],
)
def test_a_feeds_symbols_are_split_on_spaces_and_commas(symbols: str, parsed: list[str]) -> None:
    assert Feed(name="f", kind=FeedKind.BINANCE, symbols=symbols).symbol_list == parsed


def test_a_feed_with_good_options_is_valid() -> None:
    Feed(name="btc", kind=FeedKind.BINANCE, options={"depth_limit": 100}, symbols="BTCUSDT").full_clean(validate_unique=False)
    Feed(name="walk", kind=FeedKind.SYNTHETIC).full_clean(validate_unique=False)


@pytest.mark.parametrize(
    ("kind", "options", "symbols", "message"),
    [
        (FeedKind.SYNTHETIC, {"tick_rate": 5}, "", "'tick_rate' is not an option of a synthetic feed"),
        (FeedKind.COINBASE, {}, " , ", "a coinbase feed needs symbols"),
        (FeedKind.REPLAY, {"paths": ["a.csv"], "speed": "fast"}, "", 'speed must be a number above 0 or "max"'),
    ],
)
def test_a_feed_with_bad_options_is_refused_on_its_options(kind: str, options: dict[str, object], symbols: str, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        Feed(name="f", kind=kind, options=options, symbols=symbols).full_clean(validate_unique=False)
    [text] = error.value.message_dict["options"]
    assert text.startswith(message)


@pytest.mark.django_db
def test_a_source_spells_an_alias_for_one_instrument_only() -> None:
    btc, eth = aapl(symbol="BTC-USD", asset_class=AssetClass.CRYPTO), aapl(symbol="ETH-USD", asset_class=AssetClass.CRYPTO)
    btc.save()
    eth.save()
    SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=btc)
    SymbolAlias.objects.create(alias="BTCUSDT", source="", instrument=btc)  # every source: another row

    with pytest.raises(ValidationError):
        SymbolAlias(alias="BTCUSDT", source="binance", instrument=eth).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=eth)
    assert SymbolAlias.objects.count() == 2


@pytest.mark.django_db
def test_an_alias_reads_as_the_instrument_symbol_it_stands_for() -> None:
    btc = aapl(symbol="BTC-USD", asset_class=AssetClass.CRYPTO)
    btc.save()
    assert str(SymbolAlias(alias="BTCUSDT", source="binance", instrument=btc)) == "BTCUSDT (binance) → BTC-USD"
    assert str(SymbolAlias(alias="XBT", source="", instrument=btc)) == "XBT (any source) → BTC-USD"


@pytest.mark.django_db
def test_an_instrument_has_one_candle_per_minute() -> None:
    inst = aapl()
    inst.save()
    start = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    row = Candle.objects.create(instrument=inst, start=start, open=D(1), high=D(2), low=D("0.5"), close=D("1.5"))

    assert (row.volume, row.trades) == (0, 0)  # quote-only markets leave them at zero
    with pytest.raises(IntegrityError), transaction.atomic():
        Candle.objects.create(instrument=inst, start=start, open=D(1), high=D(1), low=D(1), close=D(1))
