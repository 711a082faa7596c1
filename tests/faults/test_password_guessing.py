"""Fault: password and token guessing against a real daphne (issue 13, finding 3).

Before: 50 wrong passwords in 51 s, then the right one logged in. Now the
LOGIN_FAILURE_LIMIT-th failure locks the username and the address out (HTTP 429
with Retry-After, the page says until when); a bad API token on the socket counts
against the address the same way (error `auth_locked`, close 4423). This runs the
whole path as deployed: daphne, its async middleware chain, the real password hasher.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from axes.models import AccessAttempt
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from marketdata import services
from tests.servers import live_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

PASSWORD = "correct-horse-battery"
LIMIT = 5


def guess_passwords(base: str, guesses: list[str]) -> list[httpx.Response]:
    """One browser-like client: the login page's CSRF token, then one POST per guess."""
    with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, page.text[:500]
        return [
            client.post("/accounts/login/", data={"csrfmiddlewaretoken": token[1], "username": "alice", "password": guess})
            for guess in guesses
        ]


async def auth(base: str, token: str) -> tuple[dict[str, Any], int | None]:
    async with websockets.connect(base.replace("http://", "ws://") + "/ws/v1/market", open_timeout=10) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "hello"
        await ws.send(json.dumps({"op": "auth", "id": 1, "token": token}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer["type"] == "authenticated":
            return answer, None
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return answer, closed.rcvd.code if closed.rcvd else None
        raise AssertionError("the connection stayed open after a refused auth")


async def test_guessing_passwords_then_tokens_gets_locked_out(
    settings: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOGIN_FAILURE_LIMIT", str(LIMIT))  # the server's environment
    monkeypatch.setenv("LOGIN_COOLOFF_SECONDS", "900")
    # The server verifies with the real hasher (the suite's fast one is not in its list).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    alice = await database_sync_to_async(get_user_model().objects.create_user)("alice", password=PASSWORD)
    _, good_token = await database_sync_to_async(services.token_create)(user=alice, name="bot")

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        started = time.monotonic()
        responses = await asyncio.to_thread(guess_passwords, base, [f"guess-{n}" for n in range(50)] + [PASSWORD])
        took = time.monotonic() - started
        statuses = [response.status_code for response in responses]
        right = responses[-1]
        assert statuses[: LIMIT - 1] == [200] * (LIMIT - 1)
        assert statuses[LIMIT - 1 :] == [429] * (51 - LIMIT + 1), statuses
        assert "Too many failed log-ins" in right.text and "Try again after" in right.text
        retry_after = int(right.headers["Retry-After"])
        assert 0 < retry_after <= 900
        assert "sessionid" not in right.cookies
        print(
            f"FIGURE password guessing on daphne: 50 wrong then the right one in {took:.1f} s; "
            f"locked out at attempt {statuses.index(429) + 1}; the right password got HTTP {right.status_code}, "
            f"Retry-After {retry_after} s"
        )

        # Staff lift the lockout (as the admin's delete does); then guess tokens from the same address.
        await database_sync_to_async(lambda: AccessAttempt.objects.all().delete())()
        started = time.monotonic()
        answers = [await auth(base, "lf_" + "B" * 43) for _ in range(LIMIT + 1)]
        took = time.monotonic() - started
        assert [(answer["code"], code) for answer, code in answers] == [("auth_failed", 4401)] * (LIMIT - 1) + [("auth_locked", 4423)] * 2
        locked, _ = await auth(base, good_token)
        assert locked["code"] == "auth_locked" and locked["retry_after"] > 0
        print(
            f"FIGURE socket token guessing on daphne: {LIMIT + 1} bad tokens in {took:.1f} s; locked out at attempt {LIMIT} "
            f"(close 4423); a good token from that address is refused for {locked['retry_after']} s"
        )
