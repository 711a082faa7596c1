from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from marketdata import services
from marketdata.events import PriceUpdate
from marketdata.models import AssetClass, Instrument, PriceMark, Quote
from marketdata.references import Mark

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture
def btc() -> Instrument:
    return Instrument.objects.create(symbol="BTC-USD", name="Bitcoin", asset_class=AssetClass.CRYPTO, quote_currency="USD")


def update(price: str, reference: str | None, seq: int = 1) -> PriceUpdate:
    return PriceUpdate("BTC-USD", seq, "e1", D(price), None, None, T0, "test", 1, None if reference is None else D(reference))


def test_the_quote_upsert_stores_the_reference_price_and_clears_it_when_gone(btc: Instrument) -> None:
    services.quotes_store([update("61000", "60000.5")])
    assert Quote.objects.get(instrument=btc).reference_price == D("60000.5")

    services.quotes_store([update("61001", None, seq=2)])
    assert Quote.objects.get(instrument=btc).reference_price is None


def test_marks_are_upserted_per_instrument_and_minute_and_unknown_symbols_skipped(btc: Instrument) -> None:
    written = services.price_marks_store(
        marks=[Mark("BTC-USD", T0, D("1")), Mark("NOPE", T0, D("2")), Mark("BTC-USD", T0 + timedelta(minutes=1), D("3"))]
    )
    again = services.price_marks_store(marks=[Mark("BTC-USD", T0, D("4"))])

    assert (written, again) == (2, 1)
    assert list(PriceMark.objects.values_list("instrument__symbol", "minute", "price")) == [
        ("BTC-USD", T0, D("4")),
        ("BTC-USD", T0 + timedelta(minutes=1), D("3")),
    ]


def test_an_empty_batch_writes_nothing(btc: Instrument) -> None:
    assert services.price_marks_store(marks=[]) == 0
    assert not PriceMark.objects.exists()


def test_pruning_deletes_only_marks_before_the_cutoff(btc: Instrument) -> None:
    services.price_marks_store(marks=[Mark("BTC-USD", T0 + timedelta(minutes=n), D(n)) for n in range(5)])

    assert services.price_marks_prune(before=T0 + timedelta(minutes=2)) == 2
    assert list(PriceMark.objects.values_list("price", flat=True)) == [D(2), D(3), D(4)]
