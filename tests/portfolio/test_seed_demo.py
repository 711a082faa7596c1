import re
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.http import HttpRequest
from django.test import Client
from django.utils import timezone

from marketdata import selectors
from marketdata.models import AssetClass, Candle, DailyClose, Feed, Instrument, Quote, SymbolAlias
from portfolio.models import DailyValue, Holding, Portfolio, Transaction
from portfolio.performance import performance_for

D = Decimal
pytestmark = pytest.mark.django_db


CREDENTIALS = re.compile(r"Log in as (?P<user>\S+) / (?P<password>\S+); admin as (?P<admin>\S+) / (?P<admin_password>\S+)$")


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue().strip()


def counts() -> dict[str, int]:
    return {
        "users": get_user_model().objects.count(),
        "instruments": Instrument.objects.count(),
        "quotes": Quote.objects.count(),
        "portfolios": Portfolio.objects.count(),
        "transactions": Transaction.objects.count(),
        "holdings": Holding.objects.count(),
        "candles": Candle.objects.count(),
        "aliases": SymbolAlias.objects.count(),
        "feeds": Feed.objects.count(),
        "daily closes": DailyClose.objects.count(),
    }


def demo_holdings() -> dict[str, Decimal]:
    holdings = Holding.objects.filter(portfolio__owner__username=settings.DEMO_USERNAME, portfolio__name="Demo portfolio")
    return {h.instrument.symbol: h.quantity for h in holdings.select_related("instrument")}


def test_seeding_twice_creates_everything_once() -> None:
    first = seed()
    after_first = counts()
    second = seed()

    assert after_first == {
        "users": 2,
        "instruments": 12,
        "quotes": 12,
        "portfolios": 2,
        "transactions": 22,
        "holdings": 10,
        "candles": 12,
        "aliases": 6,
        "feeds": 1,
        "daily closes": 12 * 215,
    }
    assert counts() == after_first
    assert first.startswith("seed_demo: 12 new instruments, 2580 new daily closes, 22 new transactions.")
    assert second.startswith("seed_demo: 0 new instruments, 0 new daily closes, 0 new transactions.")


def test_the_demo_has_a_daily_history_so_every_range_and_the_past_fx_work_from_the_start() -> None:
    seed()
    yesterday = timezone.now().date() - timedelta(days=1)
    for quote in Quote.objects.select_related("instrument"):
        last = DailyClose.objects.filter(instrument=quote.instrument).latest("date")
        assert (last.date, last.close) == (yesterday, quote.reference_price), quote.instrument.symbol
    for portfolio in Portfolio.objects.filter(owner__username=settings.DEMO_USERNAME):
        days = DailyValue.objects.filter(portfolio=portfolio)
        first_entry = portfolio.transactions.earliest("executed_at").executed_at.date()
        assert days.count() == (yesterday - first_entry).days + 1, portfolio.name
        assert not days.filter(complete=False).exists(), portfolio.name
        result = performance_for(portfolio=portfolio, range_name="1Y")
        assert result["twr"] is not None and result["mwr"] is not None


def test_seed_prints_credentials_that_log_in(client: Client) -> None:
    match = CREDENTIALS.search(seed())
    assert match, "credentials not printed"
    assert (match["user"], match["admin"]) == (settings.DEMO_USERNAME, settings.ADMIN_USERNAME)

    # Django's authenticate() goes through axes' backend (config/lockout.py), which needs a request.
    assert client.login(request=HttpRequest(), username=match["user"], password=match["password"])
    assert client.get("/").status_code == 200
    assert Client().login(request=HttpRequest(), username=match["admin"], password=match["admin_password"])


def test_reseeding_restores_the_printed_demo_password(client: Client) -> None:
    seed()
    demo = get_user_model().objects.get(username=settings.DEMO_USERNAME)
    demo.set_password("changed-by-someone")
    demo.save()

    match = CREDENTIALS.search(seed())

    assert match
    assert client.login(request=HttpRequest(), username=match["user"], password=match["password"])


def test_seed_makes_the_admin_user_staff_and_superuser_and_the_demo_user_neither() -> None:
    seed()
    users = {u.username: (u.is_staff, u.is_superuser) for u in get_user_model().objects.all()}
    assert users == {settings.ADMIN_USERNAME: (True, True), settings.DEMO_USERNAME: (False, False)}


def test_seed_instruments_cover_crypto_equity_etf_and_fx_with_a_starting_price() -> None:
    seed()
    classes = set(Instrument.objects.values_list("asset_class", flat=True))
    assert {AssetClass.CRYPTO, AssetClass.EQUITY, AssetClass.ETF, AssetClass.FX} <= classes
    assert not Instrument.objects.filter(quote__isnull=True).exists()
    assert set(Quote.objects.values_list("source", flat=True)) == {"seed"}


def test_demo_holdings_match_the_ledger() -> None:
    seed()
    assert demo_holdings() == {
        "AAPL": D(30),  # 40 bought, 10 sold
        "BTC-USD": D(1),  # 0.75 + 0.25
        "ETH-USD": D(6),
        "MSFT": D(15),
        "NVDA": D(30),  # 15 bought, split 2-for-1
        "SOL-USD": D(40),
        "SPY": D(25),
    }
    aapl = Holding.objects.get(portfolio__name="Demo portfolio", instrument__symbol="AAPL")
    assert aapl.average_cost == D("198.40")  # a sell keeps the average cost; fees are not cost
    demo = Portfolio.objects.get(name="Demo portfolio")
    # 125000 deposited − 1000 withdrawn; realised (232.75 − 198.40) × 10; 9 trade fees (28.50) + a 15.00 fee entry.
    assert (demo.net_deposits, demo.realised_pnl, demo.fees) == (D(124000), D("343.50"), D("43.50"))
    assert demo.cash_balances.get().amount == D("4433.90")


def test_the_euro_portfolio_holds_us_stocks_bitcoin_and_cash_in_two_currencies() -> None:
    seed()
    euro = Portfolio.objects.get(name="Euro portfolio")
    assert euro.base_currency == "EUR"
    holdings = {h.instrument.symbol: (h.quantity, h.cost, h.cost_base) for h in euro.holdings.select_related("instrument")}
    # Cost in EUR at each buy's rate: 20 × 205.10 × 0.9210 and 0.05 × 58300 × 0.9015.
    assert holdings == {
        "AAPL": (D(20), D("4102"), D("3777.942")),
        "BTC-USD": (D("0.05"), D("2915"), D("2627.8725")),
        "SAP": (D(25), D("5710"), D("5710")),
    }
    # EUR: 20000 − 5710 − 2 + 18.20; USD: 8000 − 4103 − 2916 + 5 − 0.75.
    assert dict(euro.cash_balances.values_list("currency", "amount")) == {"EUR": D("14306.20"), "USD": D("985.25")}


def test_every_instrument_has_a_day_change_reference() -> None:
    seed()
    assert not Quote.objects.filter(reference_price__isnull=True).exists()
    assert set(Candle.objects.values_list("instrument__symbol", flat=True)) == set(Instrument.objects.values_list("symbol", flat=True))


def test_the_seeded_candles_hold_the_reference_the_worker_will_load() -> None:
    seed()
    now = timezone.now()
    references = selectors.references_load(now=now)
    for quote in Quote.objects.select_related("instrument"):
        symbol = quote.instrument.symbol
        candle = Candle.objects.get(instrument=quote.instrument)
        # A flat candle (one price all minute, nothing traded) at the quote's reference price.
        assert (candle.open, candle.high, candle.low, candle.close) == (quote.reference_price,) * 4, symbol
        assert (candle.volume, candle.trades) == (0, 0), symbol
        # Loaded back the way the worker starts, it is the day-change reference right now.
        assert references.reference(symbol, now) == quote.reference_price, symbol


def test_seed_aliases_map_exchange_and_tick_file_spellings_to_the_demo_instruments() -> None:
    seed()
    symbols = selectors.symbol_map_load()
    assert symbols.resolve("BTCUSDT", source="binance") == "BTC-USD"
    assert symbols.resolve("SOLUSDT", source="binance") == "SOL-USD"
    assert symbols.resolve("BTCUSDT", source="coinbase") is None  # Binance's spelling only
    assert symbols.resolve("EURUSD", source="histdata") == "EUR/USD"
    assert symbols.resolve("USDJPY", source="csv") == "USD/JPY"


def test_seed_keeps_aliases_staff_have_repointed() -> None:
    seed()
    SymbolAlias.objects.filter(alias="EURUSD").update(instrument=Instrument.objects.get(symbol="GBP/USD"))
    seed()
    assert SymbolAlias.objects.get(alias="EURUSD").instrument.symbol == "GBP/USD"
    assert SymbolAlias.objects.count() == 6


def test_seed_makes_the_synthetic_feed_run_feeds_runs_and_keeps_staffs_changes() -> None:
    Feed.objects.all().delete()  # a flushed database: the migration's feed is gone
    seed()
    assert list(Feed.objects.values_list("name", "kind", "enabled")) == [("synthetic", "synthetic", True)]
    Feed.objects.filter(name="synthetic").update(options={"ticks_per_second": 2}, enabled=False)
    seed()
    assert list(Feed.objects.values_list("name", "options", "enabled")) == [("synthetic", {"ticks_per_second": 2}, False)]


def test_reseeding_keeps_prices_the_feed_has_moved() -> None:
    seed()
    Quote.objects.filter(instrument__symbol="AAPL").update(price=D("300"), source="synthetic")
    seed()
    assert Quote.objects.values_list("price", "source").get(instrument__symbol="AAPL") == (D("300"), "synthetic")


def test_seed_leaves_other_users_portfolios_alone(alice: Any, alice_portfolio: Portfolio) -> None:
    before = list(alice_portfolio.transactions.values_list("id", flat=True))
    seed()
    assert list(alice_portfolio.transactions.values_list("id", flat=True)) == before
    assert Portfolio.objects.filter(owner=alice).count() == 1
