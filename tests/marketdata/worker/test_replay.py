"""Replay: files merged in time order, a time window, pacing by recorded time, loops that move on, rebasing."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from marketdata.events import MarketEvent, Quote, Trade
from marketdata.worker.replay import LOOP_GAP, Replay

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trade(symbol: str, second: float) -> Trade:
    return Trade(symbol, T0 + timedelta(seconds=second), Decimal(100 + second), Decimal(1), "test")


def quote(symbol: str, second: float) -> Quote:
    return Quote(symbol, T0 + timedelta(seconds=second), Decimal(1), Decimal(2), "test")


async def collect(replay: Replay) -> list[MarketEvent]:
    return [event async for event in replay]


def offsets(events: Iterable[MarketEvent], origin: datetime = T0) -> list[float]:
    return [(e.ts - origin).total_seconds() for e in events]


async def test_several_files_are_merged_in_time_order_keeping_each_files_order_on_ties() -> None:
    a = [trade("A", 0), trade("A", 2), trade("A", 4)]
    b = [quote("B", 1), quote("B", 2), quote("B", 5)]
    events = await collect(Replay(sources=[a, b]))
    assert [(e.symbol, s) for e, s in zip(events, offsets(events), strict=True)] == [
        ("A", 0),
        ("B", 1),
        ("A", 2),
        ("B", 2),
        ("A", 4),
        ("B", 5),
    ]


async def test_the_window_skips_events_before_from_and_stops_at_to() -> None:
    replay = Replay(sources=[[trade("A", s) for s in range(10)]], start=T0 + timedelta(seconds=3), end=T0 + timedelta(seconds=6))
    assert offsets(await collect(replay)) == [3, 4, 5]
    assert (replay.stats.before_window, replay.stats.first, replay.stats.last) == (3, T0 + timedelta(seconds=3), T0 + timedelta(seconds=5))


async def test_a_loop_starts_again_with_time_moving_forward() -> None:
    replay = Replay(sources=[[trade("A", 0), trade("A", 10)]], loop=True)
    events = []
    async for event in replay:
        events.append(event)
        if len(events) == 6:
            break
    span = 10 + LOOP_GAP.total_seconds()
    assert offsets(events) == [0, 10, span, span + 10, 2 * span, 2 * span + 10]
    assert [e.price for e in events] == [Decimal(100), Decimal(110)] * 3  # the same session, later


async def test_rebasing_shifts_the_session_to_start_now() -> None:
    now = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    events = await collect(Replay(sources=[[trade("A", 0), trade("A", 90)]], rebase=True, now=lambda: now))
    assert [e.ts for e in events] == [now, now + timedelta(seconds=90)]


async def test_pacing_waits_for_each_event_at_the_speed_given_on_the_recorded_clock() -> None:
    clock = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        clock[0] += seconds

    replay = Replay(
        sources=[[trade("A", 0), trade("A", 10), trade("A", 10.001), trade("A", 30)]], speed=10, clock=lambda: clock[0], sleep=sleep
    )
    events = await collect(replay)
    assert len(events) == 4
    # ×10: one second, then nothing for the event 0.1 ms later (not worth a timer), then two seconds.
    assert waits == [1.0, 2.0]


async def test_backfill_from_before_the_session_is_handed_on_but_neither_paced_nor_the_sessions_start() -> None:
    clock = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        clock[0] += seconds

    backfill = Trade("A", T0 - timedelta(minutes=5), Decimal(1), Decimal(1), "coinbase", "buy", 7, backfill=True)
    replay = Replay(sources=[[backfill, trade("A", 0), trade("A", 10)]], speed=10, clock=lambda: clock[0], sleep=sleep)
    events = await collect(replay)
    assert events[0] is backfill and len(events) == 3
    assert (replay.stats.first, waits) == (T0, [1.0])  # not five minutes of waiting ×10


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="speed must be positive"):
        Replay(sources=[], speed=0)
    with pytest.raises(ValueError, match="after its start"):
        Replay(sources=[], start=T0, end=T0)
