from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from marketdata import selectors
from marketdata.models import AssetClass, Instrument, PriceMark

D = Decimal
NEW_YORK = ZoneInfo("America/New_York")
# Monday 12 January 2026, 10:00 in New York.
NOW = datetime(2026, 1, 12, 10, 0, tzinfo=NEW_YORK).astimezone(UTC)
pytestmark = pytest.mark.django_db


def instrument(symbol: str, asset_class: str, timezone: str = "UTC") -> Instrument:
    return Instrument.objects.create(symbol=symbol, name=symbol, asset_class=asset_class, quote_currency="USD", exchange_timezone=timezone)


def marks(inst: Instrument, *rows: tuple[datetime, str]) -> None:
    PriceMark.objects.bulk_create(PriceMark(instrument=inst, minute=minute, price=D(price)) for minute, price in rows)


def test_references_load_from_stored_marks_in_two_queries(django_assert_num_queries: Any) -> None:
    aapl = instrument("AAPL", AssetClass.EQUITY, "America/New_York")
    btc = instrument("BTC-USD", AssetClass.CRYPTO)
    eur = instrument("EUR/USD", AssetClass.FX, "America/New_York")  # ignored: FX never closes
    thursday, friday = (datetime(2026, 1, day, 15, 59, tzinfo=NEW_YORK).astimezone(UTC) for day in (8, 9))
    # Friday's close is three days back, far before the always-open window.
    marks(aapl, (thursday, "198"), (friday, "200"), (NOW - timedelta(minutes=5), "203"))
    marks(btc, (NOW - timedelta(days=3), "50000"), (NOW - timedelta(hours=24, minutes=2), "60000"), (NOW - timedelta(hours=23), "61000"))
    marks(eur, (NOW - timedelta(hours=30), "1.08"), (NOW - timedelta(hours=24), "1.09"), (NOW - timedelta(hours=1), "1.10"))

    with django_assert_num_queries(2):
        refs = selectors.references_load(now=NOW)

    assert refs.reference("AAPL", NOW) == D("200")
    assert refs.reference("BTC-USD", NOW) == D("60000")
    assert refs.reference("EUR/USD", NOW) == D("1.09")
    assert str(refs.reference("AAPL", NOW)) == "200"  # not 200.0000000000 from the ten stored places


def test_without_marks_there_are_no_references() -> None:
    instrument("AAPL", AssetClass.EQUITY)
    assert selectors.references_load(now=NOW).reference("AAPL", NOW) is None
