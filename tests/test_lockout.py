"""Login throttling (config/lockout.py, django-axes): per username, per address, the lockout page, the admin.

Issue 13, finding 3: 50 wrong passwords in 51 s, then the right one logged in.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
LIMIT = 5
COOL_OFF = timedelta(minutes=15)
ATTACKER, OTHER = "203.0.113.7", "198.51.100.20"


@pytest.fixture(autouse=True)
def lockout_settings(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOL_OFF
    settings.TRUSTED_PROXIES = []


def log_in(client: Client, username: str, password: str, address: str = ATTACKER, url: str = LOGIN, **headers: str) -> Any:
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


def test_fifty_wrong_passwords_then_the_right_one_is_locked_out(client: Client, alice: Any) -> None:
    statuses = [log_in(client, "alice", f"guess-{n}").status_code for n in range(50)]
    right = log_in(client, "alice", "alice-pass-123")

    # The first LIMIT - 1 are ordinary wrong passwords; the LIMIT-th locks, and everything after is refused unchecked.
    assert statuses == [200] * (LIMIT - 1) + [429] * (50 - LIMIT + 1)
    assert right.status_code == 429 and not logged_in(right)
    assert "_auth_user_id" not in client.session
    print(f"FIGURE password guessing: locked out after {LIMIT} wrong passwords; the right one at attempt 51 got {right.status_code}")


def test_the_lockout_page_says_when_to_try_again(client: Client, alice: Any) -> None:
    for n in range(LIMIT):
        last = log_in(client, "alice", f"guess-{n}")
    failed_at = AccessAttempt.objects.get(username="alice").attempt_time
    until = timezone.localtime(failed_at + COOL_OFF)

    page = log_in(client, "alice", "alice-pass-123")

    html = page.content.decode()
    assert page.status_code == last.status_code == 429
    assert "Too many failed log-ins" in html
    assert f"Try again after {until:%H:%M}" in html and "(in 15 minutes)" in html
    assert 15 * 60 - 5 <= int(page["Retry-After"]) <= 15 * 60
    # The form is there again, with the username filled in.
    assert re.search(r'name="username"[^>]*value="alice"', html)


def test_attempts_during_a_lockout_do_not_extend_it(client: Client, alice: Any) -> None:
    for n in range(LIMIT):
        log_in(client, "alice", f"guess-{n}")
    attempt = AccessAttempt.objects.get(username="alice")
    for n in range(10):
        log_in(client, "alice", f"more-{n}")
    attempt.refresh_from_db()
    assert attempt.failures_since_start == LIMIT


def test_the_lockout_ends_after_the_cool_off(client: Client, alice: Any) -> None:
    for n in range(LIMIT):
        log_in(client, "alice", f"guess-{n}")
    assert log_in(client, "alice", "alice-pass-123").status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - COOL_OFF - timedelta(seconds=1))

    assert logged_in(log_in(client, "alice", "alice-pass-123"))


def test_an_address_is_locked_out_whatever_usernames_it_tries(client: Client, alice: Any) -> None:
    for n in range(LIMIT):
        log_in(client, f"user{n}", "guess")  # one failure for each username: none of them is locked

    assert log_in(client, "alice", "alice-pass-123", address=ATTACKER).status_code == 429
    assert logged_in(log_in(Client(), "alice", "alice-pass-123", address=OTHER))


def test_a_username_is_locked_out_whatever_address_tries_it(client: Client, alice: Any, bob: Any) -> None:
    for n in range(LIMIT):
        log_in(Client(), "alice", "guess", address=f"192.0.2.{n + 1}")  # one failure from each address

    assert log_in(client, "alice", "alice-pass-123", address=OTHER).status_code == 429
    assert logged_in(log_in(Client(), "bob", "bob-pass-123", address=OTHER))


def test_a_forged_x_forwarded_for_does_not_make_a_new_address(client: Client, alice: Any) -> None:
    for n in range(LIMIT):
        log_in(client, f"user{n}", "guess", HTTP_X_FORWARDED_FOR=f"10.9.8.{n}")

    assert log_in(client, "alice", "alice-pass-123", HTTP_X_FORWARDED_FOR="10.9.8.200").status_code == 429


def test_behind_a_trusted_proxy_each_forwarded_client_is_its_own_address(client: Client, settings: Any, alice: Any) -> None:
    settings.TRUSTED_PROXIES = [ATTACKER]  # here: our proxy
    for n in range(LIMIT):
        log_in(client, f"user{n}", "guess", HTTP_X_FORWARDED_FOR="10.9.8.1")

    assert log_in(client, "alice", "alice-pass-123", HTTP_X_FORWARDED_FOR="10.9.8.1").status_code == 429
    assert logged_in(log_in(Client(), "alice", "alice-pass-123", HTTP_X_FORWARDED_FOR="10.9.8.2"))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.9.8.1"}


def test_a_success_does_not_wipe_the_failures_of_other_usernames(client: Client, alice: Any, bob: Any) -> None:
    # Resetting on success would let anyone with an account guess another's password forever, logging in between.
    for n in range(LIMIT - 1):
        log_in(client, "alice", f"guess-{n}")
    assert logged_in(log_in(Client(), "bob", "bob-pass-123"))

    assert log_in(client, "alice", "guess-last").status_code == 429


def test_the_admin_login_is_guarded_too(client: Client, admin_user: Any) -> None:
    statuses = [log_in(client, "admin", f"guess-{n}", url=ADMIN_LOGIN).status_code for n in range(LIMIT)]
    right = log_in(client, "admin", "password", url=ADMIN_LOGIN)

    assert statuses == [200] * (LIMIT - 1) + [429]
    assert right.status_code == 429 and "Too many failed log-ins" in right.content.decode()
    assert "_auth_user_id" not in client.session


def test_failed_logins_are_logged_and_recorded_for_staff(client: Client, alice: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        for n in range(LIMIT + 1):
            log_in(client, "alice", f"guess-{n}")

    text = caplog.text
    assert "login failure" in text and '"alice"' in text and ATTACKER in text
    assert "login refused, locked out: username 'alice' from 203.0.113.7 on /accounts/login/" in text
    assert "guess-" not in text  # never a password
    assert AccessFailureLog.objects.filter(username="alice", ip_address=ATTACKER).count() == LIMIT
    assert not any("guess-" in post for post in AccessAttempt.objects.values_list("post_data", flat=True))


def test_staff_see_lockouts_in_the_admin_and_a_reset_unlocks(client: Client, alice: Any, admin_user: Any) -> None:
    for n in range(LIMIT):
        log_in(client, "alice", f"guess-{n}")
    assert log_in(client, "alice", "alice-pass-123").status_code == 429
    staff = Client()
    staff.force_login(admin_user)

    index = staff.get("/admin/").content.decode()
    listing = staff.get("/admin/axes/accessattempt/?locked_out=yes").content.decode()
    attempt = AccessAttempt.objects.get(username="alice")
    confirm = staff.post("/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})

    assert "Access attempts" in index and "Access failures" in index
    assert "alice" in listing and ATTACKER in listing and "Locked Out" in listing
    assert confirm.status_code == 302 and not AccessAttempt.objects.exists()
    assert logged_in(log_in(client, "alice", "alice-pass-123"))
