"""API tokens on /ws/v1/market under the login lockout (config/lockout.py): bad tokens lock the client's address out.

Through the full ASGI application, as tests/marketdata/api/test_consumer.py; each
connection comes from the address its handshake scope names.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import yaml
from axes.models import AccessAttempt
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from marketdata import services
from marketdata.api.session import CLOSE_AUTH_FAILED, CLOSE_AUTH_LOCKED
from tests.test_asyncapi import DOCS, payload_pointer, validator

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/ws/v1/market"
LIMIT = 5
COOL_OFF = timedelta(minutes=15)
ATTACKER, OTHER = "203.0.113.7", "198.51.100.20"
BAD_TOKEN = "lf_" + "A" * 43
ASYNCAPI = (DOCS / "asyncapi.yaml").read_text()


@pytest.fixture(autouse=True)
def lockout_settings(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOL_OFF
    settings.TRUSTED_PROXIES = []


async def auth_from(address: str, token: str) -> tuple[dict[str, Any], int | None]:
    """One connection from `address` sending `auth`: the answer, and the close code if it was closed (None if not)."""
    communicator = WebsocketCommunicator(application, URL)
    communicator.scope["client"] = (address, 40000)
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert (await communicator.receive_json_from(timeout=3))["type"] == "hello"
        await communicator.send_to(text_data=json.dumps({"op": "auth", "id": 1, "token": token}))
        answer: dict[str, Any] = await communicator.receive_json_from(timeout=5)
        if answer["type"] == "authenticated":
            return answer, None
        output = await communicator.receive_output(timeout=3)
        assert output["type"] == "websocket.close", output
        return answer, int(output["code"])
    finally:
        await communicator.disconnect()


async def token_for(user: Any) -> str:
    _, plaintext = await database_sync_to_async(services.token_create)(user=user, name="bot")
    return plaintext


async def test_guessing_tokens_locks_the_address_out(alice: Any, instruments: Any) -> None:
    token = await token_for(alice)
    answers = [await auth_from(ATTACKER, BAD_TOKEN) for _ in range(LIMIT + 2)]
    codes = [(answer["code"], close) for answer, close in answers]

    assert codes == [("auth_failed", CLOSE_AUTH_FAILED)] * (LIMIT - 1) + [("auth_locked", CLOSE_AUTH_LOCKED)] * 3
    locked = answers[-1][0]
    assert locked["id"] == 1 and 15 * 60 - 5 <= locked["retry_after"] <= 15 * 60
    assert "try again in" in locked["message"]
    doc = yaml.safe_load(ASYNCAPI)
    assert validator(doc, payload_pointer(doc, "error")).is_valid(locked)
    # While locked out, even a good token from that address is refused unchecked; other addresses are not affected.
    assert (await auth_from(ATTACKER, token))[0]["code"] == "auth_locked"
    assert (await auth_from(OTHER, token))[0] == {"type": "authenticated", "id": 1, "user": "alice"}
    print(f"FIGURE socket token guessing: address locked out after {LIMIT} bad tokens (close {CLOSE_AUTH_LOCKED})")


async def test_token_failures_count_per_address_and_never_under_a_username(alice: Any, instruments: Any) -> None:
    for _ in range(LIMIT - 1):
        await auth_from(ATTACKER, BAD_TOKEN)
    for _ in range(LIMIT - 1):
        await auth_from(OTHER, BAD_TOKEN)

    rows = await database_sync_to_async(lambda: list(AccessAttempt.objects.values_list("username", "ip_address", "path_info")))()
    assert sorted(rows) == [(None, OTHER, URL), (None, ATTACKER, URL)]
    token = await token_for(alice)
    assert (await auth_from(OTHER, token))[0]["type"] == "authenticated"


async def test_an_address_locked_on_the_login_page_is_locked_on_the_socket(alice: Any, instruments: Any) -> None:
    def guess_passwords() -> None:
        client = Client()
        for n in range(LIMIT):
            client.post("/accounts/login/", {"username": f"user{n}", "password": "guess"}, REMOTE_ADDR=ATTACKER)

    await database_sync_to_async(guess_passwords)()
    token = await token_for(alice)

    assert (await auth_from(ATTACKER, token))[0]["code"] == "auth_locked"


async def test_a_reset_by_staff_unlocks_the_socket(alice: Any, admin_user: Any, instruments: Any) -> None:
    for _ in range(LIMIT):
        await auth_from(ATTACKER, BAD_TOKEN)
    token = await token_for(alice)
    assert (await auth_from(ATTACKER, token))[0]["code"] == "auth_locked"

    def staff_reset() -> int:
        staff = Client()
        staff.force_login(admin_user)
        ids = list(AccessAttempt.objects.values_list("pk", flat=True))
        response = staff.post("/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
        return response.status_code

    assert await database_sync_to_async(staff_reset)() == 302
    assert (await auth_from(ATTACKER, token))[0]["type"] == "authenticated"
