"""The instrument page, /market/<symbol>/: signed-in users only, any instrument symbol (slashes and carets too), 404 otherwise;
and its chart's history, /market/<symbol>/candles/?tf=."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from marketdata.models import AssetClass, Candle, DailyClose, Instrument, SymbolAlias

pytestmark = pytest.mark.django_db
D = Decimal


def config_of(html: str) -> dict[str, Any]:
    """The page's #market-config (json_script), which instrument.js boots from."""
    start = html.index('<script id="market-config" type="application/json">') + len('<script id="market-config" type="application/json">')
    return json.loads(html[start : html.index("</script>", start)])


def test_anonymous_visitors_are_sent_to_log_in(client: Client, instruments: dict[str, Instrument]) -> None:
    response = client.get("/market/BTC-USD/")

    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/market/BTC-USD/")


def test_the_page_names_the_instrument_and_configures_the_market_socket(
    client: Client, alice: Any, instruments: dict[str, Instrument]
) -> None:
    client.force_login(alice)

    response = client.get("/market/BTC-USD/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>BTC-USD · Bitcoin · Livefolio</title>" in html
    assert 'data-testid="instrument-symbol">BTC-USD</span>' in html
    assert 'data-class="crypto">Crypto</span>' in html
    assert "Bitcoin · prices in USD" in html
    assert 'id="connection-status"' in html and "js/instrument.js" in html
    config = config_of(html)
    assert config == {
        "url": "/ws/v1/market",
        "symbol": "BTC-USD",
        "name": "Bitcoin",
        "assetClass": "crypto",
        "assetClassLabel": "Crypto",
        "currency": "USD",
        "alwaysOpen": True,
        "depth": 10,
        "throttleMs": 250,
        # The stored quote, spelled as the market channels spell decimals, so the page opens on a price.
        "quote": {"last": "60000", "bid": None, "ask": None, "ref": None, "ts": 1767623400000},
        "session": None,  # the live market
    }
    assert 'data-testid="session-badge"' not in html


def test_with_a_session_the_page_follows_that_replay_session_badged_and_without_the_live_quote(
    client: Client, alice: Any, instruments: dict[str, Instrument]
) -> None:
    client.force_login(alice)

    response = client.get("/market/BTC-USD/?session=day1")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="session-badge"' in html and ">Replay session day1</span>" in html
    assert '<a href="/market/BTC-USD/" data-testid="live-link">' in html
    assert "<title>BTC-USD · replay day1 · Bitcoin · Livefolio</title>" in html
    config = config_of(html)
    # instrument.js names the session's channels from this; the stored quote is the live market's: not shown.
    assert (config["session"], config["quote"], config["symbol"]) == ("day1", None, "BTC-USD")
    assert 'data-login-url="/accounts/login/?next=/market/BTC-USD/%3Fsession%3Dday1"' in html


@pytest.mark.parametrize("session", ["", "Day1", "a b", "x" * 33, "../live"])
def test_a_malformed_session_name_is_a_bad_request(client: Client, alice: Any, instruments: dict[str, Instrument], session: str) -> None:
    client.force_login(alice)

    response = client.get("/market/BTC-USD/", {"session": session})

    assert response.status_code == 400
    assert "is not a session name" in response.content.decode()


def test_a_market_that_closes_measures_the_day_against_the_previous_close(
    client: Client, alice: Any, instruments: dict[str, Instrument]
) -> None:
    client.force_login(alice)

    html = client.get("/market/AAPL/").content.decode()

    assert "vs previous close" in html and config_of(html)["alwaysOpen"] is False


@pytest.mark.parametrize(
    ("symbol", "path"),
    [
        ("EUR/USD", "/market/EUR/USD/"),  # the slash stays a slash: <path:symbol>
        ("EUR/USD", "/market/EUR%2FUSD/"),  # or arrives encoded
        ("^GSPC", "/market/%5EGSPC/"),  # as reverse() and the dashboard's encodeURIComponent write it
        ("^GSPC", "/market/^GSPC/"),  # as typed
        ("BRK.B", "/market/BRK.B/"),
    ],
)
def test_symbols_with_slashes_and_carets_work(
    client: Client, alice: Any, instruments: dict[str, Instrument], symbol: str, path: str
) -> None:
    Instrument.objects.get_or_create(symbol="^GSPC", defaults={"name": "S&P 500", "asset_class": AssetClass.INDEX, "quote_currency": "USD"})
    Instrument.objects.create(symbol="BRK.B", name="Berkshire Hathaway B", asset_class=AssetClass.EQUITY, quote_currency="USD")
    client.force_login(alice)

    response = client.get(path)

    assert response.status_code == 200
    config = config_of(response.content.decode())
    assert config["symbol"] == symbol
    assert config["quote"] is None or symbol == "EUR/USD"  # only EUR/USD has a stored quote here


def test_reverse_gives_the_path_the_page_answers() -> None:
    assert reverse("marketdata:instrument", args=["BTC-USD"]) == "/market/BTC-USD/"
    assert reverse("marketdata:instrument", args=["EUR/USD"]) == "/market/EUR/USD/"
    assert reverse("marketdata:instrument", args=["^GSPC"]) == "/market/%5EGSPC/"


@pytest.mark.parametrize("path", ["/market/NOPE/", "/market/btc-usd/", "/market/BTC-USD/extra/", "/market/BTCUSDT/"])
def test_an_unknown_instrument_is_a_404(client: Client, alice: Any, instruments: dict[str, Instrument], path: str) -> None:
    # Symbols match exactly: not case-insensitively, and not through a source's alias (BTCUSDT).
    SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=instruments["BTC-USD"])
    client.force_login(alice)

    assert client.get(path).status_code == 404


def test_an_inactive_instrument_still_has_its_page(client: Client, alice: Any, instruments: dict[str, Instrument]) -> None:
    Instrument.objects.filter(symbol="MSFT").update(is_active=False)
    client.force_login(alice)

    response = client.get("/market/MSFT/")

    assert response.status_code == 200
    assert ">inactive</span>" in response.content.decode()


# ---- GET /market/<symbol>/candles/?tf=: the chart's stored history


def test_anonymous_visitors_get_no_candles_but_the_log_in_page(client: Client, instruments: dict[str, Instrument]) -> None:
    response = client.get("/market/BTC-USD/candles/?tf=5m")

    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/market/BTC-USD/candles/%3Ftf%3D5m")


def test_candles_come_in_the_asked_timeframe_as_decimal_strings_with_the_newest_minute(
    client: Client, alice: Any, instruments: dict[str, Instrument]
) -> None:
    start = datetime(2026, 3, 2, 9, 58, tzinfo=UTC)
    Candle.objects.bulk_create(
        Candle(instrument=instruments["EUR/USD"], start=start + timedelta(minutes=n), open=D("1.1"), high=D("1.12") + n, low=D("1.09"),
               close=D("1.105") + n, volume=D("2.5"), trades=2)
        for n in range(4)
    )  # fmt: skip
    client.force_login(alice)

    response = client.get(reverse("marketdata:instrument_candles", args=["EUR/USD"]), {"tf": "5m"})

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("symbol", "tf", "interval_ms", "max_bars", "closes")} == {
        "symbol": "EUR/USD", "tf": "5m", "interval_ms": 300_000, "max_bars": 500, "closes": []
    }  # fmt: skip
    assert body["last_minute"] == int((start + timedelta(minutes=3)).timestamp() * 1000)
    assert body["bars"] == [
        {"start": int(datetime(2026, 3, 2, 9, 55, tzinfo=UTC).timestamp() * 1000), "open": "1.1", "high": "2.12", "low": "1.09",
         "close": "2.105", "volume": "5", "trades": 4, "closed": True},
        {"start": int(datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp() * 1000), "open": "1.1", "high": "4.12", "low": "1.09",
         "close": "4.105", "volume": "5", "trades": 4, "closed": True},
    ]  # fmt: skip


def test_the_daily_timeframe_carries_older_days_as_closes_only(client: Client, alice: Any, instruments: dict[str, Instrument]) -> None:
    DailyClose.objects.create(instrument=instruments["AAPL"], date=date(2026, 3, 1), close=D("201.5"), source="csv")
    client.force_login(alice)

    body = client.get("/market/AAPL/candles/?tf=1d").json()

    assert (body["bars"], body["last_minute"]) == ([], None)
    assert body["closes"] == [{"start": int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000), "close": "201.5"}]


def test_an_unknown_timeframe_is_a_400_and_an_unknown_symbol_a_404_saying_which(
    client: Client, alice: Any, instruments: dict[str, Instrument]
) -> None:
    client.force_login(alice)

    bad_tf = client.get("/market/AAPL/candles/?tf=2m")
    unknown = client.get("/market/NOPE/candles/?tf=5m")

    assert (bad_tf.status_code, bad_tf.json()) == (400, {"error": "Unknown timeframe '2m': use one of 1m, 5m, 15m, 1h, 1d."})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Unknown symbol 'NOPE'."})
    assert client.post("/market/AAPL/candles/").status_code == 405
