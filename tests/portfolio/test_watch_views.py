"""`portfolio.watch_views`: the dashboard's watchlist, alert and notification forms, each the signed-in user's own."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from marketdata.models import Instrument
from portfolio import services
from portfolio.models import Alert, Notification, WatchlistItem
from tests.conftest import T0

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_user_adds_and_removes_a_watched_instrument_and_sees_it_on_the_dashboard(alice: Any, instruments: dict[str, Instrument]) -> None:
    client = client_for(alice)
    response = client.post(reverse("portfolio:watchlist_add"), {"instrument": instruments["MSFT"].pk})
    assert response.status_code == 302 and response["Location"].endswith("/#watchlist")
    page = client.get(reverse("portfolio:dashboard")).content.decode()
    assert 'data-symbol="MSFT"' in page and "MSFT is on your watchlist." in page
    client.post(reverse("portfolio:watchlist_remove", args=[instruments["MSFT"].pk]))
    assert not WatchlistItem.objects.exists()


def test_an_alert_with_a_bad_threshold_is_refused_with_a_message_saying_why(alice: Any, instruments: dict[str, Instrument]) -> None:
    client = client_for(alice)
    post = {"instrument": instruments["AAPL"].pk, "kind": "move_pct", "threshold": "5", "window_minutes": "0", "hysteresis": "0"}
    page = client.post(reverse("portfolio:alert_create"), post, follow=True).content.decode()
    assert "Alert: window minutes: A move is measured over at least one minute." in page
    assert not Alert.objects.exists()
    post["window_minutes"] = "15"
    page = client.post(reverse("portfolio:alert_create"), post, follow=True).content.decode()
    assert "Alert set: AAPL rises 5% within 15 min." in page
    assert Alert.objects.get().window_minutes == 15


def test_nobody_pauses_or_deletes_someone_elses_alert(alice: Any, bob: Any, instruments: dict[str, Instrument]) -> None:
    alert = services.alert_create(user=alice, instrument=instruments["AAPL"], kind="price_above", threshold=Decimal("250"))
    bob_client = client_for(bob)
    assert bob_client.post(reverse("portfolio:alert_pause", args=[alert.pk])).status_code == 404
    assert bob_client.post(reverse("portfolio:alert_delete", args=[alert.pk])).status_code == 404
    assert "AAPL at or above 250" not in bob_client.get(reverse("portfolio:dashboard")).content.decode()
    alice_client = client_for(alice)
    alice_client.post(reverse("portfolio:alert_pause", args=[alert.pk]))
    alert.refresh_from_db()
    assert alert.active is False
    alice_client.post(reverse("portfolio:alert_delete", args=[alert.pk]))
    assert not Alert.objects.exists()


def test_notifications_are_listed_for_their_owner_and_marked_read(alice: Any, bob: Any, instruments: dict[str, Instrument]) -> None:
    alert = services.alert_create(user=alice, instrument=instruments["AAPL"], kind="price_above", threshold=Decimal("250"))
    services.alert_fire(alert_id=alert.pk, value=Decimal("251"), fired_at=T0)
    page = client_for(alice).get(reverse("portfolio:dashboard")).content.decode()
    assert "AAPL at or above 250: now 251" in page and "2026-01-05 14:30:00 UTC" in page
    assert "AAPL at or above 250: now 251" not in client_for(bob).get(reverse("portfolio:dashboard")).content.decode()
    client_for(bob).post(reverse("portfolio:notifications_read"))
    assert Notification.objects.get().read_at is None
    client_for(alice).post(reverse("portfolio:notifications_read"))
    assert Notification.objects.get().read_at is not None


def test_a_portfolio_alert_is_set_on_the_page_for_ones_own_portfolio_only(
    alice: Any, bob: Any, alice_portfolio: Any, bob_portfolio: Any, instruments: dict[str, Instrument]
) -> None:
    client = client_for(alice)
    page = client.get(reverse("portfolio:dashboard")).content.decode()
    assert f'<option value="{alice_portfolio.pk}">Alice growth</option>' in page
    assert "Bob income" not in page
    # The instrument select still holds an earlier choice: a portfolio kind ignores it.
    post = {"kind": "portfolio_value_below", "portfolio": alice_portfolio.pk, "instrument": instruments["AAPL"].pk, "threshold": "30000"}
    page = client.post(reverse("portfolio:alert_create"), post, follow=True).content.decode()
    assert "Alert set: Alice growth value at or below 30000 USD." in page
    assert (Alert.objects.get().portfolio_id, Alert.objects.get().instrument_id) == (alice_portfolio.pk, None)
    post["portfolio"] = bob_portfolio.pk
    page = client.post(reverse("portfolio:alert_create"), post, follow=True).content.decode()
    assert "Alert: portfolio: Select a valid choice." in page
    assert Alert.objects.count() == 1
