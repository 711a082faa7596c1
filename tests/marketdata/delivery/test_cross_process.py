"""A tick published by `run_feeds` in one process reaches a consumer served by daphne in another, through Redis."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async

from portfolio.models import Portfolio
from tests.conftest import session_cookie
from tests.servers import live_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


async def test_a_tick_from_the_feed_process_reaches_a_browser_socket_on_daphne(
    alice: Any, alice_portfolio: Portfolio, synthetic_feed: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    cookie = (await database_sync_to_async(session_cookie)(alice)).decode()
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        url = base.replace("http", "ws", 1) + "/ws/portfolio/"
        async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": base}) as ws:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            before = {row["symbol"]: row["price_ts"] for row in snapshot["portfolios"][0]["rows"]}
            async with asyncio.timeout(15):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "update":
                        break
    rows = frame["portfolios"][0]["rows"]
    assert rows, "an update carries at least one changed row"
    for row in rows:
        assert row["price_ts"] > before[row["symbol"]]  # a new price, stamped by the feed process
        assert row["market_value"] is not None
    assert frame["portfolios"][0]["id"] == alice_portfolio.pk
