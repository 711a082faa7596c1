"""In-worker market state per symbol: sequence, latest price, the open minute's candle, order book, conflation.

Pure and synchronous: the worker feeds events in with `apply` and takes one
`PriceUpdate` per changed symbol out with `drain` at the end of each window,
and the candles of the minute that just closed with `take_minute`.

The published price is the last trade; a market that only quotes (FX) is
valued at its mid until a trade is seen. Depth data keeps an order book per
symbol (`marketdata.worker.book`); while it is in sync its best levels are the bid
and ask, and a change of them is a tick like a quote.

Trades are checked against the source's trade ids where it has them: a trade
whose id was already seen is a duplicate (a recorder or the exchange sent it
twice) and is dropped; integer ids that jump count as a gap, ids that go back
without being seen as out of order. Backfill trades (from before the session)
are counted and left out. The counts are in `TradeChecks`.

For the market channels (`marketdata.worker.market`) the hub only collects, per event,
what a window's messages need: the trades applied (at most `TRADES_PER_WINDOW`
per symbol, the latest kept, the rest counted) and which books changed. The
messages are built once per window from that (`take_trades`, `take_book_changes`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from marketdata.events import BookDelta, BookSnapshot, Candle, Level, MarketEvent, PriceUpdate, Quote, Trade
from marketdata.worker.book import OrderBook
from marketdata.worker.references import References

ZERO = Decimal(0)
# Trades a `trades:SYM` message of one window carries at most; older ones of that window are dropped (and counted).
TRADES_PER_WINDOW = 1000
# Trade ids remembered per symbol to recognise a duplicate that arrives out of order.
RECENT_TRADE_IDS = 4096


@dataclass(slots=True)
class TradeIds:
    """The trade ids of one symbol seen lately: the newest integer id, and a bounded set for duplicates."""

    last: int | None = None
    recent: set[int | str] = field(default_factory=set)
    order: deque[int | str] = field(default_factory=lambda: deque(maxlen=RECENT_TRADE_IDS))

    def seen(self, trade_id: int | str) -> bool:
        if trade_id in self.recent:
            return True
        if len(self.order) == RECENT_TRADE_IDS:
            self.recent.discard(self.order[0])
        self.order.append(trade_id)
        self.recent.add(trade_id)
        return False


@dataclass(slots=True)
class TradeChecks:
    """What the trade-id checks found, over the whole run."""

    duplicates: int = 0  # dropped: an id already seen
    gaps: int = 0  # integer ids that jumped
    missing: int = 0  # ids skipped over by those jumps
    out_of_order: int = 0  # an id lower than the newest, not seen before (applied)
    backfill: int = 0  # trades from before the session (left out)


@dataclass(slots=True)
class SymbolState:
    seq: int = 0
    price: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    ts: datetime | None = None
    source: str = ""
    pending_ticks: int = 0
    traded: bool = False
    # The open minute's candle; `open` is None until the minute has a price.
    open: Decimal | None = None
    high: Decimal = ZERO
    low: Decimal = ZERO
    volume: Decimal = ZERO
    trades: int = 0
    # For the market channels: the trades of the current window (the latest TRADES_PER_WINDOW; None when
    # not collecting), and `trades` as it was when they were last taken (less what `take_minute` reset since).
    window_trades: deque[Trade] | None = None
    window_base: int = 0
    trade_ids: TradeIds | None = None


class Hub:
    def __init__(self, *, epoch: str, references: References | None = None, replay: bool = False, market: bool = True) -> None:
        """`market`: collect trades and book changes for the market channels (`take_trades`, `take_book_changes`)."""
        self.epoch = epoch
        self.references = references
        self.replay = replay
        self.market = market
        self.symbols: dict[str, SymbolState] = {}
        self.books: dict[str, OrderBook] = {}
        self._dirty: set[str] = set()
        self._in_minute: set[str] = set()
        self._book_changes: dict[str, datetime] = {}
        self._book_ids: dict[str, int] = {}  # the source's id of the latest update applied to each book
        self.checks = TradeChecks()
        self.trades_dropped = 0  # trades left out of a window's trades message (over TRADES_PER_WINDOW)

    def apply(self, event: MarketEvent) -> None:
        symbol = event.symbol
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolState(window_trades=deque(maxlen=TRADES_PER_WINDOW) if self.market else None)
        if isinstance(event, Trade):
            if (event.trade_id is not None or event.backfill) and not self._trade_checked(state, event):
                return
            state.price = event.price
            state.traded = True
            state.volume += event.size
            state.trades += 1
            window = state.window_trades
            if window is not None:
                window.append(event)  # all the per-event work for the trades channel: the message is built per window
        elif isinstance(event, Quote):
            self._quote(state, event.bid, event.ask)
        elif not self._book(state, event):
            return
        price = state.price
        if price is not None:
            if state.open is None:
                state.open = state.high = state.low = price
            elif price > state.high:
                state.high = price
            elif price < state.low:
                state.low = price
        state.ts = event.ts
        state.source = event.source
        state.pending_ticks += 1
        self._dirty.add(symbol)
        self._in_minute.add(symbol)

    def _trade_checked(self, state: SymbolState, trade: Trade) -> bool:
        """Whether to apply a trade that has an id or is backfill; counts what it finds."""
        checks = self.checks
        if trade.backfill:
            checks.backfill += 1
            return False
        trade_id = trade.trade_id
        assert trade_id is not None
        ids = state.trade_ids
        if ids is None:
            ids = state.trade_ids = TradeIds()
        if ids.seen(trade_id):
            checks.duplicates += 1
            return False
        if isinstance(trade_id, int):
            last = ids.last
            if last is None or trade_id > last:
                if last is not None and trade_id > last + 1:
                    checks.gaps += 1
                    checks.missing += trade_id - last - 1
                ids.last = trade_id
            else:
                checks.out_of_order += 1
        return True

    @staticmethod
    def _quote(state: SymbolState, bid: Decimal, ask: Decimal) -> None:
        state.bid, state.ask = bid, ask
        if not state.traded:
            state.price = (bid + ask) / 2

    def _book(self, state: SymbolState, event: BookSnapshot | BookDelta) -> bool:
        """Apply depth; True when it moved the best bid or ask of a book in sync."""
        book = self.books.get(event.symbol)
        if book is None:
            book = self.books[event.symbol] = OrderBook(event.symbol)
        if not book.apply(event):
            return False
        if self.market:
            self._book_changes[event.symbol] = event.ts
            own = event.source_id if isinstance(event, BookDelta) else None
            update_id = book.update_id if book.update_id is not None else own
            if update_id is not None:
                self._book_ids[event.symbol] = update_id
        if not book.synced:
            # Its levels are no longer known: withdraw them rather than publish them with later ticks.
            state.bid = state.ask = None
            return False
        bid, ask = book.best()
        if bid is None or ask is None or (bid == state.bid and ask == state.ask):
            return False
        self._quote(state, bid, ask)
        return True

    def book_top(self, symbol: str, depth: int) -> tuple[list[Level], list[Level]] | None:
        """The best `depth` levels each side, best first; None while the book is not in sync."""
        book = self.books.get(symbol)
        if book is None or not book.synced:
            return None
        return book.top(depth)

    def book_update_id(self, symbol: str) -> int | None:
        """The source's id of the latest update the book shows (Binance `u`, Coinbase sequence), None where it has none."""
        return self._book_ids.get(symbol)

    def take_trades(self) -> dict[str, list[Trade]]:
        """The trades applied since the last call per symbol, oldest first (the latest TRADES_PER_WINDOW of each)."""
        out = {}
        for symbol, state in self.symbols.items():
            window = state.window_trades
            if window:
                trades = list(window)
                self.trades_dropped += state.trades - state.window_base - len(trades)
                window.clear()
                out[symbol] = trades
            state.window_base = state.trades
        return out

    def take_book_changes(self) -> dict[str, datetime]:
        """Symbols whose book changed since the last call (levels, or in/out of sync), with the time of the latest such event."""
        changes, self._book_changes = self._book_changes, {}
        return changes

    def drain(self) -> list[PriceUpdate]:
        """Close the window: one update per symbol that changed, seq +1 each."""
        updates = []
        for symbol in sorted(self._dirty):
            state = self.symbols[symbol]
            if state.price is None or state.ts is None:
                continue  # nothing priceable yet (a quote side alone is not a price)
            state.seq += 1
            updates.append(
                PriceUpdate(
                    symbol=symbol,
                    seq=state.seq,
                    epoch=self.epoch,
                    price=state.price,
                    bid=state.bid,
                    ask=state.ask,
                    ts=state.ts,
                    source=state.source,
                    ticks=state.pending_ticks,
                    reference=None if self.references is None else self.references.reference(symbol, state.ts),
                    replay=self.replay,
                )
            )
            state.pending_ticks = 0
        self._dirty.clear()
        return updates

    def take_minute(self, start: datetime) -> list[Candle]:
        """Close the minute beginning at `start`: the candle of every symbol priced in it, and open the next."""
        candles = []
        for symbol in sorted(self._in_minute):
            state = self.symbols[symbol]
            if state.open is not None and state.price is not None:
                candles.append(Candle(symbol, start, state.open, state.high, state.low, state.price, state.volume, state.trades))
            state.window_base -= state.trades  # so that `trades - window_base` still counts the window's trades
            state.open, state.volume, state.trades = None, ZERO, 0
        self._in_minute.clear()
        return candles
