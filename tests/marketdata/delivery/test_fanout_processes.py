"""The hub across real processes, through a real Redis: server processes and a feed worker, as deployed.

- Two daphne processes both receive the same stream from one `run_feeds` worker,
  each with ONE Redis subscription per symbol however many sockets it serves.
- A socket that stops reading is closed with 4408 after MARKET_WS_SLOW_SECONDS, under
  daphne (where the hub reads Twisted's write buffer) and under uvicorn (whose `send`
  waits on its transport), while a healthy socket on the same server receives every
  update before the next is published; the closed client resumes from the history.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
import websockets
from websockets.exceptions import ConnectionClosed

from marketdata import groups
from tests.marketdata.api.test_consumer import EPOCH, Feed
from tests.servers import asgi_server, process, stack_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

Frame = dict[str, Any]


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/ws/v1/market"


async def recv(ws: Any, timeout: float = 10) -> Frame:  # noqa: ASYNC109
    """The next frame that is not a heartbeat."""
    async with asyncio.timeout(timeout):
        while True:
            frame: Frame = json.loads(await ws.recv())
            if frame["type"] != "heartbeat":
                return frame


async def subscribe(ws: Any, *channels: str) -> Frame:
    """hello, subscribe, ack; returns the snapshot (one channel)."""
    assert (await recv(ws))["type"] == "hello"
    await ws.send(json.dumps({"op": "subscribe", "id": 1, "channels": list(channels)}))
    assert (await recv(ws))["type"] == "ack"
    snapshot = await recv(ws)
    assert snapshot["type"] == "snapshot"
    return snapshot


async def test_two_server_processes_each_subscribe_once_and_get_the_same_stream_from_one_worker(
    instruments: Any, synthetic_feed: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    env = stack_env(redis_url=redis_url, layer_prefix=layer_prefix)
    redis = aioredis.Redis.from_url(redis_url)
    with (
        asgi_server("daphne", env=env, log=tmp_path / "daphne-a.log") as a,
        asgi_server("daphne", env=env, log=tmp_path / "daphne-b.log") as b,
        process([sys.executable, "manage.py", "run_feeds"], env, tmp_path / "run_feeds.log"),
    ):
        async with AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(websockets.connect(ws_url(base), compression=None)) for base in (a, a, a, b, b, b)]
            for ws in sockets:
                await subscribe(ws, "ticker:BTC-USD")
            # Six sockets, two processes: two subscriptions.
            [(_, subscribers)] = await redis.pubsub_numsub(groups.live_channel(layer_prefix, "BTC-USD"))
            assert subscribers == 2
            streams = []
            for ws in sockets:
                updates = [await recv(ws, timeout=20) for _ in range(8)]
                assert {u["type"] for u in updates} == {"update"}
                streams.append({u["seq"]: u for u in updates})
    await redis.aclose()
    for stream in streams:
        assert sorted(stream) == list(range(min(stream), min(stream) + len(stream)))  # each whole, no gap
        assert {u["epoch"] for u in stream.values()} == {streams[0][min(streams[0])]["epoch"]}  # one worker
    common = set.intersection(*(set(stream) for stream in streams))
    assert len(common) >= 4
    for seq in common:
        assert all(stream[seq] == streams[0][seq] for stream in streams)  # the same frames in both processes


def trades(feed: Feed, n: int = 130) -> Frame:
    """A trades message of about 10 KB."""
    return feed.make(
        "trades:BTC-USD", {"trades": [{"price": "87648.2", "size": "0.015", "side": "buy", "ts": 1795262641000 + i} for i in range(n)]}
    )


async def stalled_client(url: str) -> Any:
    """A client that will stop reading: a small receive buffer and a one-frame queue, so the server's side fills up soon."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    return await websockets.connect(url, sock=sock, max_queue=1, compression=None)


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request: pytest.FixtureRequest) -> str:
    if request.param == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
        pytest.skip("uvicorn is not installed (requirements-dev.txt pins it)")
    return str(request.param)


async def test_a_socket_that_stops_reading_is_closed_with_4408_and_resumes_while_the_others_keep_up(
    server: str, instruments: Any, redis_layer: dict[str, Any], redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    env = {
        **stack_env(redis_url=redis_url, layer_prefix=layer_prefix),
        "MARKET_WS_SLOW_SECONDS": "1",
    }
    log = tmp_path / f"{server}.log"
    feed = Feed()  # the worker, from this process: history, then Redis pub/sub
    with asgi_server(server, env=env, log=log) as base:
        async with AsyncExitStack() as stack:
            healthy = await stack.enter_async_context(websockets.connect(ws_url(base), compression=None))
            slow = await stack.enter_async_context(_closing(await stalled_client(ws_url(base))))
            await subscribe(healthy, "trades:BTC-USD")
            await subscribe(slow, "trades:BTC-USD")
            # The slow client reads nothing from here on. Up to 2 MB/s: its server-side backlog passes the bound
            # (1 MiB by default) once the socket buffers are full, and stays over it for a second, while its outbox
            # stays under the hard limit (4 MiB); the healthy one gets each update before the next is published.
            sent = []
            deadline = time.monotonic() + 90
            while "slow consumer" not in log.read_text():
                assert time.monotonic() < deadline, f"no slow-consumer close after {len(sent)} messages:\n{log.read_text()}"
                message = trades(feed)
                await feed.publish(message)
                update = await recv(healthy)
                assert (update["type"], update["seq"]) == ("update", message["seq"])
                sent.append(message)
                await asyncio.sleep(0.005)
            assert "unsent for" in log.read_text()  # the MARKET_WS_SLOW_SECONDS rule, not the hard limit
            # It reads again, at full speed: what its server had already buffered, then the close frame. (Under
            # daphne within a second: daphne drops a connection that does not answer its close by then.)
            slow.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            received = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        frame = json.loads(await slow.recv())
                        if frame["type"] != "heartbeat":
                            received.append(frame)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
            assert [u["seq"] for u in received] == [m["seq"] for m in sent[: len(received)]]  # a prefix, no gap
            assert len(received) < len(sent)
            # The others never noticed.
            message = trades(feed)
            await feed.publish(message)
            assert (await recv(healthy))["seq"] == message["seq"]
            # The closed client reconnects and resumes: exactly what it missed, from the history.
            last = received[-1]["seq"] if received else 0
            again = await stack.enter_async_context(websockets.connect(ws_url(base), compression=None))
            assert (await recv(again))["type"] == "hello"
            await again.send(json.dumps({"op": "resume", "id": 2, "channels": {"trades:BTC-USD": {"epoch": EPOCH, "seq": last}}}))
            resumed = await recv(again)
            assert (resumed["type"], resumed["recovered"], resumed["from_seq"], resumed["seq"]) == (
                "resumed",
                True,
                last + 1,
                message["seq"],
            )
            replayed = [await recv(again) for _ in range(message["seq"] - last)]
            assert [u["seq"] for u in replayed] == list(range(last + 1, message["seq"] + 1))


class _closing:
    """`async with` for a connection already open."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def __aenter__(self) -> Any:
        return self.ws

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
