"""LOBSTER limit order book data (NASDAQ TotalView-ITCH, reconstructed): `--format lobster`.

Format (LOBSTER "Data structure", https://lobsterdata.com/info/DataStructure.php, and the
sample files' ReadMe):

- Per day and ticker, two csv files without header:
  `AAPL_2012-06-21_34200000_57600000_message_10.csv` and `..._orderbook_10.csv`
  (start and end in milliseconds after midnight; 10 = the requested number of levels).
- Message rows: `Time, Type, Order ID, Size, Price, Direction`, e.g.
  `34713.685155243,1,206833312,100,118600,-1`. Time is seconds after midnight with a fraction
  (up to nanoseconds; kept to the microsecond) on New York's wall clock; Price is dollars × 10000;
  Direction 1 is a buy limit order, -1 a sell limit order. Types: 1 submission, 2 partial
  cancellation, 3 deletion, 4 execution of a visible order, 5 execution of a hidden order,
  6 cross trade (e.g. the opening or closing auction), 7 trading halt (price -1 begins it,
  1 ends it, 0 resumes quoting).
- Orderbook row k is the book after message k: `Ask Price 1, Ask Size 1, Bid Price 1, Bid Size 1,
  Ask Price 2, ...` for each level; an empty level is written as size 0 (with dummy prices
  9999999999 / -9999999999). Messages are only those touching the requested levels, so levels
  below them come into view without a message: the orderbook row shows them.

Events:
- The first message's row seeds the book (`BookSnapshot`): the file starts with a book already
  full, and that row already holds the first message.
- Every later message becomes a `BookDelta` of the levels that changed, with absolute quantities
  (0 removes) and `source_id` = the order id, unsequenced (the worker applies it on a book synced
  by the snapshot). The book is the top LEVEL levels, exactly as the orderbook file has them: a
  level pushed below them is removed, one coming into view is added.
- Executions are trades: type 4 with the taker's side (executing a buy limit order, direction 1,
  means the taker sold); type 5 with no side (TotalView masks a hidden order's direction); type 6
  with no side (an auction has no taker); none of them has a trade id (an order id repeats over
  partial fills). Types 5, 6 and 7 leave the visible book alone.

Verification: after each message the book built from the messages must equal the orderbook row,
except for levels coming into view from below (only when the side was full before). A difference is
the bad line kind "book mismatch"; the book is then seeded again from the next message's row. Without
the orderbook file beside the messages, the replay starts from an empty book (missing the orders
resting before the first message) and nothing is verified; that is logged once.

Symbol and day come from the file name; `symbol` (`--symbol`) overrides the ticker.
Bad lines: "wrong column count", "bad time", "bad number", "bad value" (an unknown type or
direction), "book mismatch", "bad orderbook" (a row that cannot be read, or none left).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from marketdata.events import BookDelta, BookSnapshot, Level, MarketEvent, Trade
from marketdata.feeds.dayclock import NEW_YORK, DayClock, zone_named
from marketdata.feeds.files import EXCHANGE, BadLine, FeedError, NamedSymbol, open_text
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

SOURCE = "lobster"
OPTIONS = frozenset({"symbol"})
COLUMNS = ("time", "type", "order_id", "size", "price", "direction")
SUBMIT, CANCEL, DELETE, EXECUTE, HIDDEN, CROSS, HALT = range(1, 8)
_NAME = re.compile(r"(.+?)_(\d{4}-\d{2}-\d{2})_(\d+)_(\d+)_message_(\d+)\.csv(?:\.gz)?")
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")
_SIDES = {1: "bid", -1: "ask"}
_TAKER = {1: "sell", -1: "buy"}  # the taker is on the other side of the executed limit order

Side = dict[int, int]  # price × 10000 → shares


class LobsterMessages:
    """`--format lobster`: the message file, verified against the orderbook file beside it."""

    name: ClassVar[str] = "lobster"
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE,)  # the exchange's time of day in New York; no receive time

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        unknown = set(options) - OPTIONS
        if unknown:
            raise FeedError(f"{path}: unknown option(s) {', '.join(sorted(unknown))} for --format {self.name}; it takes: symbol")
        found = _NAME.fullmatch(path.name)
        if found is None:
            raise FeedError(
                f"{path}: not a LOBSTER message file name (TICKER_YYYY-MM-DD_34200000_57600000_message_LEVEL.csv): "
                "the day and the levels come from it"
            )
        try:
            day = date.fromisoformat(found.group(2))
        except ValueError:
            raise FeedError(f"{path}: {found.group(2)} in the file name is not a date") from None
        self.path = path
        self.levels = int(found.group(5))
        self.clock = DayClock(day, zone_named(NEW_YORK))
        self.raw_symbol = options.get("symbol") or found.group(1).upper()
        self.named = NamedSymbol(self.raw_symbol, symbols, source=SOURCE)
        self.symbol = self.named.symbol
        book = path.with_name(path.name.replace("_message_", "_orderbook_"))
        self.book_path: Path | None = book if book.is_file() else None
        if self.book_path is None:
            log.warning(
                "%s: no orderbook file %s beside it: replaying without verification, from an empty book "
                "(orders resting before the first message are missing from it)",
                path,
                book.name,
            )
        self._rows: io.TextIOBase | None = None
        self.reset()

    def reset(self) -> None:
        """Before each pass (--loop): the orderbook file from its start (opened on the first message); the book seeded anew."""
        self.close()
        self._row_number = 0
        self._bids: Side = {}
        self._asks: Side = {}
        self._seeded = False  # False: the next message's row becomes a BookSnapshot

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()
            self._rows = None

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        return _NAME.fullmatch(path.name) is not None

    def parse(self, line: str) -> Iterable[MarketEvent]:
        if self._row_number == 0 and self._rows is None and self.book_path is not None:
            self._rows = open_text(self.book_path)
        # The row is read first, whatever the message: row k belongs to message k.
        row = self._next_row() if self._rows is not None else None
        try:
            return self._events(line, row)
        except BadLine:
            if self.book_path is not None:
                self._seeded = False  # this message is missing from the book: take the next row whole
            raise

    def _events(self, line: str, row: tuple[Side, Side] | BadLine | None) -> list[MarketEvent]:
        fields = line.split(",")
        if len(fields) != len(COLUMNS):
            raise BadLine("wrong column count", f"expected {len(COLUMNS)} fields ({', '.join(COLUMNS)}), found {len(fields)}")
        ts = self.clock.utc(_microseconds(fields[0]))
        kind, order_id, size, price, direction = (_integer(column, text) for column, text in zip(COLUMNS[1:], fields[1:], strict=True))
        if not SUBMIT <= kind <= HALT:
            raise BadLine("bad value", f"type {kind} is not 1 to 7")
        if direction not in _SIDES:
            raise BadLine("bad value", f"direction {direction} is neither 1 (buy) nor -1 (sell)")
        if kind != HALT and (size <= 0 or price <= 0):
            raise BadLine("bad number", f"{'size' if size <= 0 else 'price'} {size if size <= 0 else price} is not positive")
        if isinstance(row, BadLine):
            raise row
        symbol = self.symbol
        if symbol is None:
            self.named.skipped()
            return []
        events: list[MarketEvent] = []
        if kind in (EXECUTE, HIDDEN, CROSS):
            side = _TAKER[direction] if kind == EXECUTE else None
            events.append(Trade(symbol, ts, _price(price), Decimal(size), SOURCE, side))
        if not self._seeded:
            self._seeded = True
            bids, asks = row if row is not None else ({}, {})
            if row is None:  # no orderbook file: an empty book, and this message applied to it
                bids, asks = _applied(bids, asks, kind, price, size, direction)
            self._bids, self._asks = bids, asks
            events.append(BookSnapshot(symbol, ts, _levels(bids, reverse=True), _levels(asks, reverse=False), SOURCE))
            return events
        bids, asks = _applied(self._bids, self._asks, kind, price, size, direction)
        if row is not None:
            self._verify(bids, asks, row, kind, order_id)
            bids, asks = row
        delta_bids, delta_asks = _changes(self._bids, bids, reverse=True), _changes(self._asks, asks, reverse=False)
        self._bids, self._asks = bids, asks
        if delta_bids or delta_asks:
            events.append(BookDelta(symbol, ts, delta_bids, delta_asks, SOURCE, source_id=order_id))
        return events

    def _verify(self, bids: Side, asks: Side, row: tuple[Side, Side], kind: int, order_id: int) -> None:
        """BadLine "book mismatch" unless the book the message made is the row (but for levels coming into view)."""
        for name, built, before, recorded, reverse in (
            ("bid", bids, self._bids, row[0], True),
            ("ask", asks, self._asks, row[1], False),
        ):
            ours = sorted(built.items(), reverse=reverse)[: self.levels]
            theirs = sorted(recorded.items(), reverse=reverse)
            # Below the top LEVEL levels the file has no messages: when a level leaves a full side,
            # the next one comes into view with only the orderbook row to tell it.
            revealed = len(before) >= self.levels
            if theirs[: len(ours)] == ours and (len(theirs) == len(ours) or revealed):
                continue
            for level in range(max(len(ours), len(theirs))):
                mine = ours[level] if level < len(ours) else None
                recorded_level = theirs[level] if level < len(theirs) else None
                if mine != recorded_level:
                    raise BadLine(
                        "book mismatch",
                        f"after type {kind} of order {order_id}, {name} level {level + 1} is {_show(mine)} from the messages "
                        f"and {_show(recorded_level)} in the orderbook file",
                    )

    def _next_row(self) -> tuple[Side, Side] | BadLine:
        assert self._rows is not None
        self._row_number += 1
        text = self._rows.readline()
        where = f"orderbook row {self._row_number}"
        if not text:
            return BadLine("bad orderbook", f"{where}: the orderbook file has ended")
        fields = text.strip().split(",")
        if len(fields) != 4 * self.levels:
            return BadLine("bad orderbook", f"{where}: expected {4 * self.levels} fields for {self.levels} levels, found {len(fields)}")
        if not all(_INTEGER.fullmatch(field) for field in fields):
            return BadLine("bad orderbook", f"{where}: not all whole numbers")
        numbers = [int(field) for field in fields]
        asks: Side = {}
        bids: Side = {}
        for level in range(self.levels):
            ask_price, ask_size, bid_price, bid_size = numbers[4 * level : 4 * level + 4]
            # An empty level has size 0 (and a dummy price of ±9999999999).
            if ask_size > 0:
                asks[ask_price] = ask_size
            if bid_size > 0:
                bids[bid_price] = bid_size
        return bids, asks


def _applied(bids: Side, asks: Side, kind: int, price: int, size: int, direction: int) -> tuple[Side, Side]:
    """The book after one message, as new dicts (the one side that changes is copied)."""
    if kind not in (SUBMIT, CANCEL, DELETE, EXECUTE):
        return bids, asks  # hidden executions, crosses and halts leave the visible book alone
    side = dict(bids if direction == 1 else asks)
    quantity = side.get(price, 0) + (size if kind == SUBMIT else -size)
    if quantity > 0:
        side[price] = quantity
    else:
        side.pop(price, None)
    return (side, asks) if direction == 1 else (bids, side)


def _changes(before: Side, after: Side, *, reverse: bool) -> tuple[Level, ...]:
    changed = {price: qty for price, qty in after.items() if before.get(price) != qty}
    changed.update((price, 0) for price in before if price not in after)
    return tuple((_price(price), Decimal(qty)) for price, qty in sorted(changed.items(), reverse=reverse))


def _levels(side: Side, *, reverse: bool) -> tuple[Level, ...]:
    return tuple((_price(price), Decimal(qty)) for price, qty in sorted(side.items(), reverse=reverse))


def _price(ticks: int) -> Decimal:
    return Decimal(ticks).scaleb(-4)  # dollars × 10000, exactly


def _show(level: tuple[int, int] | None) -> str:
    return "absent" if level is None else f"{_price(level[0])} × {level[1]}"


def _microseconds(text: str) -> int:
    if not _SECONDS.fullmatch(text):
        raise BadLine("bad time", f"time {text!r} is not seconds after midnight (e.g. 34713.685155243)")
    whole, _, fraction = text.partition(".")
    if int(whole) > 86_400:
        raise BadLine("bad time", f"time {text!r} is past the end of the day")
    return int(whole) * 1_000_000 + int((fraction + "000000")[:6])


def _integer(column: str, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise BadLine("bad number", f"{column} {text!r} is not a whole number")
    return int(text)
