"""Every page carries a Content-Security-Policy that runs scripts and styles from our origin only.

The policy is enforced by browsers, so what is tested here is that it is sent,
that it allows nothing inline, and that no template of ours needs more: every
script is a file (a `json_script` data block is not a script a browser runs).
tests/e2e/test_csp.py then walks the pages in Chromium and sees no violation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from marketdata.models import Instrument

TEMPLATES = sorted((Path(settings.BASE_DIR) / "templates").rglob("*.html"))


def policy(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


@pytest.fixture
def staff_client(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/accounts/login/",
        "/",
        "/market/AAPL/",
        "/profile/",
        "/admin/",
        "/admin/portfolio/transaction/add/",
        "/portfolios/",
        "/portfolios/new/",
    ],
)
def test_every_page_forbids_inline_scripts_and_styles_and_framing(
    staff_client: Client, instruments: dict[str, Instrument], path: str
) -> None:
    response = staff_client.get(path, HTTP_HOST="localhost")

    assert response.status_code == 200
    csp = policy(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]  # the pages' own WebSockets: 'self' covers ws/wss of our origin (CSP3)
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response["Content-Security-Policy"]
    # What the page holds (the admin's templates included): script files, and data blocks no browser runs.
    scripts = re.findall(r"<script\b[^>]*>", response.content.decode())
    assert [tag for tag in scripts if "src=" not in tag and 'type="application/json"' not in tag] == []
    assert re.findall(r"<style\b|\sstyle=\"|\son[a-z]+=\"", response.content.decode()) == []


@pytest.mark.django_db
def test_the_new_token_page_loads_its_script_from_a_file(staff_client: Client) -> None:
    html = staff_client.post("/profile/", {"name": "bot"}, HTTP_HOST="localhost").content.decode()

    assert 'id="copy-token"' in html
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script src="/static/js/prefs.js">',  # every page: the theme before the first paint (base.html)
        '<script type="module" src="/static/js/prefs-menu.js">',
        '<script type="module" src="/static/js/profile.js">',
    ]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_no_template_has_an_inline_script_style_or_handler(template: Path) -> None:
    html = template.read_text()
    scripts = re.findall(r"<script\b[^>]*>", html)

    # Only files (src=...) or data (json_script renders type="application/json", which no browser executes).
    assert [tag for tag in scripts if "src=" not in tag] == []
    assert re.findall(r"<style\b|\sstyle=|\son[a-z]+=", html) == []
