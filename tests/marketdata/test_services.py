from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from marketdata import services
from marketdata.events import Candle, PriceUpdate
from marketdata.models import AssetClass, Instrument, Quote
from marketdata.models import Candle as CandleRow

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture
def btc() -> Instrument:
    return Instrument.objects.create(symbol="BTC-USD", name="Bitcoin", asset_class=AssetClass.CRYPTO, quote_currency="USD")


def update(price: str, reference: str | None, seq: int = 1) -> PriceUpdate:
    return PriceUpdate("BTC-USD", seq, "e1", D(price), None, None, T0, "test", 1, None if reference is None else D(reference))


def candle(symbol: str, start: datetime, o: str, h: str, lo: str, c: str, volume: str = "0", trades: int = 0) -> Candle:
    return Candle(symbol, start, D(o), D(h), D(lo), D(c), D(volume), trades)


def stored() -> list[tuple[object, ...]]:
    return list(CandleRow.objects.values_list("instrument__symbol", "start", "open", "high", "low", "close", "volume", "trades"))


def test_the_quote_upsert_stores_the_reference_price_and_clears_it_when_gone(btc: Instrument) -> None:
    services.quotes_store([update("61000", "60000.5")])
    assert Quote.objects.get(instrument=btc).reference_price == D("60000.5")

    services.quotes_store([update("61001", None, seq=2)])
    assert Quote.objects.get(instrument=btc).reference_price is None


def test_candles_are_upserted_per_instrument_and_minute_and_unknown_symbols_skipped(btc: Instrument) -> None:
    one = T0 + timedelta(minutes=1)
    written = services.candles_store(
        candles=[
            candle("BTC-USD", T0, "1", "1.5", "0.5", "1", "2", 3),
            candle("NOPE", T0, "2", "2", "2", "2"),
            candle("BTC-USD", one, "3", "3", "3", "3", "0.25", 1),
        ]
    )
    # The minute again, now complete: every field is replaced.
    again = services.candles_store(candles=[candle("BTC-USD", T0, "1", "4.5", "0.25", "4", "7.5", 9)])

    assert (written, again) == (2, 1)
    assert stored() == [
        ("BTC-USD", T0, D("1"), D("4.5"), D("0.25"), D("4"), D("7.5"), 9),
        ("BTC-USD", one, D("3"), D("3"), D("3"), D("3"), D("0.25"), 1),
    ]


def test_the_last_candle_of_a_minute_in_one_batch_wins(btc: Instrument) -> None:
    written = services.candles_store(candles=[candle("BTC-USD", T0, "1", "1", "1", "1"), candle("BTC-USD", T0, "2", "2", "2", "2", "1", 1)])
    assert written == 1
    assert stored() == [("BTC-USD", T0, D("2"), D("2"), D("2"), D("2"), D("1"), 1)]


def test_an_empty_batch_writes_nothing(btc: Instrument) -> None:
    assert services.candles_store(candles=[]) == 0
    assert not CandleRow.objects.exists()


def test_pruning_deletes_only_candles_before_the_cutoff(btc: Instrument) -> None:
    services.candles_store(candles=[candle("BTC-USD", T0 + timedelta(minutes=n), str(n), str(n), str(n), str(n)) for n in range(5)])

    assert services.candles_prune(before=T0 + timedelta(minutes=2)) == 2
    assert list(CandleRow.objects.values_list("close", flat=True)) == [D(2), D(3), D(4)]


@pytest.mark.parametrize(
    ("symbol", "currency"),
    [
        ("BTCUSDT", "USD"),  # a stablecoin is the dollar it tracks (USDT, not USD + T)
        ("ETHUSDC", "USD"),
        ("BTC-EUR", "EUR"),
        ("btc-eur", "EUR"),
        ("EURUSD", "USD"),
        ("EUR/GBP", "GBP"),
        ("USDJPY", "JPY"),
        ("AAPL", None),
        ("ETHBTC", None),
    ],
)
def test_the_quote_currency_is_guessed_from_the_symbols_ending(symbol: str, currency: str | None) -> None:
    assert services.quote_currency_guess(symbol) == currency


def test_instruments_are_created_with_the_asset_class_of_their_source_and_the_currency_of_their_symbol() -> None:
    created = services.instruments_create(symbols={"BTCUSDT": "binance", "BTC-EUR": "coinbase", "EURUSD": "histdata", "AAPL": "csv"})

    assert sorted(i.symbol for i in created) == ["AAPL", "BTC-EUR", "BTCUSDT", "EURUSD"]
    rows = {i.symbol: (i.asset_class, i.quote_currency, i.is_active) for i in Instrument.objects.all()}
    assert rows == {
        "BTCUSDT": (AssetClass.CRYPTO, "USD", True),
        "BTC-EUR": (AssetClass.CRYPTO, "EUR", True),
        "EURUSD": (AssetClass.FX, "USD", True),
        "AAPL": (AssetClass.EQUITY, "USD", True),  # the symbol says nothing: USD
    }
    assert Instrument.objects.get(symbol="BTCUSDT").name == "BTCUSDT (from binance)"


def test_creating_instruments_is_idempotent_and_leaves_existing_ones_alone(btc: Instrument) -> None:
    btc.name = "Bitcoin, renamed by staff"
    btc.save()
    assert [i.symbol for i in services.instruments_create(symbols={"DOGEUSDT": "binance"})] == ["DOGEUSDT"]

    again = services.instruments_create(symbols={"DOGEUSDT": "binance", "BTC-USD": "coinbase"})

    assert again == []
    assert Instrument.objects.count() == 2
    btc.refresh_from_db()
    assert (btc.name, btc.asset_class) == ("Bitcoin, renamed by staff", AssetClass.CRYPTO)
