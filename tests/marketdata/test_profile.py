"""The profile page: a user's API tokens, shown once when made, revoked with a button; how a bot connects."""

import hashlib
import re
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from marketdata.models import ApiToken
from marketdata.services import token_authenticate, token_create

pytestmark = pytest.mark.django_db

PROFILE = "/profile/"
TOKEN = re.compile(r"lf_[A-Za-z0-9_-]{43}")


def revoke_url(token: ApiToken) -> str:
    return f"/profile/tokens/{token.pk}/revoke/"


def test_anonymous_visitors_are_sent_to_log_in(client: Client, alice: Any) -> None:
    token, _ = token_create(user=alice, name="bot")

    page = client.get(PROFILE)
    revoke = client.post(revoke_url(token))

    assert (page.status_code, page["Location"]) == (302, f"/accounts/login/?next={PROFILE}")
    assert revoke.status_code == 302 and revoke["Location"].startswith("/accounts/login/")
    assert client.get("/docs/websocket-api/").status_code == 302
    assert ApiToken.objects.get(pk=token.pk).is_active


def test_the_header_links_to_the_profile_for_signed_in_users(client: Client, alice: Any) -> None:
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert 'href="/profile/">Profile</a>' in html
    assert 'aria-current="page">Profile</a>' in client.get(PROFILE).content.decode()


def test_a_created_token_is_shown_once_and_a_reload_does_not_show_it(client: Client, alice: Any) -> None:
    client.force_login(alice)

    created = client.post(PROFILE, {"name": "rebalancer"})

    assert created.status_code == 200
    html = created.content.decode()
    shown = TOKEN.findall(html)
    assert len(set(shown)) == 1, shown
    plaintext = shown[0]
    assert 'data-testid="new-token"' in html and "Copy your new token now" in html and 'id="copy-token"' in html
    assert "no-store" in created["Cache-Control"]
    token = ApiToken.objects.get(user=alice)
    assert (token.name, token.digest) == ("rebalancer", hashlib.sha256(plaintext.encode()).hexdigest())
    assert token_authenticate(plaintext=plaintext) == alice
    # Nowhere server-side: not in the session, not in the database's token row.
    assert plaintext not in str(dict(client.session.items()))
    assert plaintext not in str(ApiToken.objects.values().get(pk=token.pk))

    reloaded = client.get(PROFILE).content.decode()
    assert plaintext not in reloaded and not TOKEN.search(reloaded)
    assert 'data-testid="new-token"' not in reloaded
    assert f"lf_{token.prefix}…" in reloaded and "rebalancer" in reloaded


def test_a_token_needs_a_name(client: Client, alice: Any) -> None:
    client.force_login(alice)

    refused = client.post(PROFILE, {"name": "   "})

    assert refused.status_code == 200 and "name" in refused.context["form"].errors
    assert not ApiToken.objects.exists() and not TOKEN.search(refused.content.decode())


def test_the_list_shows_each_token_with_its_prefix_and_status(client: Client, alice: Any, bob: Any) -> None:
    kept, _ = token_create(user=alice, name="kept bot")
    gone, _ = token_create(user=alice, name="old bot")
    gone.revoked_at = gone.created_at
    gone.save()
    bobs, _ = token_create(user=bob, name="bob's bot")
    client.force_login(alice)

    html = client.get(PROFILE).content.decode()

    assert re.search(
        rf'<tr data-token-id="{kept.pk}" data-active="true">.*?kept bot.*?lf_{kept.prefix}….*?Never.*?Active.*?Revoke', html, re.S
    )
    assert re.search(rf'<tr data-token-id="{gone.pk}" data-active="false">.*?old bot.*?Revoked', html, re.S)
    assert revoke_url(kept) in html and revoke_url(gone) not in html
    assert "bob's bot" not in html and bobs.prefix not in html


def test_revoke_stops_the_token(client: Client, alice: Any) -> None:
    token, plaintext = token_create(user=alice, name="bot")
    client.force_login(alice)

    response = client.post(revoke_url(token), follow=True)

    assert response.redirect_chain == [(PROFILE, 302)]
    assert "revoked" in response.content.decode()
    assert not ApiToken.objects.get(pk=token.pk).is_active
    assert token_authenticate(plaintext=plaintext) is None


def test_revoke_is_a_post_with_csrf(alice: Any) -> None:
    token, _ = token_create(user=alice, name="bot")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.get(revoke_url(token)).status_code == 405
    assert client.post(revoke_url(token)).status_code == 403
    assert ApiToken.objects.get(pk=token.pk).is_active


def test_bob_cannot_revoke_alices_token(client: Client, alice: Any, bob: Any) -> None:
    token, plaintext = token_create(user=alice, name="alice's bot")
    client.force_login(bob)

    assert client.post(revoke_url(token)).status_code == 404
    assert client.post("/profile/tokens/999999/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).is_active
    assert token_authenticate(plaintext=plaintext) == alice


def test_the_page_tells_a_bot_where_and_how_to_connect(client: Client, charlie: Any) -> None:
    client.force_login(charlie)

    html = client.get(PROFILE).content.decode()
    secure = client.get(PROFILE, secure=True).content.decode()

    assert '<code data-testid="endpoint">ws://testserver/ws/v1/market</code>' in html
    assert '<code data-testid="endpoint">wss://testserver/ws/v1/market</code>' in secure
    assert '<pre class="code-block">{"op": "auth", "id": 1, "token": "lf_…"}</pre>' in html
    assert 'href="/docs/websocket-api/"' in html
    docs = client.get("/docs/websocket-api/")
    assert docs.status_code == 200 and docs["Content-Type"].startswith("text/plain")
    text = b"".join(docs.streaming_content).decode()  # type: ignore[attr-defined]
    assert text == (django_settings.BASE_DIR / "docs" / "websocket-api.md").read_text()
