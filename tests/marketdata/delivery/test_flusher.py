"""The per-process flusher (marketdata/delivery/flusher.py): one timer for every dirty connection."""

import pytest

from marketdata.delivery.flusher import Flusher, flusher
from tests.conftest import until


class Book:
    """A connection's portfolio book: counts its flushes, and can be behind (its socket not taking frames)."""

    def __init__(self, *, behind: int = 0, broken: bool = False) -> None:
        self.flushed = 0
        self.behind = behind  # flushes it defers before it takes one
        self.broken = broken

    def flush(self) -> bool:
        if self.broken:
            raise RuntimeError("broken book")
        if self.behind:
            self.behind -= 1
            return False
        self.flushed += 1
        return True


async def ticks(target: Flusher, count: int) -> None:
    await until(lambda: target.stats.ticks >= count, what=f"{count} ticks")


async def test_every_connection_marked_in_a_window_is_flushed_once_by_one_timer() -> None:
    flush = Flusher(0.02)
    books = [Book() for _ in range(100)]
    for _ in range(3):  # three prices each in one window
        for book in books:
            flush.mark(book)
    await ticks(flush, 1)
    assert [book.flushed for book in books] == [1] * 100
    assert (flush.stats.ticks, flush.stats.flushes) == (1, 100)


async def test_a_connection_that_is_behind_stays_dirty_until_it_takes_its_frame() -> None:
    flush = Flusher(0.01)
    slow, quick = Book(behind=2), Book()
    flush.mark(slow)
    flush.mark(quick)
    await ticks(flush, 3)
    assert (slow.flushed, quick.flushed) == (1, 1)  # deferred twice, then flushed: its changes were never dropped
    assert flush.stats.deferred == 2
    assert slow not in flush


async def test_a_failing_connection_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    flush = Flusher(0.01)
    broken, healthy = Book(broken=True), Book()
    flush.mark(broken)
    flush.mark(healthy)
    await ticks(flush, 1)
    assert healthy.flushed == 1 and broken not in flush
    assert any("flushing" in r.getMessage() for r in caplog.records)


async def test_a_discarded_connection_is_not_flushed_and_the_timer_stops_when_nothing_is_dirty() -> None:
    flush = Flusher(0.01)
    gone = Book()
    flush.mark(gone)
    flush.discard(gone)
    await ticks(flush, 1)
    assert gone.flushed == 0
    assert flush._timer is None  # idle: no timer runs


async def test_one_flusher_per_loop_and_interval() -> None:
    assert flusher(0.2) is flusher(0.2)
    assert flusher(0.2) is not flusher(0.5)
