"""Anonymous re-subscribe flood against a real daphne, a real Redis and a real feed worker (issue 13, finding 1).

The attack as it was measured against a running install: anonymous sockets, each
re-subscribing to 72 channels every 50 ms and reading nothing back. Scaled to the
test machine: 40 sockets for 5 s. Meanwhile a well-behaved client holds one ticker
and pings; it must keep getting updates and pongs throughout. Within 5 s of the
attackers closing, the daphne process must be idle again (under 10 % of a core
over a second, read from /proc/<pid>/stat).

The per-address limit on anonymous connections is raised for this test so that
every attacker gets in: what is measured is the bound on each connection's work
(its request queue, re-subscribes answered without snapshots, its tasks cancelled
when it goes), not the admission limits, which have tests of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets

from marketdata.models import AssetClass, Instrument, Quote
from tests.conftest import T0, until
from tests.servers import free_port, process, stack_env, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

SYMBOLS = [f"F{i:02d}-USD" for i in range(18)]
CHANNELS = [name for s in SYMBOLS for name in (f"ticker:{s}", f"trades:{s}", f"candles:{s}@1m", f"book:{s}@depth=10")]
ATTACKERS = 40
ATTACK_SECONDS = 5.0
ATTACK_INTERVAL = 0.05
# The well-behaved client: the longest it may wait for a frame (an update or a pong) during the attack.
MAX_SILENCE = 2.0
MAX_PONG = 2.0
IDLE_CPU = 0.10
IDLE_WITHIN = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def cpu_share(pid: int, window: float = 1.0) -> float:
    """The share of one core process `pid` used over the next `window` seconds."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return (cpu_seconds(pid) - start) / (time.monotonic() - t0)


def make_instruments() -> None:
    for symbol in SYMBOLS:
        inst = Instrument.objects.create(symbol=symbol, name=symbol, asset_class=AssetClass.CRYPTO, quote_currency="USD")
        Quote.objects.create(instrument=inst, price=Decimal("100"), exchange_ts=T0, seq=0, source="test")


class Watcher:
    """The well-behaved client: one ticker, a ping every 200 ms; records the longest silence and the slowest pong."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.updates = 0
        self.last_frame = time.monotonic()
        self.max_silence = 0.0
        self.pings: dict[int, float] = {}
        self.max_pong = 0.0
        self.measuring = False

    async def read(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            if self.measuring:
                self.max_silence = max(self.max_silence, now - self.last_frame)
            self.last_frame = now
            frame = json.loads(raw)
            if frame["type"] == "update":
                self.updates += 1
            elif frame["type"] == "pong":
                sent = self.pings.pop(frame["id"], None)
                if sent is not None and self.measuring:
                    self.max_pong = max(self.max_pong, now - sent)

    async def ping(self) -> None:
        n = 0
        while True:
            n += 1
            self.pings[n] = time.monotonic()
            await self.ws.send(json.dumps({"op": "ping", "id": n}))
            await asyncio.sleep(0.2)

    def outstanding(self) -> float:
        """How long the oldest unanswered ping has waited."""
        return max((time.monotonic() - sent for sent in self.pings.values()), default=0.0)


async def attack(url: str, stop: float) -> int:
    """One attacker: re-subscribe to every channel every 50 ms until `stop`, reading nothing. Returns the frames sent."""
    sent = 0
    try:
        async with websockets.connect(url, compression=None, max_queue=1, open_timeout=10, close_timeout=1) as ws:
            frame = json.dumps({"op": "subscribe", "channels": CHANNELS})
            while time.monotonic() < stop:
                await ws.send(frame)
                sent += 1
                await asyncio.sleep(ATTACK_INTERVAL)
    except (OSError, websockets.exceptions.WebSocketException, TimeoutError):
        pass  # closed by the server (a limit), or refused: the attacker just stops
    return sent


async def test_an_anonymous_resubscribe_flood_neither_starves_a_client_nor_outlives_the_attack(
    transactional_db: None, synthetic_feed: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(make_instruments)
    env = {**stack_env(redis_url=redis_url, layer_prefix=layer_prefix), "MARKET_WS_ANONYMOUS_PER_ADDRESS": str(ATTACKERS + 10)}
    port = free_port()
    log = tmp_path / "daphne.log"
    url = f"ws://127.0.0.1:{port}/ws/v1/market"
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    with process(args, env, log) as daphne, process([sys.executable, "manage.py", "run_feeds"], env, tmp_path / "run_feeds.log"):
        wait_for_port(port, daphne, log)
        async with AsyncExitStack() as stack:
            ws = await stack.enter_async_context(websockets.connect(url, compression=None))
            await ws.send(json.dumps({"op": "subscribe", "id": "w", "channels": ["ticker:F00-USD"]}))
            watcher = Watcher(ws)
            tasks = [asyncio.create_task(watcher.read()), asyncio.create_task(watcher.ping())]
            try:
                await until(lambda: watcher.updates >= 3, timeout=30, what="updates from the feed worker")
                baseline = await cpu_share(daphne.pid)

                watcher.measuring = True
                stop = time.monotonic() + ATTACK_SECONDS
                attackers = [asyncio.create_task(attack(url, stop)) for _ in range(ATTACKERS)]
                busy_during = cpu_share(daphne.pid, ATTACK_SECONDS)
                updates_before = watcher.updates
                attack_cpu, frames = await asyncio.gather(busy_during, asyncio.gather(*attackers))
                updates_during = watcher.updates - updates_before
                watcher.max_silence = max(watcher.max_silence, time.monotonic() - watcher.last_frame)
                max_pong = max(watcher.max_pong, watcher.outstanding())
                watcher.measuring = False

                # The attackers are gone: the process must settle.
                closed = time.monotonic()
                shares = []
                while True:
                    share = await cpu_share(daphne.pid)
                    shares.append(share)
                    if share < IDLE_CPU or time.monotonic() - closed > IDLE_WITHIN + 5:
                        break
                idle_after = time.monotonic() - closed
            finally:
                for task in tasks:
                    task.cancel()
    killed = log.read_text().count("took too long to shut down and was killed")
    print(
        f"FIGURE socket flood: {ATTACKERS} anonymous sockets x {len(CHANNELS)} channels every {ATTACK_INTERVAL * 1000:.0f} ms "
        f"for {ATTACK_SECONDS:.0f} s ({sum(frames)} frames sent); daphne CPU idle {baseline:.0%}, during the attack "
        f"{attack_cpu:.0%}; well-behaved client: {updates_during} updates, longest silence {watcher.max_silence:.2f} s, "
        f"slowest pong {max_pong:.2f} s; after the attack: CPU under {IDLE_CPU:.0%} after {idle_after:.1f} s "
        f"(windows: {', '.join(f'{s:.0%}' for s in shares)}); instances killed by daphne: {killed}"
    )
    assert watcher.max_silence < MAX_SILENCE, f"the well-behaved client heard nothing for {watcher.max_silence:.2f} s"
    assert max_pong < MAX_PONG, f"a ping waited {max_pong:.2f} s for its pong"
    assert shares[-1] < IDLE_CPU and idle_after <= IDLE_WITHIN + 1.0, f"daphne still busy {idle_after:.1f} s after the attack: {shares}"
    assert killed == 0, f"daphne killed {killed} application instances that did not shut down in time"
