"""Writes to market data."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db.models import Q
from django.utils import timezone

from marketdata.events import Candle, PriceUpdate
from marketdata.models import ApiToken, AssetClass, Instrument, Quote
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
