"""The L2 order book against a simulated exchange that numbers its book versions like Binance.

`Exchange` holds the true book as plain dicts. Every change to it is one update id;
its diff stream groups consecutive changes into events `U..u` carrying each touched
level's final absolute quantity (0 = gone), and its REST snapshot can be taken
between any two changes (so mid-event) and truncated to a depth like `limit`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata.events import BookDelta, BookSnapshot, Level
from marketdata.worker.book import OrderBook

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
SYMBOL = "BTCUSDT"
EVERYTHING = 10**9


def price(ticks: int) -> Decimal:
    return D(ticks).scaleb(-2)


@dataclass
class Exchange:
    """The exchange's own book, in integer ticks and lots, versioned one id per change."""

    update_id: int = 1000
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    _first: int | None = None
    _touched: dict[tuple[bool, int], int] = field(default_factory=dict)

    @classmethod
    def seeded(cls, levels: int, mid: int = 10_000) -> Exchange:
        return cls(bids={mid - i: 1 + i % 7 for i in range(1, levels + 1)}, asks={mid + i: 1 + i % 5 for i in range(1, levels + 1)})

    def act(self, is_bid: bool, offset: int, lots: int) -> None:
        """An order at `offset` ticks behind the opposite touch (<= 0 is marketable), or a cancel (lots 0).

        A marketable order first takes the opposite levels it reaches, as a matching
        engine would, so the true book is never crossed.
        """
        own, other = (self.bids, self.asks) if is_bid else (self.asks, self.bids)
        if other:
            touch = min(other) if is_bid else max(other)
        elif own:
            touch = max(own) + 1 if is_bid else min(own) - 1
        else:
            touch = 10_000
        at = touch - offset if is_bid else touch + offset
        if lots:
            for taken in [p for p in other if (p <= at if is_bid else p >= at)]:
                self._change(not is_bid, taken, 0)
        self._change(is_bid, at, lots)

    def _change(self, is_bid: bool, at: int, lots: int) -> None:
        side = self.bids if is_bid else self.asks
        if side.get(at, 0) == lots:
            return  # nothing happens, so no new book version
        self.update_id += 1
        if lots:
            side[at] = lots
        else:
            del side[at]
        if self._first is None:
            self._first = self.update_id
        self._touched[(is_bid, at)] = lots  # the event carries the level's latest quantity only

    def event(self) -> BookDelta | None:
        """The diff-stream event for the changes since the last one (None if there were none)."""
        if self._first is None:
            return None
        bids = tuple((price(p), D(q)) for (is_bid, p), q in self._touched.items() if is_bid)
        asks = tuple((price(p), D(q)) for (is_bid, p), q in self._touched.items() if not is_bid)
        delta = BookDelta(SYMBOL, T0, bids, asks, "binance", first_id=self._first, last_id=self.update_id)
        self._first, self._touched = None, {}
        return delta

    def snapshot(self, depth: int | None = None) -> BookSnapshot:
        """REST depth at the current version, the best `depth` levels a side (all if None)."""
        bids, asks = self.full()
        return BookSnapshot(SYMBOL, T0, tuple(bids[:depth]), tuple(asks[:depth]), "binance", update_id=self.update_id)

    def full(self) -> tuple[list[Level], list[Level]]:
        bids = [(price(p), D(self.bids[p])) for p in sorted(self.bids, reverse=True)]
        asks = [(price(p), D(self.asks[p])) for p in sorted(self.asks)]
        return bids, asks

    def random_event(self, rng: random.Random) -> BookDelta:
        while True:
            for _ in range(rng.randint(1, 8)):
                self.act(rng.random() < 0.5, rng.randint(-1, 30), rng.choice([0, 0, 1, 2, 3, 5, 8]))
            if (delta := self.event()) is not None:
                return delta


def known(levels: list[Level], snapshot: BookSnapshot, *, bids: bool) -> list[Level]:
    """The levels a book synced from `snapshot` knows for sure.

    A snapshot cut at a depth says nothing of the levels behind its last one, and
    the stream tells of them only when they change (the Binance doc's note on depth
    limits), so the comparison stops there; an uncut snapshot knows everything.
    """
    side = snapshot.bids if bids else snapshot.asks
    if not side:
        return levels
    edge = side[-1][0]
    return [lvl for lvl in levels if (lvl[0] >= edge if bids else lvl[0] <= edge)]


def assert_matches(book: OrderBook, exchange: Exchange, first: BookSnapshot, depth: int) -> int:
    """The book equals the exchange's snapshot of `depth` levels, where the book can know; returns levels compared."""
    later = exchange.snapshot(depth)
    bids, asks = book.top(depth)
    assert known(bids, first, bids=True) == known(list(later.bids), first, bids=True)
    assert known(asks, first, bids=False) == known(list(later.asks), first, bids=False)
    return min(len(known(bids, first, bids=True)), len(known(asks, first, bids=False)))


def assert_well_formed(book: OrderBook, n: int) -> None:
    bids, asks = book.top(EVERYTHING)
    assert all(a[0] > b[0] for a, b in pairwise(bids)), "bids strictly descending"
    assert all(a[0] < b[0] for a, b in pairwise(asks)), "asks strictly ascending"
    assert all(qty > 0 for _, qty in bids + asks), "no empty level is kept"
    if book.synced and bids and asks:
        assert bids[0][0] < asks[0][0], "a synced book is never crossed"
        assert book.best() == (bids[0][0], asks[0][0])
    top_bids, top_asks = book.top(n)
    assert (top_bids, top_asks) == (bids[:n], asks[:n])


def sync(book: OrderBook, exchange: Exchange, rng: random.Random, depth: int | None) -> BookSnapshot:
    """The documented start: buffer the stream, fetch a snapshot mid-event, receive it late, go on."""
    for _ in range(30):  # the stream is open before the snapshot is asked for: all of these have u <= L
        assert book.apply(exchange.random_event(rng)) is False
    for _ in range(3):  # changes on both sides of the snapshot end up in one event
        exchange.act(rng.random() < 0.5, rng.randint(0, 10), rng.randint(1, 4))
    snapshot = exchange.snapshot(depth)
    spanning = exchange.random_event(rng)
    assert spanning.first_id is not None and spanning.last_id is not None and snapshot.update_id is not None
    assert spanning.first_id <= snapshot.update_id < spanning.last_id
    in_flight = [spanning] + [exchange.random_event(rng) for _ in range(5)]
    for delta in in_flight:  # arrive while the REST answer is on its way
        assert book.apply(delta) is False
    assert not book.synced and book.needs_snapshot
    assert book.apply(snapshot) is True
    assert book.synced and not book.needs_snapshot
    assert book.update_id == in_flight[-1].last_id
    return snapshot


# -- Binance: snapshot + diff stream ------------------------------------------------


@pytest.mark.parametrize("depth", [None, 60], ids=["whole-snapshot", "snapshot-cut-at-60"])
@pytest.mark.parametrize("seed", range(5))
def test_applying_a_binance_diff_stream_to_its_snapshot_reproduces_the_exchanges_later_snapshot(seed: int, depth: int | None) -> None:
    rng = random.Random(seed)
    exchange = Exchange.seeded(levels=100)
    book = OrderBook(SYMBOL)
    first = sync(book, exchange, rng, depth)
    for step in range(400):
        book.apply(exchange.random_event(rng))
        if step % 50 == 0:
            assert_matches(book, exchange, first, 20)
    assert book.synced and book.losses == 0
    assert book.update_id == exchange.update_id
    if depth is None:
        assert book.top(EVERYTHING) == exchange.full()
    else:
        assert assert_matches(book, exchange, first, 20) >= 10, "the comparison must cover the top of the book"


def test_a_gap_in_update_ids_unsyncs_the_book_until_a_new_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(7)
    exchange = Exchange.seeded(levels=50)
    book = OrderBook(SYMBOL)
    sync(book, exchange, rng, None)
    for _ in range(20):
        book.apply(exchange.random_event(rng))
    expected = exchange.update_id + 1
    exchange.random_event(rng)  # lost on the way: its U..u never arrives
    after_gap = exchange.random_event(rng)
    with caplog.at_level(logging.WARNING, logger="marketdata.worker.book"):
        assert book.apply(after_gap) is True  # `synced` flipped: the caller stops publishing
    assert (book.synced, book.needs_snapshot, book.losses) == (False, True, 1)
    assert f"{SYMBOL} book out of sync: update id gap (expected U <= {expected}, got U={after_gap.first_id})" in caplog.text
    bids, asks = book.top(5)
    assert bids and asks  # still readable, but not valid: `synced` says so
    # Recovery as documented: keep buffering, fetch a snapshot, replay what it lacks.
    for _ in range(10):
        assert book.apply(exchange.random_event(rng)) is False
    snapshot = exchange.snapshot()
    late = [exchange.random_event(rng) for _ in range(3)]
    for delta in late:
        book.apply(delta)
    assert book.apply(snapshot) is True
    for _ in range(50):
        book.apply(exchange.random_event(rng))
    assert (book.synced, book.needs_snapshot, book.losses) == (True, False, 1)
    assert book.top(EVERYTHING) == exchange.full()


def delta(first: int, last: int, bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = ()) -> BookDelta:
    return BookDelta(SYMBOL, T0, bids, asks, "binance", first_id=first, last_id=last)


def snap(update_id: int | None, bids: tuple[Level, ...], asks: tuple[Level, ...], source: str = "binance") -> BookSnapshot:
    return BookSnapshot(SYMBOL, T0, bids, asks, source, update_id=update_id)


BIDS = ((D("99"), D("1")), (D("98"), D("2")))
ASKS = ((D("101"), D("1")), (D("102"), D("2")))


def test_stale_deltas_are_ignored_once_synced() -> None:
    book = OrderBook(SYMBOL)
    book.apply(snap(10, BIDS, ASKS))
    assert book.apply(delta(5, 9, bids=((D("99"), D("7")),))) is False
    assert book.apply(delta(8, 10, bids=((D("99"), D("7")),))) is False  # u == the book's id: already in it
    assert book.top(1) == ([(D("99"), D("1"))], [(D("101"), D("1"))])
    assert book.apply(delta(9, 12, bids=((D("99"), D("3")),))) is True  # spans the book's id: applies
    assert (book.update_id, book.best(), book.top(1)[0]) == (12, (D("99"), D("101")), [(D("99"), D("3"))])


def test_a_snapshot_older_than_the_buffered_deltas_keeps_the_book_unsynced(caplog: pytest.LogCaptureFixture) -> None:
    book = OrderBook(SYMBOL)
    book.apply(delta(15, 17, bids=((D("99"), D("9")),)))  # in the snapshot already: dropped, not a gap
    book.apply(delta(20, 22, bids=((D("99"), D("4")),)))
    book.apply(delta(23, 25, asks=((D("101"), D("0")),)))
    with caplog.at_level(logging.INFO, logger="marketdata.worker.book"):
        assert book.apply(snap(18, BIDS, ASKS)) is False  # version 19 is in neither
    assert (book.synced, book.needs_snapshot, book.losses) == (False, True, 0)
    assert "snapshot 18 is older than the buffered deltas (first U=20)" in caplog.text
    book.needs_snapshot = False  # the caller asked for another
    assert book.apply(snap(21, BIDS, ASKS)) is True  # 20..22 spans it: replayed, then 23..25
    assert (book.synced, book.needs_snapshot, book.update_id) == (True, False, 25)
    assert book.top(2) == ([(D("99"), D("4")), (D("98"), D("2"))], [(D("102"), D("2"))])


def test_a_delta_that_just_continues_the_snapshot_syncs_it() -> None:
    book = OrderBook(SYMBOL)
    book.apply(delta(11, 12, bids=((D("100"), D("1")),)))
    assert book.apply(snap(10, BIDS, ASKS)) is True
    assert (book.synced, book.update_id, book.best()) == (True, 12, (D("100"), D("101")))


def test_the_buffer_keeps_only_the_newest_deltas() -> None:
    book = OrderBook(SYMBOL, buffer_limit=2)
    for i in range(1, 4):
        book.apply(delta(10 + i, 10 + i, bids=((D(f"100.{i}"), D("1")),)))
    assert book.apply(snap(10, BIDS, ASKS)) is False  # 11 was dropped, so 10 cannot be continued
    assert not book.synced
    assert book.apply(snap(11, BIDS, ASKS)) is True
    assert book.update_id == 13
    assert [p for p, _ in book.top(3)[0]] == [D("100.3"), D("100.2"), D("99")]


def test_a_snapshot_older_than_a_synced_book_is_ignored() -> None:
    book = OrderBook(SYMBOL)
    book.apply(snap(10, BIDS, ASKS))
    book.apply(delta(11, 15, bids=((D("100"), D("1")),)))
    assert book.apply(snap(12, BIDS, ASKS)) is False
    assert (book.update_id, book.best()) == (15, (D("100"), D("101")))


def test_a_delta_that_crosses_the_book_unsyncs_it(caplog: pytest.LogCaptureFixture) -> None:
    book = OrderBook(SYMBOL)
    book.apply(snap(10, BIDS, ASKS))
    with caplog.at_level(logging.WARNING, logger="marketdata.worker.book"):
        assert book.apply(delta(11, 11, bids=((D("101.5"), D("1")),))) is True
    assert (book.synced, book.needs_snapshot, book.losses) == (False, True, 1)
    assert "crossed book (bid 101.5 >= ask 101)" in caplog.text
    assert book.apply(delta(12, 12, asks=((D("101"), D("0")),))) is False  # buffered for the next snapshot


def test_a_delta_that_changes_nothing_visible_reports_no_change() -> None:
    book = OrderBook(SYMBOL)
    book.apply(snap(10, BIDS, ASKS))
    assert book.apply(delta(11, 11, bids=((D("50"), D("0")),), asks=((D("101"), D("1.0")),))) is False
    assert book.update_id == 11  # the version still moves on
    assert book.top(EVERYTHING) == (list(BIDS), list(ASKS))


def test_a_new_book_is_unsynced_and_empty() -> None:
    book = OrderBook(SYMBOL)
    assert (book.synced, book.needs_snapshot, book.update_id, book.losses) == (False, True, None, 0)
    assert book.best() == (None, None)
    assert book.top(5) == ([], [])
    assert book.top(0) == ([], [])


def test_an_event_of_another_symbol_is_refused() -> None:
    with pytest.raises(ValueError, match="ETHUSDT event applied to the BTCUSDT book"):
        OrderBook(SYMBOL).apply(BookDelta("ETHUSDT", T0, (), (), "binance", first_id=1, last_id=1))


# -- Coinbase: no update ids -----------------------------------------------------------


def cb_delta(bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = ()) -> BookDelta:
    return BookDelta(SYMBOL, T0, bids, asks, "coinbase")


def test_a_coinbase_snapshot_then_updates_keep_the_book() -> None:
    book = OrderBook(SYMBOL)
    assert book.apply(snap(None, BIDS, ASKS, "coinbase")) is True
    assert (book.synced, book.update_id, book.needs_snapshot) == (True, None, False)
    assert book.apply(cb_delta(bids=((D("99"), D("0")), (D("100"), D("5"))), asks=((D("101.5"), D("2")),))) is True
    assert book.top(2) == ([(D("100"), D("5")), (D("98"), D("2"))], [(D("101"), D("1")), (D("101.5"), D("2"))])


def test_coinbase_deltas_before_a_snapshot_are_dropped() -> None:
    book = OrderBook(SYMBOL)
    assert book.apply(cb_delta(bids=((D("100"), D("5")),))) is False
    book.apply(snap(None, BIDS, ASKS, "coinbase"))
    assert book.top(EVERYTHING) == (list(BIDS), list(ASKS))


def test_reset_unsyncs_the_book_until_the_next_snapshot() -> None:
    book = OrderBook(SYMBOL)
    book.apply(snap(None, BIDS, ASKS, "coinbase"))
    book.reset()
    assert (book.synced, book.needs_snapshot, book.losses) == (False, True, 1)
    assert book.apply(cb_delta(bids=((D("100"), D("5")),))) is False  # dropped: the resubscription's snapshot covers it
    assert book.apply(snap(None, ((D("97"), D("1")),), ASKS, "coinbase")) is True
    assert (book.synced, book.losses, book.resyncs, book.best()) == (True, 1, 1, (D("97"), D("101")))


# -- properties ------------------------------------------------------------------------

actions = st.lists(st.tuples(st.booleans(), st.integers(min_value=-2, max_value=25), st.integers(min_value=0, max_value=4)), max_size=150)


@given(
    levels=st.integers(min_value=0, max_value=15),
    acts=actions,
    cuts=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=10),
    snapshot_at=st.integers(min_value=0, max_value=150),
    lag=st.integers(min_value=0, max_value=4),
    depth=st.none() | st.integers(min_value=1, max_value=20),
    n=st.integers(min_value=0, max_value=30),
)
def test_a_book_fed_consistent_binance_data_stays_well_formed_and_matches_the_exchange(
    levels: int, acts: list[tuple[bool, int, int]], cuts: list[int], snapshot_at: int, lag: int, depth: int | None, n: int
) -> None:
    exchange = Exchange.seeded(levels)
    book = OrderBook(SYMBOL)
    stream: list[BookDelta] = []
    first: BookSnapshot | None = None
    delivered_with: int | None = None  # how many stream events arrive before the snapshot does
    batches = iter_cuts(cuts)
    pending = next(batches)
    for i, (is_bid, offset, lots) in enumerate(acts):
        if i == snapshot_at:
            first, delivered_with = exchange.snapshot(depth), len(stream) + lag
        exchange.act(is_bid, offset, lots)
        pending -= 1
        if pending == 0 and (event := exchange.event()) is not None:
            stream.append(event)
            pending = next(batches)
        pending = max(pending, 1)
    if (event := exchange.event()) is not None:
        stream.append(event)
    if first is None:
        first, delivered_with = exchange.snapshot(depth), len(stream) + lag
    assert delivered_with is not None
    feed: list[BookSnapshot | BookDelta] = [*stream]
    feed.insert(min(delivered_with, len(feed)), first)
    for item in feed:
        book.apply(item)
        assert_well_formed(book, n)
    assert book.synced and book.losses == 0
    if depth is None:
        assert book.top(EVERYTHING) == exchange.full()
    else:
        assert_matches(book, exchange, first, EVERYTHING)


def iter_cuts(cuts: list[int]) -> Iterator[int]:
    while True:
        yield from cuts


def level_lists(max_size: int) -> st.SearchStrategy[tuple[Level, ...]]:
    prices = st.integers(min_value=90, max_value=110).map(D)
    quantities = st.sampled_from([D("0"), D("0.5"), D("1"), D("2")])
    return st.lists(st.tuples(prices, quantities), max_size=max_size).map(tuple)


@given(start_bids=level_lists(8), start_asks=level_lists(8), deltas=st.lists(st.tuples(level_lists(3), level_lists(3)), max_size=40))
def test_whatever_the_deltas_a_synced_book_is_never_crossed(
    start_bids: tuple[Level, ...], start_asks: tuple[Level, ...], deltas: list[tuple[tuple[Level, ...], tuple[Level, ...]]]
) -> None:
    book = OrderBook(SYMBOL)
    book.apply(snap(None, start_bids, start_asks, "coinbase"))
    assert_well_formed(book, 3)
    for bids, asks in deltas:
        was_synced = book.synced
        changed = book.apply(cb_delta(bids, asks))
        assert_well_formed(book, 3)
        if was_synced and not book.synced:
            assert changed and book.needs_snapshot
        if not book.synced:
            book.apply(snap(None, start_bids, start_asks, "coinbase"))
