"""Writes to market data."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from marketdata.events import Candle, PriceUpdate
from marketdata.models import AssetClass, Instrument, Quote
from marketdata.models import Candle as CandleRow

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
