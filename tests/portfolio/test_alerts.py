"""`portfolio.alerts`: the in-memory index fires each alert once per crossing and re-arms it only past its hysteresis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portfolio.alerts import MOVE_PCT, PRICE_ABOVE, PRICE_BELOW, AlertIndex, Rule

D = Decimal
T = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def fired(index: AlertIndex, symbol: str, *prices: str, at: datetime = T) -> list[list[int]]:
    """For each price in turn: the ids it fired."""
    return [[c.alert_id for c in index.observe(symbol, D(p), at) if c.fired] for p in prices]


def test_a_price_above_alert_fires_once_when_reached_and_not_again_while_above() -> None:
    index = AlertIndex([Rule(1, "BTC-USD", PRICE_ABOVE, D("100"))])
    assert fired(index, "BTC-USD", "99", "100", "101", "150") == [[], [1], [], []]


def test_a_price_below_alert_fires_when_reached_from_above() -> None:
    index = AlertIndex([Rule(1, "AAPL", PRICE_BELOW, D("100"))])
    assert fired(index, "AAPL", "101", "100.5", "100", "99", "50") == [[], [], [1], [], []]


def test_an_alert_already_past_fires_on_the_first_price() -> None:
    # Armed and already crossed: "is at or above" holds at once.
    index = AlertIndex([Rule(1, "X", PRICE_ABOVE, D("10"))])
    assert fired(index, "X", "12") == [[1]]


def test_hysteresis_re_arms_only_past_threshold_minus_hysteresis() -> None:
    index = AlertIndex([Rule(1, "X", PRICE_ABOVE, D("100"), hysteresis=D("5"))])
    # 96 is back under 100 but not under 95: still disarmed, so 100 again does not fire.
    assert fired(index, "X", "100", "96", "100", "95", "100", "94.99", "100") == [[1], [], [], [], [], [], [1]]
    crossings = index.observe("X", D("90"), T)
    assert [(c.alert_id, c.fired) for c in crossings] == [(1, False)]


def test_below_hysteresis_re_arms_above_threshold_plus_hysteresis() -> None:
    index = AlertIndex([Rule(1, "X", PRICE_BELOW, D("100"), hysteresis=D("2"))])
    assert fired(index, "X", "99", "101", "99", "102.01", "99") == [[1], [], [], [], [1]]


def test_a_disarmed_rule_loaded_from_the_database_re_arms_before_firing() -> None:
    index = AlertIndex([Rule(1, "X", PRICE_ABOVE, D("100"), hysteresis=D("1"), armed=False)])
    assert fired(index, "X", "101", "98", "100") == [[], [], [1]]


def test_one_price_fires_every_threshold_it_passed_and_only_those() -> None:
    rules = [Rule(i, "X", PRICE_ABOVE, D(t)) for i, t in enumerate(["10", "20", "30", "40"], start=1)]
    rules += [Rule(9, "X", PRICE_BELOW, D("5")), Rule(10, "Y", PRICE_ABOVE, D("1"))]
    index = AlertIndex(rules)
    assert sorted(fired(index, "X", "30")[0]) == [1, 2, 3]
    assert fired(index, "X", "39.99", "40", "4") == [[], [4], [9]]


def test_a_symbol_without_alerts_costs_a_lookup_and_gives_nothing() -> None:
    index = AlertIndex([Rule(1, "X", PRICE_ABOVE, D("1"))])
    assert index.observe("OTHER", D("5"), T) == []


def test_a_move_alert_compares_with_the_price_window_minutes_before() -> None:
    index = AlertIndex([Rule(1, "X", MOVE_PCT, D("5"), window_minutes=10), Rule(2, "X", MOVE_PCT, D("-5"), window_minutes=10)])
    # No price 10 minutes old yet: not evaluated.
    assert fired(index, "X", "100", at=T) == [[]]
    assert fired(index, "X", "104", at=T + timedelta(minutes=9)) == [[]]
    # At +10 min the base is the close of T's minute (100): +4 % then +5 %.
    assert fired(index, "X", "104", "105", at=T + timedelta(minutes=10)) == [[], [1]]
    crossing = index.observe("X", D("106"), T + timedelta(minutes=10))
    assert crossing == []  # fired once, still above
    # 19 minutes: the base is the close of minute +9 (104): 98.8 is -5 %.
    down = index.observe("X", D("98.8"), T + timedelta(minutes=19))
    assert sorted((c.alert_id, c.fired, c.value) for c in down) == [(1, False, D("-5.0000")), (2, True, D("-5.0000"))]


def test_a_move_needs_a_window_and_a_threshold() -> None:
    with pytest.raises(ValueError, match="alert 3: a move needs a window"):
        AlertIndex([Rule(3, "X", MOVE_PCT, D("5"), window_minutes=0)])
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        AlertIndex([Rule(4, "X", "nope", D("5"))])


def up_crossings_with_rearm(prices: list[Decimal], threshold: Decimal, hysteresis: Decimal) -> int:
    """The firing count by the definition, one price at a time: fire at >= threshold while armed; re-arm below
    threshold - hysteresis."""
    armed, count = True, 0
    for price in prices:
        if armed and price >= threshold:
            armed, count = False, count + 1
        elif not armed and price < threshold - hysteresis:
            armed = True
    return count


prices_st = st.lists(st.integers(min_value=0, max_value=200).map(D), max_size=60)


@given(
    prices=prices_st,
    thresholds=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8),
    hysteresis=st.integers(min_value=0, max_value=20),
)
def test_firings_equal_up_crossings_with_re_arming_for_every_alert(prices: list[Decimal], thresholds: list[int], hysteresis: int) -> None:
    rules = [Rule(i, "X", PRICE_ABOVE, D(t), hysteresis=D(hysteresis)) for i, t in enumerate(thresholds)]
    index = AlertIndex(rules)
    counts = dict.fromkeys(range(len(rules)), 0)
    for price in prices:
        for crossing in index.observe("X", price, T):
            if crossing.fired:
                counts[crossing.alert_id] += 1
    assert counts == {rule.id: up_crossings_with_rearm(prices, rule.threshold, rule.hysteresis) for rule in rules}


@given(prices=prices_st, threshold=st.integers(min_value=1, max_value=200), hysteresis=st.integers(min_value=0, max_value=20))
def test_below_alerts_mirror_above_alerts_on_negated_prices(prices: list[Decimal], threshold: int, hysteresis: int) -> None:
    below = AlertIndex([Rule(1, "X", PRICE_BELOW, D(threshold), hysteresis=D(hysteresis))])
    above = AlertIndex([Rule(1, "X", PRICE_ABOVE, D(-threshold), hysteresis=D(hysteresis))])
    for price in prices:
        assert [c.fired for c in below.observe("X", price, T)] == [c.fired for c in above.observe("X", -price, T)]
