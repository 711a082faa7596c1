from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from marketdata import services
from marketdata.models import ApiToken, Candle, Feed, Instrument, Quote, SymbolAlias


def amount(value: Decimal | None) -> str:
    """A price without the trailing zeros of its ten stored places, grouped by thousands."""
    return "—" if value is None else f"{value.normalize():,f}"


def amount_column(field: str, label: str) -> Callable[[Any, Any], str]:
    """A list column showing a decimal field with `amount`, sortable by the field."""

    @admin.display(description=label, ordering=field)
    def column(self: Any, obj: Any) -> str:
        return amount(getattr(obj, field))

    return column


class QuotePrices:
    price_ = amount_column("price", "Price")
    bid_ = amount_column("bid", "Bid")
    ask_ = amount_column("ask", "Ask")
    reference_ = amount_column("reference_price", "Reference")


class ReadOnlyAdmin:
    """For rows only the app writes: the admin shows them and nothing more."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class QuoteInline(QuotePrices, admin.StackedInline):
    model = Quote
    can_delete = False
    fields = readonly_fields = ("price_", "bid_", "ask_", "reference_", "exchange_ts", "seq", "epoch", "source", "updated_at")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class SymbolAliasInline(admin.TabularInline):
    model = SymbolAlias
    extra = 0
    fields = ["alias", "source"]


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "asset_class", "quote_currency", "is_active", "last_price", "last_price_at"]
    list_filter = ["asset_class", "is_active", "quote_currency"]
    search_fields = ["symbol", "name"]
    list_editable = ["is_active"]
    list_select_related = ["quote"]
    inlines = [QuoteInline, SymbolAliasInline]
    actions = ["activate", "deactivate"]

    @admin.display(description="Last price", ordering="quote__price")
    def last_price(self, obj: Instrument) -> str:
        quote = getattr(obj, "quote", None)
        return "—" if quote is None else amount(quote.price)

    @admin.display(description="Price time (UTC)", ordering="quote__exchange_ts")
    def last_price_at(self, obj: Instrument) -> str:
        quote = getattr(obj, "quote", None)
        return "—" if quote is None else f"{quote.exchange_ts:%Y-%m-%d %H:%M:%S}"

    @admin.action(description="Activate selected instruments")
    def activate(self, request: HttpRequest, queryset: QuerySet[Instrument]) -> None:
        self.message_user(request, f"{queryset.update(is_active=True)} instruments activated.")

    @admin.action(description="Deactivate selected instruments (no prices, no new transactions)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Instrument]) -> None:
        self.message_user(request, f"{queryset.update(is_active=False)} instruments deactivated.")


@admin.register(Quote)
class QuoteAdmin(QuotePrices, admin.ModelAdmin):
    """Written by the feed worker; staff read it here."""

    list_display = ["instrument", "price_", "bid_", "ask_", "reference_", "exchange_ts", "seq", "source", "updated_at"]
    list_filter = ["instrument__asset_class", "source"]
    search_fields = ["instrument__symbol", "instrument__name"]
    list_select_related = ["instrument"]
    date_hierarchy = "exchange_ts"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Written by the feed worker as each minute closes; read-only here."""

    list_display = ["instrument", "start", "open_", "high_", "low_", "close_", "volume_", "trades"]
    list_filter = ["instrument"]
    list_select_related = ["instrument"]
    date_hierarchy = "start"

    open_ = amount_column("open", "Open")
    high_ = amount_column("high", "High")
    low_ = amount_column("low", "Low")
    close_ = amount_column("close", "Close")
    volume_ = amount_column("volume", "Volume")


@admin.register(SymbolAlias)
class SymbolAliasAdmin(admin.ModelAdmin):
    list_display = ["alias", "source", "instrument"]
    list_filter = ["source"]
    list_select_related = ["instrument"]
    search_fields = ["alias", "instrument__symbol"]
    autocomplete_fields = ["instrument"]


@admin.register(Feed)
class FeedAdmin(admin.ModelAdmin):
    """What `run_feeds` runs; it reads these when it starts."""

    list_display = ["name", "kind", "symbols", "enabled"]
    list_filter = ["kind", "enabled"]
    list_editable = ["enabled"]
    search_fields = ["name", "symbols"]


class TokenStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Bots' tokens. Staff make one for a user here; its plaintext is shown once, in the success message.

    Only the SHA-256 is stored, so nothing here (nor anywhere) can show a token again.
    """

    list_display = ["name", "user", "prefix_", "created_at", "last_used_at", "active"]
    list_filter = [TokenStatusFilter, "created_at", "last_used_at"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    date_hierarchy = "created_at"
    actions = ["revoke"]

    @admin.display(description="Token", ordering="prefix")
    def prefix_(self, obj: ApiToken) -> str:
        return f"lf_{obj.prefix}…"

    @admin.display(description="Active", boolean=True, ordering="revoked_at")
    def active(self, obj: ApiToken) -> bool:
        return obj.is_active

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:  # the add form: the token itself is made by the service on save
            return ("user", "name")
        return ("user", "name", "prefix_", "digest", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        # Only the name may change: a token stays its user's, and revoking is the action's (or the profile page's) job.
        return ("user", "prefix_", "digest", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request: HttpRequest, obj: ApiToken, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, plaintext = services.token_create(user=obj.user, name=obj.name)
        # The admin goes on with `obj` (history, redirect): make it the row the service wrote.
        obj.pk, obj.prefix, obj.digest, obj.created_at = token.pk, token.prefix, token.digest, token.created_at
        obj._state.adding = False
        self.message_user(
            request,
            f"API token for {token.user}: {plaintext} — copy it now, it will not be shown again.",
            messages.SUCCESS,
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            services.token_revoke(token=token)
        self.message_user(request, f"{len(tokens)} token{'s' if len(tokens) != 1 else ''} revoked.")
