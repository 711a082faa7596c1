"""Normalized market events and their wire encoding.

Every feed source yields these, whatever the upstream format. Timestamps are
the exchange's, timezone-aware UTC; prices and sizes are Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from marketdata.groups import PRICE_EVENT


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    ts: datetime
    price: Decimal
    size: Decimal
    source: str


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book."""

    symbol: str
    ts: datetime
    bid: Decimal
    ask: Decimal
    source: str


MarketEvent = Trade | Quote


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """One conflated broadcast for one symbol: the latest state after a window."""

    symbol: str
    seq: int
    epoch: str
    price: Decimal
    bid: Decimal | None
    ask: Decimal | None
    ts: datetime
    source: str
    ticks: int  # how many source events this update conflates
    # Day change is measured against this: the previous close, or the price 24 h earlier (marketdata.references).
    reference: Decimal | None = None


def to_epoch_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError("naive datetime: market timestamps must be timezone-aware UTC")
    return int(ts.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def encode_price_update(update: PriceUpdate) -> dict[str, object]:
    """Channel-layer message for a price update (msgpack-safe: strings and ints)."""
    return {
        "type": PRICE_EVENT,
        "symbol": update.symbol,
        "seq": update.seq,
        "epoch": update.epoch,
        "price": str(update.price),
        "bid": _dec(update.bid),
        "ask": _dec(update.ask),
        "ts": to_epoch_ms(update.ts),
        "source": update.source,
        "ref": _dec(update.reference),
    }


def decode_price_update(message: dict[str, object]) -> PriceUpdate:
    bid, ask, ref = message.get("bid"), message.get("ask"), message.get("ref")
    return PriceUpdate(
        symbol=str(message["symbol"]),
        seq=int(message["seq"]),  # type: ignore[call-overload]
        epoch=str(message["epoch"]),
        price=Decimal(str(message["price"])),
        bid=None if bid is None else Decimal(str(bid)),
        ask=None if ask is None else Decimal(str(ask)),
        ts=from_epoch_ms(int(message["ts"])),  # type: ignore[call-overload]
        source=str(message["source"]),
        ticks=0,
        reference=None if ref is None else Decimal(str(ref)),
    )
