"""L2 order book of one symbol, kept in sync the way each exchange documents it.

Pure and synchronous: the feed worker's hub feeds `BookSnapshot` and `BookDelta`
events in with `OrderBook.apply` and reads `top`/`best`, publishing them only
while `synced` is True.

Two ways of keeping in sync, chosen per event by whether it carries update ids:

* Sequenced (Binance Spot: snapshot `lastUpdateId`, delta `U`..`u`), following
  "How to manage a local order book correctly",
  https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#how-to-manage-a-local-order-book-correctly
  Deltas are buffered until a snapshot; a snapshot drops the buffered deltas it
  already contains (u <= lastUpdateId) and replays the rest; a delta that does
  not continue the book's update id (U > id + 1) is a gap, after which the book
  waits for a new snapshot. The first delta after a snapshot must satisfy
  U <= lastUpdateId + 1 <= u: the doc words steps 4-5 as "lastUpdateId within
  [U;u]", but its update procedure (and the ids' meaning) also accepts the
  exactly contiguous U == lastUpdateId + 1, so one rule serves both.
* Unsequenced (Coinbase: no ids): a snapshot replaces the book, deltas apply
  only on a synced book, and the connector calls `reset` when its own sequence
  check finds a gap (it then resubscribes, which brings a new snapshot).

Quantities are absolute and 0 removes a level; removing a level that is not
there is normal (earlier editions of the Binance doc: "can happen and is
normal"; a level added and removed within one event arrives that way). A
crossed book cannot come out of consistent data, so one is treated as a lost
sync, never published.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from decimal import Decimal

from sortedcontainers import SortedDict

from marketdata.events import BookDelta, BookSnapshot, Level

log = logging.getLogger(__name__)

# Deltas held while waiting for a snapshot; past this the oldest go (a snapshot
# newer than what is left still syncs, an older one is reported too old).
BUFFER_LIMIT = 10_000


class OrderBook:
    """One symbol's book: bids and asks as price → quantity, sorted by price."""

    __slots__ = ("_asks", "_bids", "_buffer", "_synced", "_update_id", "losses", "needs_snapshot", "resyncs", "symbol")

    def __init__(self, symbol: str, *, buffer_limit: int = BUFFER_LIMIT) -> None:
        self.symbol = symbol
        # Both sides ascending: the best bid is the last key, the best ask the first.
        self._bids: SortedDict[Decimal, Decimal] = SortedDict()
        self._asks: SortedDict[Decimal, Decimal] = SortedDict()
        self._buffer: deque[BookDelta] = deque(maxlen=buffer_limit)
        self._synced = False
        self._update_id: int | None = None
        self.losses = 0  # times it went out of sync (a gap, a crossed book, a reset by its source)
        self.resyncs = 0  # times a snapshot brought it back after that
        # True when only a fresh snapshot can make the book valid. The caller may set it
        # back to False once it has asked the source for one; the book sets it again if
        # that snapshot turns out too old or sync is lost later.
        self.needs_snapshot = True

    @property
    def synced(self) -> bool:
        """Whether `top` and `best` show the exchange's book (publish only then)."""
        return self._synced

    @property
    def update_id(self) -> int | None:
        """The exchange's book version the levels are at (None for unsequenced sources)."""
        return self._update_id

    def apply(self, event: BookSnapshot | BookDelta) -> bool:
        """Apply one event; True when what the caller publishes changed.

        That is: levels changed on a synced book, or `synced` flipped either way.
        """
        if event.symbol != self.symbol:
            raise ValueError(f"{event.symbol} event applied to the {self.symbol} book")
        if isinstance(event, BookDelta):
            if event.last_id is None:
                return self._apply_unsequenced(event)
            return self._apply_sequenced(event)
        return self._apply_snapshot(event)

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best `n` levels of each side: bids descending, asks ascending.

        Returned whatever `synced` says; the caller checks `synced` before publishing.
        """
        if n <= 0:
            return [], []
        bids = self._bids.items()[-n:]
        bids.reverse()
        return bids, self._asks.items()[:n]

    def best(self) -> tuple[Decimal | None, Decimal | None]:
        """Best bid and best ask prices, None for an empty side."""
        bid = self._bids.peekitem(-1)[0] if self._bids else None
        ask = self._asks.peekitem(0)[0] if self._asks else None
        return bid, ask

    def reset(self) -> None:
        """Mark the book unsynced until the next snapshot (a source's own gap check failed)."""
        if self._synced:
            self.losses += 1
            log.info("%s book reset by its source; waiting for a snapshot", self.symbol)
        self._synced = False
        self.needs_snapshot = True
        # The doc's recovery restarts from the beginning: deltas buffered so far belong to the old stream.
        self._buffer.clear()

    # -- snapshots -------------------------------------------------------------

    def _apply_snapshot(self, snapshot: BookSnapshot) -> bool:
        was_synced = self._synced
        last = snapshot.update_id
        if last is None:
            self._buffer.clear()
            self._load(snapshot, None)
            return self._synced or was_synced
        if was_synced and self._update_id is not None and last < self._update_id:
            return False  # a late answer to an old request: the book is already past it
        buffered = self._buffer
        # Binance step 5: discard buffered events with u <= lastUpdateId, already in the snapshot.
        while buffered and _ids(buffered[0])[1] <= last:
            buffered.popleft()
        if buffered and (first := _ids(buffered[0])[0]) > last + 1:
            # Binance step 4: the snapshot is older than the first event still held, so the
            # versions in between are lost and it cannot be used: fetch another.
            log.info("%s book snapshot %d is older than the buffered deltas (first U=%d); needs a newer one", self.symbol, last, first)
            self.needs_snapshot = True
            return False
        self._buffer = deque(maxlen=buffered.maxlen)
        self._load(snapshot, last)
        # Binance step 7: replay what is left through the normal update procedure
        # (a gap among them unsyncs again, and the rest is buffered anew).
        for delta in buffered:
            self._apply_sequenced(delta)
        return self._synced or was_synced

    def _load(self, snapshot: BookSnapshot, update_id: int | None) -> None:
        self._bids = _side(snapshot.bids)
        self._asks = _side(snapshot.asks)
        self._update_id = update_id
        if self.losses > self.resyncs:
            self.resyncs += 1
        self._synced = True
        self.needs_snapshot = False
        self._check_uncrossed()

    # -- deltas ----------------------------------------------------------------

    def _apply_sequenced(self, delta: BookDelta) -> bool:
        if not self._synced:
            # Binance step 2: buffer until a snapshot (bounded: the deque drops the oldest).
            self._buffer.append(delta)
            return False
        first, last = _ids(delta)
        local = self._update_id
        if local is not None:
            # Update procedure: "u < local id → ignore"; u == local id is wholly in the book too.
            if last <= local:
                return False
            # Update procedure: "U > local id + 1 → you have missed some events".
            if first > local + 1:
                self._lose_sync(f"update id gap (expected U <= {local + 1}, got U={first})")
                self._buffer.append(delta)  # recovery starts buffering again, from this event
                return True
        changed = self._apply_levels(delta)
        # Update procedure: the book's id becomes the event's u.
        self._update_id = last
        if changed:
            self._check_uncrossed()
        return changed

    def _apply_unsequenced(self, delta: BookDelta) -> bool:
        # Coinbase sends the snapshot first after subscribing: anything before it (or after a reset) is dropped.
        if not self._synced:
            return False
        changed = self._apply_levels(delta)
        if changed:
            self._check_uncrossed()
        return changed

    def _apply_levels(self, delta: BookDelta) -> bool:
        bids_changed = _update_side(self._bids, delta.bids)
        return _update_side(self._asks, delta.asks) or bids_changed

    # -- sync loss -------------------------------------------------------------

    def _check_uncrossed(self) -> None:
        # Consistent data never crosses, so a crossed book means missed or corrupt updates.
        bids, asks = self._bids, self._asks
        if bids and asks and (bid := bids.peekitem(-1)[0]) >= (ask := asks.peekitem(0)[0]):
            self._lose_sync(f"crossed book (bid {bid} >= ask {ask})")

    def _lose_sync(self, why: str) -> None:
        self._synced = False
        self.needs_snapshot = True
        self.losses += 1
        log.warning("%s book out of sync: %s; unsynced until a new snapshot", self.symbol, why)


def _ids(delta: BookDelta) -> tuple[int, int]:
    """(U, u) of a sequenced delta; a single-version delta may leave U out."""
    last = delta.last_id
    if last is None:
        raise ValueError(f"{delta.symbol} delta has no update id")
    return (last if delta.first_id is None else delta.first_id), last


def _side(levels: Iterable[Level]) -> SortedDict[Decimal, Decimal]:
    # A snapshot lists no empty level, but a 0 is dropped all the same: the book never holds one.
    return SortedDict((price, qty) for price, qty in levels if qty)


def _update_side(side: SortedDict[Decimal, Decimal], levels: Iterable[Level]) -> bool:
    changed = False
    for price, qty in levels:
        if qty:
            if side.get(price) != qty:
                side[price] = qty
                changed = True
        elif side.pop(price, None) is not None:
            # Removing a level that is not there is normal (see the module doc), hence pop with a default.
            changed = True
    return changed
