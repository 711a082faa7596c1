"""Market data in the admin, driven through the test client as a superuser."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from marketdata.models import AssetClass, Instrument, PriceMark

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
MARKS = "/admin/marketdata/pricemark/"
pytestmark = pytest.mark.django_db


def instrument(symbol: str) -> Instrument:
    return Instrument.objects.create(symbol=symbol, name=symbol, asset_class=AssetClass.EQUITY, quote_currency="USD")


def test_staff_read_price_marks_filtered_by_instrument_but_cannot_write_them(admin_client: Client) -> None:
    aapl, msft = instrument("AAPL"), instrument("MSFT")
    for n, inst in enumerate([aapl, msft, aapl]):
        PriceMark.objects.create(instrument=inst, minute=T0 + timedelta(minutes=n), price=Decimal("200.5"))

    page = admin_client.get(MARKS, {"instrument__id__exact": aapl.pk})

    assert page.status_code == 200
    assert [(m.instrument.symbol, m.minute) for m in page.context["cl"].result_list] == [("AAPL", T0), ("AAPL", T0 + timedelta(minutes=2))]
    assert "200.5" in page.content.decode() and "200.5000000000" not in page.content.decode()
    mark = PriceMark.objects.first()
    assert mark is not None
    assert admin_client.get(f"{MARKS}add/").status_code == 403
    assert admin_client.get(f"{MARKS}{mark.pk}/delete/").status_code == 403
    assert admin_client.post(f"{MARKS}{mark.pk}/change/", {"price": "1"}).status_code == 403
    assert PriceMark.objects.count() == 3


def test_the_date_hierarchy_drills_down_by_minute(admin_client: Client) -> None:
    PriceMark.objects.create(instrument=instrument("AAPL"), minute=T0, price=Decimal("1"))
    page = admin_client.get(MARKS, {"minute__year": "2026", "minute__month": "1", "minute__day": "5"})
    assert page.status_code == 200 and len(page.context["cl"].result_list) == 1


def test_an_unknown_exchange_time_zone_is_refused_in_the_instrument_form(admin_client: Client) -> None:
    aapl = instrument("AAPL")
    data: dict[str, Any] = {
        "symbol": "AAPL",
        "name": "Apple",
        "asset_class": "equity",
        "quote_currency": "USD",
        "is_active": "on",
        "exchange_timezone": "America/Nowhere",
        "quote-TOTAL_FORMS": "0",
        "quote-INITIAL_FORMS": "0",
    }

    refused = admin_client.post(f"/admin/marketdata/instrument/{aapl.pk}/change/", data)
    assert refused.status_code == 200 and "exchange_timezone" in refused.context["adminform"].form.errors

    accepted = admin_client.post(f"/admin/marketdata/instrument/{aapl.pk}/change/", {**data, "exchange_timezone": "America/New_York"})
    assert accepted.status_code == 302
    aapl.refresh_from_db()
    assert aapl.exchange_timezone == "America/New_York"
