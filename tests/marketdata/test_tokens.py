"""API tokens for bots: made once, stored as a hash, checked, revoked, and stamped when used."""

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from marketdata.models import ApiToken
from marketdata.selectors import tokens_for_user
from marketdata.services import token_authenticate, token_create, token_revoke

pytestmark = pytest.mark.django_db
ADMIN = "/admin/marketdata/apitoken/"
TOKEN = re.compile(r"lf_[A-Za-z0-9_-]{43}")


def test_token_create_stores_the_sha256_of_the_plaintext_and_never_the_plaintext(alice: Any) -> None:
    token, plaintext = token_create(user=alice, name="  rebalancer  ")

    assert plaintext.startswith("lf_") and len(plaintext) == 3 + 43
    assert (token.user, token.name, token.prefix) == (alice, "rebalancer", plaintext[3:11])
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = ApiToken.objects.values().get(pk=token.pk)
    assert not any(plaintext in str(value) or plaintext[3:] in str(value) for value in stored.values())
    assert stored["revoked_at"] is None and stored["last_used_at"] is None and token.is_active


def test_each_token_is_different(alice: Any) -> None:
    plaintexts = {token_create(user=alice, name="bot")[1] for _ in range(5)}
    assert len(plaintexts) == 5


def test_a_token_authenticates_its_user(alice: Any, bob: Any) -> None:
    _, alices = token_create(user=alice, name="alice's bot")
    _, bobs = token_create(user=bob, name="bob's bot")

    assert token_authenticate(plaintext=alices) == alice
    assert token_authenticate(plaintext=bobs) == bob


def test_a_revoked_token_is_refused_and_revoking_again_keeps_the_first_time(alice: Any) -> None:
    token, plaintext = token_create(user=alice, name="bot")

    token_revoke(token=token)
    first = token.revoked_at
    token_revoke(token=ApiToken.objects.get(pk=token.pk))
    token.refresh_from_db()

    assert first is not None and token.revoked_at == first and not token.is_active
    assert token_authenticate(plaintext=plaintext) is None


@pytest.mark.parametrize(
    "plaintext",
    [
        "lf_" + "A" * 43,  # well formed, but no such token
        "",
        "lf_",
        "lf_short",
        "xx_" + "A" * 43,  # another prefix
        "lf_" + "A" * 42 + "!",  # not URL-safe base64
        "lf_" + "A" * 44,  # too long
        " lf_" + "A" * 43,
        None,  # what a bot's JSON may carry instead of a string
        12345,
    ],
)
def test_an_unknown_or_malformed_token_is_refused(alice: Any, plaintext: Any) -> None:
    token_create(user=alice, name="bot")
    assert token_authenticate(plaintext=plaintext) is None


def test_a_token_is_refused_once_its_digest_is_known_but_not_its_plaintext(alice: Any) -> None:
    token, _ = token_create(user=alice, name="bot")
    assert token_authenticate(plaintext=token.digest) is None


def test_an_inactive_users_token_is_refused(charlie: Any) -> None:
    _, plaintext = token_create(user=charlie, name="bot")
    charlie.is_active = False
    charlie.save()

    assert token_authenticate(plaintext=plaintext) is None


def test_last_used_is_stamped_on_first_use_then_at_most_once_a_minute(alice: Any) -> None:
    token, plaintext = token_create(user=alice, name="bot")

    token_authenticate(plaintext=plaintext)
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=5)

    # A connect storm: more authentications within the minute write nothing.
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            assert token_authenticate(plaintext=plaintext) == alice
    assert not [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    token.refresh_from_db()
    assert token.last_used_at == first

    # More than a minute later, the next use is stamped again.
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(seconds=61))
    token_authenticate(plaintext=plaintext)
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_at > first


def test_a_refused_token_is_not_stamped(alice: Any) -> None:
    token, plaintext = token_create(user=alice, name="bot")
    token_revoke(token=token)

    token_authenticate(plaintext=plaintext)
    token.refresh_from_db()

    assert token.last_used_at is None


def test_tokens_for_user_lists_only_that_users_tokens_newest_first(alice: Any, bob: Any) -> None:
    old, _ = token_create(user=alice, name="old")
    new, _ = token_create(user=alice, name="new")
    token_create(user=bob, name="bob's")
    token_revoke(token=old)

    assert list(tokens_for_user(user=alice)) == [new, old]


# --- in the admin ------------------------------------------------------------------


def test_staff_create_a_token_for_a_user_and_see_its_plaintext_once_in_the_message(admin_client: Client, alice: Any) -> None:
    assert admin_client.get(f"{ADMIN}add/").status_code == 200

    saved = admin_client.post(f"{ADMIN}add/", {"user": alice.pk, "name": "alice's importer"}, follow=True)

    assert saved.redirect_chain == [(ADMIN, 302)]
    shown = [str(m) for m in saved.context["messages"] if TOKEN.search(str(m))]
    assert len(shown) == 1 and "will not be shown again" in shown[0]
    match = TOKEN.search(shown[0])
    assert match is not None
    plaintext = match.group(0)
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.prefix) == (alice, "alice's importer", plaintext[3:11])
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    assert token_authenticate(plaintext=plaintext) == alice

    # Shown once: the list and the token's own page show only its prefix.
    for url in (ADMIN, f"{ADMIN}{token.pk}/change/"):
        html = admin_client.get(url).content.decode()
        assert plaintext not in html and not TOKEN.search(html)
        assert f"lf_{token.prefix}…" in html


def test_the_admin_token_page_keeps_digest_and_prefix_read_only(admin_client: Client, alice: Any, bob: Any) -> None:
    token, _ = token_create(user=alice, name="bot")

    saved = admin_client.post(
        f"{ADMIN}{token.pk}/change/", {"name": "renamed", "user": bob.pk, "digest": "0" * 64, "prefix": "xxxxxxxx", "revoked_at": ""}
    )

    assert saved.status_code == 302
    after = ApiToken.objects.get(pk=token.pk)
    assert (after.name, after.user, after.digest, after.prefix) == ("renamed", alice, token.digest, token.prefix)


def test_the_admin_lists_filters_and_searches_tokens(admin_client: Client, alice: Any, bob: Any) -> None:
    alices, _ = token_create(user=alice, name="alice's bot")
    bobs, _ = token_create(user=bob, name="bob's bot")
    token_revoke(token=bobs)

    listed = admin_client.get(ADMIN)
    active = admin_client.get(ADMIN, {"status": "active"})
    searched = admin_client.get(ADMIN, {"q": "bob"})
    by_prefix = admin_client.get(ADMIN, {"q": alices.prefix})

    assert listed.status_code == 200 and {t.pk for t in listed.context["cl"].result_list} == {alices.pk, bobs.pk}
    assert [t.pk for t in active.context["cl"].result_list] == [alices.pk]
    assert [t.pk for t in searched.context["cl"].result_list] == [bobs.pk]
    assert [t.pk for t in by_prefix.context["cl"].result_list] == [alices.pk]


def test_staff_revoke_selected_tokens_with_the_action(admin_client: Client, alice: Any, bob: Any) -> None:
    alices, alice_plaintext = token_create(user=alice, name="alice's bot")
    bobs, bob_plaintext = token_create(user=bob, name="bob's bot")
    kept, kept_plaintext = token_create(user=bob, name="kept")

    done = admin_client.post(ADMIN, {"action": "revoke", "_selected_action": [alices.pk, bobs.pk]}, follow=True)

    assert done.status_code == 200
    assert "2 tokens revoked." in [str(m) for m in done.context["messages"]]
    assert token_authenticate(plaintext=alice_plaintext) is None
    assert token_authenticate(plaintext=bob_plaintext) is None
    assert token_authenticate(plaintext=kept_plaintext) == bob
    assert ApiToken.objects.filter(revoked_at__isnull=True).get() == kept
