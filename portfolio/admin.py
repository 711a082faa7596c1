"""Staff tools. Ledger writes go through `portfolio.services`, so the admin
enforces exactly the rules the rest of the app does."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction as db_transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from marketdata.admin import amount
from portfolio import services
from portfolio.models import Holding, Portfolio, Transaction


def money(value: Decimal | None, currency: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.2f} {currency}".strip()


class TransactionInline(admin.TabularInline):
    """The ledger of one portfolio, newest first; entries are added through the Transaction form."""

    model = Transaction
    extra = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = ("executed_at", "side", "instrument", "quantity_", "price_", "fee_", "note")
    ordering = ["-executed_at", "-id"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Quantity")
    def quantity_(self, obj: Transaction) -> str:
        return amount(obj.quantity)

    @admin.display(description="Price")
    def price_(self, obj: Transaction) -> str:
        return amount(obj.price)

    @admin.display(description="Fee")
    def fee_(self, obj: Transaction) -> str:
        return money(obj.fee)


class HoldingInline(admin.TabularInline):
    model = Holding
    extra = 0
    can_delete = False
    fields = readonly_fields = ("instrument", "quantity_", "average_cost_", "cost")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Quantity")
    def quantity_(self, obj: Holding) -> str:
        return amount(obj.quantity)

    @admin.display(description="Average cost")
    def average_cost_(self, obj: Holding) -> str:
        return money(obj.average_cost, obj.instrument.quote_currency)

    @admin.display(description="Cost")
    def cost(self, obj: Holding) -> str:
        # A holding deleted since the page loaded (its position closed) comes back
        # from the POST as a blank row; the admin only forgives AttributeError here.
        if obj.quantity is None or obj.average_cost is None:
            return money(None)
        return money(obj.quantity * obj.average_cost, obj.instrument.quote_currency)


@admin.register(Portfolio)
class PortfolioAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "base_currency", "holding_count", "transaction_count", "created_at"]
    list_filter = ["base_currency", ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "owner__username", "owner__email"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["created_at", "record_link"]
    inlines = [HoldingInline, TransactionInline]
    actions = None  # deleting goes through the service, one portfolio at a time

    def delete_model(self, request: HttpRequest, obj: Portfolio) -> None:
        services.portfolio_delete(portfolio=obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Portfolio]:
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(holding_count=Count("holdings", distinct=True), transaction_count=Count("transactions", distinct=True))
        )

    @admin.display(description="Holdings", ordering="holding_count")
    def holding_count(self, obj: Any) -> int:
        return int(obj.holding_count)

    @admin.display(description="Transactions", ordering="transaction_count")
    def transaction_count(self, obj: Any) -> int:
        return int(obj.transaction_count)

    @admin.display(description="Ledger")
    def record_link(self, obj: Portfolio) -> str:
        if not obj.pk:
            return "Save the portfolio first."
        url = reverse("admin:portfolio_transaction_add") + f"?portfolio={obj.pk}"
        return format_html('<a class="addlink" href="{}">Record a transaction</a>', url)


class TransactionForm(forms.ModelForm):
    class Meta:
        model = Transaction
        fields = ["portfolio", "instrument", "side", "quantity", "price", "fee", "executed_at", "note"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            try:
                services.transaction_check(
                    portfolio=data["portfolio"],
                    instrument=data["instrument"],
                    side=data["side"],
                    quantity=data["quantity"],
                    price=data["price"],
                    fee=data["fee"],
                    executed_at=data["executed_at"],
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        return data


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    """Ledger entries are immutable: record new ones, delete mistakes (if nothing later depends on them)."""

    form = TransactionForm
    list_display = ["executed_at", "portfolio", "owner", "side", "instrument", "quantity_", "price_", "fee_", "value"]
    list_filter = [
        "side",
        "instrument__asset_class",
        ("portfolio__owner", admin.RelatedOnlyFieldListFilter),
        ("instrument", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["instrument__symbol", "instrument__name", "portfolio__name", "portfolio__owner__username", "note"]
    list_select_related = ["portfolio__owner", "instrument"]
    autocomplete_fields = ["portfolio", "instrument"]
    date_hierarchy = "executed_at"
    actions = None  # bulk delete would bypass the ledger checks

    @admin.display(description="Owner", ordering="portfolio__owner__username")
    def owner(self, obj: Transaction) -> str:
        return str(obj.portfolio.owner)

    @admin.display(description="Quantity", ordering="quantity")
    def quantity_(self, obj: Transaction) -> str:
        return amount(obj.quantity)

    @admin.display(description="Price", ordering="price")
    def price_(self, obj: Transaction) -> str:
        return money(obj.price, obj.instrument.quote_currency)

    @admin.display(description="Fee", ordering="fee")
    def fee_(self, obj: Transaction) -> str:
        return money(obj.fee, obj.instrument.quote_currency)

    @admin.display(description="Value")
    def value(self, obj: Transaction) -> str:
        return money(obj.quantity * obj.price, obj.instrument.quote_currency)

    def has_change_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False if obj is not None else super().has_change_permission(request)

    def save_model(self, request: HttpRequest, obj: Transaction, form: forms.ModelForm, change: bool) -> None:
        saved = services.transaction_record(
            portfolio=obj.portfolio,
            instrument=obj.instrument,
            side=obj.side,
            quantity=obj.quantity,
            price=obj.price,
            fee=obj.fee,
            executed_at=obj.executed_at,
            note=obj.note,
        )
        obj.pk = saved.pk

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "POST":
            obj = self.get_object(request, object_id)
            if obj is not None and self.has_delete_permission(request, obj):
                try:
                    with db_transaction.atomic():
                        # Logged before the delete (the entry needs the row's pk), and
                        # rolled back with it when the ledger refuses.
                        self.log_deletions(request, Transaction.objects.filter(pk=obj.pk))
                        services.transaction_delete(transaction=obj)
                except ValidationError as exc:
                    self.message_user(request, " ".join(exc.messages), messages.ERROR)
                    return HttpResponseRedirect(reverse("admin:portfolio_transaction_change", args=[obj.pk]))
                self.message_user(request, f"Deleted “{obj}”; the holding was rebuilt.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:portfolio_transaction_changelist"))
        return super().delete_view(request, object_id, extra_context)


@admin.register(Holding)
class HoldingAdmin(admin.ModelAdmin):
    """Derived from the ledger; read-only."""

    list_display = ["portfolio", "owner", "instrument", "quantity_", "average_cost_", "cost", "updated_at"]
    list_filter = [
        "instrument__asset_class",
        ("portfolio__owner", admin.RelatedOnlyFieldListFilter),
        ("instrument", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["instrument__symbol", "instrument__name", "portfolio__name", "portfolio__owner__username"]
    list_select_related = ["portfolio__owner", "instrument"]

    @admin.display(description="Owner", ordering="portfolio__owner__username")
    def owner(self, obj: Holding) -> str:
        return str(obj.portfolio.owner)

    @admin.display(description="Quantity", ordering="quantity")
    def quantity_(self, obj: Holding) -> str:
        return amount(obj.quantity)

    @admin.display(description="Average cost", ordering="average_cost")
    def average_cost_(self, obj: Holding) -> str:
        return money(obj.average_cost, obj.instrument.quote_currency)

    @admin.display(description="Cost")
    def cost(self, obj: Holding) -> str:
        return money(obj.quantity * obj.average_cost, obj.instrument.quote_currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
