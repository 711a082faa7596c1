"""config/views.py and config/context_processors.py: what every page gets — the favicon, the skip link,
the display settings, and the one staleness threshold of the live pages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client, override_settings


def test_favicon_ico_redirects_to_our_svg_icon(client: Client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == "/static/favicon.svg"


@pytest.mark.django_db
def test_every_page_links_the_icon_and_starts_with_a_skip_link_to_main(client: Client) -> None:
    html = client.get("/accounts/login/").content.decode()

    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
    body = html[html.index("<body") :]
    first_link = re.search(r"<a\b[^>]*>[^<]*</a>", body)
    assert first_link is not None and first_link.group(0) == '<a class="skip-link" href="#main">Skip to content</a>'
    assert '<main class="page" id="main" tabindex="-1">' in html


@pytest.mark.django_db
def test_the_theme_script_loads_in_head_before_the_stylesheet(client: Client) -> None:
    html = client.get("/accounts/login/").content.decode()
    head = html[: html.index("</head>")]

    assert head.index('<script src="/static/js/prefs.js">') < head.index('<link rel="stylesheet"')
    assert 'data-testid="theme-dark"' in html  # the control is there signed out too


@pytest.mark.django_db
@override_settings(LIVE_STALE_AFTER_MS=2500)
def test_pages_carry_the_one_staleness_threshold_from_the_setting(client: Client, alice: Any, instruments: dict[str, Any]) -> None:
    client.force_login(alice)

    for path in ("/", "/market/AAPL/", "/portfolios/"):
        html = client.get(path).content.decode()
        assert '<body data-stale-after-ms="2500">' in html, path
