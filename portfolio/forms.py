"""The self-service ledger's forms. They check what a form can; the ledger rules are the services', whose
messages reach the user unchanged (the admin shows the same ones)."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from django.utils import timezone

from marketdata.models import Instrument
from portfolio import services
from portfolio.ledger import plain
from portfolio.models import Kind, Portfolio, Transaction

_UTF8_CHECK_CHUNK = 64 * 1024


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f}".removesuffix(".0")


def csv_upload_checked(upload: UploadedFile, *, too_big: str) -> UploadedFile:
    """A CSV upload once it is within PORTFOLIO_IMPORT_MAX_BYTES and UTF-8 throughout (read in chunks, not whole);
    `too_big` ends the size error (where else the file can go). For the admin's import and the app's wizard."""
    limit = settings.PORTFOLIO_IMPORT_MAX_BYTES
    if (upload.size or 0) > limit:
        raise ValidationError(f"The file is {(upload.size or 0) / 2**20:.1f} MB; the limit is {megabytes(limit)} MB. {too_big}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in upload.chunks(_UTF8_CHECK_CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValidationError("The file is not UTF-8 text: save it as “CSV UTF-8”.") from None
    upload.seek(0)
    return upload


def draft_from(data: Mapping[str, Any]) -> services.Draft:
    """A ledger draft from a recording form's cleaned data (the admin's and the app's): empty price 1 (cash), fee 0."""
    return services.Draft(
        kind=data["kind"],
        executed_at=data["executed_at"],
        quantity=data["quantity"],
        instrument=data.get("instrument"),
        currency=data.get("currency") or "",
        price=Decimal(1) if data.get("price") is None else data["price"],
        fee=data.get("fee") or Decimal(0),
        fx_rate=data.get("fx_rate"),
        note=data.get("note", ""),
    )


# Which inputs each kind uses (docs/accounting.md, "The ledger"); the others are hidden and their values ignored.
_CASH_FIELDS = ("quantity", "fee", "currency", "fx_rate")
FIELDS_BY_KIND: dict[str, tuple[str, ...]] = {
    Kind.BUY: ("instrument", "quantity", "price", "fee", "currency", "fx_rate"),
    Kind.SELL: ("instrument", "quantity", "price", "fee", "currency", "fx_rate"),
    Kind.DIVIDEND: ("instrument", "quantity", "price", "fee", "currency", "fx_rate"),
    Kind.INTEREST: _CASH_FIELDS,
    Kind.FEE: ("instrument", "quantity", "currency", "fx_rate"),
    Kind.DEPOSIT: _CASH_FIELDS,
    Kind.WITHDRAWAL: _CASH_FIELDS,
    Kind.SPLIT: ("instrument", "quantity"),
    Kind.TRANSFER_IN: ("counterparty", "instrument", "quantity", "currency", "fx_rate"),
    Kind.TRANSFER_OUT: ("counterparty", "instrument", "quantity", "currency", "fx_rate"),
}
# What the quantity means for each kind.
QUANTITY_LABELS: dict[str, str] = {
    Kind.BUY: "Shares",
    Kind.SELL: "Shares",
    Kind.DIVIDEND: "Shares (or the amount, with no price)",
    Kind.INTEREST: "Amount",
    Kind.FEE: "Amount",
    Kind.DEPOSIT: "Amount",
    Kind.WITHDRAWAL: "Amount",
    Kind.SPLIT: "Ratio (2 for 2-for-1)",
    Kind.TRANSFER_IN: "Shares, or an amount of cash",
    Kind.TRANSFER_OUT: "Shares, or an amount of cash",
}
TRANSFERS = frozenset({Kind.TRANSFER_IN, Kind.TRANSFER_OUT})
LOCAL_INPUT = "%Y-%m-%dT%H:%M:%S"


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name.replace("_", " ")) for name in sorted(available_timezones())]


class PortfolioForm(forms.Form):
    name = forms.CharField(max_length=Portfolio._meta.get_field("name").max_length)
    base_currency = forms.CharField(
        max_length=3,
        min_length=3,
        initial="USD",
        help_text="ISO 4217 code. Totals, cost and P&L are in it; it can change only while the ledger is empty.",
    )
    time_zone = forms.ChoiceField(help_text="Entry times are entered and shown in it; its midnight ends the portfolio's day.")
    allow_negative_cash = forms.BooleanField(
        required=False, label="Allow negative cash", help_text=Portfolio._meta.get_field("allow_negative_cash").help_text
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        zones = self.fields["time_zone"]
        assert isinstance(zones, forms.ChoiceField)
        zones.choices = time_zone_choices()
        self.fields["name"].widget.attrs.update(autocomplete="off", placeholder="e.g. Retirement")
        self.fields["base_currency"].widget.attrs.update(autocomplete="off", spellcheck="false", **{"class": "input-code"})

    def clean_base_currency(self) -> str:
        return str(self.cleaned_data["base_currency"]).upper()


class EntryForm(forms.ModelForm):
    """One ledger entry of `portfolio`, new or replacing `instance` (then `counterparty` starts at a transfer's other side)."""

    counterparty = forms.ModelChoiceField(
        Portfolio.objects.none(), required=False, label="Other portfolio", help_text="Where the cash or shares come from or go to."
    )

    class Meta:
        model = Transaction
        fields = ["kind", "executed_at", "instrument", "quantity", "price", "fee", "currency", "fx_rate", "counterparty", "note"]
        labels = {"executed_at": "Executed at", "fx_rate": "FX rate"}
        help_texts = {
            "currency": "Empty: the instrument's currency (without one, the portfolio's).",
            "fx_rate": "Units of the base currency per unit of the currency at execution; empty when they are the same.",
            "price": "Per share, in the instrument's currency; starts at the last price.",
            "instrument": "",
            "quantity": "",
            "fee": "In the entry's currency.",
        }
        widgets = {"executed_at": forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format=LOCAL_INPUT)}

    def __init__(self, *args: Any, portfolio: Portfolio, others: QuerySet[Portfolio], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.portfolio = portfolio
        self.instance.portfolio = portfolio
        editing = self.instance.pk is not None
        counterparty, instrument = self.fields["counterparty"], self.fields["instrument"]
        assert isinstance(counterparty, forms.ModelChoiceField) and isinstance(instrument, forms.ModelChoiceField)
        counterparty.queryset = others
        instrument.queryset = Instrument.objects.order_by("symbol")
        instrument.label_from_instance = lambda i: f"{i.symbol} · {i.name}" if i.name else i.symbol  # type: ignore[method-assign,assignment]
        executed_at = self.fields["executed_at"]
        assert isinstance(executed_at, forms.DateTimeField)
        executed_at.input_formats = [LOCAL_INPUT, "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        for name in ("currency", "fx_rate", "price"):
            self.fields[name].required = False
        self.fields["fee"].required = False
        self.fields["currency"].widget.attrs.update(
            maxlength="3", autocomplete="off", spellcheck="false", placeholder=portfolio.base_currency
        )
        self.fields["note"].widget.attrs.update(autocomplete="off")
        if editing:
            for name in ("quantity", "price", "fee", "fx_rate"):  # 10, not 10.0000000000
                self.initial[name] = plain(getattr(self.instance, name))
            if self.instance.currency == portfolio.base_currency:
                self.initial["fx_rate"] = None  # stored as 1; the form asks for it only across currencies
            counterpart = self.instance.counterpart
            self.initial.setdefault("counterparty", counterpart.portfolio_id if counterpart else None)
        else:
            self.initial.setdefault("executed_at", timezone.localtime().replace(microsecond=0))
            self.initial.setdefault("fee", Decimal(0))
            for name in ("price", "fx_rate", "currency"):
                self.initial.setdefault(name, None)
        # A linked transfer must keep a counterparty; a new one needs one; one imported unlinked may stay so.
        self.counterparty_required = not editing or self.instance.counterpart_id is not None

    def kind(self) -> str:
        return str(self["kind"].value() or Kind.BUY)

    def shown(self, name: str) -> bool:
        return name in FIELDS_BY_KIND.get(self.kind(), ()) or name not in {f for fs in FIELDS_BY_KIND.values() for f in fs}

    def clean_currency(self) -> str:
        return str(self.cleaned_data.get("currency") or "").upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        kind = data["kind"]
        used = FIELDS_BY_KIND[kind]
        # A value typed into an input the kind does not use (then the kind changed) is not part of the entry.
        for name, empty in (("instrument", None), ("price", None), ("fee", Decimal(0)), ("currency", ""), ("fx_rate", None)):
            if name not in used:
                data[name] = empty
        if "counterparty" not in used:
            data["counterparty"] = None
        # The admin's rules, in the admin's words (portfolio/admin.py, TransactionForm.clean).
        if kind in (Kind.BUY, Kind.SELL) and data.get("price") is None:
            self.add_error("price", "A buy or sell needs its price.")
        elif kind in TRANSFERS and data.get("counterparty") is None and self.counterparty_required:
            self.add_error("counterparty", "A transfer needs the portfolio on its other side.")
        if self.errors or data.get("counterparty") is not None:
            return data  # a transfer is priced and checked by `services.transfer_record` when it is recorded
        try:
            if self.instance.pk is None:
                services.transaction_check(portfolio=self.portfolio, draft=self.draft())
            else:  # the entry's own fields; the ledger without the old entry is checked when it is replaced
                _, problems = services.drafts_problems(portfolio=self.portfolio, drafts=[self.draft()])
                for problem in problems:
                    self.add_error(problem.field, problem.message)
        except ValidationError as exc:
            self.add_error(None, exc)
        return data

    def draft(self) -> services.Draft:
        return draft_from(self.cleaned_data)

    def other_side(self) -> Portfolio | None:
        counterparty: Portfolio | None = self.cleaned_data.get("counterparty")
        return counterparty


class TransactionFilter(forms.Form):
    """The transactions page's filters (GET); dates are days in the portfolio's time zone, both ends included."""

    kind = forms.ChoiceField(choices=[("", "All kinds"), *Kind.choices], required=False)
    symbol = forms.CharField(required=False, max_length=30)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def apply(self, rows: QuerySet[Transaction]) -> QuerySet[Transaction]:
        if not self.is_valid():
            return rows
        data = self.cleaned_data
        if data["kind"]:
            rows = rows.filter(kind=data["kind"])
        if data["symbol"]:
            rows = rows.filter(instrument__symbol__iexact=data["symbol"].strip())
        if data["since"]:
            rows = rows.filter(executed_at__gte=_midnight(data["since"]))
        if data["until"]:
            rows = rows.filter(executed_at__lt=_midnight(data["until"], next_day=True))
        return rows


def _midnight(day: date, *, next_day: bool = False) -> datetime:
    """The start of `day` (or of the day after) in the current time zone (the portfolio's, activated by the view)."""
    start = datetime.combine(day, time())
    if next_day:
        start = datetime.combine(date.fromordinal(day.toordinal() + 1), time())
    return timezone.make_aware(start)
