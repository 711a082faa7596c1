from decimal import Decimal

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from marketdata.models import Instrument, PriceMark, Quote


def amount(value: Decimal | None) -> str:
    """A price without the trailing zeros of its ten stored places, grouped by thousands."""
    return "—" if value is None else f"{value.normalize():,f}"


class QuotePrices:
    @admin.display(description="Price", ordering="price")
    def price_(self, obj: Quote) -> str:
        return amount(obj.price)

    @admin.display(description="Bid", ordering="bid")
    def bid_(self, obj: Quote) -> str:
        return amount(obj.bid)

    @admin.display(description="Ask", ordering="ask")
    def ask_(self, obj: Quote) -> str:
        return amount(obj.ask)

    @admin.display(description="Reference", ordering="reference_price")
    def reference_(self, obj: Quote) -> str:
        return amount(obj.reference_price)


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


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ["symbol", "name", "asset_class", "quote_currency", "is_active", "last_price", "last_price_at"]
    list_filter = ["asset_class", "is_active", "quote_currency"]
    search_fields = ["symbol", "name"]
    list_editable = ["is_active"]
    list_select_related = ["quote"]
    inlines = [QuoteInline]
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


@admin.register(PriceMark)
class PriceMarkAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Written by the feed worker once a minute; read-only here."""

    list_display = ["instrument", "minute", "price_"]
    list_filter = ["instrument"]
    list_select_related = ["instrument"]
    date_hierarchy = "minute"

    @admin.display(description="Price", ordering="price")
    def price_(self, obj: PriceMark) -> str:
        return amount(obj.price)
