import json
import re
from datetime import date
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from marketdata.models import DailyClose
from portfolio.models import Portfolio

pytestmark = pytest.mark.django_db


LOGIN = "/accounts/login/"
STATIC_DIR = Path(django_settings.BASE_DIR) / "static"


def _live_config(html: str) -> Any:
    match = re.search(r'<script id="live-config" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert match, "live-config json_script missing"
    return json.loads(match.group(1))


def _empty_state_tag(html: str) -> str:
    match = re.search(r'<div id="empty-state"[^>]*>', html)
    assert match, "empty-state element missing"
    return match.group(0)


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_dashboard_sends_anonymous_visitors_to_login_and_back(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next=/"


def test_dashboard_carries_the_live_config_and_connection_status(client: Client, alice: Any, alice_portfolio: Portfolio) -> None:
    client.force_login(alice)
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert _live_config(html) == {"url": "/ws/portfolio/", "coalesceMs": django_settings.PORTFOLIO_COALESCE_MS}
    assert re.search(r'<div id="connection-status" class="status" data-state="connecting" role="status">', html)
    assert " hidden" in _empty_state_tag(html)
    assert '<span class="topbar-user" data-testid="username">alice</span>' in html
    assert 'href="/admin/"' not in html  # no admin link for non-staff


def _performance_config(html: str) -> Any:
    match = re.search(r'<script id="performance-config" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert match, "performance-config json_script missing"
    return json.loads(match.group(1))


def test_dashboard_offers_as_benchmarks_the_instruments_with_daily_closes(
    client: Client, alice: Any, admin_user: Any, alice_portfolio: Portfolio, instruments: Any
) -> None:
    for symbol in ("MSFT", "AAPL"):
        DailyClose.objects.create(instrument=instruments[symbol], date=date(2026, 1, 5), close=D("100"), source="csv")
    client.force_login(alice)
    config = _performance_config(client.get("/").content.decode())
    assert config == {
        "url": "/portfolios/0/performance/",
        "benchmarks": [{"symbol": "AAPL", "name": "Apple Inc."}, {"symbol": "MSFT", "name": "Microsoft Corp."}],
        "staff": False,
    }
    client.force_login(admin_user)
    assert _performance_config(client.get("/").content.decode())["staff"] is True  # told how to import closes


def test_a_user_without_a_portfolio_sees_the_empty_state(client: Client, charlie: Any, alice_portfolio: Portfolio) -> None:
    client.force_login(charlie)
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "hidden" not in _empty_state_tag(html)
    assert "You have no portfolio yet" in html
    assert 'class="card loading"' not in html  # no skeleton waiting for data that will not come


def test_login_page_renders_the_form(client: Client) -> None:
    response = client.get(f"{LOGIN}?next=/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    assert '<input type="hidden" name="next" value="/">' in html


def test_login_with_bad_credentials_shows_the_error_and_stays_anonymous(client: Client, alice: Any) -> None:
    response = client.post(LOGIN, {"username": "alice", "password": "wrong-password"})

    assert response.status_code == 200
    assert "Your username and password didn't match. Please try again." in response.content.decode()
    assert not _logged_in(client)


def test_login_with_good_credentials_lands_on_the_dashboard(client: Client, alice: Any) -> None:
    response = client.post(LOGIN, {"username": "alice", "password": "alice-pass-123"})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert _logged_in(client)


def test_logout_needs_a_post_and_ends_the_session(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    assert _logged_in(client)

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert not _logged_in(client)
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(("path", "content_type"), [("js/dashboard.js", "text/javascript"), ("css/app.css", "text/css")])
def test_static_assets_are_served_from_the_finders_in_debug(settings: Any, path: str, content_type: str) -> None:
    # What config/settings.py sets when DEBUG is on; pytest-django turns DEBUG off, the test pins the dev setup.
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    client = Client()  # builds its middleware (WhiteNoise reads its settings then) on first request

    response = client.get(f"/static/{path}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith(content_type)
    assert b"".join(response.streaming_content) == (STATIC_DIR / path).read_bytes()
    response.close()
