"""Redis killed and started again (empty) under a replaying worker, a market client and a dashboard (issue 13, finding 2).

The worker must not exit; clients get 1013 or a fresh snapshot, never 1011 or an HTTP
500; they recover under a new epoch; and at the end the values equal those of an
undisturbed replay of the same file.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async

from marketdata.events import Trade
from marketdata.feeds import native
from portfolio.models import Portfolio
from tests.conftest import T0, session_cookie
from tests.faults.processes import Socket, redis_server
from tests.servers import manage, restartable_daphne, stack_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

D = Decimal
SECONDS = 10  # of recorded time, replayed at ×1
STEP = 0.05
OUTAGE_SECONDS = 2.5
SYMBOLS = ("AAPL", "BTC-USD")
RETRY = {"MARKETDATA_RETRY_SECONDS": "0.1", "MARKETDATA_RETRY_MAX_SECONDS": "0.5"}


def recording(path: Path) -> dict[str, Decimal]:
    """A native recording of both symbols, a trade each every STEP seconds; returns the last price of each."""
    last = {}
    with path.open("w") as out:
        for i in range(int(SECONDS / STEP)):
            at = T0 + timedelta(days=1, seconds=i * STEP)
            for symbol, price in (("AAPL", D(200) + D(i) / 100), ("BTC-USD", D(60000) + D(i))):
                out.write(native.encode(Trade(symbol, at, price, D(1), "test", side="buy")) + "\n")
                last[symbol] = price
    return last


def market_frames(socket: Socket) -> list[dict[str, Any]]:
    return [frame for _, frame in socket.frames if frame.get("type") in ("snapshot", "update") and "ch" in frame]


def dashboard_total(socket: Socket) -> str | None:
    totals = [frame["portfolios"][0]["totals"]["total_value"] for _, frame in socket.frames if frame.get("portfolios")]
    return totals[-1] if totals else None


def last_prices(socket: Socket) -> dict[str, str]:
    return {frame["ch"].partition(":")[2]: frame["data"]["last"] for frame in market_frames(socket) if frame["data"].get("last")}


async def until(condition: Any, timeout: float, what: str) -> float:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


async def fresh_state(base: str, cookie: str) -> tuple[dict[str, str], str]:
    """What a client connecting now sees: each ticker's last price, and the dashboard's total value."""
    ws_base = base.replace("http", "ws", 1)
    async with websockets.connect(ws_base + "/ws/v1/market") as ws:
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "channels": [f"ticker:{s}" for s in SYMBOLS]}))
        prices: dict[str, str] = {}
        async with asyncio.timeout(10):
            while len(prices) < len(SYMBOLS):
                frame = json.loads(await ws.recv())
                if frame.get("type") == "snapshot":
                    prices[frame["ch"].partition(":")[2]] = frame["data"]["last"]
    async with websockets.connect(ws_base + "/ws/portfolio/", additional_headers={"Cookie": cookie, "Origin": base}) as ws:
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return prices, snapshot["portfolios"][0]["totals"]["total_value"]


async def test_a_redis_restart_under_a_replay_loses_no_worker_and_clients_recover_to_the_reference_values(
    alice: Any, alice_portfolio: Portfolio, layer_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "session.jsonl"
    last = recording(path)
    cookie = (await database_sync_to_async(session_cookie)(alice)).decode()
    (tmp_path / "redis").mkdir()
    with (
        redis_server(tmp_path / "redis") as redis,
        restartable_daphne(redis_url=redis.url, layer_prefix=layer_prefix, logs=tmp_path / "logs") as daphne,
    ):
        env = stack_env(redis_url=redis.url, layer_prefix=layer_prefix) | RETRY

        # The reference: the same file replayed with nothing disturbed.
        reference_run = manage("replay_feed", str(path), "--speed", "max", "--no-progress", env=env, log=tmp_path / "reference.log")
        assert await asyncio.to_thread(reference_run.wait, 60) == 0, (tmp_path / "reference.log").read_text()
        reference_prices, reference_total = await fresh_state(daphne.url, cookie)
        assert reference_prices == {symbol: str(price) for symbol, price in last.items()}

        ws_base = daphne.url.replace("http", "ws", 1)
        subscribe = {"op": "subscribe", "id": 1, "channels": [f"ticker:{s}" for s in SYMBOLS]}
        market = Socket(ws_base + "/ws/v1/market", hello=subscribe)
        dashboard = Socket(ws_base + "/ws/portfolio/", headers={"Cookie": cookie, "Origin": daphne.url})
        stop = asyncio.Event()
        clients = [asyncio.create_task(socket.run(stop)) for socket in (market, dashboard)]
        await until(lambda: dashboard_total(dashboard) == reference_total and len(market_frames(market)) >= 2, 15, "both clients")
        worker_log = tmp_path / "worker.log"
        worker = manage("replay_feed", str(path), "--speed", "1", "--no-progress", env=env, log=worker_log)
        try:
            old_epochs = {frame["epoch"] for frame in market_frames(market)}
            await until(lambda: any(f["epoch"] not in old_epochs for f in market_frames(market)), 15, "the replay's first update")
            before = {frame["epoch"] for frame in market_frames(market)}
            await asyncio.sleep(1)  # a second of live updates, then the outage

            redis.stop()
            down = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: its length is the scenario, not a wait for a condition
            assert worker.poll() is None, f"the worker exited during the outage:\n{worker_log.read_text()}"
            redis.start()
            up = time.monotonic()

            # Counted from Redis's return for both clients: either may be first to get the new epoch.
            seen, dash_seen = len(market.frames), len(dashboard.frames)
            market_back = await until(
                lambda: any(f["epoch"] not in before for _, f in market.frames[seen:] if "epoch" in f),
                20,
                "the market client on a new epoch",
            )

            def dashboard_fresh() -> bool:
                return any(
                    row.get("price_epoch") not in (None, *before)
                    for _, frame in dashboard.frames[dash_seen:]
                    for portfolio in frame.get("portfolios") or ()
                    for row in portfolio["rows"]
                )

            # Usually well under a second. Before `outage._prompt_receive`, about one run in six under load: a handshake
            # that failed on the outage went unanswered (channels-redis' receive ignored its cancellation), and the client
            # gave up on it; it now gets 1013 at once, and the client's next try gets the fresh snapshot.
            dashboard_back = await until(dashboard_fresh, 20, "the dashboard on a new epoch")
            assert await asyncio.to_thread(worker.wait, 60) == 0, worker_log.read_text()
            await until(lambda: last_prices(market) == reference_prices, 15, "the market client at the reference prices")
            await until(lambda: dashboard_total(dashboard) == reference_total, 15, "the dashboard at the reference value")
        finally:
            stop.set()
            if worker.poll() is None:
                worker.kill()
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

        log = worker_log.read_text()
        # Once per outage, not per tick. Seen once in 12 runs under load: a pooled connection made before the restart
        # failed once more just after Redis was back, a second outage of 0.1 s (its 4 messages dropped, counted and
        # published afresh under a new epoch); never more.
        unreachable = log.count("Redis is unreachable")
        assert 1 <= unreachable <= 2, log
        assert log.count("Redis is back") == unreachable, log
        assert "Traceback" not in log, log
        for socket in (market, dashboard):
            assert set(socket.closes) <= {1013}, f"{socket.url}: closed with {socket.closes}"
            assert not socket.statuses, f"{socket.url}: handshakes answered {socket.statuses}"
        assert (await fresh_state(daphne.url, cookie)) == (reference_prices, reference_total)
    print(
        f"\nFIGURE redis outage {up - down:.1f} s: market client on a new epoch {market_back - up:.2f} s after Redis returned, "
        f"dashboard {dashboard_back - up:.2f} s; closes market {market.closes} dashboard {dashboard.closes}; "
        f"handshakes that failed otherwise: market {market.failures} dashboard {dashboard.failures}; "
        f"final prices {reference_prices} and total value {reference_total} equal the undisturbed replay's"
    )


async def test_a_redis_restart_under_run_feeds_loses_no_worker_and_live_prices_come_back_on_a_new_epoch(
    alice: Any, alice_portfolio: Portfolio, synthetic_feed: Any, layer_prefix: str, tmp_path: Path
) -> None:
    """The live path: `run_feeds` (its synthetic connector keeps running through the outage) under a market client."""
    (tmp_path / "redis").mkdir()
    with (
        redis_server(tmp_path / "redis") as redis,
        restartable_daphne(redis_url=redis.url, layer_prefix=layer_prefix, logs=tmp_path / "logs") as daphne,
    ):
        env = stack_env(redis_url=redis.url, layer_prefix=layer_prefix) | RETRY
        worker_log = tmp_path / "run_feeds.log"
        worker = manage("run_feeds", env=env, log=worker_log)
        market = Socket(
            daphne.url.replace("http", "ws", 1) + "/ws/v1/market",
            hello={"op": "subscribe", "id": 1, "channels": [f"ticker:{s}" for s in SYMBOLS]},
        )
        stop = asyncio.Event()
        client = asyncio.create_task(market.run(stop))
        try:
            await until(lambda: len([f for f in market_frames(market) if f["type"] == "update"]) >= 4, 20, "live updates")
            before = {frame["epoch"] for frame in market_frames(market)}
            redis.stop()
            down = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: its length is the scenario, not a wait for a condition
            assert worker.poll() is None, f"run_feeds exited during the outage:\n{worker_log.read_text()}"
            redis.start()
            up = time.monotonic()
            seen = len(market.frames)

            def fresh(kind: str) -> bool:
                return any(f.get("type") == kind and f.get("epoch") not in before for _, f in market.frames[seen:])

            back = await until(lambda: fresh("snapshot") or fresh("update"), 20, "the market client on a new epoch")
            await until(lambda: fresh("update"), 20, "live updates after the outage")
            assert worker.poll() is None, worker_log.read_text()
        finally:
            stop.set()
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
            if worker.poll() is None:
                worker.terminate()
                await asyncio.to_thread(worker.wait, 30)
    log = worker_log.read_text()
    assert log.count("Redis is unreachable") == 1, log
    assert log.count("Redis is back") == 1, log
    assert "Traceback" not in log, log
    assert set(market.closes) <= {1013}, market.closes
    assert not market.statuses, market.statuses
    print(
        f"\nFIGURE redis outage under run_feeds {up - down:.1f} s: the worker kept running; live updates on a new epoch {back - up:.2f} s after Redis returned; closes {market.closes}"
    )
