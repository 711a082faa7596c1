from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from marketdata.models import Instrument, currency_code, decimal_field


class Portfolio(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portfolios")
    name = models.CharField(max_length=100)
    base_currency = models.CharField(max_length=3, default="USD", validators=[currency_code])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["owner_id", "name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="portfolio_unique_name_per_owner")]

    def __str__(self) -> str:
        return self.name


class Side(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"


class Transaction(models.Model):
    """One ledger entry. Recorded only through `portfolio.services`."""

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="transactions")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="transactions")
    side = models.CharField(max_length=8, choices=Side.choices)
    quantity = decimal_field()
    price = decimal_field(help_text="Per unit, in the instrument's quote currency.")
    fee = decimal_field(default=0, validators=[MinValueValidator(0)], help_text="In the instrument's quote currency.")
    executed_at = models.DateTimeField()
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-executed_at", "-id"]
        indexes = [models.Index(fields=["portfolio", "instrument", "executed_at"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="transaction_quantity_positive"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="transaction_price_not_negative"),
            models.CheckConstraint(condition=models.Q(fee__gte=0), name="transaction_fee_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.get_side_display()} {self.quantity.normalize():f} {self.instrument} @ {self.price.normalize():f}"


class Holding(models.Model):
    """Derived from the ledger by `portfolio.services.holding_rebuild`; never edited by hand."""

    portfolio = models.ForeignKey(Portfolio, on_delete=models.CASCADE, related_name="holdings")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="holdings")
    quantity = decimal_field()
    average_cost = decimal_field(help_text="Per unit including buy fees, in the instrument's currency.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["portfolio_id", "instrument__symbol"]
        constraints = [models.UniqueConstraint(fields=["portfolio", "instrument"], name="holding_unique_per_portfolio")]

    def __str__(self) -> str:
        return f"{self.quantity.normalize():f} × {self.instrument}"
