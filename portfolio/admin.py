"""Staff tools. Ledger writes go through `portfolio.services`, so the admin
enforces exactly the rules the rest of the app does."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction as db_transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import slugify

from marketdata.admin import ReadOnlyAdmin, amount
from portfolio import csvio, services
from portfolio.forms import csv_upload_checked, draft_from, megabytes
from portfolio.models import Alert, CashBalance, Holding, Kind, Notification, Portfolio, Transaction, WatchlistItem


def money(value: Decimal | None, currency: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.2f} {currency}".strip()


class ShownInline(admin.TabularInline):
    """Derived rows (and the ledger) shown on the portfolio page; they change through the services only."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class TransactionInline(ShownInline):
    """The ledger of one portfolio, newest first; entries are added through the Transaction form."""

    model = Transaction
    show_change_link = True
    fields = readonly_fields = ("executed_at", "kind", "instrument", "quantity_", "price_", "fee_", "currency", "fx_rate_", "note")
    ordering = ["-executed_at", "-id"]

    @admin.display(description="Quantity")
    def quantity_(self, obj: Transaction) -> str:
        return amount(obj.quantity)

    @admin.display(description="Price")
    def price_(self, obj: Transaction) -> str:
        return amount(obj.price)

    @admin.display(description="Fee")
    def fee_(self, obj: Transaction) -> str:
        return money(obj.fee)

    @admin.display(description="FX rate")
    def fx_rate_(self, obj: Transaction) -> str:
        return amount(obj.fx_rate)


class HoldingFigures:
    # A holding deleted since the page loaded (its position closed) comes back
    # from the POST as a blank row; the admin only forgives AttributeError here.
    @admin.display(description="Quantity", ordering="quantity")
    def quantity_(self, obj: Holding) -> str:
        return amount(obj.quantity)

    @admin.display(description="Average cost")
    def average_cost_(self, obj: Holding) -> str:
        return money(obj.average_cost if obj.quantity else None, obj.instrument.quote_currency)

    @admin.display(description="Cost", ordering="cost")
    def cost_(self, obj: Holding) -> str:
        return money(obj.cost, obj.instrument.quote_currency)

    @admin.display(description="Cost in base currency", ordering="cost_base")
    def cost_base_(self, obj: Holding) -> str:
        return money(obj.cost_base, obj.portfolio.base_currency)


class HoldingInline(HoldingFigures, ShownInline):
    model = Holding
    fields = readonly_fields = ("instrument", "quantity_", "average_cost_", "cost_", "cost_base_")


class CashInline(ShownInline):
    model = CashBalance
    fields = readonly_fields = ("currency", "amount_")

    @admin.display(description="Amount")
    def amount_(self, obj: CashBalance) -> str:
        return money(obj.amount, obj.currency)


class CsvImportForm(forms.Form):
    """An upload is streamed (bounded memory) but checked within the request, on its thread: PORTFOLIO_IMPORT_MAX_BYTES
    bounds how long that takes; bigger ledgers go through `manage.py import_transactions`."""

    file = forms.FileField(label="CSV file")
    dry_run = forms.BooleanField(
        label="Dry run", required=False, initial=True, help_text="Check every row and preview the result, but write nothing."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = f"Columns: {csvio.HEADER}. UTF-8, at most {megabytes(settings.PORTFOLIO_IMPORT_MAX_BYTES)} MB."

    def clean_file(self) -> UploadedFile:
        return csv_upload_checked(self.cleaned_data["file"], too_big="Split it, or import it with manage.py import_transactions.")


@admin.register(Portfolio)
class PortfolioAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "base_currency", "holding_count", "transaction_count", "created_at"]
    list_filter = ["base_currency", ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "owner__username", "owner__email"]
    autocomplete_fields = ["owner"]
    fieldsets = [
        (None, {"fields": ["owner", "name", "base_currency", "allow_negative_cash", "record_link"]}),
        (
            "Totals from the ledger (base currency)",
            {"fields": ["realised_pnl_", "dividends_", "interest_", "fees_", "net_deposits_", "created_at"]},
        ),
    ]
    readonly_fields = ["created_at", "record_link", "realised_pnl_", "dividends_", "interest_", "fees_", "net_deposits_"]
    inlines = [HoldingInline, CashInline, TransactionInline]
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

    @admin.display(description="Realised P&L")
    def realised_pnl_(self, obj: Portfolio) -> str:
        return money(obj.realised_pnl, obj.base_currency)

    @admin.display(description="Dividends")
    def dividends_(self, obj: Portfolio) -> str:
        return money(obj.dividends, obj.base_currency)

    @admin.display(description="Interest")
    def interest_(self, obj: Portfolio) -> str:
        return money(obj.interest, obj.base_currency)

    @admin.display(description="Fees")
    def fees_(self, obj: Portfolio) -> str:
        return money(obj.fees, obj.base_currency)

    @admin.display(description="Net deposits")
    def net_deposits_(self, obj: Portfolio) -> str:
        return money(obj.net_deposits, obj.base_currency)

    @admin.display(description="Ledger")
    def record_link(self, obj: Portfolio) -> str:
        if not obj.pk:
            return "Save the portfolio first."
        return format_html(
            '<a class="addlink" href="{}">Record a transaction</a> · <a href="{}">Import transactions (CSV)</a> · <a href="{}">Export CSV</a>',
            reverse("admin:portfolio_transaction_add") + f"?portfolio={obj.pk}",
            reverse("admin:portfolio_portfolio_import", args=[obj.pk]),
            reverse("admin:portfolio_portfolio_export", args=[obj.pk]),
        )

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view  # staff only, CSRF-protected
        return [
            path("<path:object_id>/import/", view(self.import_view), name="portfolio_portfolio_import"),
            path("<path:object_id>/export/", view(self.export_view), name="portfolio_portfolio_export"),
            *super().get_urls(),
        ]

    def _portfolio_or_denied(self, request: HttpRequest, object_id: str, *, change: bool) -> Portfolio:
        portfolio = self.get_object(request, unquote(object_id))
        allowed = self.has_change_permission(request, portfolio) if change else self.has_view_permission(request, portfolio)
        if portfolio is None or not allowed:
            raise PermissionDenied
        return portfolio

    def import_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Upload a CSV ledger: every problem with its line, a dry-run preview, or the import (all or nothing)."""
        portfolio = self._portfolio_or_denied(request, object_id, change=True)
        form = CsvImportForm(request.POST, request.FILES) if request.method == "POST" else CsvImportForm()
        problems: list[str] = []
        problems_total = 0
        preview = None
        if form.is_bound and form.is_valid():
            # Read line by line from the upload (in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, beyond it a temporary file).
            lines = io.TextIOWrapper(form.cleaned_data["file"], encoding="utf-8-sig", newline="")
            try:
                result = csvio.csv_import(portfolio=portfolio, lines=lines, dry_run=form.cleaned_data["dry_run"])
            except services.LedgerProblems as exc:
                problems, problems_total = [csvio.describe(p) for p in exc.problems], exc.total
            else:
                if result.dry_run:
                    preview = result
                else:
                    self.log_change(request, portfolio, f"Imported {result.summary()} from CSV.")
                    self.message_user(request, f"Imported {result.summary()}.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:portfolio_portfolio_change", args=[portfolio.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import transactions (CSV) into {portfolio}",
            "opts": self.opts,
            "original": portfolio,
            "form": form,
            "problems": problems,
            "problems_total": problems_total,
            "problems_unlisted": problems_total - len(problems),
            "preview": preview,
            "header": csvio.HEADER,
        }
        return TemplateResponse(request, "admin/portfolio/portfolio/import.html", context)

    def export_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        portfolio = self._portfolio_or_denied(request, object_id, change=False)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{slugify(portfolio.name) or "portfolio"}-transactions.csv"'
        csvio.csv_export(portfolio=portfolio, stream=response)
        return response


class TransactionForm(forms.ModelForm):
    counterparty = forms.ModelChoiceField(
        Portfolio.objects.select_related("owner"),
        required=False,
        help_text="For a transfer: the owner's other portfolio the cash or shares come from or go to.",
    )

    class Meta:
        model = Transaction
        fields = ["portfolio", "kind", "instrument", "quantity", "price", "fee", "currency", "fx_rate", "executed_at", "note"]
        help_texts = {
            "currency": "Leave empty for the instrument's currency (or, without an instrument, the portfolio's base currency).",
            "fx_rate": "Base-currency units per unit of the currency at execution; leave empty when they are the same currency.",
            "price": "Per unit; leave empty for cash entries (amount = quantity).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("currency", "fx_rate", "price"):
            if name in self.fields:  # a saved entry is shown read-only, without form fields
                self.fields[name].required = False
                self.fields[name].initial = None

    def draft(self) -> services.Draft:
        return draft_from(self.cleaned_data)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        kind, counterparty = data["kind"], data.get("counterparty")
        if kind in (Kind.BUY, Kind.SELL) and data.get("price") is None:
            self.add_error("price", "A buy or sell needs its price.")
        elif kind in (Kind.TRANSFER_IN, Kind.TRANSFER_OUT):
            if counterparty is None:
                self.add_error("counterparty", "A transfer needs the portfolio on its other side.")
            elif counterparty.owner_id != data["portfolio"].owner_id or counterparty == data["portfolio"]:
                self.add_error("counterparty", "Pick another portfolio of the same owner.")
        elif counterparty is not None:
            self.add_error("counterparty", "Only transfers have a counterparty.")
        if not self.errors and kind not in (Kind.TRANSFER_IN, Kind.TRANSFER_OUT):
            try:
                services.transaction_check(portfolio=data["portfolio"], draft=self.draft())
            except ValidationError as exc:
                self.add_error(None, exc)
        return data


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    """Ledger entries are immutable: record new ones, delete mistakes (if nothing later depends on them)."""

    form = TransactionForm
    fields = ["portfolio", "kind", "instrument", "quantity", "price", "fee", "currency", "fx_rate", "executed_at", "counterparty", "note"]
    list_display = ["executed_at", "portfolio", "owner", "kind", "instrument", "quantity_", "price_", "fee_", "value"]
    list_filter = [
        "kind",
        "currency",
        "instrument__asset_class",
        ("portfolio__owner", admin.RelatedOnlyFieldListFilter),
        ("instrument", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["instrument__symbol", "instrument__name", "portfolio__name", "portfolio__owner__username", "note"]
    list_select_related = ["portfolio__owner", "instrument"]
    autocomplete_fields = ["portfolio", "instrument"]
    date_hierarchy = "executed_at"
    actions = None  # bulk delete would bypass the ledger checks

    def get_fields(self, request: HttpRequest, obj: Transaction | None = None) -> Any:
        # The counterparty picks a transfer's other side when adding; a saved entry shows its link instead.
        return self.fields if obj is None else [f for f in self.fields if f != "counterparty"] + ["counterpart"]

    def get_readonly_fields(self, request: HttpRequest, obj: Transaction | None = None) -> list[str]:
        return ["counterpart"] if obj is not None else []

    @admin.display(description="Owner", ordering="portfolio__owner__username")
    def owner(self, obj: Transaction) -> str:
        return str(obj.portfolio.owner)

    @admin.display(description="Quantity", ordering="quantity")
    def quantity_(self, obj: Transaction) -> str:
        return amount(obj.quantity)

    @admin.display(description="Price", ordering="price")
    def price_(self, obj: Transaction) -> str:
        return money(obj.price, obj.currency)

    @admin.display(description="Fee", ordering="fee")
    def fee_(self, obj: Transaction) -> str:
        return money(obj.fee, obj.currency)

    @admin.display(description="Value")
    def value(self, obj: Transaction) -> str:
        return "—" if obj.kind == Kind.SPLIT else money(obj.quantity * obj.price, obj.currency)

    def has_change_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False if obj is not None else super().has_change_permission(request)

    def save_model(self, request: HttpRequest, obj: Transaction, form: forms.ModelForm, change: bool) -> None:
        assert isinstance(form, TransactionForm)
        draft, counterparty = form.draft(), form.cleaned_data.get("counterparty")
        saved = services.entry_record(portfolio=obj.portfolio, draft=draft, counterparty=counterparty)
        obj.pk = saved.pk
        obj.refresh_from_db()  # the form left defaults (price, currency, FX rate) blank; the log entry shows the saved row

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
                self.message_user(request, f"Deleted “{obj}”; holdings and cash were rebuilt.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:portfolio_transaction_changelist"))
        return super().delete_view(request, object_id, extra_context)


@admin.register(Holding)
class HoldingAdmin(HoldingFigures, ReadOnlyAdmin, admin.ModelAdmin):
    """Derived from the ledger; read-only."""

    list_display = ["portfolio", "owner", "instrument", "quantity_", "average_cost_", "cost_", "cost_base_", "updated_at"]
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


class AlertAdminForm(forms.ModelForm):
    class Meta:
        model = Alert
        fields = ["user", "kind", "instrument", "portfolio", "threshold", "window_minutes", "hysteresis", "email", "active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if {"kind", "threshold", "user"} <= data.keys():
            # The rules the page and the services apply (`services.alert_check`), field by field.
            services.alert_check(
                kind=data["kind"],
                threshold=data["threshold"],
                window_minutes=data.get("window_minutes") or 0,
                hysteresis=data.get("hysteresis") or Decimal(0),
                instrument=data.get("instrument"),
                portfolio=data.get("portfolio"),
                user_id=data["user"].pk,
            )
        return data


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    form = AlertAdminForm
    list_display = ["__str__", "user", "kind", "threshold", "hysteresis", "email", "active", "armed", "fired_at"]
    list_filter = ["kind", "active", "armed", "email"]
    search_fields = ["user__username", "instrument__symbol", "portfolio__name"]
    autocomplete_fields = ["user", "instrument", "portfolio"]
    readonly_fields = ["armed", "fired_at", "created_at"]
    actions = ["pause", "resume"]

    def save_model(self, request: HttpRequest, obj: Alert, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.alert_saved(alert=obj)

    def delete_model(self, request: HttpRequest, obj: Alert) -> None:
        services.alert_delete(alert=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        for alert in queryset:
            services.alert_delete(alert=alert)

    @admin.action(description="Pause the selected alerts")
    def pause(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        for alert in queryset:
            services.alert_set_active(alert=alert, active=False)

    @admin.action(description="Resume the selected alerts (armed again)")
    def resume(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        for alert in queryset:
            services.alert_set_active(alert=alert, active=True)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Recorded by the feed worker when an alert fires; staff read them, and may delete them."""

    list_display = ["fired_at", "user", "message", "value", "emailed", "read_at"]
    list_filter = ["emailed", ("read_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "message"]
    date_hierarchy = "fired_at"
    readonly_fields = ["user", "alert", "fired_at", "message", "value", "emailed", "read_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(WatchlistItem)
class WatchlistItemAdmin(admin.ModelAdmin):
    list_display = ["user", "instrument", "added_at"]
    search_fields = ["user__username", "instrument__symbol"]
    autocomplete_fields = ["user", "instrument"]

    def save_model(self, request: HttpRequest, obj: WatchlistItem, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.watchlist_changed(user_id=obj.user_id)

    def delete_model(self, request: HttpRequest, obj: WatchlistItem) -> None:
        services.watchlist_remove(user=obj.user, instrument_id=obj.instrument_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WatchlistItem]) -> None:
        for item in queryset.select_related("user"):
            services.watchlist_remove(user=item.user, instrument_id=item.instrument_id)
