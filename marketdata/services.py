"""Writes to market data."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import transaction as db_transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from marketdata import closes_csv
from marketdata.events import Candle, PriceUpdate
from marketdata.models import ApiToken, AssetClass, DailyClose, Instrument, Quote, SymbolAlias
from marketdata.models import Candle as CandleRow

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)


def quotes_store(updates: Iterable[PriceUpdate]) -> int:
    """Upsert the latest quote of each symbol in one statement; returns rows written.

    Symbols without an instrument are skipped (and logged); they cannot be held.
    """
    latest = {u.symbol: u for u in updates}
    ids = dict(Instrument.objects.filter(symbol__in=latest).values_list("symbol", "id"))
    unknown = sorted(set(latest) - set(ids))
    if unknown:
        log.warning("no instrument for %s; their quotes are not stored", ", ".join(unknown))
    rows = [
        Quote(
            instrument_id=ids[symbol],
            price=u.price,
            bid=u.bid,
            ask=u.ask,
            exchange_ts=u.ts,
            seq=u.seq,
            epoch=u.epoch,
            source=u.source,
            reference_price=u.reference,
        )
        for symbol, u in latest.items()
        if symbol in ids
    ]
    Quote.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["instrument"],
        update_fields=["price", "bid", "ask", "exchange_ts", "seq", "epoch", "source", "reference_price", "updated_at"],
    )
    return len(rows)


def candles_store(*, candles: Iterable[Candle]) -> int:
    """Upsert closed one-minute candles in one statement; returns rows written.

    Symbols without an instrument are skipped silently: their quotes already warn.
    """
    latest = {(c.symbol, c.start): c for c in candles}
    ids = dict(Instrument.objects.filter(symbol__in={symbol for symbol, _ in latest}).values_list("symbol", "id"))
    rows = [
        CandleRow(
            instrument_id=ids[c.symbol], start=c.start, open=c.open, high=c.high, low=c.low, close=c.close, volume=c.volume, trades=c.trades
        )
        for c in latest.values()
        if c.symbol in ids
    ]
    CandleRow.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["instrument", "start"],
        update_fields=["open", "high", "low", "close", "volume", "trades"],
    )
    return len(rows)


def candles_prune(*, before: datetime) -> int:
    """Delete candles of minutes before `before`; returns how many went."""
    deleted, _ = CandleRow.objects.filter(start__lt=before).delete()
    return deleted


# Stablecoins are valued as the dollar they track; instruments need an ISO 4217 quote currency.
STABLECOINS = {"USDT": "USD", "USDC": "USD", "FDUSD": "USD", "BUSD": "USD", "TUSD": "USD", "DAI": "USD", "EURC": "EUR"}
FIAT = ("USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD", "TRY", "BRL")
SOURCE_ASSET_CLASS = {"binance": AssetClass.CRYPTO, "coinbase": AssetClass.CRYPTO, "histdata": AssetClass.FX}


def quote_currency_guess(symbol: str) -> str | None:
    """The quote currency a symbol ends in (BTCUSDT → USD, BTC-EUR → EUR, EURUSD → USD), if it ends in a known one."""
    tail = symbol.upper().replace("-", "/").rpartition("/")[2]
    for code in (*STABLECOINS, *FIAT):  # stablecoins first: BTCUSDT ends in USDT, not USD
        if tail.endswith(code):
            return STABLECOINS.get(code, code)
    return None


def instruments_create(*, symbols: Mapping[str, str]) -> list[Instrument]:
    """Instruments for symbols first seen in a feed (symbol → source), with what the symbol tells.

    The asset class comes from the source (crypto exchanges, FX tick files), the quote
    currency from the symbol's ending (USD when it says nothing). Staff refine them in the admin.
    """
    created = []
    for symbol, source in symbols.items():
        currency = quote_currency_guess(symbol) or "USD"
        asset_class = SOURCE_ASSET_CLASS.get(source, AssetClass.EQUITY)
        instrument, new = Instrument.objects.get_or_create(
            symbol=symbol, defaults={"name": f"{symbol} (from {source})", "asset_class": asset_class, "quote_currency": currency}
        )
        if new:
            log.info("created instrument %s (%s, quoted in %s) for %s data", symbol, asset_class, currency, source)
            created.append(instrument)
    return created


# --- API tokens ------------------------------------------------------------------
# "lf_" and 32 random bytes in URL-safe base64 (43 characters, no padding).
TOKEN_PREFIX = "lf_"  # noqa: S105 (the marker every token starts with, not a secret)
TOKEN_SHAPE = re.compile(r"lf_[A-Za-z0-9_-]{43}")
# A connect storm of one bot must not become a write per connection.
TOKEN_USE_STAMP_INTERVAL = timedelta(minutes=1)


def token_digest(plaintext: str) -> str:
    """SHA-256 (hex) of a whole token, the only form in which a token is stored.

    A fast unsalted hash is right here, unlike for passwords: a token carries
    256 random bits, so no amount of hashing speed makes guessing one (or
    inverting a leaked digest) feasible, and slow or salted hashes exist to
    protect low-entropy secrets. Being deterministic, the digest is also the
    lookup key: one indexed query finds the token, and the comparison is the
    database's equality on a value an attacker cannot steer (they would need
    SHA-256 preimages), so it leaks nothing through timing.
    """
    return hashlib.sha256(plaintext.encode()).hexdigest()


def token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`; returns it with its plaintext, which exists only in this return value."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip(), prefix=plaintext[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8], digest=token_digest(plaintext)
    )
    log.info("API token %s (lf_%s…) created for %s", token.pk, token.prefix, user)
    return token, plaintext


def token_revoke(*, token: ApiToken) -> None:
    """Revoke `token` from now on; revoking it again keeps the first time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])


def token_authenticate(*, plaintext: str) -> User | None:
    """The user a token belongs to, or None when it is malformed, unknown, revoked or its user is inactive.

    `last_used_at` is stamped at most once per TOKEN_USE_STAMP_INTERVAL: the
    conditional UPDATE lets only one of many concurrent connections write.
    """
    if not isinstance(plaintext, str) or not TOKEN_SHAPE.fullmatch(plaintext):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(plaintext)).first()
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    stale = now - TOKEN_USE_STAMP_INTERVAL
    if token.last_used_at is None or token.last_used_at <= stale:
        ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=token.pk).update(last_used_at=now)
    return token.user


# --- Daily closes ------------------------------------------------------------------
CANDLES_SOURCE = "candles"


def _utc_day(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def daily_closes_from_candles(*, day: date) -> int:
    """Store each instrument's close of UTC `day` (its last 1-minute candle that day) as its daily close; returns rows written.

    Two queries, whatever the number of instruments. A close imported from a vendor
    (`import_prices`) is kept: an operator's file outranks what a feed saw.
    Safe to run again (the same day gives the same closes).
    """
    start, end = _utc_day(day)
    last = CandleRow.objects.filter(instrument=OuterRef("pk"), start__gte=start, start__lt=end).order_by("-start")
    closes = (
        Instrument.objects.annotate(day_close=Subquery(last.values("close")[:1]))
        .filter(day_close__isnull=False)
        .exclude(pk__in=DailyClose.objects.filter(date=day).exclude(source=CANDLES_SOURCE).values("instrument_id"))
        .values_list("id", "day_close")
    )
    rows = [DailyClose(instrument_id=pk, date=day, close=close, source=CANDLES_SOURCE) for pk, close in closes]
    DailyClose.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["instrument", "date"], update_fields=["close", "source", "updated_at"]
    )
    return len(rows)


def daily_closes_days_with_candles(*, since: date | None = None) -> list[date]:
    """The UTC days the stored candles cover (after `since`, inclusive), oldest first: what `--from-candles` rebuilds."""
    first = CandleRow.objects.order_by("start").values_list("start", flat=True).first()
    newest = CandleRow.objects.order_by("-start").values_list("start", flat=True).first()
    if first is None or newest is None:
        return []
    day, last = first.astimezone(UTC).date(), newest.astimezone(UTC).date()
    if since is not None:
        day = max(day, since)
    days = []
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    return days


@dataclass(frozen=True)
class ClosesStored:
    created: int
    updated: int


def daily_closes_store(*, closes: Iterable[tuple[int, date, Decimal]], source: str, batch_size: int = 1000) -> ClosesStored:
    """Upsert (instrument id, date, close) rows from `source`; an existing close of that day is replaced."""
    created = updated = 0
    batch: list[DailyClose] = []

    def flush() -> None:
        nonlocal created, updated
        keys = {(row.instrument_id, row.date) for row in batch}
        existing = DailyClose.objects.filter(instrument_id__in={pk for pk, _ in keys}, date__in={day for _, day in keys}).values_list(
            "instrument_id", "date"
        )
        found = len(keys & set(existing))
        DailyClose.objects.bulk_create(
            batch, update_conflicts=True, unique_fields=["instrument", "date"], update_fields=["close", "source", "updated_at"]
        )
        created, updated = created + len(keys) - found, updated + found
        batch.clear()

    with db_transaction.atomic():
        for instrument_id, day, close in closes:
            batch.append(DailyClose(instrument_id=instrument_id, date=day, close=close, source=source))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return ClosesStored(created, updated)


@dataclass(frozen=True)
class ClosesImport:
    format: str
    created: int
    updated: int
    bad: list[closes_csv.BadRow]
    dry_run: bool

    def summary(self) -> str:
        bad = f"{len(self.bad)} bad row{'s' if len(self.bad) != 1 else ''} skipped"
        verb = "would write" if self.dry_run else "wrote"
        return f"{self.format} file: {verb} {self.created + self.updated} closes ({self.created} new, {self.updated} updated); {bad}"


def daily_closes_import(*, lines: Iterable[str], symbol: str = "", adjusted: bool = False, dry_run: bool = False) -> ClosesImport:
    """Daily closes from a vendor CSV (`marketdata.closes_csv`), by instrument symbol or alias; a re-import updates.

    Every row that cannot be stored is in `bad` with its line and why (a symbol with no
    instrument among them); the good rows are written in one transaction. Raises
    closes_csv.FormatError when the file cannot be read at all.
    """
    parsed = closes_csv.parse(lines, symbol=symbol, adjusted=adjusted)
    known = dict(Instrument.objects.values_list("symbol", "id"))
    aliases = {
        alias: pk
        for alias, source, pk in SymbolAlias.objects.values_list("alias", "source", "instrument_id")
        if source in ("", parsed.format)
    }
    bad = list(parsed.bad)
    rows = []
    for close in parsed.closes:
        pk = known.get(close.symbol, aliases.get(close.symbol))
        if pk is None:
            bad.append(closes_csv.BadRow(close.line, f"no instrument {close.symbol!r} (add it, or an alias, in the admin)"))
            continue
        rows.append((pk, close.date, close.close))
    bad.sort(key=lambda row: row.line)
    if dry_run:
        existing = set(DailyClose.objects.filter(instrument_id__in={pk for pk, _, _ in rows}).values_list("instrument_id", "date"))
        updated = sum((pk, day) in existing for pk, day, _ in rows)
        return ClosesImport(parsed.format, len(rows) - updated, updated, bad, dry_run=True)
    stored = daily_closes_store(closes=rows, source=parsed.format)
    if bad:
        log.warning("import of %s daily closes: %d bad rows skipped", parsed.format, len(bad))
    return ClosesImport(parsed.format, stored.created, stored.updated, bad, dry_run=False)
