"""The bare `websockets` broadcast server of bench/fanout.py: the Python limit, with no framework.

    python -m bench.bare_ws serve --port 8765 --redis redis://127.0.0.1:6379/0 --channel bench:ticks

One process, one asyncio loop, one Redis pub/sub subscription. Each tick published on the
channel (by `python -m bench.fanout publish --system bare`, one PUBLISH per tick) is parsed
once, serialised once into the same update frame the other systems send, and handed to
`websockets.broadcast()` for the sockets subscribed to its symbol.

Why this is a fair reference: the ticks reach it the way they reach the other systems, from a
separate publisher process through Redis, and the server pays for reading them; it sends one
frame per tick per subscriber, as the naive baseline does (no conflation, no batching); the
frames are the same bytes. What it leaves out is everything a product needs: auth, limits,
snapshots, history, resume, backpressure beyond websockets' own ping timeout.

It speaks the subset of `/ws/v1/market` the load generator uses: `subscribe` is answered with
an `ack` carrying each channel's epoch and seq, then updates follow from seq + 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve

EPOCH = "1"  # one publisher run per server run: the epoch never changes


def tick_payload(symbol: str, seq: int, ts: int, price: str) -> str:
    """What the publisher puts on the channel for one tick."""
    return json.dumps({"s": symbol, "q": seq, "t": ts, "p": price}, separators=(",", ":"))


def update_frame(symbol: str, seq: int, ts: int, price: str) -> str:
    """The update frame every system sends: the fields Livefolio's ticker carries for a trade-only tick."""
    data = {"last": price, "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False}
    frame = {"type": "update", "ch": f"ticker:{symbol}", "epoch": EPOCH, "seq": seq, "ts": ts, "data": data}
    return json.dumps(frame, separators=(",", ":"))  # compact, as Livefolio sends it


class Server:
    def __init__(self) -> None:
        self.subscribers: defaultdict[str, set[ServerConnection]] = defaultdict(set)
        self.heads: dict[str, int] = {}  # symbol → seq of its last tick

    async def handler(self, ws: ServerConnection) -> None:
        mine: set[str] = set()
        try:
            async for raw in ws:
                request = json.loads(raw)
                if request.get("op") != "subscribe":
                    await ws.send(json.dumps({"type": "error", "id": request.get("id"), "code": "unknown_op"}))
                    continue
                acked = []
                for name in request.get("channels", []):
                    symbol = str(name).partition(":")[2]
                    self.subscribers[symbol].add(ws)
                    mine.add(symbol)
                    seq = self.heads.get(symbol, 0)
                    acked.append({"ch": name, "epoch": EPOCH if seq else "", "seq": seq})
                await ws.send(json.dumps({"type": "ack", "id": request.get("id"), "channels": acked}))
        finally:
            for symbol in mine:
                self.subscribers[symbol].discard(ws)

    async def pump(self, redis_url: str, channel: str) -> None:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            tick = json.loads(message["data"])
            symbol, seq = tick["s"], tick["q"]
            self.heads[symbol] = seq
            connections = self.subscribers.get(symbol)
            if connections:
                broadcast(connections, update_frame(symbol, seq, tick["t"], tick["p"]))


async def run_server(port: int, redis_url: str, channel: str) -> None:
    server = Server()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # compression=None: no system under test compresses (the load generator offers no permessage-deflate anyway).
    async with serve(server.handler, "127.0.0.1", port, compression=None, backlog=1024):
        pump = asyncio.ensure_future(server.pump(redis_url, channel))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({pump, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if pump.done():
            pump.result()  # the subscription failed: say why
        pump.cancel()


async def publish(source: Any, stop: asyncio.Event, *, redis_url: str, channel: str) -> dict[str, Any]:
    """One PUBLISH per tick (pipelined per batch of due ticks), until `stop`."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        async for batch in source.batches(stop):
            pipe = client.pipeline(transaction=False)
            for tick in batch:
                pipe.publish(channel, tick_payload(tick.symbol, tick.seq, tick.ts, tick.price))
            await pipe.execute()
    finally:
        await client.aclose()
    return {}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_args = sub.add_parser("serve")
    serve_args.add_argument("--port", type=int, required=True)
    serve_args.add_argument("--redis", required=True)
    serve_args.add_argument("--channel", required=True)
    args = parser.parse_args(argv)
    asyncio.run(run_server(args.port, args.redis, args.channel))


if __name__ == "__main__":
    main(sys.argv[1:])
