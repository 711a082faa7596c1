"""The dashboard and the self-service ledger: a signed-in user's own portfolios and their transactions.

Every object is looked up through the user's own portfolios, so another user's
id is a 404, like one that does not exist. Writes go through `portfolio.services`
(the rules and messages the admin has), and are POSTs behind Django's CSRF check.
Times are entered and shown in the portfolio's time zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from marketdata.models import Quote
from marketdata.selectors import instruments_with_daily_closes
from portfolio import services
from portfolio.forms import FIELDS_BY_KIND, QUANTITY_LABELS, EntryForm, PortfolioForm, TransactionFilter
from portfolio.models import Kind, Portfolio, PortfolioValue, Transaction
from portfolio.selectors import active_portfolios_for_user, portfolios_for_user

PAGE_SIZE = 50  # transactions per page


class SignedInRequest(HttpRequest):
    """What a login_required view receives (django-stubs' recommended way to say so)."""

    user: User


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    # The table is filled by the live stream's snapshot; the page itself stays cheap.
    return render(
        request,
        "portfolio/dashboard.html",
        {
            "has_portfolios": active_portfolios_for_user(user=request.user).exists(),
            "archived_count": portfolios_for_user(user=request.user).filter(archived_at__isnull=False).count(),
            "live_config": {"url": "/ws/portfolio/", "coalesceMs": settings.PORTFOLIO_COALESCE_MS},
            "performance_config": _performance_config(request),
            **watch_context(request.user),
        },
    )


def watch_context(user: Any) -> dict[str, Any]:
    from portfolio.watch_views import dashboard_context  # it imports this module (SignedInRequest)

    return dashboard_context(user)


def _performance_config(request: HttpRequest) -> dict[str, Any]:
    """What the value chart's ranges need (static/js/dashboard/performance.js): the endpoint (its id swapped in by the
    script), the instruments a benchmark can be drawn from, and whether to tell the user how staff fill history."""
    return {
        "url": reverse("portfolio:performance", args=[0]),
        "benchmarks": [{"symbol": s, "name": n} for s, n in instruments_with_daily_closes().values_list("symbol", "name")],
        "staff": bool(getattr(request.user, "is_staff", False)),
    }


def _own(request: SignedInRequest, portfolio_id: int) -> Portfolio:
    return get_object_or_404(portfolios_for_user(user=request.user), pk=portfolio_id)


@contextmanager
def _local_time(portfolio: Portfolio) -> Iterator[None]:
    """Entry times typed and shown in the portfolio's time zone (a bad stored name falls back to the server's)."""
    try:
        zone = ZoneInfo(portfolio.time_zone)
    except (KeyError, ValueError):
        zone = ZoneInfo(settings.TIME_ZONE)
    with timezone.override(zone):
        yield


def _settings_errors(form: PortfolioForm, exc: ValidationError) -> None:
    # The model's unique (owner, name) constraint speaks of "Owner and Name"; the user chose only the name.
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for field, errors in exc.message_dict.items():
        if field == "__all__" and any("already exists" in e for e in errors):
            form.add_error("name", "You already have a portfolio with this name.")
        else:
            form.add_error(field if field in form.fields else None, errors)


# --------------------------------------------------------------------------- portfolios


@login_required
def portfolio_list(request: SignedInRequest) -> HttpResponse:
    rows = portfolios_for_user(user=request.user).annotate(transaction_count=Count("transactions"))
    portfolios = list(rows)
    return render(
        request,
        "portfolio/portfolios.html",
        {
            "active": [p for p in portfolios if p.archived_at is None],
            "archived": [p for p in portfolios if p.archived_at is not None],
        },
    )


@login_required
def portfolio_create(request: SignedInRequest) -> HttpResponse:
    form = PortfolioForm(request.POST or None, initial={"time_zone": settings.TIME_ZONE})
    if request.method == "POST" and form.is_valid():
        try:
            portfolio = services.portfolio_create(owner_id=request.user.pk, **form.cleaned_data)
        except ValidationError as exc:
            _settings_errors(form, exc)
        else:
            messages.success(request, f"Created “{portfolio.name}”. Record its first transaction: a deposit, a transfer or a buy.")
            return redirect("portfolio:transaction_create", portfolio_id=portfolio.pk)
    return render(request, "portfolio/portfolio_form.html", {"form": form, "portfolio": None})


@login_required
def portfolio_edit(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    initial = {f: getattr(portfolio, f) for f in ("name", "base_currency", "time_zone", "allow_negative_cash")}
    form = PortfolioForm(request.POST or None, initial=initial)
    has_ledger = Transaction.objects.filter(portfolio=portfolio).exists()
    if has_ledger:
        form.fields["base_currency"].disabled = True  # the service refuses it too; the form says so up front
    if request.method == "POST" and form.is_valid():
        try:
            services.portfolio_update(portfolio=portfolio, **form.cleaned_data)
        except ValidationError as exc:
            _settings_errors(form, exc)
        else:
            messages.success(request, f"Saved “{form.cleaned_data['name']}”.")
            return redirect("portfolio:portfolios")
    return render(request, "portfolio/portfolio_form.html", {"form": form, "portfolio": portfolio})


@login_required
@require_POST
def portfolio_archive(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = services.portfolio_archive(portfolio=_own(request, portfolio_id), archived=True)
    messages.success(request, f"Archived “{portfolio.name}”: it is off the dashboard; its ledger is kept. Unarchive it below.")
    return redirect("portfolio:portfolios")


@login_required
@require_POST
def portfolio_unarchive(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = services.portfolio_archive(portfolio=_own(request, portfolio_id), archived=False)
    messages.success(request, f"“{portfolio.name}” is back on the dashboard.")
    return redirect("portfolio:portfolios")


@login_required
def portfolio_delete(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    if request.method == "POST":
        name = portfolio.name
        services.portfolio_delete(portfolio=portfolio)
        messages.success(request, f"Deleted “{name}” and its ledger.")
        return redirect("portfolio:portfolios")
    ledger = Transaction.objects.filter(portfolio=portfolio)
    return render(
        request,
        "portfolio/portfolio_delete.html",
        {
            "portfolio": portfolio,
            "transactions": ledger.count(),
            "transfers": ledger.filter(counterpart__isnull=False).count(),
            "holdings": portfolio.holdings.count(),
            "cash_balances": portfolio.cash_balances.count(),
            "values": PortfolioValue.objects.filter(portfolio=portfolio).count(),
        },
    )


# --------------------------------------------------------------------------- transactions


@login_required
def transaction_list(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    with _local_time(portfolio):
        filters = TransactionFilter(request.GET or None)
        rows = filters.apply(
            Transaction.objects.filter(portfolio=portfolio)
            .select_related("instrument", "counterpart__portfolio")
            .order_by("-executed_at", "-id")
        )
        page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
        entries = [(entry, _amount(entry)) for entry in page]
        query = request.GET.copy()
        query.pop("page", None)
        return render(
            request,
            "portfolio/transactions.html",
            {
                "portfolio": portfolio,
                "filters": filters,
                "page": page,
                "entries": entries,
                "query": query.urlencode(),
                "filtered": filters.is_bound and any(filters.cleaned_data.values()) if filters.is_valid() else False,
                "time_zone": timezone.get_current_timezone_name(),
            },
        )


def _amount(entry: Transaction) -> Decimal | None:
    """What the entry moves in its currency (a split moves none)."""
    return None if entry.kind == Kind.SPLIT else entry.quantity * entry.price


def _entry_page(request: SignedInRequest, portfolio: Portfolio, form: EntryForm, editing: Transaction | None) -> HttpResponse:
    quotes = Quote.objects.select_related("instrument").only("price", "instrument__id", "instrument__quote_currency")
    prices = {q.instrument.pk: f"{q.price.normalize():f}" for q in quotes}
    instruments = {
        i.pk: {"currency": i.quote_currency, "price": prices.get(i.pk)}
        for i in form.fields["instrument"].queryset.only("id", "quote_currency")  # type: ignore[attr-defined]
    }
    return render(
        request,
        "portfolio/transaction_form.html",
        {
            "portfolio": portfolio,
            "form": form,
            "editing": editing,
            "hidden": {name: not form.shown(name) for name in form.fields},
            "quantity_label": QUANTITY_LABELS.get(form.kind(), "Quantity"),
            "time_zone": timezone.get_current_timezone_name(),
            "entry_config": {
                "fieldsByKind": FIELDS_BY_KIND,
                "quantityLabels": QUANTITY_LABELS,
                "instruments": instruments,
                "baseCurrency": portfolio.base_currency,
                "fillPrice": editing is None,
            },
        },
    )


def _record(request: SignedInRequest, portfolio: Portfolio, form: EntryForm, editing: Transaction | None) -> Transaction | None:
    """Write the form's entry through the services; None (the form holding the services' message) when refused."""
    try:
        if editing is None:
            return services.entry_record(portfolio=portfolio, draft=form.draft(), counterparty=form.other_side())
        return services.transaction_replace(transaction=editing, draft=form.draft(), counterparty=form.other_side())
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            form.add_error(None, exc)
        return None


@login_required
def transaction_create(request: SignedInRequest, portfolio_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    others = portfolios_for_user(user=request.user).exclude(pk=portfolio.pk)
    with _local_time(portfolio):
        kind = request.GET.get("kind", "")
        if kind not in Kind.values:  # a new portfolio starts with money; then trades are what people record most
            kind = Kind.BUY if Transaction.objects.filter(portfolio=portfolio).exists() else Kind.DEPOSIT
        initial: dict[str, Any] = {"kind": kind}
        if request.GET.get("instrument", "").isdigit():
            initial["instrument"] = int(request.GET["instrument"])
        form = EntryForm(request.POST or None, initial=initial, portfolio=portfolio, others=others)
        if request.method == "POST" and form.is_valid() and (saved := _record(request, portfolio, form, None)):
            messages.success(request, f"Recorded “{saved}”; holdings and cash were rebuilt.")
            if "another" in request.POST:
                return redirect(f"{reverse('portfolio:transaction_create', args=[portfolio.pk])}?kind={saved.kind}")
            return redirect("portfolio:transactions", portfolio_id=portfolio.pk)
        return _entry_page(request, portfolio, form, None)


@login_required
def transaction_edit(request: SignedInRequest, portfolio_id: int, transaction_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    entry = get_object_or_404(Transaction.objects.filter(portfolio=portfolio).select_related("counterpart"), pk=transaction_id)
    others = portfolios_for_user(user=request.user).exclude(pk=portfolio.pk)
    with _local_time(portfolio):
        form = EntryForm(request.POST or None, instance=entry, portfolio=portfolio, others=others)
        if request.method == "POST" and form.is_valid():
            stored = Transaction.objects.select_related("instrument", "counterpart").get(pk=entry.pk)  # the form changed `entry`
            old = str(stored)
            if saved := _record(request, portfolio, form, stored):
                messages.success(request, f"Replaced “{old}” with “{saved}”; holdings and cash were rebuilt.")
                return redirect("portfolio:transactions", portfolio_id=portfolio.pk)
        return _entry_page(request, portfolio, form, entry)


@login_required
def transaction_delete(request: SignedInRequest, portfolio_id: int, transaction_id: int) -> HttpResponse:
    portfolio = _own(request, portfolio_id)
    entry = get_object_or_404(
        Transaction.objects.filter(portfolio=portfolio).select_related("instrument", "counterpart__portfolio"), pk=transaction_id
    )
    if request.method == "POST":
        try:
            services.transaction_delete(transaction=entry)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))  # as the admin says it
        else:
            messages.success(request, f"Deleted “{entry}”; holdings and cash were rebuilt.")
        return redirect("portfolio:transactions", portfolio_id=portfolio.pk)
    with _local_time(portfolio):
        return render(
            request,
            "portfolio/transaction_delete.html",
            {"portfolio": portfolio, "entry": entry, "time_zone": timezone.get_current_timezone_name()},
        )
