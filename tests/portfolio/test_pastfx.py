"""`portfolio.pastfx`: past figures grouped by day and converted at the rates of their days."""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata.events import PriceUpdate
from marketdata.models import DailyClose, Instrument
from portfolio import selectors, services
from portfolio.daily import CloseHistory
from portfolio.ledger import Entry, book_from_ledger
from portfolio.live import LiveBook
from portfolio.models import Portfolio, Transaction
from portfolio.pastfx import Fallback, FlowDay, FxHistory, PastFlows, flow_days, past_flows
from portfolio.selectors import Market, PortfolioBook
from portfolio.valuation import Flows, Price
from tests.conftest import T0, record
from tests.portfolio.test_ledger import valid_ledgers
from tests.portfolio.test_live import PAIRS, START, book_from, ledger_entries, ledgers, ticks

D = Decimal
DAY1, DAY2 = T0.date(), T0.date() + timedelta(days=1)
FIGURES = tuple(f.name for f in fields(Flows))
PAST = ("realised_pnl", "dividends", "interest", "fees", "net_deposits")  # the same figures, as the frames name them


def ledger() -> list[Entry]:
    return [
        Entry("deposit", T0, "USD", quantity=D(1000)),
        Entry("buy", T0, "USD", "AAA", D(10), D(50), D(1)),  # only its 1 USD fee is past
        Entry("sell", T0 + timedelta(days=1), "USD", "AAA", D(4), D(60)),  # realised 4 × (60 − 50) = 40
        Entry("dividend", T0 + timedelta(days=1), "EUR", "AAA", D(20), fx_rate=D("1.10")),  # 22 USD, 20 EUR
    ]


# ---------------------------------------------------------------- grouping, checked by hand


def test_flow_days_group_what_each_entry_added_by_day_and_currency() -> None:
    assert flow_days(ledger()) == (
        FlowDay(DAY1, "USD", Flows(fees=D(1), net_deposits=D(1000)), Flows(fees=D(1), net_deposits=D(1000))),
        FlowDay(DAY2, "EUR", Flows(dividends=D("22.0")), Flows(dividends=D(20))),
        FlowDay(DAY2, "USD", Flows(realised=D(40)), Flows(realised=D(40))),
    )


def test_a_buy_or_split_without_a_fee_adds_nothing_past() -> None:
    entries = [Entry("buy", T0, "USD", "AAA", D(10), D(50)), Entry("split", T0, "USD", "AAA", D(2))]
    assert flow_days(entries) == ()


def test_an_entrys_day_is_its_utc_date() -> None:
    # 00:30 in Paris on 6 January is 23:30 UTC on 5 January: FX closes are dated by UTC day.
    paris = datetime(2026, 1, 6, 0, 30, tzinfo=ZoneInfo("Europe/Paris"))
    [group] = flow_days([Entry("deposit", paris, "USD", quantity=D(5))])
    assert group.day == date(2026, 1, 5)


# ---------------------------------------------------------------- conversion, checked by hand


def test_each_day_converts_at_its_own_rate() -> None:
    rates = {DAY1: D("0.8"), DAY2: D("0.5")}
    past = past_flows(flow_days(ledger()), base="USD", target="EUR", rate_on=rates.get)
    # 1000 × 0.8, 1 × 0.8; 40 × 0.5, 22 × 0.5
    assert past == PastFlows(Flows(realised=D(20), dividends=D(11), fees=D("0.8"), net_deposits=D(800)))
    assert past.at(D(99)) == past.fixed  # nothing waits for today's rate


def test_without_a_rate_of_its_day_an_entry_in_the_target_currency_uses_its_own_rate() -> None:
    rates = {DAY1: D("0.8")}  # no close for day 2
    past = past_flows(flow_days(ledger()), base="USD", target="EUR", rate_on=rates.get)
    # The 20 EUR dividend is 20 EUR whatever the day's rate; the 40 USD realised on day 2 waits for today's rate.
    assert past.fixed == Flows(dividends=D(20), fees=D("0.8"), net_deposits=D(800))
    assert past.live == Flows(realised=D(40))
    assert past.fallback == Fallback("USD", "EUR", DAY2, DAY2, 1)
    assert past.at(D("0.9")).realised == D(36)


def test_the_fallback_to_todays_rate_names_the_pair_and_the_days() -> None:
    past = past_flows(flow_days(ledger()), base="USD", target="GBP", rate_on=lambda day: None)
    assert past.fixed == Flows()  # no entry is in GBP
    assert past.live == Flows(realised=D(40), dividends=D("22.0"), fees=D(1), net_deposits=D(1000))
    assert past.fallback is not None
    assert past.fallback.message == "converted at today's rate: no USD/GBP history on 2 days from 2026-01-05 to 2026-01-06"
    one = past_flows(flow_days(ledger()[:1]), base="USD", target="GBP", rate_on=lambda day: None).fallback
    assert one is not None and one.message == "converted at today's rate: no USD/GBP history on 2026-01-05"


def test_fx_history_routes_through_an_inverse_or_a_cross() -> None:
    closes = CloseHistory([("EUR/USD", DAY1, D("1.25")), ("GBP/USD", DAY1, D("1.60"))])
    history = FxHistory(closes, PAIRS)
    assert history.rate("USD", "EUR", DAY1) == D("0.8")
    assert history.rate("GBP", "EUR", DAY1) == D("1.28")  # 1.60 / 1.25
    assert history.rate("GBP", "EUR", DAY1 + timedelta(days=8)) is None  # older than a week
    assert history.rate("JPY", "JPY", DAY1) == D(1)


# ---------------------------------------------------------------- properties


def _spread(entries: list[Entry], data: st.DataObject) -> list[Entry]:
    """The same ledger spread over days, with entries in EUR and GBP at their own rates."""
    out = []
    for i, entry in enumerate(entries):
        currency = data.draw(st.sampled_from(["USD", "EUR", "GBP"]))
        fx = D(1) if currency == "USD" else data.draw(st.decimals(min_value=D("0.5"), max_value=D(2), places=4))
        out.append(replace(entry, executed_at=T0 + timedelta(days=i // 3, hours=i % 3), currency=currency, fx_rate=fx))
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_groups_add_up_to_the_ledgers_totals_to_the_last_digit(data: st.DataObject) -> None:
    entries = _spread(data.draw(valid_ledgers(allow_negative_cash=True))[0], data)
    book = book_from_ledger(entries, allow_negative_cash=True)
    groups = flow_days(entries)
    assert [(g.day, g.currency) for g in groups] == sorted({(g.day, g.currency) for g in groups})
    for name, total in zip(FIGURES, (book.realised, book.dividends, book.interest, book.fees, book.net_deposits), strict=True):
        assert sum((getattr(g.base, name) for g in groups), D(0)) == total


def past_only(portfolio_id: int, base: str, entries: list[Entry]) -> PortfolioBook:
    """A book with the ledger's totals and no rows: the past figures are what is compared."""
    book = book_from_ledger(entries, allow_negative_cash=True)
    return PortfolioBook(
        portfolio_id, f"P{portfolio_id}", base, (), (), Flows(book.realised, book.dividends, book.interest, book.fees, book.net_deposits)
    )


rates = st.decimals(min_value=D("0.2"), max_value=D(5), places=4)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), eur_usd=rates, gbp_usd=rates, currency=st.sampled_from(["USD", "EUR", "GBP"]))
def test_with_a_constant_fx_history_equal_to_the_live_rate_the_combined_past_figures_are_what_they_were(
    data: st.DataObject, eur_usd: Decimal, gbp_usd: Decimal, currency: str
) -> None:
    ledgers = [_spread(data.draw(valid_ledgers(allow_negative_cash=True))[0], data) for _ in range(2)]
    books = [past_only(1, "USD", ledgers[0]), past_only(2, "EUR", ledgers[1])]
    prices = {"EUR/USD": Price(eur_usd, T0), "GBP/USD": Price(gbp_usd, T0)}
    asset_classes = {"equity": "Equity", "crypto": "Crypto"}
    # Before: the past figures at today's rate (no days loaded). Now: each day at its close, every close the live rate.
    before = LiveBook(books, Market(prices=dict(prices), pairs=PAIRS, asset_classes=asset_classes), currency=currency)
    days = [T0.date() + timedelta(days=i) for i in range(-7, 12)]
    closes = CloseHistory([(symbol, day, price.value) for symbol, price in prices.items() for day in days])
    now = LiveBook(
        [replace(book, past=flow_days(entries)) for book, entries in zip(books, ledgers, strict=True)],
        Market(prices=dict(prices), pairs=PAIRS, asset_classes=asset_classes, fx_history=FxHistory(closes, PAIRS)),
        currency=currency,
    )
    assert before.combined is not None and now.combined is not None
    assert now.combined.flows() == before.combined.flows()
    assert now.snapshot() == {**before.snapshot(), "combined": {**before.snapshot()["combined"], "past_fx": []}}  # type: ignore[dict-item]


def test_a_live_fx_tick_moves_the_combined_market_value_and_leaves_its_past_figures() -> None:
    usd = [
        Entry("deposit", T0 - timedelta(days=1), "USD", quantity=D(50000)),
        Entry("buy", T0, "USD", "AAPL", D(10), D(150), D(1)),
    ]
    eur = [Entry("deposit", T0, "EUR", quantity=D(1000))]
    books: list[PortfolioBook] = [
        replace(book_from(1, "USD", usd), past=flow_days(usd)),
        replace(book_from(2, "EUR", eur), past=flow_days(eur)),
    ]
    closes = CloseHistory([("EUR/USD", T0.date() - timedelta(days=1), D("1.25")), ("EUR/USD", T0.date(), D(2))])
    prices = {"AAPL": Price(D(200), T0, 1, "e"), "EUR/USD": Price(D("1.10"), T0, 1, "e")}
    live = LiveBook(books, Market(prices=prices, pairs=PAIRS, asset_classes={}, fx_history=FxHistory(closes, PAIRS)), currency="EUR")
    assert live.combined is not None
    past = live.combined.flows()
    assert (past.net_deposits, past.fees) == (D(41000), D("0.5"))  # 50000 × 0.8 + 1000; 1 × 0.5
    value = live.combined.totals().market_value
    live.apply(PriceUpdate("EUR/USD", 2, "e", D("1.25"), None, None, T0 + timedelta(seconds=1), "test", 1))
    frame = live.take_changes()
    assert frame is not None
    totals = frame["combined"]["totals"]  # type: ignore[index]
    assert (totals["market_value"], value.quantize(D("0.01"))) == ("1600.00", D("1818.18"))  # 10 × 200 / 1.25, was / 1.10
    assert (totals["net_deposits"], totals["fees"]) == ("41000.00", "0.50")


@settings(max_examples=100, deadline=None)
@given(ticks=ticks, currency=st.sampled_from(["USD", "EUR", "GBP"]))
def test_with_history_for_every_day_no_tick_moves_the_combined_past_figures(
    ticks: list[tuple[str, Decimal, Decimal | None, bool]], currency: str
) -> None:
    # test_live's two books (USD and EUR, entries in USD, EUR and GBP), every day with its EUR/USD and GBP/USD close.
    books = [replace(book, past=flow_days(entries)) for book, entries in zip(ledgers(), ledger_entries(), strict=True)]
    closes = CloseHistory([("EUR/USD", T0.date(), D("1.08")), ("GBP/USD", T0.date(), D("1.27"))])
    # Every live rate known from the start: a portfolio without one is left out of the totals whole, until it comes.
    prices = {**START, "GBP/USD": Price(D("1.30"), T0, 1, "e")}
    market = Market(prices=prices, pairs=PAIRS, asset_classes={}, fx_history=FxHistory(closes, PAIRS))
    live = LiveBook(books, market, currency=currency)
    assert live.combined is not None
    past = live.snapshot()["combined"]["totals"]  # type: ignore[index]
    for seq, (symbol, value, reference, _) in enumerate(ticks, start=2):
        live.apply(PriceUpdate(symbol, seq, "e", value, None, None, T0 + timedelta(seconds=seq), "test", 1, reference=reference))
        frame = live.take_changes()
        if frame is not None and "combined" in frame:
            totals = frame["combined"]["totals"]  # type: ignore[index]
            assert {name: totals[name] for name in PAST} == {name: past[name] for name in PAST}


def test_past_figures_of_an_unrated_day_follow_the_live_rate_and_are_flagged() -> None:
    usd = [Entry("deposit", datetime(2025, 2, 1, tzinfo=UTC), "USD", quantity=D(1000))]
    eur = [Entry("deposit", T0, "EUR", quantity=D(1000))]
    books = [replace(book_from(1, "USD", usd), past=flow_days(usd)), replace(book_from(2, "EUR", eur), past=flow_days(eur))]
    prices = {"EUR/USD": Price(D("1.25"), T0, 1, "e")}
    history = FxHistory(CloseHistory([("EUR/USD", date(2025, 3, 1), D(2))]), PAIRS)  # history starts after the deposit
    live = LiveBook(books, Market(prices=prices, pairs=PAIRS, asset_classes={}, fx_history=history), currency="EUR")
    combined = live.snapshot()["combined"]
    assert combined["totals"]["net_deposits"] == "1800.00"  # type: ignore[index]  # 1000 USD / 1.25 + 1000 EUR
    assert combined["past_fx"] == [  # type: ignore[index]
        {
            "portfolio": 1,
            "name": "P1",
            "pair": "USD/EUR",
            "from": "2025-02-01",
            "to": "2025-02-01",
            "days": 1,
            "message": "converted at today's rate: no USD/EUR history on 2025-02-01",
        }
    ]


# ---------------------------------------------------------------- loading (portfolio.selectors)


@pytest.mark.django_db
def test_the_loader_reads_past_figures_and_fx_history_only_for_a_combined_view(alice: Any, alice_portfolio: Portfolio) -> None:
    [book], market = selectors.live_books_for_user(user=alice)
    assert (book.past, market.fx_history) == (None, None)  # one portfolio: nothing to convert
    euro = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")
    record(euro, "deposit", "1000", currency="EUR")
    DailyClose.objects.create(instrument=Instrument.objects.get(symbol="EUR/USD"), date=DAY1, close=D("1.25"), source="test")
    books, market = selectors.live_books_for_user(user=alice)
    past = {book.id: book.past for book in books}
    # The fixture's 25000 USD deposit the day before T0, its 1 USD fee on T0; the euro deposit on T0.
    assert past[alice_portfolio.pk] == (
        FlowDay(DAY1 - timedelta(days=1), "USD", Flows(net_deposits=D(25000)), Flows(net_deposits=D(25000))),
        FlowDay(DAY1, "USD", Flows(fees=D(1)), Flows(fees=D(1))),
    )
    assert past[euro.pk] == (FlowDay(DAY1, "EUR", Flows(net_deposits=D(1000)), Flows(net_deposits=D(1000))),)
    assert market.fx_history is not None and market.fx_history.rate("USD", "EUR", DAY1) == D("0.8")
    # One portfolio asked for (the market API's `portfolio:ID`): no combined view, no other ledger read.
    [one], market = selectors.live_books_for_user(user=alice, portfolio_id=euro.pk)
    assert (one.id, one.past, market.fx_history) == (euro.pk, None, None)


@pytest.mark.django_db
def test_a_ledger_that_does_not_fold_is_logged_and_its_past_figures_use_todays_rate(
    alice: Any, alice_portfolio: Portfolio, caplog: pytest.LogCaptureFixture
) -> None:
    euro = services.portfolio_create(owner_id=alice.pk, name="Alice euro", base_currency="EUR")
    # Written past the services' checks (an old import, a hand edit of the database): a sale of shares never held.
    Transaction.objects.create(
        portfolio=euro,
        kind="sell",
        instrument=Instrument.objects.get(symbol="SAP"),
        quantity=D(1),
        price=D(1),
        currency="EUR",
        executed_at=T0,
    )
    with caplog.at_level(logging.ERROR, logger="portfolio.selectors"):
        books, _ = selectors.live_books_for_user(user=alice)
    assert {book.id: book.past is None for book in books} == {alice_portfolio.pk: False, euro.pk: True}
    assert f"portfolio {euro.pk}: its ledger does not fold" in caplog.text
