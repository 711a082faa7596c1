"""The profile page (a user's API tokens for bots, and how a bot connects) and the instrument page."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from marketdata import services
from marketdata.api.channels import session_check
from marketdata.events import to_epoch_ms
from marketdata.models import ApiToken, Instrument, Quote
from marketdata.selectors import CANDLE_BARS_MAX, candles_for_timeframe, tokens_for_user
from marketdata.timeframes import TIMEFRAMES
from marketdata.worker.market import wire

MARKET_WS_PATH = "/ws/v1/market"
WEBSOCKET_DOCS = settings.BASE_DIR / "docs" / "websocket-api.md"


class SignedInRequest(HttpRequest):
    """What a login_required view receives (django-stubs' recommended way to say so)."""

    user: User


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=ApiToken._meta.get_field("name").max_length,
        help_text="What the token is for, so you can tell it apart later.",
    )


# never_cache: the answer to a create carries a token's plaintext; no cache (nor the back button's) may keep it.
@never_cache
@login_required
def profile(request: SignedInRequest) -> HttpResponse:
    """The user's tokens and a form to make one. The new token's plaintext is in this response only, never stored."""
    form = TokenForm()
    created: tuple[ApiToken, str] | None = None
    if request.method == "POST":
        form = TokenForm(request.POST)
        if form.is_valid():
            created = services.token_create(user=request.user, name=form.cleaned_data["name"])
            form = TokenForm()
    scheme = "wss" if request.is_secure() else "ws"
    return render(
        request,
        "marketdata/profile.html",
        {
            "form": form,
            "tokens": tokens_for_user(user=request.user),
            "new_token": None if created is None else created[0],
            "new_plaintext": None if created is None else created[1],
            "endpoint": f"{scheme}://{request.get_host()}{MARKET_WS_PATH}",
        },
    )


@login_required
@require_POST
def revoke(request: SignedInRequest, token_id: int) -> HttpResponse:
    # Through the user's own tokens: another user's id is a 404, like one that does not exist.
    token = get_object_or_404(tokens_for_user(user=request.user), pk=token_id)
    services.token_revoke(token=token)
    messages.success(request, f"Token “{token.name}” (lf_{token.prefix}…) revoked. Bots using it can no longer sign in.")
    return redirect("marketdata:profile")


@login_required
def websocket_docs(request: HttpRequest) -> FileResponse:
    """docs/websocket-api.md as plain text, so the profile page's "Connect a bot" can link to the protocol."""
    try:
        return FileResponse(WEBSOCKET_DOCS.open("rb"), content_type="text/plain; charset=utf-8")
    except FileNotFoundError:
        raise Http404("The WebSocket API documentation is not installed here.") from None


# Depth of the instrument page's order book, and how often each of its channels may send (docs/websocket-api.md).
INSTRUMENT_BOOK_DEPTH = 10
INSTRUMENT_THROTTLE_MS = 250


@login_required
def instrument(request: SignedInRequest, symbol: str) -> HttpResponse:
    """One instrument, live: candles, trades and the order book over /ws/v1/market (static/js/instrument.js).

    `symbol` is the instrument's own symbol, slashes and carets included (EUR/USD, ^GSPC); anything else is a 404.
    The page opens on the stored quote, so it shows a price before the socket's first snapshot.

    `?session=NAME`: follow that replay session (`replay_feed --sandbox NAME`) instead of the live market: the
    session's channels only, and no stored quote (that is the live market's), so nothing live is mixed in. A
    session nobody replays (yet) shows no data; a malformed name is a 400.
    """
    instrument = get_object_or_404(Instrument, symbol=symbol)
    session = request.GET.get("session")
    if session is not None:
        try:
            session_check(session)
        except ValueError as exc:
            return HttpResponseBadRequest(f"?session=: {exc}", content_type="text/plain; charset=utf-8")
    try:
        quote: Quote | None = instrument.quote
    except Quote.DoesNotExist:
        quote = None
    stored = None
    if quote is not None and session is None:
        stored = {
            "last": wire(quote.price),
            "bid": None if quote.bid is None else wire(quote.bid),
            "ask": None if quote.ask is None else wire(quote.ask),
            "ref": None if quote.reference_price is None else wire(quote.reference_price),
            "ts": to_epoch_ms(quote.exchange_ts),
        }
    return render(
        request,
        "marketdata/instrument.html",
        {
            "instrument": instrument,
            "reference_label": "24 h ago" if instrument.always_open else "Previous close",
            "book_depth": INSTRUMENT_BOOK_DEPTH,
            "session": session,
            "market_config": {
                "url": MARKET_WS_PATH,
                "symbol": instrument.symbol,
                "name": instrument.name,
                "assetClass": instrument.asset_class,
                "assetClassLabel": instrument.get_asset_class_display(),
                "currency": instrument.quote_currency,
                "alwaysOpen": instrument.always_open,
                "depth": INSTRUMENT_BOOK_DEPTH,
                "throttleMs": INSTRUMENT_THROTTLE_MS,
                "quote": stored,
                "session": session,
            },
        },
    )


@login_required
@require_GET
def instrument_candles(request: SignedInRequest, symbol: str) -> JsonResponse:
    """GET /market/<symbol>/candles/?tf=1m|5m|15m|1h|1d (default 1m): the stored history of the instrument page's chart.

    At most CANDLE_BARS_MAX bars, oldest first, each `{start (epoch ms), open, high, low, close, volume, trades,
    closed}` with decimals as strings; `last_minute` (epoch ms or null) is the newest stored minute they include:
    the page adds the live channel's later minutes to them. On 1d, `closes` are `{start, close}` of the days
    before the first bar, which have a daily close only. Signed-in users, as the page; an unknown symbol is a 404
    and an unknown timeframe a 400, both with an `error` saying which.
    """
    instrument = Instrument.objects.filter(symbol=symbol).first()
    if instrument is None:
        return JsonResponse({"error": f"Unknown symbol {symbol!r}."}, status=404)
    timeframe = request.GET.get("tf", "1m")
    if timeframe not in TIMEFRAMES:
        return JsonResponse({"error": f"Unknown timeframe {timeframe[:20]!r}: use one of {', '.join(TIMEFRAMES)}."}, status=400)
    history = candles_for_timeframe(instrument=instrument, timeframe=timeframe)
    interval = TIMEFRAMES[timeframe]
    now = timezone.now()
    return JsonResponse(
        {
            "symbol": instrument.symbol,
            "tf": timeframe,
            "interval_ms": int(interval.total_seconds() * 1000),
            "max_bars": CANDLE_BARS_MAX,
            "last_minute": None if history.last_minute is None else to_epoch_ms(history.last_minute),
            "bars": [
                {
                    "start": to_epoch_ms(bar.start),
                    "open": wire(bar.open),
                    "high": wire(bar.high),
                    "low": wire(bar.low),
                    "close": wire(bar.close),
                    "volume": wire(bar.volume),
                    "trades": bar.trades,
                    "closed": bar.start + interval <= now,
                }
                for bar in history.bars
            ],
            "closes": [
                {"start": to_epoch_ms(datetime.combine(day, time(), tzinfo=UTC)), "close": wire(close)} for day, close in history.closes
            ],
        }
    )
