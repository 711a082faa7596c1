from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from marketdata import selectors
from marketdata.models import AssetClass, Candle, DailyClose, Instrument, SymbolAlias

D = Decimal
NEW_YORK = ZoneInfo("America/New_York")
# Monday 12 January 2026, 10:00 in New York.
NOW = datetime(2026, 1, 12, 10, 0, tzinfo=NEW_YORK).astimezone(UTC)
pytestmark = pytest.mark.django_db


def instrument(symbol: str, asset_class: str, timezone: str = "UTC") -> Instrument:
    return Instrument.objects.create(symbol=symbol, name=symbol, asset_class=asset_class, quote_currency="USD", exchange_timezone=timezone)


def candles(inst: Instrument, *rows: tuple[datetime, str]) -> None:
    """Candles closing at the given prices, whose open, high and low are all elsewhere."""
    Candle.objects.bulk_create(
        Candle(instrument=inst, start=start, open=D(close) - 1, high=D(close) + 2, low=D(close) - 3, close=D(close))
        for start, close in rows
    )


def test_references_load_from_stored_candles_closes_in_two_queries(django_assert_num_queries: Any) -> None:
    aapl = instrument("AAPL", AssetClass.EQUITY, "America/New_York")
    btc = instrument("BTC-USD", AssetClass.CRYPTO)
    eur = instrument("EUR/USD", AssetClass.FX, "America/New_York")  # ignored: FX never closes
    thursday, friday = (datetime(2026, 1, day, 15, 59, tzinfo=NEW_YORK).astimezone(UTC) for day in (8, 9))
    # Friday's close is three days back, far before the always-open window.
    candles(aapl, (thursday, "198"), (friday, "200"), (NOW - timedelta(minutes=5), "203"))
    candles(btc, (NOW - timedelta(days=3), "50000"), (NOW - timedelta(hours=24, minutes=2), "60000"), (NOW - timedelta(hours=23), "61000"))
    candles(eur, (NOW - timedelta(hours=30), "1.08"), (NOW - timedelta(hours=24), "1.09"), (NOW - timedelta(hours=1), "1.10"))

    with django_assert_num_queries(2):
        refs = selectors.references_load(now=NOW)

    assert refs.reference("AAPL", NOW) == D("200")
    assert refs.reference("BTC-USD", NOW) == D("60000")
    assert refs.reference("EUR/USD", NOW) == D("1.09")
    assert str(refs.reference("AAPL", NOW)) == "200"  # not 200.0000000000 from the ten stored places


def test_without_candles_there_are_no_references() -> None:
    instrument("AAPL", AssetClass.EQUITY)
    assert selectors.references_load(now=NOW).reference("AAPL", NOW) is None


def test_the_symbol_map_holds_every_instrument_and_alias_with_its_source() -> None:
    btc, eur = instrument("BTC-USD", AssetClass.CRYPTO), instrument("EUR/USD", AssetClass.FX)
    instrument("AAPL", AssetClass.EQUITY)
    SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=btc)
    SymbolAlias.objects.create(alias="EURUSD", source="", instrument=eur)

    symbols = selectors.symbol_map_load()

    assert symbols.instruments == {"AAPL", "BTC-USD", "EUR/USD"}
    assert symbols.aliases == {("binance", "BTCUSDT"): "BTC-USD", ("", "EURUSD"): "EUR/USD"}
    assert symbols.resolve("BTCUSDT", source="binance") == "BTC-USD"
    assert symbols.resolve("BTCUSDT", source="coinbase") is None  # binance's spelling only
    assert symbols.resolve("EURUSD", source="histdata") == "EUR/USD"
    assert not symbols.create and symbols.wanted is None


def test_a_feed_cannot_price_an_inactive_instrument_through_the_symbol_map() -> None:
    sap = instrument("SAP", AssetClass.EQUITY)
    SymbolAlias.objects.create(alias="SAP.DE", source="", instrument=sap)
    Instrument.objects.filter(pk=sap.pk).update(is_active=False)

    symbols = selectors.symbol_map_load()

    assert symbols.resolve("SAP", source="csv") is None
    assert symbols.resolve("SAP.DE", source="csv") is None


def test_the_symbol_map_passes_create_and_wanted_on() -> None:
    instrument("BTC-USD", AssetClass.CRYPTO)
    instrument("AAPL", AssetClass.EQUITY)

    symbols = selectors.symbol_map_load(create=True, wanted=["BTC-USD"])

    assert symbols.resolve("AAPL", source="csv") is None and symbols.filtered == 1
    assert symbols.resolve("DOGEUSDT", source="binance") is None  # created, but not wanted
    assert symbols.take_new() == {"DOGEUSDT": "binance"}


def test_recent_candles_are_the_latest_of_that_symbol_oldest_first() -> None:
    aapl, msft = instrument("AAPL", AssetClass.EQUITY), instrument("MSFT", AssetClass.EQUITY)
    # Stored out of order; MSFT's candles are newer and must not count.
    candles(aapl, *[(NOW + timedelta(minutes=n), str(100 + n)) for n in (3, 0, 4, 1, 2)])
    candles(msft, *[(NOW + timedelta(minutes=n), "400") for n in range(10)])

    recent = selectors.candles_recent(symbol="AAPL", limit=3)

    assert [(c.start, c.close) for c in recent] == [(NOW + timedelta(minutes=n), D(100 + n)) for n in (2, 3, 4)]
    assert len(selectors.candles_recent(symbol="AAPL")) == 5
    assert selectors.candles_recent(symbol="NOPE") == []


def test_candles_for_a_timeframe_add_up_the_stored_minutes_into_utc_buckets(django_assert_num_queries: Any) -> None:
    aapl, msft = instrument("AAPL", AssetClass.EQUITY), instrument("MSFT", AssetClass.EQUITY)
    t = datetime(2026, 3, 2, 9, 58, tzinfo=UTC)
    # 09:58 .. 10:07: closes 100 .. 109; open = close - 1, high = close + 2, low = close - 3 (see `candles`).
    candles(aapl, *[(t + timedelta(minutes=n), str(100 + n)) for n in range(10)])
    candles(msft, *[(t + timedelta(minutes=n), "400") for n in range(30)])

    with django_assert_num_queries(2):
        history = selectors.candles_for_timeframe(instrument=aapl, timeframe="5m")

    assert [(b.start.strftime("%H:%M"), b.open, b.high, b.low, b.close) for b in history.bars] == [
        ("09:55", D(99), D(103), D(97), D(101)),  # 09:58 and 09:59
        ("10:00", D(101), D(108), D(99), D(106)),  # 10:00 .. 10:04
        ("10:05", D(106), D(111), D(104), D(109)),  # 10:05 .. 10:07
    ]
    assert history.last_minute == t + timedelta(minutes=9)
    assert history.closes == []


def test_candles_for_a_timeframe_are_bounded_to_the_last_bars_before_the_newest_minute() -> None:
    aapl = instrument("AAPL", AssetClass.EQUITY)
    t = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    candles(aapl, *[(t + timedelta(minutes=n), str(100 + n)) for n in range(60)])

    history = selectors.candles_for_timeframe(instrument=aapl, timeframe="15m", limit=2)

    assert [b.start.strftime("%H:%M") for b in history.bars] == ["09:30", "09:45"]
    assert history.bars[0].open == D(129)  # the 09:30 minute's, not an older one's


def test_daily_bars_come_from_the_minutes_and_older_days_from_their_daily_close_only() -> None:
    aapl = instrument("AAPL", AssetClass.EQUITY)
    t = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)
    candles(aapl, *[(t + timedelta(minutes=n), str(100 + n)) for n in range(3)])  # 2 March 23:59, 3 March 00:00 and 00:01
    for day, close in ((1, "90"), (2, "95"), (3, "99")):  # 1 and 2 March before the candles; 3 March has them
        DailyClose.objects.create(instrument=aapl, date=date(2026, 3, day), close=D(close), source="csv")

    history = selectors.candles_for_timeframe(instrument=aapl, timeframe="1d")

    assert [(b.start.date(), b.open, b.close) for b in history.bars] == [
        (date(2026, 3, 2), D(99), D(100)),
        (date(2026, 3, 3), D(100), D(102)),
    ]
    assert history.closes == [(date(2026, 3, 1), D(90))]


def test_without_candles_a_timeframe_has_no_bars_and_1d_has_the_daily_closes() -> None:
    aapl = instrument("AAPL", AssetClass.EQUITY)
    DailyClose.objects.create(instrument=aapl, date=date(2026, 3, 1), close=D("90"), source="csv")

    assert selectors.candles_for_timeframe(instrument=aapl, timeframe="1h") == selectors.CandleHistory("1h", [], [], None)
    assert selectors.candles_for_timeframe(instrument=aapl, timeframe="1d").closes == [(date(2026, 3, 1), D(90))]
    with pytest.raises(ValueError, match="unknown timeframe '2m': use one of 1m, 5m, 15m, 1h, 1d"):
        selectors.candles_for_timeframe(instrument=aapl, timeframe="2m")
