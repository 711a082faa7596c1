from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models


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


class PriceMark(models.Model):
    """The last price of an instrument in one UTC minute, written by the feed worker once a minute.

    Day-change references are read back from these when the worker starts.
    Older than HISTORY_RETENTION_DAYS, they are deleted.
    """

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="marks")
    minute = models.DateTimeField(help_text="Start of the minute, UTC.")
    price = decimal_field(help_text="Last price in that minute.")

    class Meta:
        ordering = ["minute"]
        constraints = [models.UniqueConstraint(fields=["instrument", "minute"], name="marketdata_pricemark_one_per_minute")]
        # Pruning and the admin's date drill-down scan by minute across instruments.
        indexes = [models.Index(fields=["minute"], name="marketdata_pricemark_minute")]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.minute:%Y-%m-%d %H:%M}: {self.price}"
