"""`portfolio.services`: every ledger write, checked against the ledger, rebuilt into holdings, cash and totals, announced after commit."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata import groups
from marketdata.models import Instrument
from portfolio import selectors, services
from portfolio.models import Alert, CashBalance, Holding, Kind, Portfolio, Transaction
from portfolio.valuation import NO_RATE, Price, fx_route, route_rate, totals, value_cash, value_holding
from tests.conftest import T0, listen_group, received, record
from tests.servers import free_port

D = Decimal
CENT = D("0.01")
pytestmark = pytest.mark.django_db


def day(n: int) -> Any:
    return T0 + timedelta(days=n)


def draft(kind: str, quantity: str, instrument: Instrument | None = None, **fields: Any) -> services.Draft:
    values = {name: D(value) if name in ("price", "fee", "fx_rate") else value for name, value in fields.items()}
    values.setdefault("executed_at", T0)
    return services.Draft(kind=kind, quantity=D(quantity), instrument=instrument, **values)


def rejection(portfolio: Portfolio, kind: str, quantity: str, instrument: Instrument | None = None, **fields: Any) -> dict[str, list[str]]:
    """The field errors `transaction_check` gives for one draft; `transaction_record` must refuse it the same way."""
    candidate = draft(kind, quantity, instrument, **fields)
    with pytest.raises(ValidationError) as checked:
        services.transaction_check(portfolio=portfolio, draft=candidate)
    before = Transaction.objects.count()
    with pytest.raises(ValidationError) as recorded:
        services.transaction_record(portfolio=portfolio, draft=candidate)
    assert recorded.value.message_dict == checked.value.message_dict
    assert Transaction.objects.count() == before
    return checked.value.message_dict


def holdings(portfolio: Portfolio) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    rows = Holding.objects.filter(portfolio=portfolio).select_related("instrument")
    return {h.instrument.symbol: (h.quantity, h.cost, h.cost_base) for h in rows}


def cash(portfolio: Portfolio) -> dict[str, Decimal]:
    return dict(CashBalance.objects.filter(portfolio=portfolio).values_list("currency", "amount"))


def flows(portfolio: Portfolio) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """(realised P&L, dividends, interest, fees, net deposits), fresh from the database."""
    p = Portfolio.objects.get(pk=portfolio.pk)
    return p.realised_pnl, p.dividends, p.interest, p.fees, p.net_deposits


def derived_rows(portfolio: Portfolio) -> tuple[object, ...]:
    return holdings(portfolio), cash(portfolio), flows(portfolio)


# ---------------------------------------------------------------- worked examples, checked by hand


def test_worked_example_a_buy_costs_its_price_and_books_its_fee_apart(alice_portfolio: Portfolio) -> None:
    # conftest: 25000 deposited; 10 AAPL @ 150.00 + 1.00 fee; 0.5 BTC @ 40000.
    # AAPL cost 10 × 150.00 = 1500.00 (the fee is not cost); BTC 0.5 × 40000 = 20000.
    assert holdings(alice_portfolio) == {"AAPL": (D("10"), D("1500"), D("1500")), "BTC-USD": (D("0.5"), D("20000"), D("20000"))}
    # 25000 − (10 × 150.00 + 1.00 fee = 1501.00) − 20000 = 3499.00 cash
    assert cash(alice_portfolio) == {"USD": D("3499")}
    assert flows(alice_portfolio) == (D(0), D(0), D(0), D("1"), D("25000"))
    assert Holding.objects.get(portfolio=alice_portfolio, instrument__symbol="AAPL").average_cost == D("150")


def test_worked_example_a_partial_sell_realises_against_the_average_cost(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "sell", "4", instruments["AAPL"], price="180", fee="2", executed_at=day(1))
    # Cost out: 1500 × 4/10 = 600; proceeds 4 × 180 = 720; realised 720 − 600 = 120.
    assert holdings(alice_portfolio)["AAPL"] == (D("6"), D("900"), D("900"))
    # 3499 + 720 − 2 fee = 4217; fees 1 + 2 = 3
    assert cash(alice_portfolio) == {"USD": D("4217")}
    assert flows(alice_portfolio) == (D("120"), D(0), D(0), D("3"), D("25000"))


def test_worked_example_a_dividend_with_withholding_tax(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    # 10 shares × 0.24 = 2.40 gross; 15 % withheld = 0.36, entered as the fee; 2.04 arrives.
    record(alice_portfolio, "dividend", "10", instruments["AAPL"], price="0.24", fee="0.36", executed_at=day(1))
    assert cash(alice_portfolio) == {"USD": D("3501.04")}  # 3499 + 2.40 − 0.36
    assert flows(alice_portfolio) == (D(0), D("2.40"), D(0), D("1.36"), D("25000"))
    assert holdings(alice_portfolio)["AAPL"] == (D("10"), D("1500"), D("1500"))


def test_worked_example_a_split(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    record(alice_portfolio, "split", "4", instruments["AAPL"], executed_at=day(1))
    # 4-for-1: 10 × 4 = 40 shares, still 1500 of cost: 37.50 each. Cash and totals do not move.
    assert holdings(alice_portfolio)["AAPL"] == (D("40"), D("1500"), D("1500"))
    assert Holding.objects.get(portfolio=alice_portfolio, instrument__symbol="AAPL").average_cost == D("37.5")
    assert cash(alice_portfolio) == {"USD": D("3499")}
    # A later sale of all 40 at the split-adjusted 45 (180 / 4) realises 40 × 45 − 1500 = 300.
    record(alice_portfolio, "sell", "40", instruments["AAPL"], price="45", executed_at=day(2))
    assert flows(alice_portfolio)[0] == D("300")


def test_worked_example_a_eur_portfolio_holding_a_usd_stock(alice: Any, instruments: dict[str, Instrument]) -> None:
    euro = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")
    record(euro, "deposit", "2500", currency="USD", fx_rate="0.90", executed_at=day(-1))  # 2500 × 0.90 = 2250 EUR deposited
    record(euro, "buy", "10", instruments["AAPL"], price="200", fx_rate="0.92")  # 2000 USD × 0.92 = 1840 EUR of cost
    assert holdings(euro) == {"AAPL": (D("10"), D("2000"), D("1840"))}
    assert cash(euro) == {"USD": D("500")}  # 2500 − 2000, kept in USD
    assert flows(euro) == (D(0), D(0), D(0), D(0), D("2250"))

    (book,) = selectors.books_for_portfolios(Portfolio.objects.filter(pk=euro.pk))
    route = fx_route("USD", "EUR", {("EUR", "USD"): "EUR/USD"})  # EUR/USD quoted in USD: USD → EUR is its inverse
    (line,), (usd_cash,) = book.lines, book.cash

    def value(prices: dict[str, Price]) -> Any:
        rate, reference_rate = route_rate(route, prices), route_rate(route, prices, reference=True)
        holding = value_holding(line, prices.get("AAPL"), rate, reference_rate)
        balance = value_cash(usd_cash, rate, reference_rate)
        return holding, totals([(line.key, holding)], [(usd_cash.key, balance)], book.flows)

    holding, t = value({"AAPL": Price(D("210"), T0), "EUR/USD": Price(D("1.10"), T0)})
    # 10 × 210 / 1.10 = 1909.09 EUR; unrealised 1909.09 − 1840 = 69.09 EUR
    assert (holding.market_value.quantize(CENT), holding.pnl.quantize(CENT)) == (D("1909.09"), D("69.09"))
    # cash 500 / 1.10 = 454.55 EUR; in all 2363.64 EUR against 2250 deposited
    assert (t.cash.quantize(CENT), t.total_value.quantize(CENT), t.net_deposits) == (D("454.55"), D("2363.64"), D("2250"))

    # Without a EUR/USD price nothing can be said in EUR: no rate, left out, never zero.
    holding, t = value({"AAPL": Price(D("210"), T0)})
    assert (holding.status, holding.market_value, holding.pnl) == (NO_RATE, None, None)
    assert t.missing == (("AAPL", NO_RATE), ("cash:USD", NO_RATE))


# ---------------------------------------------------------------- checks and refusals


def test_transaction_check_returns_the_resulting_book_and_writes_nothing(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    book = services.transaction_check(
        portfolio=alice_portfolio, draft=draft("sell", "4", instruments["AAPL"], price="180", executed_at=day(1))
    )
    assert (book.realised, book.positions["AAPL"].quantity) == (D("120"), D("6"))
    assert Transaction.objects.filter(portfolio=alice_portfolio).count() == 3
    assert holdings(alice_portfolio)["AAPL"][0] == D("10")


def test_selling_more_than_held_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    assert rejection(alice_portfolio, "sell", "11", instruments["AAPL"], price="100", executed_at=day(1)) == {
        "quantity": ["Cannot sell 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time."]
    }


def test_a_backdated_sell_is_checked_against_what_was_held_then(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    # 10 AAPL held since T0; a sell dated the day before finds nothing to sell.
    assert rejection(alice_portfolio, "sell", "1", instruments["AAPL"], price="100", executed_at=day(-1)) == {
        "quantity": ["Cannot sell 1 AAPL on 2026-01-04 14:30 UTC: only 0 held at that time."]
    }


def test_an_entry_at_the_same_time_as_an_existing_one_comes_after_it(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "sell", "10", instruments["AAPL"], price="150", executed_at=T0)
    assert "AAPL" not in holdings(alice_portfolio)


def test_withdrawing_more_cash_than_held_is_rejected(alice_portfolio: Portfolio) -> None:
    assert rejection(alice_portfolio, "withdrawal", "5000", executed_at=day(1)) == {
        "quantity": [
            "Cannot withdraw 5000 USD on 2026-01-06 14:30 UTC: only 3499 USD cash held at that time (the portfolio does not allow negative cash)."
        ]
    }


def test_a_backdated_withdrawal_that_breaks_a_later_one_is_rejected(alice_portfolio: Portfolio) -> None:
    record(alice_portfolio, "withdrawal", "3000", executed_at=day(2))  # 3499 → 499
    # On day 1 there is 3499 to take 1000 from, but then day 2's 3000 finds only 2499.
    assert rejection(alice_portfolio, "withdrawal", "1000", executed_at=day(1)) == {
        "quantity": [
            "Cannot withdraw 3000 USD on 2026-01-07 14:30 UTC: only 2499 USD cash held at that time (the portfolio does not allow negative cash)."
        ]
    }


def test_withdrawing_into_negative_cash_is_allowed_when_the_portfolio_allows_it(alice: Any) -> None:
    margin = services.portfolio_create(owner_id=alice.pk, name="Alice margin", allow_negative_cash=True)
    record(margin, "deposit", "100")
    record(margin, "withdrawal", "150", executed_at=day(1))
    assert cash(margin) == {"USD": D("-50")}
    assert flows(margin)[4] == D("-50")


def test_an_unknown_currency_is_rejected(alice_portfolio: Portfolio) -> None:
    assert rejection(alice_portfolio, "deposit", "100", currency="XXQ", fx_rate="1") == {
        "currency": ["Unknown currency 'XXQ': use an ISO 4217 code such as USD."]
    }


def test_a_currency_that_an_instrument_is_quoted_in_is_known(alice_portfolio: Portfolio) -> None:
    assert "ZZQ" not in services.known_currencies()
    Instrument.objects.create(symbol="ZZQ-TOKEN", name="Token", asset_class="crypto", quote_currency="ZZQ")
    assert {"USD", "EUR", "JPY", "ZZQ"} <= services.known_currencies()


@pytest.mark.parametrize("ratio", ["0", "-2"])
def test_a_split_ratio_that_is_not_positive_is_rejected_naming_the_ratio(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument], ratio: str
) -> None:
    (message,) = rejection(alice_portfolio, "split", ratio, instruments["AAPL"], executed_at=day(1))["quantity"]
    assert message == f"Split ratio must be greater than zero, not {ratio}."


def test_a_foreign_currency_without_an_fx_rate_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    assert rejection(alice_portfolio, "deposit", "100", currency="EUR") == {
        "fx_rate": ["The portfolio is in USD: give the EUR→USD rate at execution."]
    }
    assert rejection(alice_portfolio, "buy", "1", instruments["SAP"], price="230") == {
        "fx_rate": ["The portfolio is in USD: give the EUR→USD rate at execution."]
    }


def test_a_foreign_buy_with_its_fx_rate_is_costed_in_the_base_currency(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "buy", "2", instruments["SAP"], price="230", fx_rate="1.10", executed_at=day(1))
    # 2 × 230 = 460 EUR; × 1.10 = 506 USD. The EUR goes out of a EUR balance.
    assert holdings(alice_portfolio)["SAP"] == (D("2"), D("460"), D("506"))
    assert cash(alice_portfolio) == {"USD": D("3499"), "EUR": D("-460")}


def test_the_base_currency_has_no_other_fx_rate(alice_portfolio: Portfolio) -> None:
    assert rejection(alice_portfolio, "deposit", "100", fx_rate="1.1") == {"fx_rate": ["USD is the base currency: its FX rate is 1."]}


@pytest.mark.parametrize("kind", ["buy", "sell", "split", "dividend"])
def test_an_instrument_is_required_for_a_trade_split_or_dividend(alice_portfolio: Portfolio, kind: str) -> None:
    assert rejection(alice_portfolio, kind, "1") == {"instrument": [f"A {kind} needs an instrument."]}


def test_a_deposit_takes_no_instrument(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    assert rejection(alice_portfolio, "deposit", "1", instruments["AAPL"]) == {
        "instrument": ["A deposit moves cash only: leave the instrument empty."]
    }


def test_a_usd_instrument_bought_in_eur_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    assert rejection(alice_portfolio, "buy", "1", instruments["AAPL"], price="150", currency="EUR", fx_rate="1.1") == {
        "currency": ["AAPL trades in USD, so its buy is in USD."]
    }


def test_an_unknown_kind_is_rejected(alice_portfolio: Portfolio) -> None:
    (message,) = rejection(alice_portfolio, "gift", "1")["kind"]
    assert message.startswith("Unknown kind 'gift': use one of buy, sell, dividend")


@pytest.mark.parametrize("quantity", ["0", "-5"])
def test_zero_or_negative_quantity_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument], quantity: str) -> None:
    expected = f"Quantity must be greater than zero, not {quantity}."
    assert rejection(alice_portfolio, "buy", quantity, instruments["AAPL"]) == {"quantity": [expected]}


def test_negative_price_or_fee_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    assert rejection(alice_portfolio, "buy", "1", instruments["AAPL"], price="-1", fee="-2") == {
        "price": ["Price must not be negative."],
        "fee": ["Fee must not be negative."],
    }


def test_a_buy_of_an_inactive_instrument_is_rejected_but_a_sell_is_not(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    aapl = instruments["AAPL"]
    aapl.is_active = False
    aapl.save()
    assert rejection(alice_portfolio, "buy", "1", aapl) == {"instrument": ["AAPL is inactive: it takes no new buys."]}
    record(alice_portfolio, "sell", "10", aapl, price="150", executed_at=day(1))
    assert "AAPL" not in holdings(alice_portfolio)


def test_a_transaction_in_the_future_or_without_a_timezone_is_rejected(alice_portfolio: Portfolio) -> None:
    assert rejection(alice_portfolio, "deposit", "1", executed_at=timezone.now() + timedelta(hours=1)) == {
        "executed_at": ["Execution time is in the future."]
    }
    assert rejection(alice_portfolio, "deposit", "1", executed_at=T0.replace(tzinfo=None)) == {
        "executed_at": ["Execution time must carry a timezone."]
    }


def test_a_portfolio_in_an_unknown_currency_is_not_created(alice: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        services.portfolio_create(owner_id=alice.pk, name="Odd", base_currency="XXQ")
    assert exc.value.message_dict == {"base_currency": ["Unknown currency 'XXQ': use an ISO 4217 code such as USD."]}
    assert not Portfolio.objects.filter(name="Odd").exists()


def test_an_import_is_all_or_nothing_and_names_the_failing_line(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    drafts = [
        draft("buy", "5", instruments["MSFT"], price="400", executed_at=day(1), ref=2),
        draft("sell", "6", instruments["MSFT"], price="410", executed_at=day(2), ref=3),
    ]
    with pytest.raises(services.LedgerProblems) as exc:
        services.transactions_import(portfolio=alice_portfolio, drafts=drafts)
    assert [(p.ref, p.field, p.message) for p in exc.value.problems] == [
        (3, "quantity", "Cannot sell 6 MSFT on 2026-01-07 14:30 UTC: only 5 held at that time.")
    ]
    assert Transaction.objects.filter(portfolio=alice_portfolio).count() == 3


# ---------------------------------------------------------------- transfers


@pytest.fixture
def alice_savings(alice: Any, alice_portfolio: Portfolio) -> Portfolio:
    return services.portfolio_create(owner_id=alice.pk, name="Alice savings")


def test_cash_moves_between_two_portfolios_of_one_owner(alice_portfolio: Portfolio, alice_savings: Portfolio) -> None:
    sent, received_ = services.transfer_record(source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("1000"))
    assert (sent.kind, received_.kind) == (Kind.TRANSFER_OUT, Kind.TRANSFER_IN)
    assert (sent.counterpart, received_.counterpart) == (received_, sent)
    # 3499 − 1000 = 2499 left; 25000 − 1000 = 24000 deposited net. The other side: 1000 and 1000.
    assert (cash(alice_portfolio), flows(alice_portfolio)[4]) == ({"USD": D("2499")}, D("24000"))
    assert (cash(alice_savings), flows(alice_savings)[4]) == ({"USD": D("1000")}, D("1000"))


def test_moving_more_cash_than_held_is_rejected(alice_portfolio: Portfolio, alice_savings: Portfolio) -> None:
    with pytest.raises(ValidationError, match=r"Cannot withdraw 5000 USD on 2026-01-06 14:30 UTC: only 3499 USD cash held"):
        services.transfer_record(source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("5000"))
    assert not Transaction.objects.filter(portfolio=alice_savings).exists()


def test_shares_move_at_their_cost_and_realise_nothing(
    alice_portfolio: Portfolio, alice_savings: Portfolio, instruments: dict[str, Instrument]
) -> None:
    services.transfer_record(
        source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("4"), instrument=instruments["AAPL"]
    )
    # 4/10 of 1500 = 600 leaves and arrives; nothing is realised on either side; cash does not move.
    assert holdings(alice_portfolio)["AAPL"] == (D("6"), D("900"), D("900"))
    assert holdings(alice_savings) == {"AAPL": (D("4"), D("600"), D("600"))}
    assert flows(alice_portfolio) == (D(0), D(0), D(0), D("1"), D("24400"))
    assert flows(alice_savings) == (D(0), D(0), D(0), D(0), D("600"))
    assert (cash(alice_portfolio), cash(alice_savings)) == ({"USD": D("3499")}, {})


def test_foreign_shares_carry_their_base_currency_cost_too(
    alice: Any, alice_portfolio: Portfolio, alice_savings: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "buy", "3", instruments["SAP"], price="230", fx_rate="1.10", executed_at=day(1))  # 690 EUR, 759 USD
    services.transfer_record(
        source=alice_portfolio, destination=alice_savings, executed_at=day(2), quantity=D("3"), instrument=instruments["SAP"]
    )
    assert "SAP" not in holdings(alice_portfolio)
    assert holdings(alice_savings) == {"SAP": (D("3"), D("690"), D("759"))}
    assert flows(alice_savings)[4] == D("759")
    assert flows(alice_portfolio)[0] == D(0)


def test_shares_carry_their_exact_cost_when_the_average_does_not_terminate(
    alice_portfolio: Portfolio, alice_savings: Portfolio, instruments: dict[str, Instrument]
) -> None:
    # 1 MSFT for 1000, split 3-for-1: 3 shares costing 1000, 333.33… each. All 3 move: 1000 must arrive.
    record(alice_portfolio, "buy", "1", instruments["MSFT"], price="1000", executed_at=day(1))
    record(alice_portfolio, "split", "3", instruments["MSFT"], executed_at=day(2))
    services.transfer_record(
        source=alice_portfolio, destination=alice_savings, executed_at=day(3), quantity=D("3"), instrument=instruments["MSFT"]
    )
    written = holdings(alice_savings)["MSFT"]
    # The cost per share travels in the ledger at ten places (333.3333333333), so 3 shares arrive costing
    # 999.9999999999: a ten-billionth of a unit, far below a cent.
    assert abs(written[1] - D("1000")) <= D("1e-9") and written[1:] == (written[1], written[1])
    # The rows written are exactly what the ledger rebuilds to, not only what the check computed.
    services.portfolio_rebuild(portfolio=alice_savings)
    assert holdings(alice_savings)["MSFT"] == written
    assert flows(alice_savings)[4] == written[2]


def test_foreign_shares_bought_at_several_rates_carry_their_exact_base_cost(
    alice_portfolio: Portfolio, alice_savings: Portfolio, instruments: dict[str, Instrument]
) -> None:
    # 1 SAP @ 100 EUR at 1.10 + 2 SAP @ 100 EUR at 1.20: 300 EUR costing 110 + 240 = 350 USD (1.1666… USD per EUR).
    record(alice_portfolio, "buy", "1", instruments["SAP"], price="100", fx_rate="1.10", executed_at=day(1))
    record(alice_portfolio, "buy", "2", instruments["SAP"], price="100", fx_rate="1.20", executed_at=day(2))
    services.transfer_record(
        source=alice_portfolio, destination=alice_savings, executed_at=day(3), quantity=D("3"), instrument=instruments["SAP"]
    )
    written = holdings(alice_savings)
    services.portfolio_rebuild(portfolio=alice_savings)
    assert holdings(alice_savings) == written
    # The averaged rate (1.1666666667 at ten places) prices the 300 EUR: 350.0000000100 USD, within a millionth of a cent.
    quantity, cost, cost_base = written["SAP"]
    assert (quantity, cost) == (D("3"), D("300")) and abs(cost_base - D("350")) <= D("1e-7")
    assert flows(alice_savings)[4] == cost_base


def test_moving_shares_not_held_at_that_time_is_rejected(
    alice_portfolio: Portfolio, alice_savings: Portfolio, instruments: dict[str, Instrument]
) -> None:
    with pytest.raises(ValidationError) as exc:
        services.transfer_record(
            source=alice_portfolio, destination=alice_savings, executed_at=day(-1), quantity=D("1"), instrument=instruments["AAPL"]
        )
    assert exc.value.message_dict == {"quantity": ["Alice growth holds no AAPL on 2026-01-04 14:30 UTC."]}
    with pytest.raises(ValidationError, match=r"Cannot transfer out 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time\."):
        services.transfer_record(
            source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("11"), instrument=instruments["AAPL"]
        )
    assert not Transaction.objects.filter(portfolio=alice_savings).exists()


def test_a_transfer_to_someone_elses_portfolio_is_refused(
    alice_portfolio: Portfolio, bob_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    for source, destination in ((alice_portfolio, bob_portfolio), (bob_portfolio, alice_portfolio)):
        with pytest.raises(ValidationError, match=r"^\['Transfers are only between portfolios of the same owner\.'\]$"):
            services.transfer_record(source=source, destination=destination, executed_at=day(2), quantity=D("1"))
    with pytest.raises(ValidationError, match="same owner"):
        services.transfer_record(
            source=alice_portfolio, destination=bob_portfolio, executed_at=day(2), quantity=D("1"), instrument=instruments["AAPL"]
        )
    assert not Transaction.objects.filter(kind__in=[Kind.TRANSFER_IN, Kind.TRANSFER_OUT]).exists()
    assert (cash(alice_portfolio), cash(bob_portfolio)) == ({"USD": D("3499")}, {"USD": D("-900")})


def test_a_transfer_to_the_same_portfolio_is_refused(alice_portfolio: Portfolio) -> None:
    with pytest.raises(ValidationError, match="two different portfolios"):
        services.transfer_record(source=alice_portfolio, destination=alice_portfolio, executed_at=day(1), quantity=D("1"))


def test_deleting_one_side_of_a_transfer_deletes_both_and_rebuilds_both(
    alice_portfolio: Portfolio, alice_savings: Portfolio, instruments: dict[str, Instrument]
) -> None:
    before = derived_rows(alice_portfolio)
    sent, received_ = services.transfer_record(
        source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("4"), instrument=instruments["AAPL"]
    )
    services.transaction_delete(transaction=received_)
    assert not Transaction.objects.filter(pk__in=[sent.pk, received_.pk]).exists()
    assert derived_rows(alice_portfolio) == before
    assert derived_rows(alice_savings) == ({}, {}, (D(0), D(0), D(0), D(0), D(0)))


def test_deleting_a_transfer_whose_money_was_spent_is_refused(alice_portfolio: Portfolio, alice_savings: Portfolio) -> None:
    sent, _ = services.transfer_record(source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("1000"))
    record(alice_savings, "withdrawal", "800", executed_at=day(2))
    with pytest.raises(
        ValidationError,
        match=r"^\['Deleting this entry would break a later one\. Cannot withdraw 800 USD on 2026-01-07 14:30 UTC: only 0 USD",
    ):
        services.transaction_delete(transaction=sent)
    assert Transaction.objects.filter(kind__in=[Kind.TRANSFER_IN, Kind.TRANSFER_OUT]).count() == 2


# ---------------------------------------------------------------- deletes


def test_deleting_a_buy_that_a_later_sell_needs_is_rejected(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    record(alice_portfolio, "sell", "4", instruments["AAPL"], price="180", executed_at=day(1))
    buy = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"], kind=Kind.BUY)
    with pytest.raises(ValidationError) as exc:
        services.transaction_delete(transaction=buy)
    assert exc.value.messages == [
        "Deleting this entry would break a later one. Cannot sell 4 AAPL on 2026-01-06 14:30 UTC: only 0 held at that time."
    ]
    assert Transaction.objects.filter(pk=buy.pk).exists()
    assert holdings(alice_portfolio)["AAPL"] == (D("6"), D("900"), D("900"))


def test_deleting_an_entry_rebuilds_holdings_cash_and_totals(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    before = derived_rows(alice_portfolio)
    sell = record(alice_portfolio, "sell", "4", instruments["AAPL"], price="180", fee="2", executed_at=day(1))
    assert derived_rows(alice_portfolio) != before
    services.transaction_delete(transaction=sell)
    assert derived_rows(alice_portfolio) == before


def test_deleting_the_only_buy_removes_the_holding(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    services.transaction_delete(transaction=Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["BTC-USD"]))
    assert set(holdings(alice_portfolio)) == {"AAPL"}
    assert cash(alice_portfolio) == {"USD": D("23499")}  # 3499 + 20000 no longer spent


# ---------------------------------------------------------------- events


def test_owner_is_told_to_reload_only_after_commit(
    alice: Any, bob: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    alice_channel, bob_channel = listen_group(groups.user_group(alice.pk)), listen_group(groups.user_group(bob.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        record(alice_portfolio, "buy", "1", instruments["MSFT"], price="400", executed_at=day(2))
        assert received(alice_channel) == []  # not before commit
    for callback in callbacks:
        callback()
    assert received(alice_channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]
    assert received(bob_channel) == []


def test_a_transfer_tells_the_owner_about_both_portfolios_and_nobody_else(
    alice: Any,
    bob: Any,
    alice_portfolio: Portfolio,
    alice_savings: Portfolio,
    bob_portfolio: Portfolio,
    django_capture_on_commit_callbacks: Any,
) -> None:
    alice_channel, bob_channel = listen_group(groups.user_group(alice.pk)), listen_group(groups.user_group(bob.pk))
    with django_capture_on_commit_callbacks(execute=True):
        services.transfer_record(source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("10"))
    assert sorted(e["portfolio_id"] for e in received(alice_channel)) == sorted([alice_portfolio.pk, alice_savings.pk])
    assert received(bob_channel) == []


def test_a_refused_entry_tells_nobody(
    alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(ValidationError):
        record(alice_portfolio, "sell", "11", instruments["AAPL"], price="1", executed_at=day(1))
    assert callbacks == []


def test_a_rolled_back_transaction_tells_nobody(
    alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            record(alice_portfolio, "buy", "1", instruments["MSFT"], price="400", executed_at=day(2))
            raise RuntimeError("abort")
    assert callbacks == []
    assert "MSFT" not in holdings(alice_portfolio)


def test_deleting_a_portfolio_tells_its_owner_after_commit(
    alice: Any, alice_portfolio: Portfolio, django_capture_on_commit_callbacks: Any
) -> None:
    channel = listen_group(groups.user_group(alice.pk))
    pk = alice_portfolio.pk
    with django_capture_on_commit_callbacks(execute=True):
        services.portfolio_delete(portfolio=alice_portfolio)
    assert received(channel) == [{"type": "portfolio.reload", "portfolio_id": pk}]
    assert not Holding.objects.filter(portfolio_id=pk).exists()
    assert not Transaction.objects.filter(portfolio_id=pk).exists()


# ---------------------------------------------------------------- concurrency


@pytest.mark.django_db(transaction=True)
def test_concurrent_sells_are_serialised_so_only_one_can_take_the_shares(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    # Each sell alone is valid (6 of 10); together they are not. The lock on the portfolio row (SQLite: the
    # write lock taken at BEGIN IMMEDIATE) makes the second check see the first sell, so exactly one succeeds.
    start, outcomes = threading.Barrier(2), []

    def sell() -> None:
        try:
            start.wait()
            record(alice_portfolio, "sell", "6", instruments["AAPL"], price="180", executed_at=day(1))
            outcomes.append("ok")
        except ValidationError as exc:
            outcomes.append(exc.messages[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=sell) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["Cannot sell 6 AAPL on 2026-01-06 14:30 UTC: only 4 held at that time.", "ok"]
    assert holdings(alice_portfolio)["AAPL"][0] == D("4")


# ---------------------------------------------------------------- any ledger

# kind, quantity, price, fee, day: recorded in the generated (random) order, so many are back-dated.
ledger_entries = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.integers(min_value=1, max_value=20),
        st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2),
        st.decimals(min_value=D("0"), max_value=D("5"), places=2),
        st.integers(min_value=0, max_value=30),
    ),
    max_size=10,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=ledger_entries)
def test_rows_derived_from_any_ledger_equal_the_step_by_step_result_and_a_fresh_rebuild(
    alice: Any, instruments: dict[str, Instrument], entries: list[tuple[str, int, Decimal, Decimal, int]]
) -> None:
    portfolio = services.portfolio_create(owner_id=alice.pk, name=f"p{Portfolio.objects.count()}")
    aapl = instruments["AAPL"]
    accepted: list[tuple[int, int, str, int, Decimal, Decimal]] = []  # (day, insertion order, ...)
    for order, (kind, quantity, price, fee, n) in enumerate(entries):
        candidate = sorted([*accepted, (n, order, kind, quantity, price, fee)])
        held, valid = 0, True
        for _, _, k, q, _, _ in candidate:
            held += q if k == "buy" else -q
            valid = valid and held >= 0
        if valid:
            record(portfolio, kind, str(quantity), aapl, price=str(price), fee=str(fee), executed_at=day(n))
            accepted = candidate
        else:
            with pytest.raises(ValidationError, match=r"only .* held at that time"):
                record(portfolio, kind, str(quantity), aapl, price=str(price), fee=str(fee), executed_at=day(n))

    # Step by step, in execution order: the textbook average-cost method, fees apart.
    quantity, cost, realised, money, fees = D(0), D(0), D(0), D(0), D(0)
    for _, _, kind, q, price, fee in accepted:
        fees, money = fees + fee, money - fee
        if kind == "buy":
            quantity, cost, money = quantity + q, cost + q * price, money - q * price
        else:
            taken = cost * q / quantity
            realised, cost, quantity, money = realised + q * price - taken, cost - taken, quantity - q, money + q * price
    found, balances, (found_realised, _, _, found_fees, _) = holdings(portfolio), cash(portfolio), flows(portfolio)
    if quantity == 0:
        assert found == {}
    else:
        found_quantity, found_cost, _ = found["AAPL"]
        assert found_quantity == quantity
        # SQLite keeps 15 significant digits; PostgreSQL is exact to the field's 10 places.
        assert abs(found_cost - cost) <= D("1e-9") * max(1, cost)
    assert abs(found_realised - realised) <= D("1e-9") * max(1, abs(realised))
    assert (balances, found_fees) == ({"USD": money} if money else {}, fees)
    assert Transaction.objects.filter(portfolio=portfolio).count() == len(accepted)

    rows = derived_rows(portfolio)
    services.portfolio_rebuild(portfolio=portfolio)
    assert derived_rows(portfolio) == rows


# ---------------------------------------------------------------- editing: delete + re-record in one transaction


def test_editing_a_buy_replaces_it_and_rebuilds_the_holding(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    buy = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"])

    saved = services.transaction_replace(transaction=buy, draft=draft("buy", "12", instruments["AAPL"], price="150", fee="1"))

    assert not Transaction.objects.filter(pk=buy.pk).exists()
    assert (saved.quantity, saved.price, saved.executed_at) == (D(12), D(150), T0)
    assert holdings(alice_portfolio)["AAPL"][:2] == (D(12), D(1800))
    assert cash(alice_portfolio) == {"USD": D("3199")}  # 25000 − 1801 − 20000


def test_an_edit_that_would_oversell_leaves_the_ledger_untouched(alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    record(alice_portfolio, "sell", "8", instruments["AAPL"], price="160", executed_at=day(1))
    buy = Transaction.objects.get(portfolio=alice_portfolio, kind="buy", instrument=instruments["AAPL"])
    before = list(Transaction.objects.filter(portfolio=alice_portfolio).values_list("pk", "quantity").order_by("pk"))
    derived = holdings(alice_portfolio), cash(alice_portfolio), flows(alice_portfolio)

    with pytest.raises(ValidationError) as refused:
        services.transaction_replace(transaction=buy, draft=draft("buy", "5", instruments["AAPL"], price="150"))

    assert refused.value.message_dict == {"quantity": ["Cannot sell 8 AAPL on 2026-01-06 14:30 UTC: only 5 held at that time."]}
    assert list(Transaction.objects.filter(portfolio=alice_portfolio).values_list("pk", "quantity").order_by("pk")) == before
    assert (holdings(alice_portfolio), cash(alice_portfolio), flows(alice_portfolio)) == derived


def test_an_edit_that_a_later_entry_needs_is_judged_with_the_correction_in_place(
    alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    # Deleting the buy alone would break the sell; replacing it with a bigger buy does not.
    record(alice_portfolio, "sell", "8", instruments["AAPL"], price="160", executed_at=day(1))
    buy = Transaction.objects.get(portfolio=alice_portfolio, kind="buy", instrument=instruments["AAPL"])

    services.transaction_replace(transaction=buy, draft=draft("buy", "20", instruments["AAPL"], price="150"))

    assert holdings(alice_portfolio)["AAPL"][0] == D(12)


def test_editing_one_side_of_a_transfer_replaces_both(alice_portfolio: Portfolio, alice_savings: Portfolio) -> None:
    sent, received_ = services.transfer_record(source=alice_portfolio, destination=alice_savings, executed_at=day(1), quantity=D("1000"))

    saved = services.transaction_replace(
        transaction=received_, draft=draft("transfer_in", "600", executed_at=day(1)), counterparty=alice_portfolio
    )

    assert not Transaction.objects.filter(pk__in=[sent.pk, received_.pk]).exists()
    assert saved.portfolio_id == alice_savings.pk and saved.counterpart is not None
    assert saved.counterpart.portfolio_id == alice_portfolio.pk
    assert cash(alice_savings) == {"USD": D(600)}
    assert cash(alice_portfolio) == {"USD": D(2899)}


def test_an_edit_tells_the_owner_once_after_commit(
    alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    buy = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"])
    channel = listen_group(groups.user_group(alice.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.transaction_replace(transaction=buy, draft=draft("buy", "11", instruments["AAPL"], price="150"))
        assert received(channel) == []
    for callback in callbacks:
        callback()
    assert received(channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]


# ---------------------------------------------------------------- portfolio settings and archive


def test_a_portfolio_takes_an_iana_time_zone_and_refuses_an_unknown_one(alice: Any) -> None:
    paris = services.portfolio_create(owner_id=alice.pk, name="Paris", base_currency="EUR", time_zone="Europe/Paris")
    assert Portfolio.objects.get(pk=paris.pk).time_zone == "Europe/Paris"
    assert services.portfolio_create(owner_id=alice.pk, name="Default").time_zone == "UTC"
    with pytest.raises(ValidationError) as refused:
        services.portfolio_create(owner_id=alice.pk, name="Mars", time_zone="Mars/Olympus")
    assert refused.value.message_dict["time_zone"] == ["Unknown time zone 'Mars/Olympus': use an IANA name such as Europe/London."]


def test_the_base_currency_changes_only_while_the_ledger_is_empty(alice: Any, alice_portfolio: Portfolio) -> None:
    empty = services.portfolio_create(owner_id=alice.pk, name="Empty")
    services.portfolio_update(portfolio=empty, name="Empty", time_zone="UTC", allow_negative_cash=False, base_currency="EUR")
    assert Portfolio.objects.get(pk=empty.pk).base_currency == "EUR"

    with pytest.raises(ValidationError) as refused:
        services.portfolio_update(portfolio=alice_portfolio, name="X", time_zone="UTC", allow_negative_cash=False, base_currency="EUR")
    assert "only while the ledger is empty" in refused.value.message_dict["base_currency"][0]
    assert Portfolio.objects.get(pk=alice_portfolio.pk).name == "Alice growth"


def test_turning_negative_cash_off_is_refused_when_the_ledger_needs_it(alice: Any) -> None:
    loose = services.portfolio_create(owner_id=alice.pk, name="Loose", allow_negative_cash=True)
    record(loose, "withdrawal", "10")

    with pytest.raises(ValidationError) as refused:
        services.portfolio_update(portfolio=loose, name="Loose", time_zone="UTC", allow_negative_cash=False)

    assert refused.value.message_dict["allow_negative_cash"][0].startswith("The ledger needs negative cash.")
    assert Portfolio.objects.get(pk=loose.pk).allow_negative_cash is True


def test_an_archived_portfolio_leaves_the_live_books_and_comes_back(alice: Any, alice_portfolio: Portfolio) -> None:
    services.portfolio_archive(portfolio=alice_portfolio)
    assert selectors.live_books_for_user(user=alice)[0] == []
    assert Portfolio.objects.get(pk=alice_portfolio.pk).archived_at is not None

    services.portfolio_archive(portfolio=alice_portfolio, archived=False)
    assert [b.id for b in selectors.live_books_for_user(user=alice)[0]] == [alice_portfolio.pk]


# ---------------------------------------------------------------- watchlist and alerts


def test_watchlist_add_is_idempotent_and_reloads_the_owners_dashboards_only_once(
    alice: Any, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    heard = listen_group(groups.user_group(alice.pk))
    with django_capture_on_commit_callbacks(execute=True):
        services.watchlist_add(user=alice, instrument=instruments["AAPL"])
        services.watchlist_add(user=alice, instrument=instruments["AAPL"])
        services.watchlist_add(user=alice, instrument=instruments["SAP"])
    assert [i.symbol for i in selectors.watchlist_for_user(user=alice)] == ["AAPL", "SAP"]
    assert [e["type"] for e in received(heard)] == [groups.PORTFOLIO_RELOAD_EVENT] * 2
    assert services.watchlist_remove(user=alice, instrument_id=instruments["AAPL"].pk) is True
    assert services.watchlist_remove(user=alice, instrument_id=instruments["AAPL"].pk) is False


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"kind": "price_above", "threshold": D("0")}, {"threshold": ["A price threshold must be above 0."]}),
        ({"kind": "move_pct", "threshold": D("5")}, {"window_minutes": ["A move is measured over at least one minute."]}),
        (
            {"kind": "move_pct", "threshold": D("0"), "window_minutes": 5},
            {"threshold": ["A percentage other than 0 is needed (5 = up by 5 %, -5 = down by 5 %)."]},
        ),
        ({"kind": "price_below", "threshold": D("10"), "hysteresis": D("-1")}, {"hysteresis": ["Hysteresis cannot be negative."]}),
        (
            {"kind": "sideways", "threshold": D("10")},
            {
                "kind": [
                    "Unknown kind 'sideways': one of price_above, price_below, move_pct, portfolio_value_above, portfolio_value_below, day_change_pct."
                ]
            },
        ),
    ],
)
def test_an_alert_that_cannot_be_evaluated_is_refused_field_by_field(
    alice: Any, instruments: dict[str, Instrument], fields: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    with pytest.raises(ValidationError) as caught:
        services.alert_create(user=alice, instrument=instruments["AAPL"], **fields)
    assert caught.value.message_dict == errors
    assert not Alert.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_fired_alert_is_emailed_through_a_real_smtp_server(alice: Any, instruments: dict[str, Instrument], settings: Any) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    class Inbox(MessageHandler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[Any] = []

        def handle_message(self, message: Any) -> None:
            self.messages.append(message)

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.DEFAULT_FROM_EMAIL = "127.0.0.1", port, "Livefolio <alerts@example.test>"
        alice.email = "alice@example.test"
        alice.save()
        alert = services.alert_create(user=alice, instrument=instruments["BTC-USD"], kind="price_above", threshold=D("61000"), email=True)
        note = services.alert_fire(alert_id=alert.pk, value=D("61005.5"), fired_at=T0)
        assert note is not None
        assert services.notification_email_send(notification_id=note.pk) is True
        assert services.notification_email_send(notification_id=note.pk) is False  # once
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert message["To"] == "alice@example.test"
    assert message["From"] == "Livefolio <alerts@example.test>"
    assert message["Subject"] == "Livefolio alert: BTC-USD at or above 61000: now 61005.5"
    assert "BTC-USD at or above 61000: now 61005.5" in message.get_payload()
    assert "Fired at 2026-01-05 14:30:00 UTC." in message.get_payload()
