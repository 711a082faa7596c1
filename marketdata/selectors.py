"""Reads of market data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, QuerySet, Subquery

from marketdata.models import ALWAYS_OPEN, ApiToken, Candle, DailyClose, Instrument, Quote, SymbolAlias
from marketdata.symbols import SymbolMap
from marketdata.timeframes import TIMEFRAMES, Bar, aggregate, bucket_start
from marketdata.worker.references import LOOKBACK, MARGIN, Mark, MarketHours, References


def instruments_active(*, symbols: Iterable[str] | None = None) -> QuerySet[Instrument]:
    qs = Instrument.objects.filter(is_active=True).select_related("quote")
    if symbols is not None:
        qs = qs.filter(symbol__in=list(symbols))
    return qs


def instruments_with_daily_closes() -> QuerySet[Instrument]:
    """Instruments with at least one daily close, inactive ones too (a benchmark's history outlives its feed), by symbol."""
    return Instrument.objects.filter(Exists(DailyClose.objects.filter(instrument=OuterRef("pk")))).order_by("symbol")


def quotes_for_instruments(*, instrument_ids: Iterable[int]) -> dict[int, Quote]:
    return {q.instrument_id: q for q in Quote.objects.filter(instrument_id__in=list(instrument_ids))}


def _plain(price: Decimal) -> Decimal:
    """A stored price without the zeros its ten fixed places add (200.0000000000 → 200)."""
    return price.quantize(Decimal(1)) if price == price.to_integral_value() else price.normalize()


def references_load(*, now: datetime) -> References:
    """Day-change references as of `now`, from the stored candles' closes, in two queries.

    Always-open markets need the last 24 hours; a session market may need a
    close from days back (a weekend, a holiday), so each instrument's last
    candle before that window comes along too.
    """
    since = now - LOOKBACK - MARGIN
    before = Candle.objects.filter(instrument=OuterRef("pk"), start__lt=since).order_by("-start")
    instruments = Instrument.objects.annotate(
        prev_minute=Subquery(before.values("start")[:1]), prev_price=Subquery(before.values("close")[:1])
    ).values_list("symbol", "asset_class", "exchange_timezone", "prev_minute", "prev_price")
    markets: dict[str, MarketHours] = {}
    marks: list[Mark] = []
    for symbol, asset_class, timezone, prev_minute, prev_price in instruments:
        markets[symbol] = MarketHours(always_open=asset_class in ALWAYS_OPEN, timezone=timezone)
        if prev_minute is not None:
            marks.append(Mark(symbol, prev_minute, _plain(prev_price)))
    recent = Candle.objects.filter(start__gte=since).order_by("start").values_list("instrument__symbol", "start", "close")
    marks.extend(Mark(symbol, minute, _plain(price)) for symbol, minute, price in recent)
    return References(markets, marks)


def symbol_map_load(*, create: bool = False, wanted: Iterable[str] | None = None) -> SymbolMap:
    """Every active instrument's symbol and aliases, for resolving the symbols sources use (inactive ones get no prices)."""
    aliases = SymbolAlias.objects.filter(instrument__is_active=True).values_list("alias", "source", "instrument__symbol")
    return SymbolMap(
        instruments=Instrument.objects.filter(is_active=True).values_list("symbol", flat=True),
        aliases={(source, alias): symbol for alias, source, symbol in aliases},
        create=create,
        wanted=wanted,
    )


def candles_recent(*, symbol: str, limit: int = 120) -> list[Candle]:
    """The latest `limit` closed one-minute candles of `symbol`, oldest first."""
    rows = Candle.objects.filter(instrument__symbol=symbol).order_by("-start")[:limit]
    return list(reversed(rows))


# The most bars one timeframe request returns: 500 minutes, ~42 hours of 5m, ~5 days of 15m, ~3 weeks of 1h, 500 days.
CANDLE_BARS_MAX = 500


@dataclass(frozen=True)
class CandleHistory:
    """What is stored of one instrument in one timeframe, oldest first.

    `bars` add up the stored one-minute candles (kept HISTORY_RETENTION_DAYS); `last_minute` is the start of the
    newest one they include, so a page adds only later minutes from the live channel. On 1d, `closes` are the
    daily closes of the days before the first bar: a close and nothing else (no open, high, low or volume is
    stored for them), for the page to draw as a line, not as candles it would have to make up.
    """

    timeframe: str
    bars: list[Bar]
    closes: list[tuple[date, Decimal]]
    last_minute: datetime | None


def candles_for_timeframe(*, instrument: Instrument, timeframe: str, limit: int = CANDLE_BARS_MAX) -> CandleHistory:
    """The last `limit` bars of `timeframe` (a key of TIMEFRAMES) up to the newest stored candle; two queries (three on 1d)."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {timeframe!r}: use one of {', '.join(TIMEFRAMES)}")
    interval = TIMEFRAMES[timeframe]
    stored = Candle.objects.filter(instrument=instrument)
    newest = stored.order_by("-start").values_list("start", flat=True).first()
    bars: list[Bar] = []
    if newest is not None:
        since = bucket_start(newest, interval) - (limit - 1) * interval
        rows = stored.filter(start__gte=since).order_by("start").values_list("start", "open", "high", "low", "close", "volume", "trades")
        bars = aggregate((Bar(*row) for row in rows), interval)
    closes: list[tuple[date, Decimal]] = []
    if timeframe == "1d" and len(bars) < limit:
        older = DailyClose.objects.filter(instrument=instrument)
        if bars:
            older = older.filter(date__lt=bars[0].start.date())
        closes = list(reversed(older.order_by("-date").values_list("date", "close")[: limit - len(bars)]))
    return CandleHistory(timeframe, bars, closes, newest)


def tokens_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ApiToken]:
    """A user's API tokens, revoked ones included, newest first (none for an anonymous visitor)."""
    if not user.is_authenticated:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user_id=user.pk).order_by("-created_at", "-id")
