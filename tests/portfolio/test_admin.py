"""The admin is a staff tool: driven here through the test client as a superuser.

Ledger writes made in the admin must go through `portfolio.services`, so they
obey the same rules, rebuild the same holdings and send the same events.
"""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.messages import get_messages
from django.test import Client

from marketdata import groups
from marketdata.models import Instrument
from portfolio import services
from portfolio.models import Holding, Portfolio, Transaction
from tests.conftest import T0, listen_group, received, record

D = Decimal
pytestmark = pytest.mark.django_db

TRANSACTION_ADD = "/admin/portfolio/transaction/add/"


def _results(response: Any) -> list[Any]:
    assert response.status_code == 200, response.get("Location")
    return list(response.context["cl"].result_list)


def _form_post(
    portfolio: Portfolio, instrument: Instrument, kind: str, quantity: str, price: str = "160", fee: str = "0", day: int = 1
) -> dict[str, str]:
    """The add form as a browser posts it; currency, FX rate and counterparty are left empty (their defaults apply)."""
    when = T0 + timedelta(days=day)
    return {
        "portfolio": str(portfolio.pk),
        "kind": kind,
        "instrument": str(instrument.pk),
        "quantity": quantity,
        "price": price,
        "fee": fee,
        "currency": "",
        "fx_rate": "",
        "executed_at_0": f"{when:%Y-%m-%d}",
        "executed_at_1": f"{when:%H:%M:%S}",
        "counterparty": "",
        "note": "entered by staff",
    }


def _deletions_logged() -> list[str]:
    return list(LogEntry.objects.filter(action_flag=DELETION).values_list("object_id", flat=True))


def _resubmit(page: Any, **changes: str) -> dict[str, Any]:
    """The POST a browser sends when saving a portfolio change page as loaded."""
    portfolio = page.context["adminform"].form.instance
    data: dict[str, Any] = {"name": portfolio.name, "owner": str(portfolio.owner_id), "base_currency": portfolio.base_currency, **changes}
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()})
        for form in formset.forms:
            data[f"{form.prefix}-id"] = str(form.instance.pk)
            data[f"{form.prefix}-portfolio"] = str(portfolio.pk)
    return data


def _aapl_holding(portfolio: Portfolio, instruments: dict[str, Instrument]) -> Holding:
    return Holding.objects.get(portfolio=portfolio, instrument=instruments["AAPL"])


# --- Changelists -------------------------------------------------------------


def test_instrument_changelist_searches_filters_by_asset_class_and_shows_last_price(
    admin_client: Client, instruments: dict[str, Instrument]
) -> None:
    assert [i.symbol for i in _results(admin_client.get("/admin/marketdata/instrument/?q=bitcoin"))] == ["BTC-USD"]
    response = admin_client.get("/admin/marketdata/instrument/?asset_class__exact=crypto")
    assert [i.symbol for i in _results(response)] == ["BTC-USD"]
    assert '<td class="field-last_price">60,000</td>' in response.content.decode()
    equities = admin_client.get("/admin/marketdata/instrument/?asset_class__exact=equity&is_active__exact=1")
    assert [i.symbol for i in _results(equities)] == ["AAPL", "MSFT", "SAP"]


def test_quote_changelist_searches_and_filters_by_asset_class_and_source(admin_client: Client, instruments: dict[str, Instrument]) -> None:
    assert [q.instrument.symbol for q in _results(admin_client.get("/admin/marketdata/quote/?q=euro"))] == ["EUR/USD"]
    fx = admin_client.get("/admin/marketdata/quote/?instrument__asset_class__exact=fx&source=test")
    assert [q.instrument.symbol for q in _results(fx)] == ["EUR/USD"]
    assert _results(admin_client.get("/admin/marketdata/quote/?source=synthetic")) == []


def test_portfolio_changelist_searches_filters_by_owner_and_counts_the_ledger(
    admin_client: Client, alice: Any, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio
) -> None:
    assert _results(admin_client.get("/admin/portfolio/portfolio/?q=alice")) == [alice_portfolio]
    response = admin_client.get(f"/admin/portfolio/portfolio/?owner__id__exact={bob.pk}")
    assert _results(response) == [bob_portfolio]
    html = response.content.decode()
    assert '<td class="field-holding_count">1</td>' in html
    assert '<td class="field-transaction_count">1</td>' in html


def test_transaction_changelist_searches_filters_and_formats_money(
    admin_client: Client, alice: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    searched = _results(admin_client.get("/admin/portfolio/transaction/?q=bitcoin"))
    assert [t.instrument.symbol for t in searched] == ["BTC-USD"]
    by_class = _results(admin_client.get("/admin/portfolio/transaction/?instrument__asset_class__exact=equity"))
    assert sorted(t.instrument.symbol for t in by_class) == ["AAPL", "MSFT"]
    by_owner = _results(admin_client.get(f"/admin/portfolio/transaction/?portfolio__owner__id__exact={alice.pk}&kind__exact=buy"))
    assert {t.portfolio for t in by_owner} == {alice_portfolio}

    response = admin_client.get(f"/admin/portfolio/transaction/?instrument__id__exact={instruments['AAPL'].pk}")
    [aapl_buy] = _results(response)
    assert aapl_buy.portfolio == alice_portfolio
    html = response.content.decode()
    assert '<td class="field-quantity_">10</td>' in html
    assert '<td class="field-price_">150.00 USD</td>' in html
    assert '<td class="field-fee_">1.00 USD</td>' in html
    assert '<td class="field-value">1,500.00 USD</td>' in html


def test_holding_changelist_searches_filters_and_formats_cost(
    admin_client: Client, alice: Any, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    assert [h.instrument.symbol for h in _results(admin_client.get("/admin/portfolio/holding/?q=bitcoin"))] == ["BTC-USD"]
    crypto = admin_client.get("/admin/portfolio/holding/?instrument__asset_class__exact=crypto")
    assert [h.instrument.symbol for h in _results(crypto)] == ["BTC-USD"]
    assert '<td class="field-quantity_">0.5</td>' in crypto.content.decode()
    assert [h.portfolio for h in _results(admin_client.get(f"/admin/portfolio/holding/?portfolio__owner__id__exact={bob.pk}"))] == [
        bob_portfolio
    ]

    response = admin_client.get(f"/admin/portfolio/holding/?instrument__id__exact={instruments['AAPL'].pk}")
    [holding] = _results(response)
    assert holding.portfolio == alice_portfolio
    html = response.content.decode()
    # 10 bought at 150; the 1.00 fee is a cost of trading, outside the cost basis: average cost 150.00.
    assert '<td class="field-average_cost_">150.00 USD</td>' in html
    assert '<td class="field-cost_">1,500.00 USD</td>' in html


def test_deactivate_action_stops_an_instrument_taking_prices(admin_client: Client, instruments: dict[str, Instrument]) -> None:
    response = admin_client.post(
        "/admin/marketdata/instrument/", {"action": "deactivate", "_selected_action": [str(instruments["SAP"].pk)]}, follow=True
    )
    assert "1 instruments deactivated." in [str(m) for m in response.context["messages"]]
    assert list(Instrument.objects.filter(is_active=False).values_list("symbol", flat=True)) == ["SAP"]


# --- Recording through the add form ------------------------------------------


def test_recording_through_the_admin_rebuilds_the_holding_and_tells_the_owner_after_commit(
    admin_client: Client,
    alice: Any,
    bob: Any,
    alice_portfolio: Portfolio,
    bob_portfolio: Portfolio,
    instruments: dict[str, Instrument],
    django_capture_on_commit_callbacks: Any,
) -> None:
    alice_channel, bob_channel = listen_group(groups.user_group(alice.pk)), listen_group(groups.user_group(bob.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(TRANSACTION_ADD, _form_post(alice_portfolio, instruments["AAPL"], "buy", "5", price="160", fee="1"))
        assert received(alice_channel) == []  # not before commit

    assert response.status_code == 302
    assert response["Location"] == "/admin/portfolio/transaction/"
    entry = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"], price=D("160"))
    assert (entry.kind, entry.quantity, entry.fee, entry.executed_at, entry.note) == (
        "buy",
        D(5),
        D(1),
        T0 + timedelta(days=1),
        "entered by staff",
    )
    holding = _aapl_holding(alice_portfolio, instruments)
    # 10 × 150 + 5 × 160 over 15 units; the fees stay outside the cost basis.
    assert (holding.quantity, holding.cost, holding.average_cost) == (D(15), D(2300), D(2300) / D(15))

    for callback in callbacks:
        callback()
    assert received(alice_channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]
    assert received(bob_channel) == []


def test_admin_sell_of_more_than_held_is_rejected_with_the_service_message(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(TRANSACTION_ADD, _form_post(alice_portfolio, instruments["AAPL"], "sell", "11"))

    assert response.status_code == 200
    assert "Cannot sell 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time." in response.content.decode()
    assert response.context["adminform"].form.errors == {
        "quantity": ["Cannot sell 11 AAPL on 2026-01-06 14:30 UTC: only 10 held at that time."]
    }
    assert Transaction.objects.filter(portfolio=alice_portfolio).count() == 3
    assert _aapl_holding(alice_portfolio, instruments).quantity == D(10)
    assert callbacks == []


def test_admin_refuses_a_transaction_in_an_inactive_instrument(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    msft = instruments["MSFT"]
    msft.is_active = False
    msft.save()

    response = admin_client.post(TRANSACTION_ADD, _form_post(alice_portfolio, msft, "buy", "1"))

    assert response.status_code == 200
    assert "MSFT is inactive: it takes no new buys." in response.content.decode()
    assert not Transaction.objects.filter(instrument=msft).exists()
    assert not Holding.objects.filter(instrument=msft).exists()


# --- Existing rows are read-only ----------------------------------------------


def test_existing_transactions_are_read_only_in_the_admin(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    buy = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"])
    url = f"/admin/portfolio/transaction/{buy.pk}/change/"

    page = admin_client.get(url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert page.context["has_change_permission"] is False

    response = admin_client.post(url, {**_form_post(alice_portfolio, instruments["AAPL"], "buy", "99", day=0), "_save": "Save"})
    assert response.status_code == 403
    buy.refresh_from_db()
    assert (buy.quantity, buy.price) == (D(10), D(150))
    assert _aapl_holding(alice_portfolio, instruments).quantity == D(10)


def test_holdings_cannot_be_added_changed_or_deleted_in_the_admin(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    holding = _aapl_holding(alice_portfolio, instruments)

    changelist = admin_client.get("/admin/portfolio/holding/")
    assert changelist.context["has_add_permission"] is False
    assert "/admin/portfolio/holding/add/" not in changelist.content.decode()
    assert admin_client.get("/admin/portfolio/holding/add/").status_code == 403
    change = {"portfolio": str(alice_portfolio.pk), "instrument": str(instruments["AAPL"].pk), "quantity": "99", "average_cost": "1"}
    assert admin_client.post(f"/admin/portfolio/holding/{holding.pk}/change/", change).status_code == 403
    assert admin_client.post(f"/admin/portfolio/holding/{holding.pk}/delete/", {"post": "yes"}).status_code == 403

    holding.refresh_from_db()
    assert (holding.quantity, holding.average_cost) == (D(10), D(150))


# --- Deleting through the confirmation page ----------------------------------


def test_deleting_a_transaction_in_the_admin_rebuilds_the_holding_and_tells_the_owner(
    admin_client: Client,
    alice: Any,
    alice_portfolio: Portfolio,
    instruments: dict[str, Instrument],
    django_capture_on_commit_callbacks: Any,
) -> None:
    sell = record(alice_portfolio, "sell", "4", instruments["AAPL"], price="170", executed_at=T0 + timedelta(days=1))
    assert _aapl_holding(alice_portfolio, instruments).quantity == D(6)
    url = f"/admin/portfolio/transaction/{sell.pk}/delete/"
    confirmation = admin_client.get(url)
    assert confirmation.status_code == 200
    assert "Are you sure" in confirmation.content.decode()
    channel = listen_group(groups.user_group(alice.pk))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == "/admin/portfolio/transaction/"
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Deleted “Sell 4 AAPL @ 170”; holdings and cash were rebuilt."]
    assert not Transaction.objects.filter(pk=sell.pk).exists()
    assert _aapl_holding(alice_portfolio, instruments).quantity == D(10)
    assert received(channel) == [{"type": "portfolio.reload", "portfolio_id": alice_portfolio.pk}]
    assert _deletions_logged() == [str(sell.pk)]


def test_deleting_a_buy_that_a_later_sell_needs_is_refused_in_the_admin(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    record(alice_portfolio, "sell", "4", instruments["AAPL"], price="170", executed_at=T0 + timedelta(days=1))
    buy = Transaction.objects.get(portfolio=alice_portfolio, instrument=instruments["AAPL"], kind="buy")

    response = admin_client.post(f"/admin/portfolio/transaction/{buy.pk}/delete/", {"post": "yes"}, follow=True)

    assert response.redirect_chain == [(f"/admin/portfolio/transaction/{buy.pk}/change/", 302)]
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Deleting this entry would break a later one. Cannot sell 4 AAPL on 2026-01-06 14:30 UTC: only 0 held")
    assert Transaction.objects.filter(pk=buy.pk).exists()
    assert _aapl_holding(alice_portfolio, instruments).quantity == D(6)
    assert _deletions_logged() == []


# --- Portfolio page and access ------------------------------------------------


def test_portfolio_page_shows_holdings_and_ledger_inline_with_a_record_link(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    response = admin_client.get(f"/admin/portfolio/portfolio/{alice_portfolio.pk}/change/")

    assert response.status_code == 200
    inlines = {f.formset.model.__name__: f for f in response.context["inline_admin_formsets"]}
    assert {name: len(f.formset.forms) for name, f in inlines.items()} == {"Holding": 2, "CashBalance": 1, "Transaction": 3}
    html = response.content.decode()
    assert "150.00 USD" in html  # AAPL average cost in the holdings inline
    assert "3,499.00 USD" in html  # the cash inline: 25000 − 1501 − 20000
    assert "40,000" in html  # BTC price in the ledger inline
    record_url = f"{TRANSACTION_ADD}?portfolio={alice_portfolio.pk}"
    assert f'<a class="addlink" href="{record_url}">Record a transaction</a>' in html
    assert f'<a href="/admin/portfolio/portfolio/{alice_portfolio.pk}/import/">Import transactions (CSV)</a>' in html
    assert f'<a href="/admin/portfolio/portfolio/{alice_portfolio.pk}/export/">Export CSV</a>' in html

    add_form = admin_client.get(record_url)
    assert add_form.status_code == 200
    assert add_form.context["adminform"].form.initial["portfolio"] == str(alice_portfolio.pk)


def test_renaming_a_portfolio_in_the_admin_keeps_its_ledger(admin_client: Client, alice_portfolio: Portfolio) -> None:
    url = f"/admin/portfolio/portfolio/{alice_portfolio.pk}/change/"
    response = admin_client.post(url, _resubmit(admin_client.get(url), name="Alice long term"))

    assert response.status_code == 302
    alice_portfolio.refresh_from_db()
    assert alice_portfolio.name == "Alice long term"
    assert (alice_portfolio.holdings.count(), alice_portfolio.transactions.count()) == (2, 3)


def test_saving_a_portfolio_page_after_a_position_closed_shows_an_error_not_a_crash(
    admin_client: Client, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    url = f"/admin/portfolio/portfolio/{alice_portfolio.pk}/change/"
    page = admin_client.get(url)
    # Meanwhile the AAPL position is sold out: its holding row is gone.
    record(alice_portfolio, "sell", "10", instruments["AAPL"], price="170", executed_at=T0 + timedelta(days=1))

    response = admin_client.post(url, _resubmit(page, name="Alice long term"))

    assert response.status_code == 200
    # The rebuild replaced every derived row (holdings and cash), so each stale inline row is reported.
    assert "Please correct the errors below." in response.content.decode()
    alice_portfolio.refresh_from_db()
    assert alice_portfolio.name == "Alice growth"


def test_a_non_staff_user_cannot_reach_the_admin(client: Client, alice: Any, alice_portfolio: Portfolio) -> None:
    client.force_login(alice)
    for url in ["/admin/", "/admin/portfolio/transaction/", TRANSACTION_ADD, f"/admin/portfolio/portfolio/{alice_portfolio.pk}/change/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next=/admin/"), url
    response = client.post(TRANSACTION_ADD, _form_post(alice_portfolio, alice_portfolio.transactions.first().instrument, "buy", "1"))
    assert response.status_code == 302
    assert Transaction.objects.filter(portfolio=alice_portfolio).count() == 3


def test_a_transfer_recorded_in_the_admin_writes_both_linked_sides(
    admin_client: Client, alice: Any, alice_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    savings = services.portfolio_create(owner_id=alice.pk, name="Alice savings")
    post = _form_post(alice_portfolio, instruments["AAPL"], "transfer_out", "4") | {"price": "", "counterparty": str(savings.pk)}
    response = admin_client.post(TRANSACTION_ADD, post)

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    sent = Transaction.objects.get(portfolio=alice_portfolio, kind="transfer_out")
    received_side = Transaction.objects.get(portfolio=savings, kind="transfer_in")
    assert (sent.counterpart_id, received_side.counterpart_id) == (received_side.pk, sent.pk)
    # 4 of 10 AAPL bought at 150 move at that cost: 600 leaves one portfolio and arrives in the other.
    assert _aapl_holding(alice_portfolio, instruments).quantity == D(6)
    moved = Holding.objects.get(portfolio=savings, instrument=instruments["AAPL"])
    assert (moved.quantity, moved.cost) == (D(4), D(600))


def test_a_transfer_to_another_owners_portfolio_is_refused_in_the_admin(
    admin_client: Client, alice_portfolio: Portfolio, bob_portfolio: Portfolio, instruments: dict[str, Instrument]
) -> None:
    post = _form_post(alice_portfolio, instruments["AAPL"], "transfer_out", "4") | {"price": "", "counterparty": str(bob_portfolio.pk)}
    response = admin_client.post(TRANSACTION_ADD, post)

    assert response.context["adminform"].form.errors == {"counterparty": ["Pick another portfolio of the same owner."]}
    assert not Transaction.objects.filter(kind__startswith="transfer").exists()


def test_staff_create_pause_and_see_alerts_notifications_and_watchlists_in_the_admin(
    admin_client: Client,
    alice: Any,
    alice_portfolio: Portfolio,
    instruments: dict[str, Instrument],
    django_capture_on_commit_callbacks: Any,
) -> None:
    from portfolio.models import Alert, Notification, WatchlistItem

    post = {
        "user": alice.pk,
        "kind": "price_above",
        "instrument": instruments["AAPL"].pk,
        "threshold": "0",
        "window_minutes": "0",
        "hysteresis": "0",
    }
    response = admin_client.post("/admin/portfolio/alert/add/", post)
    assert response.status_code == 200 and "A price threshold must be above 0." in response.content.decode()
    post["threshold"] = "250"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert admin_client.post("/admin/portfolio/alert/add/", post).status_code == 302
    assert len(callbacks) == 1  # the workers' reload, after commit
    alert = Alert.objects.get()
    admin_client.post("/admin/portfolio/alert/", {"action": "pause", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.active is False
    services.watchlist_add(user=alice, instrument=instruments["MSFT"])
    services.alert_set_active(alert=alert, active=True)
    services.alert_fire(alert_id=alert.pk, value=Decimal("251"), fired_at=T0)
    assert "AAPL at or above 250: now 251" in admin_client.get("/admin/portfolio/notification/").content.decode()
    assert "MSFT" in admin_client.get("/admin/portfolio/watchlistitem/").content.decode()
    assert admin_client.get("/admin/portfolio/notification/add/").status_code == 403  # recorded by the worker only
    assert Notification.objects.count() == 1 and WatchlistItem.objects.count() == 1
