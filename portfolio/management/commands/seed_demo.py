"""Create demo data, idempotently: users, instruments with prices and day-change references, two portfolios with ledgers."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from marketdata.models import AssetClass, Candle, DailyClose, Feed, FeedKind, Instrument, Quote, SymbolAlias
from portfolio import services
from portfolio.models import Portfolio
from portfolio.performance import daily_values_rebuild

D = Decimal
NEW_YORK, FRANKFURT = "America/New_York", "Europe/Berlin"
# symbol, name, asset class, quote currency, exchange time zone, starting price, move since the previous close (%)
INSTRUMENTS = [
    ("BTC-USD", "Bitcoin", AssetClass.CRYPTO, "USD", "UTC", D("87350.00"), D("-1.8")),
    ("ETH-USD", "Ether", AssetClass.CRYPTO, "USD", "UTC", D("2975.00"), D("-2.6")),
    ("SOL-USD", "Solana", AssetClass.CRYPTO, "USD", "UTC", D("128.40"), D("3.1")),
    ("AAPL", "Apple Inc.", AssetClass.EQUITY, "USD", NEW_YORK, D("271.50"), D("0.9")),
    ("MSFT", "Microsoft Corp.", AssetClass.EQUITY, "USD", NEW_YORK, D("478.20"), D("-0.4")),
    ("NVDA", "NVIDIA Corp.", AssetClass.EQUITY, "USD", NEW_YORK, D("181.30"), D("1.7")),
    ("SAP", "SAP SE", AssetClass.EQUITY, "EUR", FRANKFURT, D("238.50"), D("-0.6")),
    ("SPY", "SPDR S&P 500 ETF Trust", AssetClass.ETF, "USD", NEW_YORK, D("668.70"), D("0.3")),
    ("QQQ", "Invesco QQQ Trust", AssetClass.ETF, "USD", NEW_YORK, D("605.10"), D("0.5")),
    ("EUR/USD", "Euro / US dollar", AssetClass.FX, "USD", "UTC", D("1.15420"), D("0.2")),
    ("GBP/USD", "Pound sterling / US dollar", AssetClass.FX, "USD", "UTC", D("1.31180"), D("-0.1")),
    ("USD/JPY", "US dollar / Japanese yen", AssetClass.FX, "JPY", "UTC", D("156.420"), D("0.1")),
]
# How exchanges and tick files spell the demo instruments (alias, source or "" for any, symbol).
ALIASES = [
    ("BTCUSDT", "binance", "BTC-USD"),
    ("ETHUSDT", "binance", "ETH-USD"),
    ("SOLUSDT", "binance", "SOL-USD"),
    ("EURUSD", "", "EUR/USD"),
    ("GBPUSD", "", "GBP/USD"),
    ("USDJPY", "", "USD/JPY"),
]
# days ago, kind, symbol, quantity, price, fee, currency, fx rate (portfolio: name, base currency)
PORTFOLIOS: dict[tuple[str, str], list[tuple[Any, ...]]] = {
    ("Demo portfolio", "USD"): [
        (210, "deposit", "", D("125000"), D(1), D(0), "USD", None),
        (200, "buy", "AAPL", D("40"), D("198.40"), D("1.00"), "USD", None),
        (180, "buy", "MSFT", D("15"), D("410.10"), D("1.00"), "USD", None),
        (150, "buy", "BTC-USD", D("0.75"), D("61250.00"), D("12.50"), "USD", None),
        (120, "buy", "ETH-USD", D("6"), D("2480.00"), D("4.00"), "USD", None),
        (100, "dividend", "AAPL", D("40"), D("0.25"), D(0), "USD", None),
        (90, "buy", "SPY", D("25"), D("560.30"), D("1.00"), "USD", None),
        (60, "sell", "AAPL", D("10"), D("232.75"), D("1.00"), "USD", None),
        (45, "buy", "NVDA", D("15"), D("257.80"), D("1.00"), "USD", None),
        (40, "split", "NVDA", D("2"), D(1), D(0), "USD", None),
        (30, "interest", "", D("12.40"), D(1), D(0), "USD", None),
        (25, "fee", "", D("15.00"), D(1), D(0), "USD", None),
        (20, "buy", "BTC-USD", D("0.25"), D("94100.00"), D("5.00"), "USD", None),
        (10, "withdrawal", "", D("1000"), D(1), D(0), "USD", None),
        (7, "buy", "SOL-USD", D("40"), D("139.20"), D("2.00"), "USD", None),
    ],
    ("Euro portfolio", "EUR"): [
        (150, "deposit", "", D("20000"), D(1), D(0), "EUR", None),
        (140, "deposit", "", D("8000"), D(1), D(0), "USD", D("0.9200")),
        (130, "buy", "AAPL", D("20"), D("205.10"), D("1.00"), "USD", D("0.9210")),
        (110, "buy", "SAP", D("25"), D("228.40"), D("2.00"), "EUR", None),
        (90, "buy", "BTC-USD", D("0.05"), D("58300.00"), D("1.00"), "USD", D("0.9015")),
        (60, "dividend", "AAPL", D("20"), D("0.25"), D("0.75"), "USD", D("0.9105")),
        (30, "interest", "", D("18.20"), D(1), D(0), "EUR", None),
    ],
}


# Daily closes the demo starts with (source "seed"), so the value chart's 1W-Max ranges, the returns, the benchmark and
# the combined view's past FX have history from the first `make run`: days ago -> close, joined geometrically, the
# last anchor being the day before the starting price's reference. Unadjusted for NVDA's 2:1 split 40 days ago.
HISTORY_DAYS = 215
CLOSE_ANCHORS: dict[str, dict[int, Decimal]] = {
    "AAPL": {200: D("198.40"), 130: D("205.10"), 60: D("232.75")},
    "MSFT": {180: D("410.10")},
    "BTC-USD": {150: D("61250.00"), 90: D("58300.00"), 20: D("94100.00")},
    "ETH-USD": {120: D("2480.00")},
    "SPY": {90: D("560.30")},
    "NVDA": {45: D("257.80"), 41: D("334.00"), 40: D("167.00")},
    "SAP": {110: D("228.40")},
    "SOL-USD": {7: D("139.20")},
    "EUR/USD": {140: D("1.0870"), 130: D("1.0858"), 90: D("1.1093"), 60: D("1.0983")},
}
SEED_SOURCE = "seed"


def demo_closes(symbol: str, reference: Decimal, *, today: date) -> list[tuple[date, Decimal]]:
    """The demo's daily closes of `symbol`: through its anchors (a -15 % start when it has none that early) to
    `reference` yesterday, geometric between anchors, with a small deterministic wiggle; quantized like `reference`."""
    anchors = {1: reference, **CLOSE_ANCHORS.get(symbol, {})}
    anchors.setdefault(HISTORY_DAYS, min(anchors.values()) * D("0.85"))
    points = sorted(anchors.items(), reverse=True)  # oldest first
    closes = []
    for (older, start), (newer, end) in itertools.pairwise(points):
        for days in range(older, newer, -1):
            share = (older - days) / (older - newer)
            level = float(start) * (float(end) / float(start)) ** share
            wiggle = 1 + 0.012 * math.sin(days * 0.9 + len(symbol)) if days not in anchors else 1
            closes.append((today - timedelta(days=days), D(repr(level * wiggle)).quantize(reference)))
    closes.append((today - timedelta(days=1), reference))
    return closes


class Command(BaseCommand):
    help = "Create the demo user, a staff user, instruments with starting prices and a demo portfolio (safe to re-run)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            demo = self._user(settings.DEMO_USERNAME, settings.DEMO_PASSWORD, staff=False)
            self._user(settings.ADMIN_USERNAME, settings.ADMIN_PASSWORD, staff=True)
            created = self._instruments()
            closes = self._daily_closes()
            entries = sum(self._portfolio(demo, name, currency, ledger) for (name, currency), ledger in PORTFOLIOS.items())
        if closes:  # (new portfolios are rebuilt after their import's commit anyway; this covers a re-run)
            for portfolio in Portfolio.objects.filter(owner=demo):
                daily_values_rebuild(portfolio=portfolio)
        self.stdout.write(
            f"seed_demo: {created} new instruments, {closes} new daily closes, {entries} new transactions. "
            f"Log in as {settings.DEMO_USERNAME} / {settings.DEMO_PASSWORD}; "
            f"admin as {settings.ADMIN_USERNAME} / {settings.ADMIN_PASSWORD}"
        )

    def _user(self, username: str, password: str, *, staff: bool) -> Any:
        user, _ = get_user_model().objects.get_or_create(username=username)
        # Demo accounts: the printed password always works, so it is (re)set on every run.
        user.set_password(password)
        user.is_staff = user.is_superuser = staff
        user.save()
        return user

    def _instruments(self) -> int:
        created = 0
        now = timezone.now()
        for symbol, name, asset_class, currency, tz, price, move in INSTRUMENTS:
            instrument, new = Instrument.objects.get_or_create(
                symbol=symbol,
                defaults={"name": name, "asset_class": asset_class, "quote_currency": currency, "exchange_timezone": tz},
            )
            created += new
            reference = (price / (1 + move / 100)).quantize(price)
            Quote.objects.get_or_create(
                instrument=instrument,
                defaults={"price": price, "exchange_ts": now, "seq": 0, "source": "seed", "reference_price": reference},
            )
            # The close day change is measured against, so the demo shows one from the first tick.
            Candle.objects.get_or_create(
                instrument=instrument,
                start=_reference_minute(instrument, now),
                defaults={"open": reference, "high": reference, "low": reference, "close": reference},
            )
        # What `run_feeds` runs out of the box; the migration makes it too, but a flushed database has none.
        Feed.objects.get_or_create(name="synthetic", defaults={"kind": FeedKind.SYNTHETIC})
        for alias, source, symbol in ALIASES:
            SymbolAlias.objects.get_or_create(alias=alias, source=source, defaults={"instrument": Instrument.objects.get(symbol=symbol)})
        return created

    def _daily_closes(self) -> int:
        """The demo instruments' daily history, where they have none yet (a re-run adds nothing)."""
        today = timezone.now().date()
        rows = []
        for instrument in Instrument.objects.filter(symbol__in=[row[0] for row in INSTRUMENTS]).select_related("quote"):
            if instrument.daily_closes.exists():
                continue
            reference = instrument.quote.reference_price or instrument.quote.price
            rows += [
                DailyClose(instrument=instrument, date=day, close=close, source=SEED_SOURCE)
                for day, close in demo_closes(instrument.symbol, reference, today=today)
            ]
        DailyClose.objects.bulk_create(rows, batch_size=1000)
        return len(rows)

    def _portfolio(self, owner: Any, name: str, currency: str, ledger: list[tuple[Any, ...]]) -> int:
        portfolio = Portfolio.objects.filter(owner=owner, name=name).first()
        if portfolio is None:
            portfolio = services.portfolio_create(owner_id=owner.pk, name=name, base_currency=currency)
        if portfolio.transactions.exists():
            return 0
        instruments = {i.symbol: i for i in Instrument.objects.all()}
        now = timezone.now().replace(hour=14, minute=30, second=0, microsecond=0)
        drafts = [
            services.Draft(
                kind=kind,
                executed_at=now - timedelta(days=days),
                quantity=quantity,
                instrument=instruments[symbol] if symbol else None,
                currency=ccy,
                price=price,
                fee=fee,
                fx_rate=fx_rate,
                note="demo",
            )
            for days, kind, symbol, quantity, price, fee, ccy, fx_rate in ledger
        ]
        return services.transactions_import(portfolio=portfolio, drafts=drafts).created


def _reference_minute(instrument: Instrument, now: datetime) -> datetime:
    """A minute the worker's rules take as the reference: 24 h ago, or yesterday afternoon on the exchange."""
    if instrument.always_open:
        return (now - timedelta(hours=24, minutes=1)).replace(second=0, microsecond=0)
    zone = ZoneInfo(instrument.exchange_timezone)
    yesterday = now.astimezone(zone).date() - timedelta(days=1)
    return datetime.combine(yesterday, time(15, 59), tzinfo=zone).astimezone(UTC)
