"""Normalized market events and their wire encoding.

Every feed source yields these, whatever the upstream format. Timestamps are
the exchange's, timezone-aware UTC; prices and sizes are Decimal.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an `__init__` that fills the slots through their descriptors.

    A frozen dataclass's own `__init__` calls `object.__setattr__` once per field, which costs twice as
    much, and a replay builds an event per line: this halves that. The object is the same (same slots,
    equality, hash, repr, immutability); fields with a default_factory are not supported."""
    names, defaults, namespace = [], [], {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not MISSING:
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} has a default_factory")
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            names.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            defaults.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"\n    _set_{f.name}(self, {f.name})" for f in fields(cls))  # type: ignore[arg-type]
    exec(f"def __init__(self, {', '.join(names + defaults)}):{body}", namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


# A price level of an order book: (price, quantity). Quantity 0 in a delta removes the level.
Level = tuple[Decimal, Decimal]


@quick_init
@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    ts: datetime
    price: Decimal
    size: Decimal
    source: str
    side: str | None = None  # the taker's side, "buy" or "sell", where the source says
    # The source's trade id (Binance `a`/`t`, Coinbase `trade_id`, Tardis `id`): duplicates are dropped by it,
    # and where ids are integers that rise by one, a jump is counted as a gap. None where the source has none.
    trade_id: int | str | None = None
    # A trade from before the session that the source re-sends on subscribing (cryptofeed's trade snapshot):
    # counted, but kept out of prices, candles and the trades channel.
    backfill: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book."""

    symbol: str
    ts: datetime
    bid: Decimal
    ask: Decimal
    source: str
    update_id: int | None = None  # the source's book version of this top (Binance bookTicker `u`)


@quick_init
@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A whole order book (as deep as the source sent it); replaces what the worker holds.

    `update_id` is the exchange's book version where it has one (Binance `lastUpdateId`);
    deltas are checked against it (`marketdata.worker.book`).
    """

    symbol: str
    ts: datetime
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    source: str
    update_id: int | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class BookDelta:
    """Changed levels, each with its new absolute quantity (0 removes it).

    `first_id`..`last_id` is the range of book versions it covers where the
    source numbers them (Binance `U`..`u`); None where it does not (Coinbase).
    """

    symbol: str
    ts: datetime
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    source: str
    first_id: int | None = None
    last_id: int | None = None
    # The source's own id of this update where it is not a book version (Coinbase sequence, LOBSTER order id):
    # published on the book channels so a client can line the book up with the exchange's data; never used to sync.
    source_id: int | None = None


MarketEvent = Trade | Quote | BookSnapshot | BookDelta


@quick_init
@dataclass(frozen=True, slots=True)
class Candle:
    """One closed minute of a symbol's published price: the last trade, or the mid where nothing trades."""

    symbol: str
    start: datetime  # start of the UTC minute
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal  # traded quantity
    trades: int


@quick_init
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
    # Day change is measured against this: the previous close, or the price 24 h earlier (marketdata.worker.references).
    reference: Decimal | None = None
    replay: bool = False  # True when a recorded session is being replayed (`replay_feed`)


def to_epoch_ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError("naive datetime: market timestamps must be timezone-aware UTC")
    return int(ts.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_epoch_us(us: int) -> datetime:
    """Exact, unlike `fromtimestamp(us / 1e6)`, whose float can land a microsecond off."""
    return EPOCH + timedelta(0, 0, us)  # positional: half the cost of microseconds=us
