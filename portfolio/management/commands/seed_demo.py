"""Create demo data, idempotently: users, instruments, starting prices, a portfolio with a ledger."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from marketdata.models import AssetClass, Instrument, Quote
from portfolio import services
from portfolio.models import Portfolio

D = Decimal
# symbol, name, asset class, quote currency, starting price
INSTRUMENTS = [
    ("BTC-USD", "Bitcoin", AssetClass.CRYPTO, "USD", D("87350.00")),
    ("ETH-USD", "Ether", AssetClass.CRYPTO, "USD", D("2975.00")),
    ("SOL-USD", "Solana", AssetClass.CRYPTO, "USD", D("128.40")),
    ("AAPL", "Apple Inc.", AssetClass.EQUITY, "USD", D("271.50")),
    ("MSFT", "Microsoft Corp.", AssetClass.EQUITY, "USD", D("478.20")),
    ("NVDA", "NVIDIA Corp.", AssetClass.EQUITY, "USD", D("181.30")),
    ("SPY", "SPDR S&P 500 ETF Trust", AssetClass.ETF, "USD", D("668.70")),
    ("QQQ", "Invesco QQQ Trust", AssetClass.ETF, "USD", D("605.10")),
    ("EUR/USD", "Euro / US dollar", AssetClass.FX, "USD", D("1.15420")),
    ("GBP/USD", "Pound sterling / US dollar", AssetClass.FX, "USD", D("1.31180")),
    ("USD/JPY", "US dollar / Japanese yen", AssetClass.FX, "JPY", D("156.420")),
]
# days ago, side, symbol, quantity, price, fee
LEDGER = [
    (200, "buy", "AAPL", D("40"), D("198.40"), D("1.00")),
    (180, "buy", "MSFT", D("15"), D("410.10"), D("1.00")),
    (150, "buy", "BTC-USD", D("0.75"), D("61250.00"), D("12.50")),
    (120, "buy", "ETH-USD", D("6"), D("2480.00"), D("4.00")),
    (90, "buy", "SPY", D("25"), D("560.30"), D("1.00")),
    (60, "sell", "AAPL", D("10"), D("232.75"), D("1.00")),
    (45, "buy", "NVDA", D("30"), D("128.90"), D("1.00")),
    (20, "buy", "BTC-USD", D("0.25"), D("94100.00"), D("5.00")),
    (7, "buy", "SOL-USD", D("40"), D("139.20"), D("2.00")),
]


class Command(BaseCommand):
    help = "Create the demo user, a staff user, instruments with starting prices and a demo portfolio (safe to re-run)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            demo = self._user(settings.DEMO_USERNAME, settings.DEMO_PASSWORD, staff=False)
            self._user(settings.ADMIN_USERNAME, settings.ADMIN_PASSWORD, staff=True)
            created = self._instruments()
            entries = self._portfolio(demo)
        self.stdout.write(
            f"seed_demo: {created} new instruments, {entries} new transactions. "
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
        for symbol, name, asset_class, currency, price in INSTRUMENTS:
            instrument, new = Instrument.objects.get_or_create(
                symbol=symbol, defaults={"name": name, "asset_class": asset_class, "quote_currency": currency}
            )
            created += new
            Quote.objects.get_or_create(instrument=instrument, defaults={"price": price, "exchange_ts": now, "seq": 0, "source": "seed"})
        return created

    def _portfolio(self, owner: Any) -> int:
        portfolio = Portfolio.objects.filter(owner=owner, name="Demo portfolio").first()
        if portfolio is None:
            portfolio = services.portfolio_create(owner_id=owner.pk, name="Demo portfolio", base_currency="USD")
        if portfolio.transactions.exists():
            return 0
        instruments = {i.symbol: i for i in Instrument.objects.all()}
        now = timezone.now().replace(hour=14, minute=30, second=0, microsecond=0)
        for days, side, symbol, quantity, price, fee in LEDGER:
            services.transaction_record(
                portfolio=portfolio,
                instrument=instruments[symbol],
                side=side,
                quantity=quantity,
                price=price,
                fee=fee,
                executed_at=now - timedelta(days=days),
                note="demo",
            )
        return len(LEDGER)
