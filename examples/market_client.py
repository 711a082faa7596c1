"""A small market-data bot for Livefolio's WebSocket API v1 (`/ws/v1/market`).

Usage:

    python examples/market_client.py [--url URL] [--token TOKEN] [--throttle-ms N] [--duration S] CHANNEL ...

    export LIVEFOLIO_TOKEN=lf_...          # or --token; create one on /profile/
    python examples/market_client.py --url ws://127.0.0.1:8000/ws/v1/market \\
        ticker:BTC-USD trades:BTC-USD book:BTC-USD@depth=10

It connects (as a bot: no Origin header), reads `hello`, authenticates when it has a
token, and subscribes. For every channel it keeps the epoch and the last seq, and checks
that each update is the next one; on a gap it logs it and resumes that channel. It keeps
a local copy of each book, applies every book update and checks the server's checksum;
on a mismatch it subscribes to the channel again for a fresh snapshot. When the
connection drops it reconnects with exponential backoff and full jitter, and resumes every
channel from where it was: each one is either `recovered` (the missed updates are replayed)
or gets a fresh snapshot. A `server_error` (the server failed a request, or dropped a channel whose
history it lost: "subscribe again") is treated the same way: the bot closes, reconnects after the
backoff and resumes every channel, so no channel is left silently unsubscribed. Ctrl-C (or --duration) stops it cleanly with a summary line.

One line per event, its kind first: hello, authenticated, snapshot, update, gap, checksum,
epoch, resumed, error, disconnected, summary. For example:

    update ticker:BTC-USD #42 last 87648.22 bid - ask - chg -
    resumed book:BTC-USD@depth=10 recovered 58..63

It needs only the `websockets` package; the protocol is docs/websocket-api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

Frame = dict[str, Any]
Level = tuple[str, str]  # (price, quantity) exactly as the server wrote them

CHECKSUM_LEVELS = 10  # levels per side the book checksum covers
BACKOFF_BASE, BACKOFF_CAP = 0.5, 30.0  # seconds, as the dashboard reconnects
# Close codes after which reconnecting cannot help (daphne sends the documented 1009 as 4009).
FATAL_CLOSES = {
    4401: "authentication failed: the token is unknown or revoked",
    1009: "a frame was too big",
    4009: "a frame was too big",
}


def book_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """Unsigned CRC32 of the best 10 bids then the best 10 asks (best first), each `price:qty` as sent, joined by `|`."""
    text = "|".join(f"{price}:{qty}" for price, qty in (*bids[:CHECKSUM_LEVELS], *asks[:CHECKSUM_LEVELS]))
    return zlib.crc32(text.encode())


class Book:
    """A local copy of one `book:` channel. Levels are keyed by price, and keep the strings as sent (the checksum uses them)."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Level] = {}
        self.asks: dict[Decimal, Level] = {}

    def load(self, data: Frame) -> None:
        """Replace everything with a snapshot's levels."""
        self.bids.clear()
        self.asks.clear()
        self.apply(data)

    def apply(self, data: Frame) -> None:
        """Apply an update: quantities are absolute, and "0" removes the level."""
        for side, levels in ((self.bids, data.get("bids", [])), (self.asks, data.get("asks", []))):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, qty)

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best `n` bids (highest first) and asks (lowest first)."""
        return [self.bids[p] for p in sorted(self.bids, reverse=True)[:n]], [self.asks[p] for p in sorted(self.asks)[:n]]

    def checksum(self) -> int:
        return book_checksum(*self.top(CHECKSUM_LEVELS))


class RetryLater(Exception):
    """The server answered `server_error`: reconnect after the backoff, then resume everything."""


Verdict = Literal["next", "stale", "gap"]


def seq_verdict(epoch: str, last: int, update: Frame) -> Verdict:
    """How an update follows a channel whose last message was `last` in `epoch`.

    - next: nothing is missing. Its first seq (`first_seq` of a throttled book update, else `seq`)
      is last + 1 in the same epoch, or 1 in a new epoch (the producer restarted).
    - stale: the same epoch, at or before `last`, so already seen.
    - gap: messages are missing.
    """
    first = update.get("first_seq", update["seq"])
    if update["epoch"] != epoch:
        return "next" if first == 1 else "gap"
    if update["seq"] <= last:
        return "stale"
    return "next" if first == last + 1 else "gap"


@dataclass
class Channel:
    name: str
    epoch: str | None = None  # None until a snapshot: a reconnect then subscribes instead of resuming
    seq: int = 0
    # True between a (re)subscribe or resume and the snapshot (or `resumed` recovered) that answers it;
    # updates are dropped meanwhile, since the answer restates or replays them.
    waiting: bool = True
    book: Book | None = None


@dataclass
class Stats:
    updates: int = 0
    gaps: int = 0
    checksum_mismatches: int = 0
    reconnects: int = 0
    recovered: int = 0
    fresh_snapshots: int = 0


@dataclass
class Client:
    """The protocol, without I/O: `handle` takes a server frame and returns the frames to send."""

    channels: list[str]
    token: str | None = None
    throttle_ms: int = 0
    batch: bool = False  # ask for batch frames (one frame per window for all channels)
    say: Callable[[str], None] = print
    state: dict[str, Channel] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    heartbeat_ms: int = 15000
    last_id: int = 0

    def __post_init__(self) -> None:
        for name in self.channels:
            self.state[name] = Channel(name, book=Book() if name.startswith("book:") else None)

    def request(self, op: str, **fields: Any) -> Frame:
        self.last_id += 1
        return {"op": op, "id": self.last_id, **fields}

    def subscribe(self, names: list[str]) -> Frame:
        for name in names:
            self.state[name].waiting = True
        return self.request("subscribe", channels=names, throttle_ms=self.throttle_ms, **self._batch())

    def resume(self, names: list[str]) -> Frame:
        for name in names:
            self.state[name].waiting = True
        positions = {name: {"epoch": self.state[name].epoch, "seq": self.state[name].seq} for name in names}
        return self.request("resume", channels=positions, throttle_ms=self.throttle_ms, **self._batch())

    def _batch(self) -> dict[str, bool]:
        return {"batch": True} if self.batch else {}

    def start(self) -> list[Frame]:
        """After hello (and auth): resume the channels we have a position in, subscribe to the others."""
        known = [name for name, ch in self.state.items() if ch.epoch is not None]
        fresh = [name for name, ch in self.state.items() if ch.epoch is None]
        return ([self.resume(known)] if known else []) + ([self.subscribe(fresh)] if fresh else [])

    def handle(self, frame: Frame) -> list[Frame]:
        kind = frame.get("type")
        if kind == "batch":  # the frames of one window, in order
            return [reply for message in frame["messages"] for reply in self.handle(message)]
        if kind == "hello":
            self.heartbeat_ms = frame["heartbeat_ms"]
            self.say(f"hello v{frame['version']} user {frame['user'] or '-'} heartbeat {frame['heartbeat_ms']} ms")
            return [self.request("auth", token=self.token)] if self.token else self.start()
        if kind == "authenticated":
            self.say(f"authenticated as {frame['user']}")
            return self.start()
        if kind == "snapshot":
            return self.on_snapshot(frame)
        if kind == "update":
            return self.on_update(frame)
        if kind == "resumed":
            return self.on_resumed(frame)
        if kind == "heartbeat":
            return self.on_heartbeat(frame)
        if kind == "error":
            self.say(f"error {frame['code']}: {frame['message']}")
            if frame["code"] == "server_error":
                # The request was undone, or a channel was unsubscribed (its history failed): retry the whole
                # connection after the backoff rather than at once against a server that just failed.
                raise RetryLater(frame["message"])
        return []  # ack (the snapshot that follows restates it), unsubscribed, pong

    def on_snapshot(self, frame: Frame) -> list[Frame]:
        ch = self.state.get(frame["ch"])
        if ch is None:
            return []
        ch.epoch, ch.seq, ch.waiting = frame["epoch"], frame["seq"], False
        if ch.book is not None:
            ch.book.load(frame["data"])
        self.say(f"snapshot {ch.name} epoch {frame['epoch'] or '-'} seq {frame['seq']}{figures(ch, frame['data'])}")
        return self.check_book(ch, frame) if ch.book is not None else []

    def on_update(self, frame: Frame) -> list[Frame]:
        ch = self.state.get(frame["ch"])
        if ch is None or ch.waiting or ch.epoch is None:
            return []
        verdict = seq_verdict(ch.epoch, ch.seq, frame)
        if verdict == "stale":
            return []
        if verdict == "gap":
            self.stats.gaps += 1
            first = frame.get("first_seq", frame["seq"])
            self.say(f"gap {ch.name}: had seq {ch.seq} in epoch {ch.epoch or '-'}, got {first} in epoch {frame['epoch']}; resuming")
            return [self.resume([ch.name])]
        if ch.epoch and frame["epoch"] != ch.epoch:
            self.say(f"epoch {ch.name}: the producer restarted, {ch.epoch} -> {frame['epoch']}")
        ch.epoch, ch.seq = frame["epoch"], frame["seq"]
        self.stats.updates += 1
        if ch.book is not None:
            ch.book.apply(frame["data"])
        self.say(f"update {ch.name} #{frame['seq']}{figures(ch, frame['data'])}")
        return self.check_book(ch, frame) if ch.book is not None else []

    def check_book(self, ch: Channel, frame: Frame) -> list[Frame]:
        """Compare our copy with the server's checksum; a copy that drifted is replaced by a fresh snapshot."""
        assert ch.book is not None
        if "checksum" not in frame["data"] or ch.book.checksum() == frame["data"]["checksum"]:
            return []
        self.stats.checksum_mismatches += 1
        self.say(f"checksum {ch.name} #{frame['seq']}: ours {ch.book.checksum()}, server's {frame['data']['checksum']}; subscribing again")
        return [self.subscribe([ch.name])]  # subscribing again answers a fresh snapshot

    def on_resumed(self, frame: Frame) -> list[Frame]:
        ch = self.state.get(frame["ch"])
        if ch is None:
            return []
        if frame["recovered"]:
            # The missed updates from_seq..seq follow as ordinary updates, then live ones.
            self.stats.recovered += 1
            missed = f"{frame['from_seq']}..{frame['seq']}" if frame["seq"] >= frame["from_seq"] else "(nothing missed)"
            self.say(f"resumed {ch.name} recovered {missed}")
            if (frame["epoch"], frame["from_seq"]) != (ch.epoch, ch.seq + 1):
                self.stats.gaps += 1
                self.say(
                    f"gap {ch.name}: asked to resume after seq {ch.seq} in epoch {ch.epoch or '-'}, the replay starts at {frame['from_seq']}"
                )
            ch.epoch, ch.seq, ch.waiting = frame["epoch"], frame["from_seq"] - 1, False
        else:
            self.stats.fresh_snapshots += 1
            self.say(f"resumed {ch.name} snapshot (not recovered: epoch {frame['epoch'] or '-'} seq {frame['seq']})")
        return []

    def on_heartbeat(self, frame: Frame) -> list[Frame]:
        """The heartbeat names the last seq sent per channel: one we have not seen is a gap."""
        behind = []
        for name, pos in frame["channels"].items():
            ch = self.state.get(name)
            if ch is None or ch.waiting or ch.epoch is None:
                continue
            if pos["epoch"] != ch.epoch or pos["seq"] > ch.seq:
                self.stats.gaps += 1
                self.say(f"gap {name}: heartbeat names seq {pos['seq']} in epoch {pos['epoch'] or '-'}, we have {ch.seq}; resuming")
                behind.append(name)
        return [self.resume(behind)] if behind else []

    def disconnected(self) -> None:
        """Everything has to be restated on the next connection."""
        self.stats.reconnects += 1
        for ch in self.state.values():
            ch.waiting = True

    def summary(self) -> str:
        s = self.stats
        return (
            f"summary: {s.updates} updates, {s.gaps} gaps, {s.checksum_mismatches} checksum mismatches, "
            f"{s.reconnects} reconnects, {s.recovered} recovered, {s.fresh_snapshots} fresh snapshots"
        )


def figures(ch: Channel, data: Frame) -> str:
    """The few numbers worth a glance, per kind of channel."""
    kind = ch.name.split(":", 1)[0]
    if not data:
        return " (no data yet)"
    if kind == "ticker":
        change = f"{data['change_pct']}%" if data["change_pct"] is not None else "-"
        return f" last {data['last']} bid {data['bid'] or '-'} ask {data['ask'] or '-'} chg {change}"
    if kind == "trades" and data.get("trades"):
        last = data["trades"][-1]
        return f" {len(data['trades'])} trades, last {last['price']} x {last['size']} {last['side'] or ''}".rstrip()
    if kind == "candles":
        candle = data.get("candle") or (data.get("candles") or [{}])[-1]
        if candle:
            closed = " closed" if candle.get("closed") else ""
            return f" o {candle['open']} h {candle['high']} l {candle['low']} c {candle['close']} v {candle['volume']}{closed}"
    if kind == "book" and ch.book is not None:
        bids, asks = ch.book.top(1)
        best_bid = f"{bids[0][0]} x {bids[0][1]}" if bids else "-"
        best_ask = f"{asks[0][0]} x {asks[0][1]}" if asks else "-"
        return f" bid {best_bid} | ask {best_ask} ({len(ch.book.bids)}/{len(ch.book.asks)} levels)"
    if kind == "portfolio":
        return f" {len(data.get('portfolios', []))} portfolio views"
    return ""


async def run(client: Client, url: str, stop: asyncio.Event) -> int:
    """Connect, and reconnect with backoff until `stop`; 0 when stopped, 2 after a fatal close."""
    attempt = 0
    while not stop.is_set():
        reason = ""
        try:
            async with connect(url, open_timeout=10, max_size=2**22) as ws:  # no Origin: a bot, not a browser
                attempt = await session(client, ws, stop, attempt)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            if code in FATAL_CLOSES:
                client.say(f"disconnected (code {code}): {FATAL_CLOSES[code]}; giving up")
                return 2
            reason = f"code {code}"
        except RetryLater as exc:
            reason = f"server_error: {exc}"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            if isinstance(exc, InvalidURI):
                raise
            reason = f"{type(exc).__name__}: {exc}"
        if stop.is_set():
            break
        # Exponential backoff with full jitter: a random wait up to base * 2^attempt, capped.
        delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
        attempt += 1
        client.disconnected()
        client.say(f"disconnected ({reason}); reconnecting in {delay:.2f} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return 0


async def session(client: Client, ws: ClientConnection, stop: asyncio.Event, attempt: int) -> int:
    """One connection, until it closes or `stop`. Returns the backoff attempt, reset by the first frame."""
    stopper = asyncio.create_task(stop.wait())
    try:
        while True:
            # A live connection hears at least a heartbeat every heartbeat_ms; silence means it is dead.
            receive = asyncio.create_task(ws.recv())
            done, _ = await asyncio.wait({receive, stopper}, timeout=3 * client.heartbeat_ms / 1000, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                receive.cancel()
                await ws.close(1000, "bye")
                return attempt
            if receive not in done:
                receive.cancel()
                raise TimeoutError(f"no frame for {3 * client.heartbeat_ms} ms")
            attempt = 0
            for reply in client.handle(json.loads(receive.result())):
                await ws.send(json.dumps(reply))
    finally:
        stopper.cancel()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "channels", nargs="+", metavar="CHANNEL", help="ticker:SYM, trades:SYM, candles:SYM@1m, book:SYM@depth=N, portfolio[:ID]"
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws/v1/market")
    parser.add_argument("--token", default=os.environ.get("LIVEFOLIO_TOKEN"), help="API token (default: $LIVEFOLIO_TOKEN)")
    parser.add_argument("--throttle-ms", type=int, default=0, help="at most one update per channel per interval (0 to 60000)")
    parser.add_argument("--batch", action="store_true", help="ask for batch frames: one frame per window for all channels")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    client = Client(
        list(dict.fromkeys(args.channels)),
        token=args.token or None,
        throttle_ms=args.throttle_ms,
        batch=args.batch,
        say=lambda line: print(line, flush=True),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
            loop.add_signal_handler(sig, stop.set)
    if args.duration is not None:
        loop.call_later(args.duration, stop.set)
    try:
        return await run(client, args.url, stop)
    finally:
        client.say(client.summary())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
