from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from marketdata.feeds.options import FeedKind, options_check


def decimal_field(verbose_name: str | None = None, **kwargs: Any) -> models.DecimalField:
    """Prices, quantities and money: 28 digits, 10 after the point (satoshis, pips, cents)."""
    return models.DecimalField(verbose_name, max_digits=28, decimal_places=10, **kwargs)


currency_code = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code such as USD.")
symbol_format = RegexValidator(
    r"^[A-Za-z0-9^./:_=-]{1,30}$",
    "Use 1-30 letters, digits or ^ . / : _ = - (e.g. AAPL, BTC-USD, EUR/USD, ^GSPC).",
)


def validate_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone such as America/New_York or Europe/Berlin.") from None


class AssetClass(models.TextChoices):
    EQUITY = "equity", "Equity"
    ETF = "etf", "ETF"
    CRYPTO = "crypto", "Crypto"
    FX = "fx", "FX"
    INDEX = "index", "Index"
    COMMODITY = "commodity", "Commodity"
    BOND = "bond", "Bond"


# Markets that trade around the clock: day change is measured against the price 24 hours earlier.
ALWAYS_OPEN = frozenset({AssetClass.CRYPTO, AssetClass.FX})


class Instrument(models.Model):
    symbol = models.CharField(max_length=30, unique=True, validators=[symbol_format])
    name = models.CharField(max_length=200)
    asset_class = models.CharField(max_length=16, choices=AssetClass.choices)
    quote_currency = models.CharField(max_length=3, validators=[currency_code], help_text="Currency prices are quoted in.")
    is_active = models.BooleanField("active", default=True, help_text="Inactive instruments get no prices and no new transactions.")
    exchange_timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="Time zone of the instrument's trading day; the previous close is the last price before local midnight. "
        "Ignored for markets that never close (crypto, FX).",
    )

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return self.symbol

    @property
    def always_open(self) -> bool:
        return self.asset_class in ALWAYS_OPEN


class Quote(models.Model):
    """The latest price of an instrument, written by the feed worker in batches."""

    instrument = models.OneToOneField(Instrument, on_delete=models.CASCADE, primary_key=True, related_name="quote")
    price = decimal_field()
    bid = decimal_field(null=True, blank=True)
    ask = decimal_field(null=True, blank=True)
    exchange_ts = models.DateTimeField("exchange time", help_text="When the exchange (or source) stamped the price, UTC.")
    seq = models.PositiveBigIntegerField("sequence", help_text="Sequence number of the broadcast that carried this price.")
    epoch = models.CharField(max_length=32, blank=True, help_text="Changes each time the feed worker restarts.")
    source = models.CharField(max_length=64)
    reference_price = decimal_field(
        null=True,
        blank=True,
        help_text="What day change is measured against: the previous session's close, or the price 24 hours earlier "
        "for markets that never close. Empty until the feed worker has seen one.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instrument__symbol"]

    def __str__(self) -> str:
        return f"{self.instrument_id}: {self.price}"


class Candle(models.Model):
    """One minute of an instrument's price (OHLCV), written by the feed worker when the minute closes.

    The price is the one the worker publishes: the last trade, or the mid of
    bid and ask for a market without trades (FX). Day-change references are
    read back from the closes when the worker starts. Older than
    HISTORY_RETENTION_DAYS, candles are deleted.
    """

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="candles")
    start = models.DateTimeField(help_text="Start of the minute, UTC.")
    open = decimal_field()
    high = decimal_field()
    low = decimal_field()
    close = decimal_field(help_text="Last price in that minute.")
    volume = decimal_field(default=0, help_text="Traded quantity (0 for quote-only markets).")
    trades = models.PositiveIntegerField(default=0, help_text="Number of trades.")

    class Meta:
        ordering = ["start"]
        constraints = [models.UniqueConstraint(fields=["instrument", "start"], name="marketdata_candle_one_per_minute")]
        # Pruning and the admin's date drill-down scan by minute across instruments.
        indexes = [models.Index(fields=["start"], name="marketdata_candle_start")]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.start:%Y-%m-%d %H:%M}: {self.close}"


class SymbolAlias(models.Model):
    """How a source spells an instrument's symbol: Binance's BTCUSDT or HistData's EURUSD for BTC-USD or EUR/USD."""

    alias = models.CharField(max_length=64, help_text="The symbol as the file or exchange writes it, e.g. BTCUSDT.")
    source = models.CharField(
        max_length=32,
        blank=True,
        help_text="Only for this source (binance, coinbase, histdata, csv, ...); empty for every source.",
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        ordering = ["alias", "source"]
        verbose_name_plural = "symbol aliases"
        constraints = [models.UniqueConstraint(fields=["alias", "source"], name="marketdata_symbolalias_unique")]

    def __str__(self) -> str:
        return f"{self.alias} ({self.source or 'any source'}) → {self.instrument.symbol}"


class Feed(models.Model):
    """A market-data source that `run_feeds` runs. Options are checked by `marketdata.feeds.options`."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=FeedKind.choices)
    options = models.JSONField(default=dict, blank=True, help_text="Settings of this kind of feed; see docs/feeds.md.")
    symbols = models.TextField(
        blank=True,
        help_text="Symbols to take, as the source spells them, separated by spaces or commas "
        "(e.g. BTCUSDT ETHUSDT for Binance). Empty: every active instrument (synthetic) or everything in the files (replay).",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def symbol_list(self) -> list[str]:
        return self.symbols.replace(",", " ").split()

    def clean(self) -> None:
        if self.options is None:  # the admin's empty JSON box
            self.options = {}
        try:
            options_check(kind=self.kind, options=self.options, symbols=self.symbol_list)
        except ValueError as exc:
            raise ValidationError({"options": str(exc)}) from exc


class ApiToken(models.Model):
    """A bot's key to /ws/v1/market, sent in an `auth` frame. Made and checked by `marketdata.services`.

    Only the token's SHA-256 is kept: the plaintext is shown once, when it is made.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. 'rebalancing bot on the home server'.")
    prefix = models.CharField(max_length=8, help_text="The first 8 characters after 'lf_', to tell tokens apart.")
    digest = models.CharField("SHA-256", max_length=64, unique=True, help_text="SHA-256 (hex) of the whole token; never the token itself.")
    created_at = models.DateTimeField("created", auto_now_add=True)
    last_used_at = models.DateTimeField("last used", null=True, blank=True, help_text="Stamped at most once a minute.")
    revoked_at = models.DateTimeField("revoked", null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (lf_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        """Not revoked. (Whether its user may still sign in is the user's own `is_active`.)"""
        return self.revoked_at is None


class DailyClose(models.Model):
    """An instrument's close on one day: the last 1-minute candle's close of that UTC day, or a vendor's daily close.

    Kept indefinitely: it is the price history behind the daily portfolio values and
    the benchmark; FX instruments' closes are the daily FX history. Written by
    `marketdata.services.daily_closes_from_candles` and the `import_prices` command.
    """

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="daily_closes")
    date = models.DateField(help_text="The day (UTC, for closes made from candles).")
    close = decimal_field()
    source = models.CharField(max_length=32, help_text="candles, or the file format it was imported from (yahoo, stooq, csv).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instrument_id", "date"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "date"], name="marketdata_dailyclose_one_per_day"),
            models.CheckConstraint(condition=models.Q(close__gt=0), name="marketdata_dailyclose_close_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.date}: {self.close}"
