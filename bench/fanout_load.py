"""The load generator of bench/fanout.py: many WebSocket clients in one process (picows on uvloop).

Started by bench/fanout.py, pinned to CPU 1; the server under test has CPU 0. It speaks the
documented `/ws/v1/market` protocol (docs/websocket-api.md), which the naive baseline and the
bare websockets server speak too, or, with `--dashboard`, is a signed-in browser on
`/ws/portfolio/` (see "Dashboards" below). The market protocol:

- client → server: `{"op": "subscribe", "id": 1, "channels": ["ticker:SYM", ...]}`;
- server → client: an `ack` (its channel entries may carry `epoch` and `seq`), a `snapshot` per
  channel where the server sends them, then `{"type": "update", "ch", "epoch", "seq", "ts", "data"}`.
  An update may carry `first_seq` (it stands for first_seq..seq); a text frame holding a JSON
  array is read as several frames.

Every update is checked against its channel's (epoch, seq): within an epoch the next update
must start at the last seq + 1, else the missing seqs count as gaps (an overlap counts as a
duplicate). A snapshot after the first one on a channel is counted as unprompted. Staleness is
the wall clock at receipt minus the update's `ts` (exchange time, epoch ms), kept per second of
the measured window.

Control: one JSON object per line on stdout (`ready`, `warm`, `result`), commands on stdin
(`start` and `stop` bound the measured window, `go` continues an idle run, `quit` closes every
socket and exits). Logs go to stderr.

Modes:
- load (default): `--sockets` clients, client i subscribed to `--per-socket` tickers, symbols
  i*k .. i*k+k-1 (mod the symbol count), so every symbol has the same number of subscribers.
  `--slow` adds one more client that subscribes to every symbol (up to 100) and then never reads:
  a raw socket with a 4 KB receive buffer; its local port is reported so bench/fanout.py can
  watch whether the server lets it go.
- idle (`--idle`): `--warm` connections first (report `warm`, wait for `go`), then `--sockets`
  more, none subscribed (report `ready`, wait for `quit`).

Dashboards (`--dashboard`): each client opens `/ws/portfolio/` as a browser does, with a session
cookie (client i takes session i mod their count from `--sessions`, a JSON file bench/fanout.py
writes) and an `Origin` header. `--concurrency` dashboards are in flight at a time, each from
the start of its WebSocket open until its `snapshot` frame arrives: that span is its snapshot
latency, and `connect_s` runs from the first open to the last snapshot. From the snapshot on,
the client keeps each held symbol's (price_epoch, price_seq). In an `update` frame every row of
`portfolios[*].rows` that carries a price_seq (holdings; cash rows carry none, `combined` is not
read) is checked against it:
- a new epoch, or a higher seq in the same epoch, is a delivery; its staleness is the wall clock
  at receipt minus the row's `price_ts` (the price's exchange time);
- a seq more than one higher skips seqs (`skipped`): legitimate, the server coalesces prices
  arriving within one frame's delay;
- the same seq again is a `repeat` (not a delivery), a lower one goes `backwards` (a bug).
Deliveries, frames, staleness and skips are counted in the measured window; `backwards` over
the whole run. With `--idle` the dashboards are opened as in idle mode (`warm`, `go`, `ready`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

loads: Callable[[bytes], Any]
try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - requirements-bench.txt installs it
    loads = json.loads

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
SLOW_RCVBUF = 4096
MAX_SUBSCRIPTIONS = 100  # Livefolio's default MARKET_WS_MAX_SUBSCRIPTIONS


def log(message: str) -> None:
    print(f"fanout_load: {message}", file=sys.stderr, flush=True)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def percentiles(values: Any) -> dict[str, float | None]:
    import numpy as np

    if len(values) == 0:
        return {"p50": None, "p99": None, "max": None, "mean": None, "n": 0}
    data = np.frombuffer(values, dtype=np.float64) if isinstance(values, array) else np.asarray(values, dtype=np.float64)
    p50, p99 = np.percentile(data, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(data.max()), "mean": float(data.mean()), "n": int(data.size)}


class Stats:
    """Everything the clients saw; the measured window is [t0, t1) in wall-clock ms."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.measuring = False
        self.updates = 0  # in the window
        self.updates_total = 0
        self.latency: list[array[float]] = []  # staleness ms, per second of the window
        self.prefix_seconds = 0  # also report staleness over the first this many seconds of the window
        self.gaps = 0  # missing seqs within an epoch
        self.gap_events = 0
        self.duplicates = 0
        self.epoch_changes = 0
        self.unprompted_snapshots = 0
        self.bad_frames = 0
        self.errors: Counter[str] = Counter()
        self.other: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.disconnected = 0
        self.batches = 0  # batch frames received

    def frame(self, client: Client, payload: bytes) -> None:
        now = time.time() * 1000.0
        try:
            message = loads(payload)
        except ValueError:
            self.bad_frames += 1
            return
        if type(message) is list:
            for item in message:
                self.message(client, item, now)
        elif message.get("type") == "update":  # the hot path, without a call more
            self.update(client, message, now)
        elif message.get("type") == "batch":  # one frame for a window's updates
            self.batches += 1
            for item in message["messages"]:
                self.message(client, item, now)
        else:
            self.message(client, message, now)

    def message(self, client: Client, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "update":
            self.update(client, message, now)
        elif kind == "snapshot":
            name = message["ch"]
            if name in client.snapshotted:
                self.unprompted_snapshots += 1
            client.snapshotted.add(name)
            client.channels[name] = [message.get("epoch", ""), message.get("seq", 0)]
        elif kind == "ack":
            for entry in message.get("channels", ()):
                if "seq" in entry and entry["ch"] not in client.channels:
                    client.channels[entry["ch"]] = [entry.get("epoch", ""), entry["seq"]]
            client.answered(None)
        elif kind == "error":
            code = str(message.get("code"))
            self.errors[code] += 1
            client.answered(code)
        else:
            self.other[str(kind)] += 1

    def update(self, client: Client, message: dict[str, Any], now: float) -> None:
        name = message["ch"]
        seq = message["seq"]
        epoch = message.get("epoch", "")
        first = message.get("first_seq", seq)
        state = client.channels.get(name)
        if state is None:
            client.channels[name] = [epoch, seq]
        elif state[0] == epoch:
            expected = state[1] + 1
            if first > expected:
                self.gaps += first - expected
                self.gap_events += 1
            elif first < expected:
                self.duplicates += 1
            if seq > state[1]:
                state[1] = seq
        else:
            if state[0] == "" and state[1] == 0:  # nothing published yet when it subscribed: the epoch starts at 1
                if first > 1:
                    self.gaps += first - 1
                    self.gap_events += 1
            else:
                self.epoch_changes += 1
            state[0], state[1] = epoch, seq
        self.updates_total += 1
        if self.measuring:
            assert self.t0 is not None
            self.updates += 1
            client.window_updates += 1
            second = int((now - self.t0) / 1000.0)
            latency = self.latency
            while len(latency) <= second:
                latency.append(array("d"))
            latency[second].append(now - message["ts"])


class Client(WSListener):  # type: ignore[misc]
    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self.stats = stats
        self.channels: dict[str, list[Any]] = {}
        self.snapshotted: set[str] = set()
        self.window_updates = 0
        self.reply: asyncio.Future[str | None] | None = None
        self.transport: WSTransport | None = None
        self.open = False

    def answered(self, error: str | None) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(error)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.open = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT:
            self.stats.frame(self, frame.get_payload_as_bytes())
        elif kind is CLOSE:
            code = frame.get_close_code()
            self.stats.closes[str(getattr(code, "value", code))] += 1
            transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.open:
            self.open = False
            self.stats.disconnected += 1


def channels_of(index: int, per_socket: int, symbols: list[str]) -> list[str]:
    k = min(per_socket, len(symbols))
    return [f"ticker:{symbols[(index * k + j) % len(symbols)]}" for j in range(k)]


async def open_clients(
    url: str,
    stats: Stats,
    count: int,
    *,
    per_socket: int,
    symbols: list[str],
    subscribe: bool,
    concurrency: int,
    offset: int = 0,
    batch: bool = False,
) -> tuple[list[Client], int, Counter[str]]:
    """`count` clients, subscribed when `subscribe`; returns them, the number that never connected, and subscribe failures."""
    gate = asyncio.Semaphore(concurrency)
    failed = 0
    refused: Counter[str] = Counter()
    clients: list[Client] = []
    loop = asyncio.get_running_loop()

    async def one(index: int) -> None:
        nonlocal failed

        def factory() -> Client:
            return Client(stats)

        async with gate:
            client: Client | None = None
            for attempt in range(6):
                try:
                    _, client = await ws_connect(factory, url, websocket_handshake_timeout=60, enable_auto_pong=True)
                    break
                except Exception as exc:
                    if attempt == 5:
                        log(f"client {index}: could not connect: {exc!r}")
                    await asyncio.sleep(0.1 * 2**attempt)
            if client is None:
                failed += 1
                return
            clients.append(client)
            if not subscribe:
                return
            client.reply = loop.create_future()
            request = {"op": "subscribe", "id": 1, "channels": channels_of(index, per_socket, symbols)}
            frame = json.dumps({**request, "batch": True} if batch else request)
            assert client.transport is not None
            client.transport.send(TEXT, frame.encode())
            try:
                error = await asyncio.wait_for(client.reply, 120)
            except TimeoutError:
                error = "no_answer"
            if error is not None:
                refused[error] += 1

    await asyncio.gather(*(one(offset + i) for i in range(count)))
    return clients, failed, refused


def masked_text_frame(payload: bytes) -> bytes:
    """A client → server text frame (clients must mask)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def open_slow_client(url: str, symbols: list[str]) -> socket.socket:
    """A client that subscribes to every symbol (up to 100) and never reads again: a raw socket, 4 KB receive buffer."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)  # before connect, so the window stays small
    sock.settimeout(30)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: read the handshake answer and nothing after it
        if not chunk:
            raise ConnectionError("the server closed the slow client during its handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"slow client handshake refused: {head[:200]!r}")
    channels = [f"ticker:{symbol}" for symbol in symbols[:MAX_SUBSCRIPTIONS]]
    sock.sendall(masked_text_frame(json.dumps({"op": "subscribe", "id": 1, "channels": channels}).encode()))
    return sock


# -- dashboards (/ws/portfolio/) ---------------------------------------------------------------------

SNAPSHOT_TIMEOUT = 120.0


class DashboardStats:
    """Everything the dashboards saw (see the module's docstring); the measured window is [t0, t1) in wall-clock ms."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.measuring = False
        self.deliveries = 0  # in the window
        self.deliveries_total = 0
        self.frames = 0  # update frames in the window
        self.bytes = 0  # of those frames
        self.latency: list[array[float]] = []  # staleness ms of each delivery, per second of the window
        self.skipped = 0  # seqs jumped over within an epoch, in the window
        self.skip_events = 0
        self.repeats = 0
        self.epoch_changes = 0
        self.backwards = 0  # over the whole run
        self.later_snapshots = 0  # snapshots after a client's first (the server reloaded its books)
        self.bad_frames = 0
        self.errors: Counter[str] = Counter()
        self.other: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.disconnected = 0  # dashboards lost after their snapshot

    def frame(self, client: DashboardClient, payload: bytes) -> None:
        now = time.time() * 1000.0
        try:
            message = loads(payload)
        except ValueError:
            self.bad_frames += 1
            return
        kind = message.get("type") if type(message) is dict else None
        if kind == "update":
            self.update(client, message, now, len(payload))
        elif kind == "snapshot":
            self.snapshot(client, message)
        elif kind == "error":
            self.errors[str(message.get("code"))] += 1
        else:
            self.other[str(kind)] += 1

    def snapshot(self, client: DashboardClient, message: dict[str, Any]) -> None:
        for portfolio in message.get("portfolios") or ():
            for row in portfolio.get("rows") or ():
                if row.get("price_seq") is not None:
                    client.prices[row["symbol"]] = [row.get("price_epoch"), row["price_seq"]]
        if client.snapshot_at is None:
            client.snapshot_at = time.monotonic()
            client.settle("snapshot")
        else:
            self.later_snapshots += 1

    def update(self, client: DashboardClient, message: dict[str, Any], now: float, size: int) -> None:
        measuring = self.measuring
        if measuring:
            self.frames += 1
            self.bytes += size
        prices = client.prices
        for portfolio in message.get("portfolios") or ():
            for row in portfolio.get("rows") or ():
                seq = row.get("price_seq")
                if seq is None:  # a cash row, or a holding without a price yet
                    continue
                symbol, epoch = row["symbol"], row.get("price_epoch")
                state = prices.get(symbol)
                if state is None:
                    prices[symbol] = [epoch, seq]
                elif state[0] != epoch:
                    state[0], state[1] = epoch, seq
                    if measuring:
                        self.epoch_changes += 1
                elif seq > state[1]:
                    if measuring and seq > state[1] + 1:
                        self.skipped += seq - state[1] - 1
                        self.skip_events += 1
                    state[1] = seq
                else:
                    if seq < state[1]:
                        self.backwards += 1
                    elif measuring:
                        self.repeats += 1
                    continue
                self.deliveries_total += 1
                if measuring:
                    assert self.t0 is not None
                    self.deliveries += 1
                    client.window_deliveries += 1
                    second = int((now - self.t0) / 1000.0)
                    latency = self.latency
                    while len(latency) <= second:
                        latency.append(array("d"))
                    latency[second].append(now - row["price_ts"])


class DashboardClient(WSListener):  # type: ignore[misc]
    def __init__(self, stats: DashboardStats) -> None:
        super().__init__()
        self.stats = stats
        self.prices: dict[str, list[Any]] = {}  # symbol → [price_epoch, price_seq]
        self.window_deliveries = 0
        self.snapshot_at: float | None = None  # monotonic
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None
        self.open = False

    def settle(self, outcome: str) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.open = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT:
            self.stats.frame(self, frame.get_payload_as_bytes())
        elif kind is CLOSE:
            code = frame.get_close_code()
            number = str(getattr(code, "value", code))
            self.stats.closes[number] += 1
            self.settle(f"closed {number}")  # 4401: the session did not sign anyone in
            transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.open:
            self.open = False
            if self.snapshot_at is not None:
                self.stats.disconnected += 1
            self.settle("disconnected")


def read_sessions(path: str) -> tuple[str, list[str]]:
    """The session cookie's name and one session key per bench user, as bench/fanout.py setup-db wrote them."""
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    if not data["sessions"]:
        raise SystemExit(f"fanout_load: no sessions in {path}")
    return data["cookie"], data["sessions"]


async def open_dashboards(
    url: str, stats: DashboardStats, count: int, *, sessions: tuple[str, list[str]], origin: str, concurrency: int, offset: int = 0
) -> tuple[list[DashboardClient], dict[str, Any]]:
    """`count` dashboards, `concurrency` in flight, each until its snapshot; returns them and how opening went."""
    cookie, keys = sessions
    gate = asyncio.Semaphore(concurrency)
    clients: list[DashboardClient] = []
    latency = array("d")  # ms from the start of a WebSocket open to its snapshot
    outcomes: Counter[str] = Counter()
    retries = 0

    async def one(index: int) -> None:
        nonlocal retries
        headers = {"Cookie": f"{cookie}={keys[index % len(keys)]}", "Origin": origin}
        async with gate:
            started = time.monotonic()
            client: DashboardClient | None = None
            for attempt in range(6):
                try:
                    _, client = await ws_connect(
                        lambda: DashboardClient(stats), url, extra_headers=headers, websocket_handshake_timeout=60, enable_auto_pong=True
                    )
                    break
                except Exception as exc:
                    if attempt == 5:
                        log(f"dashboard {index}: could not connect: {exc!r}")
                        outcomes["no connection"] += 1
                        return
                    retries += 1
                    await asyncio.sleep(0.1 * 2**attempt)
            assert client is not None
            clients.append(client)
            try:
                outcome = await asyncio.wait_for(asyncio.shield(client.outcome), SNAPSHOT_TIMEOUT)
            except TimeoutError:
                outcome = "no snapshot"
            outcomes[outcome] += 1
            if client.snapshot_at is not None:
                latency.append((client.snapshot_at - started) * 1000.0)

    started = time.monotonic()
    await asyncio.gather(*(one(offset + i) for i in range(count)))
    opened = {
        "connected": outcomes["snapshot"],
        "failed": count - outcomes["snapshot"],
        "outcomes": dict(outcomes),
        "retries": retries,
        "connect_s": time.monotonic() - started,
        "snapshot_ms": percentiles(latency),
    }
    return clients, opened


def dashboard_result(stats: DashboardStats, clients: list[DashboardClient], window_s: float, cpu_s: float) -> dict[str, Any]:
    everything, per_second = by_second(stats.latency)
    per = window_s if window_s > 0 else float("nan")
    return {
        "deliveries": stats.deliveries,
        "deliveries_total": stats.deliveries_total,
        "window_s": window_s,
        "deliveries_per_s": stats.deliveries / per,
        "frames": stats.frames,
        "frames_per_s": stats.frames / per,
        "bytes_per_s": stats.bytes / per,
        "staleness_ms": percentiles(everything),
        "per_second": per_second,
        "skipped": stats.skipped,
        "skip_events": stats.skip_events,
        "repeats": stats.repeats,
        "epoch_changes": stats.epoch_changes,
        "backwards": stats.backwards,
        "later_snapshots": stats.later_snapshots,
        "bad_frames": stats.bad_frames,
        "errors": dict(stats.errors),
        "other_frames": dict(stats.other),
        "closes": dict(stats.closes),
        "disconnected": stats.disconnected,
        "open": sum(1 for client in clients if client.open),
        "per_client_deliveries": spread([client.window_deliveries for client in clients]),
        "cpu_s": cpu_s,
    }


class Control:
    """Commands from bench/fanout.py, one per line on stdin."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def pump() -> None:
            while line := await reader.readline():
                await self.queue.put(line.decode().strip())
            await self.queue.put("quit")

        self._task = asyncio.ensure_future(pump())

    async def expect(self, *commands: str) -> str:
        while True:
            command = await self.queue.get()
            if command in commands or command == "quit":
                return command
            log(f"ignored command {command!r} (waiting for {', '.join(commands)})")


def close_all(clients: Sequence[Client | DashboardClient]) -> None:
    for client in clients:
        if client.open and client.transport is not None:
            with contextlib.suppress(Exception):
                client.transport.send_close()
                client.transport.disconnect()


def by_second(latency: list[array[float]]) -> tuple[array[float], list[dict[str, Any]]]:
    """Every staleness of the window, and p50/p99/max of each of its seconds."""
    everything = array("d")
    per_second = []
    for second, values in enumerate(latency):
        everything.extend(values)
        per_second.append({"t": second, "n": len(values), **{k: v for k, v in percentiles(values).items() if k != "n"}})
    return everything, per_second


def spread(counts: list[int]) -> dict[str, int]:
    """How many of something each client got: min, median, max, and how many clients got none."""
    counts = sorted(counts)
    return {
        "min": counts[0] if counts else 0,
        "median": counts[len(counts) // 2] if counts else 0,
        "max": counts[-1] if counts else 0,
        "none": sum(1 for n in counts if n == 0),
    }


def result(stats: Stats, clients: list[Client], window_s: float, cpu_s: float) -> dict[str, Any]:
    everything, per_second = by_second(stats.latency)
    first = array("d")
    for values in stats.latency[: stats.prefix_seconds]:
        first.extend(values)
    return {
        "updates": stats.updates,
        "updates_total": stats.updates_total,
        "window_s": window_s,
        "updates_per_s": stats.updates / window_s if window_s > 0 else 0.0,
        "staleness_ms": percentiles(everything),
        "staleness_first_ms": {"seconds": stats.prefix_seconds, **percentiles(first)},
        "per_second": per_second,
        "gaps": stats.gaps,
        "gap_events": stats.gap_events,
        "duplicates": stats.duplicates,
        "epoch_changes": stats.epoch_changes,
        "unprompted_snapshots": stats.unprompted_snapshots,
        "bad_frames": stats.bad_frames,
        "errors": dict(stats.errors),
        "other_frames": dict(stats.other),
        "closes": dict(stats.closes),
        "disconnected": stats.disconnected,
        "open": sum(1 for client in clients if client.open),
        "per_client_updates": spread([client.window_updates for client in clients]),
        "cpu_s": cpu_s,
    }


async def run_load(args: argparse.Namespace, control: Control, symbols: list[str]) -> None:
    stats = Stats()
    stats.prefix_seconds = args.prefix_seconds
    started = time.monotonic()
    clients, failed, refused = await open_clients(
        args.url,
        stats,
        args.sockets,
        per_socket=args.per_socket,
        symbols=symbols,
        subscribe=True,
        concurrency=args.concurrency,
        batch=args.batch,
    )
    connect_s = time.monotonic() - started
    slow: socket.socket | None = None
    slow_port = None
    if args.slow:
        slow = await asyncio.to_thread(open_slow_client, args.url, symbols)
        slow_port = slow.getsockname()[1]
    log(f"{len(clients)} connected, {failed} failed, subscribe refused {dict(refused)} in {connect_s:.1f} s")
    emit("ready", connected=len(clients), failed=failed, refused=dict(refused), connect_s=connect_s, slow_port=slow_port)
    try:
        if await control.expect("start") == "quit":
            return
        cpu0 = time.process_time()
        stats.t0 = time.time() * 1000.0
        stats.measuring = True
        if await control.expect("stop") == "quit":
            return
        stats.measuring = False
        window_s = (time.time() * 1000.0 - stats.t0) / 1000.0
        cpu_s = time.process_time() - cpu0
        slow_state = None
        if slow is not None:
            with contextlib.suppress(OSError):
                slow_state = slow.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]  # 1 = established, 7 = closed (reset)
        emit("result", **result(stats, clients, window_s, cpu_s), slow_tcp_state=slow_state)
        await control.expect("quit")
    finally:
        close_all(clients)
        if slow is not None:
            slow.close()
        await asyncio.sleep(0.5)


async def run_idle(args: argparse.Namespace, control: Control) -> None:
    stats = Stats()
    warm, _, _ = await open_clients(args.url, stats, args.warm, per_socket=0, symbols=[], subscribe=False, concurrency=args.concurrency)
    emit("warm", connected=len(warm))
    clients: list[Client] = []
    try:
        if await control.expect("go") == "quit":
            return
        started = time.monotonic()
        clients, failed, _ = await open_clients(
            args.url, stats, args.sockets, per_socket=0, symbols=[], subscribe=False, concurrency=args.concurrency, offset=args.warm
        )
        emit("ready", connected=len(clients), failed=failed, connect_s=time.monotonic() - started)
        await control.expect("quit")
        emit("closed", open=sum(1 for client in clients if client.open), closes=dict(stats.closes), frames=dict(stats.other))
    finally:
        close_all(warm + clients)
        await asyncio.sleep(0.5)


async def run_dashboards(args: argparse.Namespace, control: Control) -> None:
    stats = DashboardStats()
    sessions = read_sessions(args.sessions)
    clients, opened = await open_dashboards(
        args.url, stats, args.sockets, sessions=sessions, origin=args.origin, concurrency=args.concurrency
    )
    log(f"{opened['connected']} dashboards open in {opened['connect_s']:.1f} s; outcomes {opened['outcomes']}")
    emit("ready", **opened)
    try:
        if await control.expect("start") == "quit":
            return
        cpu0 = time.process_time()
        stats.t0 = time.time() * 1000.0
        stats.measuring = True
        if await control.expect("stop") == "quit":
            return
        stats.measuring = False
        window_s = (time.time() * 1000.0 - stats.t0) / 1000.0
        emit("result", **dashboard_result(stats, clients, window_s, time.process_time() - cpu0))
        await control.expect("quit")
    finally:
        close_all(clients)
        await asyncio.sleep(0.5)


async def run_idle_dashboards(args: argparse.Namespace, control: Control) -> None:
    stats = DashboardStats()
    sessions = read_sessions(args.sessions)
    options = {"sessions": sessions, "origin": args.origin, "concurrency": args.concurrency}
    warm, warmed = await open_dashboards(args.url, stats, args.warm, **options)
    emit("warm", connected=warmed["connected"])
    clients: list[DashboardClient] = []
    try:
        if await control.expect("go") == "quit":
            return
        clients, opened = await open_dashboards(args.url, stats, args.sockets, offset=args.warm, **options)
        emit("ready", **opened)
        await control.expect("quit")
        emit("closed", open=sum(1 for client in clients if client.open), closes=dict(stats.closes), frames=dict(stats.other))
    finally:
        close_all(warm + clients)
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> None:
    control = Control()
    await control.start()
    symbols = args.symbol_list.split(",") if args.symbol_list else []
    if args.dashboard:
        await (run_idle_dashboards if args.idle else run_dashboards)(args, control)
    elif args.idle:
        await run_idle(args, control)
    else:
        await run_load(args, control, symbols)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/path")
    parser.add_argument("--sockets", type=int, required=True)
    parser.add_argument("--per-socket", type=int, default=10, help="tickers each socket subscribes to")
    parser.add_argument("--symbol-list", default="", help="comma-separated symbols")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes (and subscribes) in flight")
    parser.add_argument("--slow", action="store_true", help="add one client that never reads")
    parser.add_argument("--batch", action="store_true", help="clients opt in to batch frames (one frame per window)")
    parser.add_argument("--prefix-seconds", type=int, default=0, help="also report staleness over the first N seconds of the window")
    parser.add_argument("--idle", action="store_true", help="idle connections: no subscriptions")
    parser.add_argument("--warm", type=int, default=10, help="idle mode: connections opened before the baseline RSS")
    parser.add_argument("--dashboard", action="store_true", help="signed-in dashboards on /ws/portfolio/ instead of market clients")
    parser.add_argument("--sessions", help="dashboard mode: the JSON file of session keys bench/fanout.py setup-db wrote")
    parser.add_argument("--origin", default="", help="dashboard mode: the Origin header (one of the server's ALLOWED_HOSTS)")
    args = parser.parse_args(argv)
    if args.dashboard and not (args.sessions and args.origin):
        parser.error("--dashboard needs --sessions and --origin")
    return args


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - requirements-bench.txt installs it
        asyncio.run(main(arguments))
    else:
        uvloop.run(main(arguments))
