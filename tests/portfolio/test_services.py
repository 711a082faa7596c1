from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata import groups
from marketdata.models import Instrument
from portfolio import services
from portfolio.models import Holding, Portfolio, Transaction
from tests.conftest import T0, listen, received

D = Decimal
pytestmark = pytest.mark.django_db


def record(portfolio: Portfolio, instrument: Instrument, side: str, qty: str, price: str = "100", fee: str = "0", day: int = 0) -> Any:
    return services.transaction_record(
        portfolio=portfolio,
        instrument=instrument,
        side=side,
        quantity=D(qty),
        price=D(price),
        fee=D(fee),
        executed_at=T0 + timedelta(days=day),
    )


def messages_of(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, list[str]]:
    return exc.value.message_dict


def test_recording_a_buy_creates_the_holding(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    holding = Holding.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"])
    assert (holding.quantity, holding.average_cost) == (D("10"), D("150.1"))


def test_selling_more_than_held_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    with pytest.raises(ValidationError) as exc:
        record(alice_portfolio, instruments["AAPL"], "sell", "11", day=1)
    assert messages_of(exc) == {"quantity": ["Cannot sell 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time."]}
    assert Transaction.objects.filter(portfolio=alice_portfolio).count() == 2


def test_a_backdated_sell_is_checked_against_what_was_held_then(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    # 10 AAPL held since T0; a sell dated the day before T0 finds nothing to sell.
    with pytest.raises(ValidationError, match="only 0 held at that time"):
        record(alice_portfolio, instruments["AAPL"], "sell", "1", day=-1)


@pytest.mark.parametrize("qty", ["0", "-5"])
def test_zero_or_negative_quantity_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument], qty: str) -> None:
    with pytest.raises(ValidationError) as exc:
        record(alice_portfolio, instruments["AAPL"], "buy", qty)
    assert messages_of(exc) == {"quantity": ["Quantity must be greater than zero."]}


def test_negative_price_or_fee_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    with pytest.raises(ValidationError) as exc:
        record(alice_portfolio, instruments["AAPL"], "buy", "1", price="-1", fee="-2")
    assert messages_of(exc) == {"price": ["Price must not be negative."], "fee": ["Fee must not be negative."]}


def test_a_transaction_in_an_inactive_instrument_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    msft = instruments["MSFT"]
    msft.is_active = False
    msft.save()
    with pytest.raises(ValidationError) as exc:
        record(alice_portfolio, msft, "buy", "1")
    assert messages_of(exc) == {"instrument": ["MSFT is inactive: it takes no new transactions."]}
    assert not Holding.objects.filter(instrument=msft).exists()


def test_a_transaction_in_the_future_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    with pytest.raises(ValidationError) as exc:
        services.transaction_record(
            portfolio=alice_portfolio,
            instrument=instruments["AAPL"],
            side="buy",
            quantity=D(1),
            price=D(1),
            executed_at=timezone.now() + timedelta(hours=1),
        )
    assert messages_of(exc) == {"executed_at": ["Execution time is in the future."]}


def test_selling_everything_removes_the_holding(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    record(alice_portfolio, instruments["AAPL"], "sell", "10", day=1)
    assert not Holding.objects.filter(portfolio=alice_portfolio, instrument=instruments["AAPL"]).exists()


def test_deleting_a_buy_that_a_later_sell_needs_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    record(alice_portfolio, instruments["AAPL"], "sell", "4", day=1)
    buy = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"], side="buy")
    with pytest.raises(ValidationError, match="would break a later one"):
        services.transaction_delete(transaction=buy)
    assert Transaction.objects.filter(pk=buy.pk).exists()


def test_deleting_an_entry_rebuilds_the_holding(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    sell = record(alice_portfolio, instruments["AAPL"], "sell", "4", day=1)
    services.transaction_delete(transaction=sell)
    assert Holding.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"]).quantity == D("10")


def test_owner_is_told_to_reload_only_after_commit(
    alice: Any, bob: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    alice_channel, bob_channel = listen(groups.user_group(alice.pk)), listen(groups.user_group(bob.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        record(alice_portfolio, instruments["MSFT"], "buy", "1", day=2)
        assert received(alice_channel) == []  # not before commit
    for callback in callbacks:
        callback()
    assert received(alice_channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]
    assert received(bob_channel) == []


def test_a_rolled_back_transaction_tells_nobody(
    alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            record(alice_portfolio, instruments["MSFT"], "buy", "1", day=2)
            raise RuntimeError("abort")
    assert callbacks == []
    assert not Holding.objects.filter(portfolio=alice_portfolio, instrument=instruments["MSFT"]).exists()


def test_deleting_a_portfolio_tells_its_owner_after_commit(
    alice: Any, alice_portfolio: Portfolio, django_capture_on_commit_callbacks: Any
) -> None:
    channel = listen(groups.user_group(alice.pk))
    pk = alice_portfolio.pk
    with django_capture_on_commit_callbacks(execute=True):
        services.portfolio_delete(portfolio=alice_portfolio)
    assert received(channel) == [{"type": "portfolio.reload", "portfolio_id": pk}]
    assert not Holding.objects.filter(portfolio_id=pk).exists()
    assert not Transaction.objects.filter(portfolio_id=pk).exists()


# side, quantity, price, fee, day: recorded in the generated (random) order, so many are back-dated.
ledger_entries = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.integers(min_value=1, max_value=20),
        st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2),
        st.decimals(min_value=D("0"), max_value=D("5"), places=2),
        st.integers(min_value=0, max_value=30),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=ledger_entries)
def test_holdings_derived_from_any_ledger_equal_the_step_by_step_result(
    alice: Any, instruments: dict[str, Instrument], entries: list[Any]
) -> None:
    portfolio = Portfolio.objects.create(owner=alice, name=f"p{Portfolio.objects.count()}")
    aapl = instruments["AAPL"]
    accepted: list[tuple[int, int, str, D, D, D]] = []  # (day, insertion order, ...)
    for order, (side, qty, price, fee, day) in enumerate(entries):
        candidate = sorted([*accepted, (day, order, side, D(qty), price, fee)])
        held, valid = D(0), True
        for _, _, s, q, _, _ in candidate:
            held += q if s == "buy" else -q
            valid = valid and held >= 0
        if valid:
            record(portfolio, aapl, side, str(qty), str(price), str(fee), day=day)
            accepted = candidate
        else:
            with pytest.raises(ValidationError):
                record(portfolio, aapl, side, str(qty), str(price), str(fee), day=day)

    # Step by step, in execution order: the textbook average-cost method.
    quantity, cost = D(0), D(0)
    for _, _, side, q, price, fee in accepted:
        if side == "buy":
            quantity, cost = quantity + q, cost + q * price + fee
        else:
            cost -= cost / quantity * q
            quantity -= q
    holding = Holding.objects.filter(portfolio=portfolio, instrument=aapl).first()
    if quantity == 0:
        assert holding is None
    else:
        assert holding is not None and holding.quantity == quantity
        # SQLite keeps 15 significant digits; PostgreSQL is exact to the field's 10 places.
        assert abs(holding.average_cost - cost / quantity) <= D("1e-9") * max(1, cost / quantity)
    assert Transaction.objects.filter(portfolio=portfolio).count() == len(accepted)
