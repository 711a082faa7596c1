"""Market data in the admin, driven through the test client as a superuser."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from marketdata.models import AssetClass, Candle, Feed, Instrument, SymbolAlias

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
CANDLES = "/admin/marketdata/candle/"
FEEDS = "/admin/marketdata/feed/"
pytestmark = pytest.mark.django_db


def instrument(symbol: str) -> Instrument:
    return Instrument.objects.create(symbol=symbol, name=symbol, asset_class=AssetClass.EQUITY, quote_currency="USD")


def candle(inst: Instrument, start: datetime, close: str = "200.5", volume: str = "1234.5") -> Candle:
    return Candle.objects.create(
        instrument=inst, start=start, open=D("199.25"), high=D("201.75"), low=D("198"), close=D(close), volume=D(volume), trades=7
    )


def change_form(inst: Instrument, **fields: str) -> dict[str, Any]:
    """The instrument change form as the browser posts it, with both inlines' management forms."""
    return {
        "symbol": inst.symbol,
        "name": inst.name,
        "asset_class": inst.asset_class,
        "quote_currency": inst.quote_currency,
        "is_active": "on",
        "exchange_timezone": inst.exchange_timezone,
        "quote-TOTAL_FORMS": "0",
        "quote-INITIAL_FORMS": "0",
        "aliases-TOTAL_FORMS": "0",
        "aliases-INITIAL_FORMS": "0",
        **fields,
    }


def test_staff_read_candles_filtered_by_instrument_but_cannot_write_them(admin_client: Client) -> None:
    aapl, msft = instrument("AAPL"), instrument("MSFT")
    for n, inst in enumerate([aapl, msft, aapl]):
        candle(inst, T0 + timedelta(minutes=n))

    page = admin_client.get(CANDLES, {"instrument__id__exact": aapl.pk})

    assert page.status_code == 200
    assert [(c.instrument.symbol, c.start) for c in page.context["cl"].result_list] == [("AAPL", T0), ("AAPL", T0 + timedelta(minutes=2))]
    html = page.content.decode()
    for shown in ("199.25", "201.75", "198", "200.5", "1,234.5"):
        assert shown in html, shown
    assert "200.5000000000" not in html and "1234.5000000000" not in html
    row = Candle.objects.first()
    assert row is not None
    assert admin_client.get(f"{CANDLES}add/").status_code == 403
    assert admin_client.get(f"{CANDLES}{row.pk}/delete/").status_code == 403
    assert admin_client.post(f"{CANDLES}{row.pk}/change/", {"close": "1"}).status_code == 403
    assert Candle.objects.count() == 3
    assert Candle.objects.get(pk=row.pk).close == D("200.5")


def test_the_date_hierarchy_drills_down_by_minute_start(admin_client: Client) -> None:
    candle(instrument("AAPL"), T0)
    page = admin_client.get(CANDLES, {"start__year": "2026", "start__month": "1", "start__day": "5"})
    assert page.status_code == 200 and len(page.context["cl"].result_list) == 1


def test_an_unknown_exchange_time_zone_is_refused_in_the_instrument_form(admin_client: Client) -> None:
    aapl = instrument("AAPL")
    data = change_form(aapl, exchange_timezone="America/Nowhere")

    refused = admin_client.post(f"/admin/marketdata/instrument/{aapl.pk}/change/", data)
    assert refused.status_code == 200 and "exchange_timezone" in refused.context["adminform"].form.errors

    accepted = admin_client.post(f"/admin/marketdata/instrument/{aapl.pk}/change/", {**data, "exchange_timezone": "America/New_York"})
    assert accepted.status_code == 302
    aapl.refresh_from_db()
    assert aapl.exchange_timezone == "America/New_York"


def test_staff_add_an_alias_inline_on_the_instrument(admin_client: Client) -> None:
    btc = Instrument.objects.create(symbol="BTC-USD", name="Bitcoin", asset_class=AssetClass.CRYPTO, quote_currency="USD")
    url = f"/admin/marketdata/instrument/{btc.pk}/change/"
    assert admin_client.get(url).status_code == 200

    saved = admin_client.post(
        url,
        change_form(
            btc,
            **{
                "aliases-TOTAL_FORMS": "2",
                "aliases-0-alias": "BTCUSDT",
                "aliases-0-source": "binance",
                "aliases-0-instrument": str(btc.pk),
                "aliases-1-alias": "XBTUSD",
                "aliases-1-source": "",
                "aliases-1-instrument": str(btc.pk),
            },
        ),
    )

    assert saved.status_code == 302, saved.context and saved.context["inline_admin_formsets"][-1].formset.errors
    assert sorted(SymbolAlias.objects.values_list("alias", "source", "instrument__symbol")) == [
        ("BTCUSDT", "binance", "BTC-USD"),
        ("XBTUSD", "", "BTC-USD"),
    ]
    page = admin_client.get(url)
    assert "BTCUSDT" in page.content.decode()


def test_an_alias_a_source_already_uses_is_refused(admin_client: Client) -> None:
    btc, eth = instrument("BTC-USD"), instrument("ETH-USD")
    SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=btc)

    refused = admin_client.post(
        f"/admin/marketdata/instrument/{eth.pk}/change/",
        change_form(
            eth,
            **{
                "aliases-TOTAL_FORMS": "1",
                "aliases-0-alias": "BTCUSDT",
                "aliases-0-source": "binance",
                "aliases-0-instrument": str(eth.pk),
            },
        ),
    )

    assert refused.status_code == 200
    assert list(SymbolAlias.objects.values_list("instrument__symbol", flat=True)) == ["BTC-USD"]


def test_the_alias_admin_lists_and_searches_aliases(admin_client: Client) -> None:
    btc, eur = instrument("BTC-USD"), instrument("EUR/USD")
    SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=btc)
    SymbolAlias.objects.create(alias="EURUSD", source="", instrument=eur)

    page = admin_client.get("/admin/marketdata/symbolalias/", {"q": "EUR"})

    assert page.status_code == 200
    assert [a.alias for a in page.context["cl"].result_list] == ["EURUSD"]
    assert admin_client.get("/admin/marketdata/symbolalias/add/").status_code == 200


def feed_form(**fields: Any) -> dict[str, Any]:
    data = {"name": "btc", "kind": "binance", "options": "{}", "symbols": "BTCUSDT ETHUSDT", "enabled": "on", **fields}
    if not isinstance(data["options"], str):
        data["options"] = json.dumps(data["options"])
    return data


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kind": "synthetic", "options": {"tick_rate": 5}, "symbols": ""},
            "'tick_rate' is not an option of a synthetic feed; its options are ticks_per_second, volatility, seed",
        ),
        ({"kind": "synthetic", "options": {"seed": True}}, "'seed' must be int, not True"),
        ({"symbols": ""}, "a binance feed needs symbols, as the exchange spells them"),
        ({"kind": "replay", "options": {"paths": ["a.csv"], "speed": "fast"}}, "speed must be a number above 0 or \"max\", not 'fast'"),
        ({"kind": "replay", "options": {"speed": 2}}, "a replay feed needs 'paths'"),
    ],
)
def test_a_feed_with_a_bad_option_is_refused_with_what_is_wrong(admin_client: Client, fields: dict[str, Any], message: str) -> None:
    refused = admin_client.post(f"{FEEDS}add/", feed_form(**fields))

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["options"] == [message]
    assert message.replace('"', "&quot;").replace("'", "&#x27;") in refused.content.decode()
    assert not Feed.objects.filter(name="btc").exists()


def test_a_feed_with_good_options_is_saved(admin_client: Client) -> None:
    saved = admin_client.post(f"{FEEDS}add/", feed_form(options={"depth_limit": 100, "streams": ["trade", "depth"]}))

    assert saved.status_code == 302
    feed = Feed.objects.get(name="btc")
    assert (feed.kind, feed.options, feed.symbol_list, feed.enabled) == (
        "binance",
        {"depth_limit": 100, "streams": ["trade", "depth"]},
        ["BTCUSDT", "ETHUSDT"],
        True,
    )


def test_a_feed_is_refused_when_an_edit_makes_its_options_wrong(admin_client: Client) -> None:
    feed = Feed.objects.create(name="walk", kind="synthetic", options={"seed": 1})

    refused = admin_client.post(f"{FEEDS}{feed.pk}/change/", feed_form(name="walk", kind="coinbase", symbols="", options={"seed": 1}))

    assert refused.status_code == 200 and "options" in refused.context["adminform"].form.errors
    feed.refresh_from_db()
    assert feed.kind == "synthetic"


def test_a_feed_with_the_options_box_left_empty_is_saved_without_options(admin_client: Client) -> None:
    saved = admin_client.post(f"{FEEDS}add/", feed_form(name="walk", kind="synthetic", symbols="", options=""))

    assert saved.status_code == 302
    assert Feed.objects.get(name="walk").options == {}
