"""The dashboard's watchlist, alerts and notifications: form posts that call `portfolio.services` and come back to the
dashboard (its live parts update from the stream: a watchlist change reloads it, a firing arrives as an `alert` frame)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from marketdata.models import Instrument
from portfolio import selectors, services
from portfolio.models import PORTFOLIO_ALERT_KINDS, Alert, AlertKind, Portfolio
from portfolio.views import SignedInRequest

NOTIFICATIONS_SHOWN = 20


def _instruments() -> Any:
    return Instrument.objects.filter(is_active=True).order_by("symbol")


class WatchForm(forms.Form):
    instrument = forms.ModelChoiceField(queryset=_instruments(), empty_label="Choose an instrument…")


class AlertForm(forms.Form):
    kind = forms.ChoiceField(choices=AlertKind.choices)
    instrument = forms.ModelChoiceField(queryset=_instruments(), empty_label="Choose an instrument…", required=False)
    portfolio = forms.ModelChoiceField(queryset=Portfolio.objects.none(), empty_label="Choose a portfolio…", required=False)
    threshold = forms.DecimalField(
        max_digits=28,
        decimal_places=10,
        help_text="A price; for a move, a % (-5 = falls by 5 %).",
        widget=forms.NumberInput(attrs={"step": "any"}),
    )
    window_minutes = forms.IntegerField(min_value=0, required=False, initial=15, label="Window (min)")
    hysteresis = forms.DecimalField(
        min_value=0,
        max_digits=28,
        decimal_places=10,
        required=False,
        help_text="How far back the value must go to re-arm; empty: 0.5 % of a price, a tenth of a move.",
        widget=forms.NumberInput(attrs={"placeholder": "default", "step": "any"}),
    )
    email = forms.BooleanField(required=False, label="Email me too")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["portfolio"].queryset = selectors.portfolios_for_user(user=user)  # type: ignore[attr-defined]


def dashboard_context(user: Any) -> dict[str, Any]:
    """What the dashboard's watchlist, alerts and notifications cards show when the page loads."""
    notifications = selectors.notifications_recent(user=user, limit=NOTIFICATIONS_SHOWN)
    return {
        "watch_form": WatchForm(auto_id="watch_%s"),
        "alert_form": AlertForm(auto_id="alert_%s", user=user),
        "watchlist": selectors.watchlist_for_user(user=user),
        "alerts": list(selectors.alerts_for_user(user=user)),
        "notifications": notifications,
        "unread_count": sum(1 for n in notifications if n.read_at is None),
        "user_email": getattr(user, "email", ""),
    }


def _back(anchor: str) -> HttpResponseRedirect:
    return redirect(f"{reverse('portfolio:dashboard')}#{anchor}")


def _errors(form: forms.Form) -> dict[str, list[str]]:
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def _form_errors(request: SignedInRequest, what: str, errors: dict[str, list[str]]) -> None:
    for field, problems in errors.items():
        where = "" if field == "__all__" else f"{field.replace('_', ' ')}: "
        for problem in problems:
            messages.error(request, f"{what}: {where}{problem}")


@login_required
@require_POST
def watchlist_add(request: SignedInRequest) -> HttpResponse:
    form = WatchForm(request.POST)
    if not form.is_valid():
        _form_errors(request, "Watchlist", _errors(form))
        return _back("watchlist")
    instrument = form.cleaned_data["instrument"]
    services.watchlist_add(user=request.user, instrument=instrument)
    messages.success(request, f"{instrument.symbol} is on your watchlist.")
    return _back("watchlist")


@login_required
@require_POST
def watchlist_remove(request: SignedInRequest, instrument_id: int) -> HttpResponse:
    if services.watchlist_remove(user=request.user, instrument_id=instrument_id):
        messages.success(request, "Removed from your watchlist.")
    return _back("watchlist")


@login_required
@require_POST
def alert_create(request: SignedInRequest) -> HttpResponse:
    form = AlertForm(request.POST, user=request.user)
    if not form.is_valid():
        _form_errors(request, "Alert", _errors(form))
        return _back("alerts")
    data = form.cleaned_data
    on_portfolio = data["kind"] in PORTFOLIO_ALERT_KINDS
    try:
        alert = services.alert_create(
            user=request.user,
            # The form has both selects; the kind says which one counts (the other may hold an earlier choice).
            instrument=None if on_portfolio else data.get("instrument"),
            portfolio=data.get("portfolio") if on_portfolio else None,
            kind=data["kind"],
            threshold=data["threshold"],
            window_minutes=data.get("window_minutes") or 0,
            hysteresis=data.get("hysteresis"),  # None: the default
            email=data["email"],
        )
    except ValidationError as exc:
        _form_errors(request, "Alert", exc.message_dict)
        return _back("alerts")
    messages.success(request, f"Alert set: {alert.describe()}.")
    return _back("alerts")


def _own_alert(request: SignedInRequest, alert_id: int) -> Alert:
    return get_object_or_404(selectors.alerts_for_user(user=request.user), pk=alert_id)


@login_required
@require_POST
def alert_pause(request: SignedInRequest, alert_id: int) -> HttpResponse:
    services.alert_set_active(alert=_own_alert(request, alert_id), active=False)
    return _back("alerts")


@login_required
@require_POST
def alert_resume(request: SignedInRequest, alert_id: int) -> HttpResponse:
    services.alert_set_active(alert=_own_alert(request, alert_id), active=True)
    return _back("alerts")


@login_required
@require_POST
def alert_delete(request: SignedInRequest, alert_id: int) -> HttpResponse:
    alert = _own_alert(request, alert_id)
    described = alert.describe()
    services.alert_delete(alert=alert)
    messages.success(request, f"Alert deleted: {described}.")
    return _back("alerts")


@login_required
@require_POST
def notifications_read(request: SignedInRequest) -> HttpResponse:
    services.notifications_mark_read(user=request.user)
    return _back("notifications")
