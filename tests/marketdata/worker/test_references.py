import itertools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata.worker.references import LOOKBACK, MARGIN, Mark, MarketHours, References, _Series, local_midnight, minute_of

D = Decimal
NEW_YORK = "America/New_York"
CRYPTO = MarketHours(always_open=True)
NYSE = MarketHours(always_open=False, timezone=NEW_YORK)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(NEW_YORK)).astimezone(UTC)  # type: ignore[misc]


def refs(hours: MarketHours, *marks: tuple[datetime, str], symbol: str = "X") -> References:
    return References({symbol: hours}, [Mark(symbol, minute, D(price)) for minute, price in marks])


def test_an_always_open_market_is_measured_against_the_last_mark_24_hours_earlier() -> None:
    now = utc(2026, 1, 7, 12, 0, 30)
    r = refs(CRYPTO, (utc(2026, 1, 6, 11, 58), "98"), (utc(2026, 1, 6, 11, 59), "99"), (utc(2026, 1, 6, 12, 1), "101"))
    assert r.reference("X", now) == D("99")
    assert r.reference("X", utc(2026, 1, 7, 12, 1)) == D("101")  # at exactly 24 hours counts


def test_an_always_open_market_without_a_mark_a_day_old_has_no_reference() -> None:
    r = refs(CRYPTO, (utc(2026, 1, 6, 12, 1), "101"))
    assert r.reference("X", utc(2026, 1, 7, 12, 0)) is None
    assert r.reference("NEVER-SEEN", utc(2026, 1, 7, 12, 0)) is None


def test_a_session_market_is_measured_against_the_last_price_before_local_midnight() -> None:
    # 16:00 New York on a January Tuesday is 21:00 UTC; 00:30 UTC Wednesday is still Tuesday there.
    r = refs(NYSE, (ny(2026, 1, 6, 15, 59), "100"), (utc(2026, 1, 7, 0, 30), "100.5"), (ny(2026, 1, 7, 9, 30), "102"))
    assert r.reference("X", ny(2026, 1, 7, 10, 0)) == D("100.5")
    # Later the same day the reference does not move.
    assert r.reference("X", ny(2026, 1, 7, 23, 59)) == D("100.5")
    # The next morning, Wednesday's last price is the previous close.
    assert r.reference("X", ny(2026, 1, 8, 9, 30)) == D("102")


def test_on_a_monday_the_reference_is_fridays_last_price() -> None:
    friday_close = ny(2026, 1, 9, 15, 59)
    r = refs(NYSE, (ny(2026, 1, 8, 15, 59), "99"), (friday_close, "101"))
    assert r.reference("X", ny(2026, 1, 10, 12, 0)) == D("101")  # Saturday
    assert r.reference("X", ny(2026, 1, 12, 9, 31)) == D("101")  # Monday
    r.observe("X", ny(2026, 1, 12, 9, 30), D("103"))
    assert r.reference("X", ny(2026, 1, 12, 15, 0)) == D("101")


def test_a_session_market_without_an_earlier_day_has_no_reference() -> None:
    r = refs(NYSE, (ny(2026, 1, 12, 9, 30), "103"))
    assert r.reference("X", ny(2026, 1, 12, 10, 0)) is None


@pytest.mark.parametrize(
    ("late_sunday_utc", "counts_as_sunday"),
    [
        # Spring forward (8 March 2026): Monday starts at 04:00 UTC, not 05:00.
        (utc(2026, 3, 9, 4, 30), False),
        (utc(2026, 3, 9, 3, 59), True),
        # Fall back (1 November 2026): Monday starts at 05:00 UTC, not 04:00.
        (utc(2026, 11, 2, 4, 30), True),
        (utc(2026, 11, 2, 5, 0), False),
    ],
)
def test_local_midnight_follows_daylight_saving_time(late_sunday_utc: datetime, counts_as_sunday: bool) -> None:
    friday = late_sunday_utc - timedelta(days=3)
    r = refs(NYSE, (friday, "100"), (late_sunday_utc, "200"))
    monday_noon = late_sunday_utc.replace(hour=16, minute=0)
    assert r.reference("X", monday_noon) == (D("200") if counts_as_sunday else D("100"))


def test_a_day_that_starts_with_a_dst_jump_starts_at_the_jump() -> None:
    # Santiago skips from 00:00 to 01:00 on 6 September 2026: that day begins at 04:00 UTC.
    zone = ZoneInfo("America/Santiago")
    assert local_midnight(utc(2026, 9, 6, 12), zone) == utc(2026, 9, 6, 4)
    assert local_midnight(utc(2026, 9, 7, 12), zone) == utc(2026, 9, 7, 3)


def test_a_symbol_nobody_described_has_a_utc_trading_day() -> None:
    r = References({}, [Mark("NEW", utc(2026, 1, 6, 23, 59), D("5"))])
    assert r.reference("NEW", utc(2026, 1, 7, 0, 0)) == D("5")


@pytest.mark.parametrize("hours", [CRYPTO, NYSE])
def test_a_lookup_up_to_the_margin_before_the_newest_mark_is_still_exact(hours: MarketHours) -> None:
    newest = ny(2026, 1, 7, 0, 10)  # ten past midnight in New York
    r = refs(hours, (newest - timedelta(days=2), "1"), (newest - LOOKBACK - timedelta(minutes=30), "2"))
    r.observe("X", newest - LOOKBACK - timedelta(minutes=10), D("3"))
    r.observe("X", newest - timedelta(minutes=20), D("4"))
    r.observe("X", newest, D("5"))
    # 23:55 on the 6th: a day back the last mark is "2"; the last before the 6th began (00:00) is "2" as well.
    assert r.reference("X", newest - timedelta(minutes=15)) == D("2")


def test_a_later_mark_for_the_same_minute_replaces_the_earlier() -> None:
    r = refs(CRYPTO, (utc(2026, 1, 6, 12, 0), "1"))
    r.observe("X", utc(2026, 1, 6, 12, 0), D("2"))
    assert r.reference("X", utc(2026, 1, 7, 12, 0)) == D("2")


@pytest.mark.parametrize(("hours", "bound"), [(CRYPTO, int((LOOKBACK + MARGIN) / timedelta(minutes=1)) + 1), (NYSE, 3)])
def test_memory_stays_bounded_over_days_of_minutes(hours: MarketHours, bound: int) -> None:
    r = References({"X": hours})
    start = utc(2026, 1, 5)
    held = []
    for n in range(3 * 24 * 60):
        r.observe("X", start + timedelta(minutes=n), D(n))
        held.append(len(r))
    assert max(held) == bound


def test_minute_of_refuses_naive_times() -> None:
    assert minute_of(utc(2026, 1, 5, 14, 30, 59)) == utc(2026, 1, 5, 14, 30)
    with pytest.raises(ValueError, match="naive"):
        minute_of(datetime(2026, 1, 5))


# Property: whatever order marks arrive in, trimming changes no answer for a `now` from the newest mark minus the margin on.
# 5 March 2026 is a Thursday; 8 March starts US daylight saving time.
START = utc(2026, 3, 5)
gaps = st.integers(min_value=1, max_value=60) | st.just(3 * 24 * 60)  # minutes apart, or a weekend


def brute_force(hours: MarketHours, marks: list[Mark], now: datetime) -> Decimal | None:
    if hours.always_open:
        eligible = [m for m in marks if m.minute <= now - LOOKBACK]
    else:
        eligible = [m for m in marks if m.minute < local_midnight(now, ZoneInfo(hours.timezone))]
    return max(eligible, key=lambda m: m.minute).price if eligible else None


@given(
    hours=st.sampled_from([CRYPTO, NYSE, MarketHours(always_open=False, timezone="Asia/Tokyo")]),
    steps=st.lists(gaps, min_size=1, max_size=200) | st.lists(gaps, min_size=40, max_size=200),
    order=st.randoms(use_true_random=False),
    later=st.lists(st.integers(min_value=0, max_value=120) | st.integers(min_value=0, max_value=3 * 24 * 60), min_size=1, max_size=8),
)
def test_trimmed_references_agree_with_every_mark_kept(
    hours: MarketHours, steps: list[int], order: random.Random, later: list[int]
) -> None:
    offsets = list(itertools.accumulate(steps))
    marks = [Mark("X", START + timedelta(minutes=m), D(m)) for m in offsets]
    shuffled = list(marks)
    order.shuffle(shuffled)
    r = References({"X": hours}, shuffled)
    newest = marks[-1].minute
    for extra in later:
        now = newest - MARGIN + timedelta(minutes=extra, seconds=30)
        assert r.reference("X", now) == brute_force(hours, marks, now)


@given(
    zone=st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago", "UTC", "Asia/Kolkata"]),
    offsets=st.lists(st.integers(min_value=0, max_value=400 * 24 * 3600), min_size=1, max_size=30),
)
def test_the_remembered_day_start_is_always_the_local_midnight(zone: str, offsets: list[int]) -> None:
    series = _Series(MarketHours(always_open=False, timezone=zone))
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for seconds in sorted(offsets) + offsets:  # in order, as a replay asks, then in any order
        now = base + timedelta(seconds=seconds)
        assert series._day_start(now) == local_midnight(now, ZoneInfo(zone))
