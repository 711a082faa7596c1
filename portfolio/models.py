from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from marketdata.models import Instrument, currency_code, decimal_field


def time_zone_name(value: str) -> None:
    """An IANA time zone name that zoneinfo knows (Europe/Paris, America/New_York, UTC)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"Unknown time zone {value!r}: use an IANA name such as Europe/London.") from None


def default_time_zone() -> str:
    # A callable, so the migration does not freeze this install's TIME_ZONE.
    return str(settings.TIME_ZONE)


class Portfolio(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portfolios")
    name = models.CharField(max_length=100)
    base_currency = models.CharField(max_length=3, default="USD", validators=[currency_code])
    allow_negative_cash = models.BooleanField(
        default=False, help_text="Allow withdrawals and transfers out to take a cash balance below zero."
    )
    # Derived from the ledger by `portfolio.services.portfolio_rebuild`, in the base currency.
    realised_pnl = decimal_field("realised P&L", default=0, editable=False)
    dividends = decimal_field(default=0, editable=False)
    interest = decimal_field(default=0, editable=False)
    fees = decimal_field(default=0, editable=False)
    net_deposits = decimal_field(default=0, editable=False)
    time_zone = models.CharField(
        max_length=64,
        default=default_time_zone,
        validators=[time_zone_name],
        help_text="Where the portfolio's days start and end (IANA name); entry times are shown in it.",
    )
    archived_at = models.DateTimeField(null=True, blank=True, help_text="Set while archived: kept, but off the dashboard.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["owner_id", "name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="portfolio_unique_name_per_owner")]

    def __str__(self) -> str:
        return self.name


class Kind(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"
    DIVIDEND = "dividend", "Dividend"
    INTEREST = "interest", "Interest"
    FEE = "fee", "Fee"
    DEPOSIT = "deposit", "Deposit"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    SPLIT = "split", "Split"
    TRANSFER_IN = "transfer_in", "Transfer in"
    TRANSFER_OUT = "transfer_out", "Transfer out"


class Transaction(models.Model):
    """One ledger entry. Recorded only through `portfolio.services`; see `portfolio.ledger` for the meaning of each field per kind."""

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="transactions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="transactions", null=True, blank=True)
    quantity = decimal_field(help_text="Shares; the ratio for a split (2 for 2-for-1); for cash entries, amount = quantity × price.")
    price = decimal_field(default=1, help_text="Per unit, in the transaction's currency.")
    fee = decimal_field(default=0, validators=[MinValueValidator(0)], help_text="In the transaction's currency.")
    currency = models.CharField(max_length=3, validators=[currency_code])
    fx_rate = decimal_field(
        "FX rate", default=1, help_text="Units of the portfolio's base currency per unit of the currency, at execution."
    )
    executed_at = models.DateTimeField()
    counterpart = models.OneToOneField(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        help_text="The other side of a transfer.",
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-executed_at", "-id"]
        indexes = [models.Index(fields=["portfolio", "executed_at"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="transaction_quantity_positive"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="transaction_price_not_negative"),
            models.CheckConstraint(condition=models.Q(fee__gte=0), name="transaction_fee_not_negative"),
            models.CheckConstraint(condition=models.Q(fx_rate__gt=0), name="transaction_fx_rate_positive"),
        ]

    def __str__(self) -> str:
        what = self.instrument or self.currency
        if self.kind in (Kind.BUY, Kind.SELL):
            return f"{self.get_kind_display()} {self.quantity.normalize():f} {what} @ {self.price.normalize():f}"
        if self.kind == Kind.SPLIT:
            return f"Split {what} {self.quantity.normalize():f}:1"
        return f"{self.get_kind_display()} {(self.quantity * self.price).normalize():f} {self.currency}"


class Holding(models.Model):
    """Derived from the ledger by `portfolio.services.portfolio_rebuild`; never edited by hand."""

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="holdings")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="holdings")
    quantity = decimal_field()
    cost = decimal_field(help_text="Cost basis (average cost), in the instrument's currency.")
    cost_base = decimal_field("cost in base currency", help_text="Cost basis in the portfolio's base currency, at trade-date FX.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["portfolio_id", "instrument__symbol"]
        constraints = [models.UniqueConstraint(fields=["portfolio", "instrument"], name="holding_unique_per_portfolio")]

    def __str__(self) -> str:
        return f"{self.quantity.normalize():f} × {self.instrument}"

    @property
    def average_cost(self) -> Decimal:
        return self.cost / self.quantity


class CashBalance(models.Model):
    """Cash held in one currency; derived from the ledger like holdings."""

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="cash_balances")
    currency = models.CharField(max_length=3, validators=[currency_code])
    amount = decimal_field()

    class Meta:
        ordering = ["portfolio_id", "currency"]
        constraints = [models.UniqueConstraint(fields=["portfolio", "currency"], name="cash_unique_per_portfolio_currency")]

    def __str__(self) -> str:
        return f"{self.amount.normalize():f} {self.currency}"


class PortfolioValue(models.Model):
    """A portfolio's total value at one minute, recorded by the feed worker while prices flow."""

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="values")
    minute = models.DateTimeField()
    value = decimal_field(help_text="Total value (holdings and cash) in the base currency.")

    class Meta:
        ordering = ["portfolio_id", "minute"]
        constraints = [models.UniqueConstraint(fields=["portfolio", "minute"], name="portfolio_value_unique_per_minute")]

    def __str__(self) -> str:
        return f"{self.portfolio_id} @ {self.minute:%Y-%m-%d %H:%M}: {self.value}"


class DailyValue(models.Model):
    """A portfolio's value at the end of one of its days (its time zone), in the base currency; kept indefinitely.

    Rebuilt from the ledger and the daily closes by `portfolio.performance.daily_values_rebuild`;
    never edited by hand. See `portfolio.daily` for what a day's value and flow are.
    """

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="daily_values")
    date = models.DateField()
    value = decimal_field(help_text="Holdings and cash at the day's closes, in the base currency (what could be priced).")
    net_flow = decimal_field(default=0, help_text="Deposits, withdrawals and transfers of the day, in the base currency.")
    inflow = decimal_field(default=0, help_text="The positive part of the day's flows (money in), in the base currency.")
    complete = models.BooleanField(default=True, help_text="False when a holding or a currency had no close that day.")
    missing = models.CharField(max_length=200, blank=True, help_text="What had no close, when incomplete.")

    class Meta:
        ordering = ["portfolio_id", "date"]
        constraints = [models.UniqueConstraint(fields=["portfolio", "date"], name="portfolio_dailyvalue_one_per_day")]

    def __str__(self) -> str:
        return f"{self.portfolio_id} {self.date}: {self.value}"


class ImportMapping(models.Model):
    """A user's column mapping for files with one header (`portfolio.brokers.ColumnMapping.to_dict()`), remembered by the
    import wizard and offered again for the next file whose header has the same signature."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="import_mappings")
    signature = models.CharField(max_length=64, help_text="SHA-256 of the header's column names and the delimiter.")
    header = models.JSONField(default=list, help_text="The file's column names, as read.")
    mapping = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["owner_id", "-updated_at"]
        constraints = [models.UniqueConstraint(fields=["owner", "signature"], name="portfolio_importmapping_one_per_header")]

    def __str__(self) -> str:
        return f"{self.owner_id}: {', '.join(map(str, self.header))[:80]}"


class ImportUpload(models.Model):
    """A file in the import wizard, kept between its steps (a web server may run as several processes, so not on a
    local disk). One per user: a new upload replaces the old; an import or a cancel deletes it; the wizard deletes
    any older than `portfolio.wizard.UPLOAD_TTL`. At most PORTFOLIO_IMPORT_MAX_BYTES each."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="import_uploads")
    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="import_uploads")
    name = models.CharField(max_length=200)
    data = models.BinaryField()
    size = models.PositiveIntegerField()
    format = models.CharField(max_length=30, blank=True, help_text='"livefolio", a preset\'s name, or "generic"; empty until chosen.')
    mapping = models.JSONField(default=dict, blank=True, help_text="The column mapping, for the generic format.")
    edits = models.JSONField(default=dict, blank=True, help_text='{line: {"cells": [...]} or {"skip": true}}: rows fixed in the wizard.')
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes) for {self.portfolio_id}"


class WatchlistItem(models.Model):
    """An instrument a user follows on the dashboard without holding it (`portfolio.watchlist`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="watchlist")
    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="watchers")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "added_at", "id"]
        constraints = [models.UniqueConstraint(fields=["user", "instrument"], name="watchlist_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.instrument}"


class AlertKind(models.TextChoices):
    PRICE_ABOVE = "price_above", "Price at or above"
    PRICE_BELOW = "price_below", "Price at or below"
    MOVE_PCT = "move_pct", "Moves by % over a window"
    PORTFOLIO_VALUE_ABOVE = "portfolio_value_above", "Portfolio value at or above"
    PORTFOLIO_VALUE_BELOW = "portfolio_value_below", "Portfolio value at or below"
    DAY_CHANGE_PCT = "day_change_pct", "Portfolio day change by %"


PORTFOLIO_ALERT_KINDS = (AlertKind.PORTFOLIO_VALUE_ABOVE, AlertKind.PORTFOLIO_VALUE_BELOW, AlertKind.DAY_CHANGE_PCT)


class Alert(models.Model):
    """A condition on an instrument's price, or on a portfolio's value or day change, evaluated in the feed worker
    from memory (`portfolio.alerts`).

    It fires once when crossed (`armed` goes False, a `Notification` is recorded) and re-arms only after the value
    has moved back past the threshold by `hysteresis` (in the threshold's unit: price, or percentage points).
    Written only through `portfolio.services` (`alert_*`), which tell the workers to reload after commit."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alerts")
    instrument = models.ForeignKey(
        Instrument, on_delete=models.CASCADE, related_name="alerts", null=True, blank=True, help_text="For price and move alerts."
    )
    portfolio = models.ForeignKey(
        Portfolio, on_delete=models.CASCADE, related_name="alerts", null=True, blank=True, help_text="For portfolio alerts."
    )
    kind = models.CharField(max_length=24, choices=AlertKind.choices)
    threshold = decimal_field(
        help_text="A price, or a portfolio value in its base currency; for a move or a day change, a percentage: "
        "5 = up by 5 % or more, -5 = down by 5 % or more."
    )
    window_minutes = models.PositiveIntegerField(default=0, help_text="For a move: the move is measured over this many minutes.")
    hysteresis = decimal_field(default=0, validators=[MinValueValidator(0)], help_text="How far back past the threshold re-arms it.")
    email = models.BooleanField(default=False, help_text="Also send an email when it fires (to the user's address).")
    active = models.BooleanField(default=True, help_text="Paused alerts are not evaluated.")
    armed = models.BooleanField(default=True, editable=False, help_text="False from firing until it re-arms.")
    fired_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(hysteresis__gte=0), name="alert_hysteresis_not_negative"),
            models.CheckConstraint(
                condition=(
                    models.Q(kind__in=PORTFOLIO_ALERT_KINDS, instrument__isnull=True, portfolio__isnull=False)
                    | (~models.Q(kind__in=PORTFOLIO_ALERT_KINDS) & models.Q(instrument__isnull=False, portfolio__isnull=True))
                ),
                name="alert_one_target_for_its_kind",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="move_pct") | (models.Q(window_minutes__gt=0) & ~models.Q(threshold=0)),
                name="alert_move_has_window_and_threshold",
            ),
        ]

    def __str__(self) -> str:
        return self.describe()

    @property
    def hysteresis_text(self) -> str:
        """The hysteresis as written (500, not 5E+2), with its unit."""
        return f"{self.hysteresis.normalize():f}" + (" points" if self.kind in (AlertKind.MOVE_PCT, AlertKind.DAY_CHANGE_PCT) else "")

    def describe(self) -> str:
        threshold = f"{self.threshold.normalize():f}"
        if self.portfolio is not None:
            name = self.portfolio.name
            if self.kind == AlertKind.PORTFOLIO_VALUE_ABOVE:
                return f"{name} value at or above {threshold} {self.portfolio.base_currency}"
            if self.kind == AlertKind.PORTFOLIO_VALUE_BELOW:
                return f"{name} value at or below {threshold} {self.portfolio.base_currency}"
            way = "up" if self.threshold > 0 else "down"
            return f"{name} {way} {abs(self.threshold).normalize():f}% or more on the day"
        symbol = self.instrument.symbol if self.instrument is not None else "?"
        if self.kind == AlertKind.PRICE_ABOVE:
            return f"{symbol} at or above {threshold}"
        if self.kind == AlertKind.PRICE_BELOW:
            return f"{symbol} at or below {threshold}"
        verb = "rises" if self.threshold > 0 else "falls"
        return f"{symbol} {verb} {abs(self.threshold).normalize():f}% within {self.window_minutes} min"


class Notification(models.Model):
    """One firing of an alert, recorded by the feed worker (`portfolio.services.alert_fire`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    alert = models.ForeignKey(Alert, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications")
    fired_at = models.DateTimeField(help_text="When the crossing price was stamped (UTC).")
    message = models.CharField(max_length=200)
    value = decimal_field(help_text="The price (or move, in %) that crossed the threshold.")
    emailed = models.BooleanField(default=False, editable=False)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["user_id", "-fired_at", "-id"]
        indexes = [models.Index(fields=["user", "-fired_at"])]

    def __str__(self) -> str:
        return self.message
