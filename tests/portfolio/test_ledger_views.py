"""The self-service ledger (`portfolio/views.py`): a signed-in user manages their own portfolios and transactions,
through the services the admin uses, with the admin's messages, and never sees anyone else's."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from marketdata import groups
from marketdata.models import Instrument
from portfolio import services
from portfolio.models import Holding, Kind, Portfolio, Transaction
from portfolio.views import PAGE_SIZE
from tests.conftest import T0, listen_group, received, record

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client: Client, alice: Any) -> Client:
    client.force_login(alice)
    return client


def entry_post(
    kind: str, quantity: str, *, instrument: Instrument | None = None, when: datetime | None = None, **fields: str
) -> dict[str, str]:
    """The record form as a browser posts it (executed_at as a datetime-local input sends it, in the portfolio's zone)."""
    at = (when or T0 + timedelta(days=1)).astimezone(UTC)
    data = {
        "kind": kind,
        "executed_at": f"{at:%Y-%m-%dT%H:%M:%S}",
        "instrument": str(instrument.pk) if instrument else "",
        "quantity": quantity,
        "price": "",
        "fee": "0",
        "currency": "",
        "fx_rate": "",
        "counterparty": "",
        "note": "",
    }
    data.update(fields)
    return data


def errors(response: Any) -> dict[str, list[str]]:
    return dict(response.context["form"].errors)


def ledger(portfolio: Portfolio) -> list[tuple[str, str, Decimal, Decimal]]:
    rows = Transaction.objects.filter(portfolio=portfolio).order_by("executed_at", "id")
    return [(t.kind, t.instrument.symbol if t.instrument else "", t.quantity, t.price) for t in rows.select_related("instrument")]


def url(name: str, *ids: int) -> str:
    from django.urls import reverse

    return reverse(f"portfolio:{name}", args=ids)


# ------------------------------------------------------------------ portfolios


def test_every_ledger_page_sends_anonymous_visitors_to_login(alice_portfolio: Portfolio) -> None:
    response = Client().get(url("transactions", alice_portfolio.pk))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_a_new_user_creates_a_portfolio_in_their_time_zone_and_is_taken_to_record_its_first_entry(client: Client, charlie: Any) -> None:
    client.force_login(charlie)
    assert 'href="/portfolios/new/"' in client.get("/").content.decode()  # the dashboard's empty state links here

    response = client.post(
        url("portfolio_create"), {"name": "Retirement", "base_currency": "eur", "time_zone": "Europe/Paris", "allow_negative_cash": ""}
    )

    portfolio = Portfolio.objects.get(owner=charlie)
    assert (portfolio.name, portfolio.base_currency, portfolio.time_zone, portfolio.allow_negative_cash) == (
        "Retirement",
        "EUR",
        "Europe/Paris",
        False,
    )
    assert response["Location"] == url("transaction_create", portfolio.pk)
    page = client.get(response["Location"]).content.decode()
    assert 'value="deposit" selected' in page  # an empty portfolio starts with money
    assert "times in Europe/Paris" in page


def test_creating_a_second_portfolio_with_the_same_name_says_so(alice_client: Client, alice_portfolio: Portfolio) -> None:
    response = alice_client.post(url("portfolio_create"), {"name": "Alice growth", "base_currency": "USD", "time_zone": "UTC"})
    assert response.status_code == 200
    assert errors(response) == {"name": ["You already have a portfolio with this name."]}


def test_creating_with_an_unknown_currency_or_time_zone_is_refused(alice_client: Client) -> None:
    response = alice_client.post(url("portfolio_create"), {"name": "X", "base_currency": "ZZZ", "time_zone": "Mars/Base"})
    assert errors(response)["time_zone"] == ["Select a valid choice. Mars/Base is not one of the available choices."]
    response = alice_client.post(url("portfolio_create"), {"name": "X", "base_currency": "ZZZ", "time_zone": "UTC"})
    assert errors(response) == {"base_currency": ["Unknown currency 'ZZZ': use an ISO 4217 code such as USD."]}
    assert not Portfolio.objects.filter(name="X").exists()


def test_renaming_keeps_the_ledger_and_the_base_currency_is_locked_once_there_are_entries(
    alice_client: Client, alice_portfolio: Portfolio
) -> None:
    page = alice_client.get(url("portfolio_edit", alice_portfolio.pk))
    assert page.context["form"].fields["base_currency"].disabled

    response = alice_client.post(
        url("portfolio_edit", alice_portfolio.pk), {"name": "Alice long term", "base_currency": "EUR", "time_zone": "Asia/Tokyo"}
    )

    assert response.status_code == 302
    alice_portfolio.refresh_from_db()
    assert (alice_portfolio.name, alice_portfolio.base_currency, alice_portfolio.time_zone) == ("Alice long term", "USD", "Asia/Tokyo")
    assert Transaction.objects.filter(portfolio=alice_portfolio).count() == 3


def test_archiving_takes_a_portfolio_off_the_dashboard_and_unarchiving_brings_it_back(
    alice_client: Client, alice_portfolio: Portfolio
) -> None:
    alice_client.post(url("portfolio_archive", alice_portfolio.pk))

    dashboard = alice_client.get("/")
    assert dashboard.context["has_portfolios"] is False
    assert "Your 1 portfolio is archived." in dashboard.content.decode()
    listing = alice_client.get(url("portfolios"))
    assert [p.pk for p in listing.context["archived"]] == [alice_portfolio.pk] and listing.context["active"] == []

    alice_client.post(url("portfolio_unarchive", alice_portfolio.pk))
    assert alice_client.get("/").context["has_portfolios"] is True


def test_deleting_a_portfolio_asks_first_and_says_what_is_lost(alice_client: Client, alice_portfolio: Portfolio) -> None:
    confirm = alice_client.get(url("portfolio_delete", alice_portfolio.pk))
    lost = re.sub(r"\s+", " ", re.search(r'data-testid="lost">(.*?)</ul>', confirm.content.decode(), re.S)[1])  # type: ignore[index]
    assert "3 transactions (its whole ledger)" in lost
    assert "2 holdings and 1 cash balance" in lost
    assert Portfolio.objects.filter(pk=alice_portfolio.pk).exists()  # a GET deletes nothing

    response = alice_client.post(url("portfolio_delete", alice_portfolio.pk))

    assert response["Location"] == url("portfolios")
    assert not Portfolio.objects.filter(pk=alice_portfolio.pk).exists()
    assert not Transaction.objects.filter(portfolio_id=alice_portfolio.pk).exists()


# ------------------------------------------------------------------ isolation and CSRF


def _others_pages(portfolio: Portfolio) -> list[tuple[str, str]]:
    entry = Transaction.objects.filter(portfolio=portfolio).first()
    assert entry is not None
    p, t = portfolio.pk, entry.pk
    return [
        ("get", url("portfolio_edit", p)),
        ("post", url("portfolio_edit", p)),
        ("post", url("portfolio_archive", p)),
        ("post", url("portfolio_unarchive", p)),
        ("get", url("portfolio_delete", p)),
        ("post", url("portfolio_delete", p)),
        ("get", url("transactions", p)),
        ("get", url("transaction_create", p)),
        ("post", url("transaction_create", p)),
        ("get", url("transaction_edit", p, t)),
        ("post", url("transaction_edit", p, t)),
        ("get", url("transaction_delete", p, t)),
        ("post", url("transaction_delete", p, t)),
    ]


def test_a_user_can_neither_see_nor_change_anyone_elses_portfolio_or_transactions(
    client: Client, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    client.force_login(bob)
    before = (ledger(alice_portfolio), Portfolio.objects.get(pk=alice_portfolio.pk).name)
    post = {
        **entry_post("sell", "10", instrument=instruments["AAPL"], price="1"),
        "name": "stolen",
        "base_currency": "USD",
        "time_zone": "UTC",
    }

    for method, path in _others_pages(alice_portfolio):
        response = client.post(path, post) if method == "post" else client.get(path)
        assert response.status_code == 404, (method, path)

    # Alice's entry under Bob's own portfolio's address is no more his.
    alice_entry = Transaction.objects.filter(portfolio=alice_portfolio).first()
    assert alice_entry is not None
    assert client.get(url("transaction_edit", bob_portfolio.pk, alice_entry.pk)).status_code == 404
    assert client.post(url("transaction_delete", bob_portfolio.pk, alice_entry.pk)).status_code == 404
    assert (ledger(alice_portfolio), Portfolio.objects.get(pk=alice_portfolio.pk).name) == before
    assert "Alice growth" not in client.get(url("portfolios")).content.decode()


def test_a_transfer_cannot_name_another_users_portfolio(alice_client: Client, alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    response = alice_client.post(
        url("transaction_create", alice_portfolio.pk), entry_post("transfer_out", "100", counterparty=str(bob_portfolio.pk))
    )
    assert errors(response) == {"counterparty": ["Select a valid choice. That choice is not one of the available choices."]}
    assert ledger(bob_portfolio) == [("buy", "MSFT", D(3), D(300))]


def test_every_form_needs_the_csrf_token(alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    for method, path in _others_pages(alice_portfolio):
        if method == "post":
            assert client.post(path, entry_post("deposit", "1")).status_code == 403, path
    assert client.post(url("portfolio_create"), {"name": "X", "base_currency": "USD", "time_zone": "UTC"}).status_code == 403
    page = client.get(url("transaction_create", alice_portfolio.pk)).content.decode()
    assert 'name="csrfmiddlewaretoken"' in page


# ------------------------------------------------------------------ recording every kind


@pytest.fixture
def savings(alice: Any) -> Portfolio:
    return services.portfolio_create(owner_id=alice.pk, name="Alice savings")


KINDS: list[tuple[str, str, str | None, dict[str, str], tuple[str, str, str, str]]] = [
    # kind, quantity, instrument, extra fields, (kind, symbol, quantity, price) stored
    ("buy", "2", "MSFT", {"price": "400", "fee": "1"}, ("buy", "MSFT", "2", "400")),
    ("sell", "4", "AAPL", {"price": "210"}, ("sell", "AAPL", "4", "210")),
    ("dividend", "10", "AAPL", {"price": "0.25"}, ("dividend", "AAPL", "10", "0.25")),
    ("interest", "12.5", None, {"price": "99"}, ("interest", "", "12.5", "1")),  # a cash kind ignores a stray price
    ("fee", "3", None, {}, ("fee", "", "3", "1")),
    ("deposit", "1000", None, {}, ("deposit", "", "1000", "1")),
    ("withdrawal", "500", None, {}, ("withdrawal", "", "500", "1")),
    ("split", "2", "AAPL", {"price": "5"}, ("split", "AAPL", "2", "1")),
    ("transfer_out", "100", None, {"counterparty": "savings"}, ("transfer_out", "", "100", "1")),
    ("transfer_in", "0.1", "BTC-USD", {"counterparty": "self-from-savings"}, ("transfer_in", "BTC-USD", "0.1", "40000")),
]


@pytest.mark.parametrize(("kind", "quantity", "symbol", "extra", "stored"), KINDS, ids=[k[0] for k in KINDS])
def test_every_kind_is_recorded_through_the_services(
    alice_client: Client,
    alice_portfolio: Portfolio,
    savings: Portfolio,
    instruments: dict[str, Instrument],
    kind: str,
    quantity: str,
    symbol: str | None,
    extra: dict[str, str],
    stored: tuple[str, str, str, str],
) -> None:
    target = alice_portfolio
    if extra.get("counterparty") == "savings":
        extra = {**extra, "counterparty": str(savings.pk)}
    elif extra.get("counterparty") == "self-from-savings":
        # Shares move into the savings portfolio from Alice's main one (which holds 0.5 BTC).
        target, extra = savings, {**extra, "counterparty": str(alice_portfolio.pk)}
    instrument = instruments[symbol] if symbol else None

    response = alice_client.post(url("transaction_create", target.pk), entry_post(kind, quantity, instrument=instrument, **extra))

    assert response.status_code == 302, errors(response)
    assert response["Location"] == url("transactions", target.pk)
    newest = Transaction.objects.filter(portfolio=target).select_related("instrument").latest("id")
    k, sym, q, p = stored
    assert (newest.kind, newest.instrument.symbol if newest.instrument else "", newest.quantity, newest.price) == (k, sym, D(q), D(p))
    assert newest.executed_at == T0 + timedelta(days=1)
    if kind.startswith("transfer"):
        assert newest.counterpart is not None


def test_the_record_form_starts_at_now_in_the_portfolio_time_zone_with_the_last_price_at_hand(
    alice_client: Client, alice: Any, instruments: dict[str, Instrument]
) -> None:
    tokyo = services.portfolio_create(owner_id=alice.pk, name="Tokyo", time_zone="Asia/Tokyo")
    record(tokyo, "deposit", "100")
    response = alice_client.get(url("transaction_create", tokyo.pk) + f"?kind=buy&instrument={instruments['SAP'].pk}")
    html = response.content.decode()

    shown = re.search(r'name="executed_at" value="([^"]+)"', html)
    assert shown
    local_now = timezone.now().astimezone(timezone.get_fixed_timezone(9 * 60)).replace(tzinfo=None)
    assert abs(datetime.fromisoformat(shown[1]) - local_now) < timedelta(seconds=5)  # Tokyo's wall clock, not UTC's
    config = json.loads(re.search(r'<script id="entry-config" type="application/json">(.*?)</script>', html, re.S)[1])  # type: ignore[index]
    assert config["instruments"][str(instruments["SAP"].pk)] == {"currency": "EUR", "price": "230"}
    assert config["fieldsByKind"]["deposit"] == ["quantity", "fee", "currency", "fx_rate"]  # no price for cash
    assert re.search(r'<div class="field" data-field="price">', html)  # a buy shows its price


def test_a_cash_kind_hides_the_price_input(alice_client: Client, alice_portfolio: Portfolio) -> None:
    html = alice_client.get(url("transaction_create", alice_portfolio.pk) + "?kind=deposit").content.decode()
    assert '<div class="field" data-field="price" hidden>' in html
    assert '<div class="field" data-field="instrument" hidden>' in html


def test_a_time_typed_in_the_portfolio_zone_is_stored_in_utc(alice_client: Client, alice: Any) -> None:
    paris = services.portfolio_create(owner_id=alice.pk, name="Paris", base_currency="EUR", time_zone="Europe/Paris")
    data = entry_post("deposit", "100", executed_at="2026-01-05T15:30:00")

    alice_client.post(url("transaction_create", paris.pk), data)

    entry = Transaction.objects.get(portfolio=paris)
    assert entry.executed_at == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    row = re.search(
        rf'<tr data-transaction-id="{entry.pk}".*?</tr>', alice_client.get(url("transactions", paris.pk)).content.decode(), re.S
    )
    assert row and "2026-01-05 15:30" in row[0]
    assert ">100<" in row[0] and "100.00 EUR" in row[0]  # plain numbers, never 1E+2


def test_a_buy_without_a_price_is_refused_as_in_the_admin(
    alice_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    response = alice_client.post(url("transaction_create", alice_portfolio.pk), entry_post("buy", "1", instrument=instruments["AAPL"]))
    assert errors(response) == {"price": ["A buy or sell needs its price."]}


def test_an_oversell_gets_exactly_the_admins_message_and_changes_nothing(
    admin_client: Client, alice_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    when = T0 + timedelta(days=1)
    admin_page = admin_client.post(
        "/admin/portfolio/transaction/add/",
        {
            **entry_post("sell", "11", instrument=instruments["AAPL"], price="160"),
            "portfolio": str(alice_portfolio.pk),
            "executed_at_0": f"{when:%Y-%m-%d}",
            "executed_at_1": f"{when:%H:%M:%S}",
        },
    )
    before = ledger(alice_portfolio)

    response = alice_client.post(
        url("transaction_create", alice_portfolio.pk), entry_post("sell", "11", instrument=instruments["AAPL"], price="160")
    )

    assert response.status_code == 200
    assert errors(response) == dict(admin_page.context["adminform"].form.errors)
    assert errors(response) == {"quantity": ["Cannot sell 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time."]}
    assert "Cannot sell 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time." in response.content.decode()
    assert ledger(alice_portfolio) == before


def test_recording_tells_the_owners_live_dashboards_after_commit(
    alice_client: Client, alice: Any, alice_portfolio: Portfolio, django_capture_on_commit_callbacks: Any
) -> None:
    channel = listen_group(groups.user_group(alice.pk))
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(url("transaction_create", alice_portfolio.pk), entry_post("deposit", "10"))
    assert received(channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]


# ------------------------------------------------------------------ editing and deleting


def _aapl_buy(portfolio: Portfolio, instruments: dict[str, Instrument]) -> Transaction:
    return Transaction.objects.get(portfolio=portfolio, kind="buy", instrument=instruments["AAPL"])


def test_editing_a_buy_replaces_it_and_rebuilds_the_holding(
    alice_client: Client,
    alice_portfolio: Portfolio,
    instruments: dict[str, Instrument],
    django_capture_on_commit_callbacks: Any,
    alice: Any,
) -> None:
    buy = _aapl_buy(alice_portfolio, instruments)
    page = alice_client.get(url("transaction_edit", alice_portfolio.pk, buy.pk)).content.decode()
    assert 'name="quantity" value="10"' in page and 'name="price" value="150"' in page
    assert 'name="fx_rate" value=' not in page  # a same-currency entry's stored rate of 1 is not asked for
    channel = listen_group(groups.user_group(alice.pk))

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            url("transaction_edit", alice_portfolio.pk, buy.pk),
            entry_post("buy", "15", instrument=instruments["AAPL"], price="150", when=T0),
        )

    assert response.status_code == 302, errors(response)
    assert not Transaction.objects.filter(pk=buy.pk).exists()
    assert Holding.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"]).quantity == D(15)
    assert received(channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]


def test_an_edit_the_ledger_refuses_leaves_it_untouched_with_the_services_message(
    alice_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "sell", "8", instruments["AAPL"], price="160", executed_at=T0 + timedelta(days=1))
    buy = _aapl_buy(alice_portfolio, instruments)
    before = list(Transaction.objects.filter(portfolio=alice_portfolio).values_list("pk", "quantity").order_by("pk"))

    response = alice_client.post(
        url("transaction_edit", alice_portfolio.pk, buy.pk), entry_post("buy", "5", instrument=instruments["AAPL"], price="150", when=T0)
    )

    assert response.status_code == 200
    assert errors(response) == {"quantity": ["Cannot sell 8 AAPL on 2026-01-06 14:30 UTC: only 5 held at that time."]}
    assert list(Transaction.objects.filter(portfolio=alice_portfolio).values_list("pk", "quantity").order_by("pk")) == before
    assert Holding.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"]).quantity == D(2)


def test_editing_a_deposit_into_a_withdrawal_changes_its_kind(alice_client: Client, alice_portfolio: Portfolio) -> None:
    deposit = Transaction.objects.get(portfolio=alice_portfolio, kind="deposit")
    alice_client.post(url("transaction_edit", alice_portfolio.pk, deposit.pk), entry_post("deposit", "30000", when=deposit.executed_at))
    assert [row for row in ledger(alice_portfolio) if row[0] == "deposit"] == [("deposit", "", D(30000), D(1))]


def test_deleting_a_transaction_asks_first_then_rebuilds(
    alice_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    btc = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["BTC-USD"])
    assert "Buy 0.5 BTC-USD @ 40000" in alice_client.get(url("transaction_delete", alice_portfolio.pk, btc.pk)).content.decode()
    assert Transaction.objects.filter(pk=btc.pk).exists()

    response = alice_client.post(url("transaction_delete", alice_portfolio.pk, btc.pk), follow=True)

    assert not Transaction.objects.filter(pk=btc.pk).exists()
    assert not Holding.objects.filter(portfolio=alice_portfolio, instrument=instruments["BTC-USD"]).exists()
    assert "Deleted “Buy 0.5 BTC-USD @ 40000”; holdings and cash were rebuilt." in response.content.decode()


def test_deleting_a_buy_a_later_sell_needs_is_refused_with_the_admins_message(
    alice_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "sell", "4", instruments["AAPL"], price="160", executed_at=T0 + timedelta(days=1))
    buy = _aapl_buy(alice_portfolio, instruments)

    response = alice_client.post(url("transaction_delete", alice_portfolio.pk, buy.pk), follow=True)

    assert Transaction.objects.filter(pk=buy.pk).exists()
    (message,) = [str(m) for m in response.context["messages"]]
    assert message.startswith("Deleting this entry would break a later one. Cannot sell 4 AAPL on 2026-01-06 14:30 UTC: only 0 held")


# ------------------------------------------------------------------ the transactions page


@pytest.fixture
def long_ledger(alice: Any, instruments: dict[str, Instrument]) -> Portfolio:
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Busy")
    drafts = [services.Draft(kind=Kind.DEPOSIT, executed_at=T0, quantity=D(100_000))]
    for day in range(1, 61):
        symbol = "AAPL" if day % 2 else "MSFT"
        drafts.append(
            services.Draft(kind=Kind.BUY, executed_at=T0 + timedelta(days=day), quantity=D(1), instrument=instruments[symbol], price=D(day))
        )
    services.transactions_import(portfolio=portfolio, drafts=drafts)
    return portfolio


def _listed(response: Any) -> list[tuple[str, str, Decimal]]:
    return [(e.kind, e.instrument.symbol if e.instrument else "", e.price) for e, _ in response.context["entries"]]


def test_the_transactions_page_pages_newest_first(alice_client: Client, long_ledger: Portfolio) -> None:
    first = alice_client.get(url("transactions", long_ledger.pk))
    second = alice_client.get(url("transactions", long_ledger.pk) + "?page=2")

    assert len(first.context["entries"]) == PAGE_SIZE
    assert _listed(first)[0] == ("buy", "MSFT", D(60))
    assert _listed(second)[-1] == ("deposit", "", D(1))
    assert len(_listed(first)) + len(_listed(second)) == 61
    assert 'href="?page=2" rel="next"' in first.content.decode()


def test_the_transactions_page_filters_by_kind_symbol_and_dates_and_pages_keep_the_filters(
    alice_client: Client, long_ledger: Portfolio
) -> None:
    base = url("transactions", long_ledger.pk)
    assert _listed(alice_client.get(base + "?kind=deposit")) == [("deposit", "", D(1))]
    by_symbol = alice_client.get(base + "?symbol=aapl")
    assert {s for _, s, _ in _listed(by_symbol)} == {"AAPL"} and by_symbol.context["page"].paginator.count == 30
    # Days 10..12 after T0 (2026-01-05), both ends included.
    dated = alice_client.get(base + "?since=2026-01-15&until=2026-01-17")
    assert [p for _, _, p in _listed(dated)] == [D(12), D(11), D(10)]
    paged = alice_client.get(base + "?kind=buy").content.decode()
    assert 'href="?kind=buy&amp;page=2"' in paged
