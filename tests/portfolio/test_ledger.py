from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from portfolio.ledger import Entry, LedgerError, Position, position_apply, position_from_ledger

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def entry(side: str, qty: str, price: str, fee: str = "0", day: int = 0) -> Entry:
    return Entry(side, D(qty), D(price), D(fee), T0 + timedelta(days=day))


def test_worked_example_buy_buy_partial_sell_then_sell_out() -> None:
    # 10 @ 100 + 1 fee → avg 100.1; 10 @ 110 → (1001 + 1100) / 20 = 105.05
    position = position_from_ledger([entry("buy", "10", "100", "1"), entry("buy", "10", "110", day=1)])
    assert position == Position(D("20"), D("105.05"))
    # a partial sell leaves the average cost where it was
    position = position_apply(position, entry("sell", "5", "130", "2", day=2))
    assert position == Position(D("15"), D("105.05"))
    # selling out resets the basis, so a later buy starts afresh
    position = position_apply(position, entry("sell", "15", "90", day=3))
    assert position == Position(D("0"), D("0"))
    assert position_apply(position, entry("buy", "1", "50", day=4)) == Position(D("1"), D("50"))


def test_selling_more_than_held_says_what_was_held_and_when() -> None:
    with pytest.raises(LedgerError, match=r"Cannot sell 3 AAPL on 2026-01-06 14:30 UTC: only 2 held at that time\."):
        position_from_ledger([entry("buy", "2", "10"), entry("sell", "3", "12", day=1)], symbol="AAPL")
