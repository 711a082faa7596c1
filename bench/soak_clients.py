"""The soak's clients (bench/soak.py): bots on `/ws/v1/market` and signed-in dashboards on `/ws/portfolio/`, in one process.

Unlike bench/fanout_load.py (picows; a fixed population measured in a window, nobody reconnects), these
clients live through faults: each reconnects with the documented backoff (full jitter, base 0.5 s) and carries
on as docs/websocket-api.md says a client should.

- A **bot** authenticates with an API token and runs the protocol core of examples/market_client.py (the
  `Client` class, sans-IO): it resumes every channel after a reconnect, takes unprompted snapshots, and
  counts a **silent gap** whenever an update does not follow the last one (same epoch, next seq; or seq 1 of a
  new epoch), a heartbeat names a seq it never got, or a `resumed` replay does not start where it asked.
  A gap the server announced (a snapshot, `resumed` with `recovered: false`) is not silent.
- A **dashboard** opens `/ws/portfolio/` with a session cookie and an Origin, as the page does; every
  connection starts with a snapshot. Per held symbol it follows (price_epoch, price_seq): a newer one is a
  delivery, a lower one in the same epoch goes `backwards` (a bug; skipped seqs are coalescing, legitimate).

Accounting, per second of wall clock (`second` = int(now − start)):
- deliveries (bot updates, dashboard price rows), staleness (receive time − the data's exchange `ts`, ms);
- `expected`: how far each bot channel's seq moved (what was published while the bot held the channel),
  split into what came as updates, what a snapshot or an unrecovered resume restated, and silent gaps;
- closes and reconnects, silent gaps and signalled ones (unprompted snapshots, resumes not recovered).

**Current.** `mark NAME MS` on stdin (a fault injected at wall time MS) starts a watch: a client is current
again once it has received data whose exchange time is at or after MS (a bot: on its ticker channel; a
dashboard: a held row's `price_ts`). When every client is, one `current` line says how long that took and how
long for the clients that were never disconnected since MS (the data's own pace: a recorded session has quiet
seconds). The replay is rebased and played at speed 1, so exchange time is the time of publication.

Control: JSON lines on stdout (`ready`, `current`, `result`); commands on stdin (`mark NAME MS`, `quit`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import random
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parent.parent
BACKOFF_BASE, BACKOFF_CAP = 0.5, 30.0  # seconds, as the dashboard and the example bot reconnect
SILENCE_S = 45.0  # a connection that hears nothing this long (3 heartbeats) is dead


def _example_client() -> Any:
    """examples/market_client.py, the documented bot: its protocol core is what these bots run."""
    spec = importlib.util.spec_from_file_location("livefolio_market_client", ROOT / "examples" / "market_client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


market_client = _example_client()


def log(message: str) -> None:
    print(f"soak_clients: {message}", file=sys.stderr, flush=True)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def quiet(_line: str) -> None:
    pass


class Second:
    """What every client saw in one second of wall clock."""

    __slots__ = (
        "backwards",
        "bot_bytes",
        "bot_updates",
        "by_snapshot",
        "closes",
        "connects",
        "dashboard_deliveries",
        "deliveries",
        "expected",
        "signalled",
        "silent",
        "stale",
        "stale_max",
    )

    def __init__(self) -> None:
        self.deliveries = 0
        self.bot_updates = 0
        self.bot_bytes = 0  # text received by bots: what one more client of the same channels is sent
        self.dashboard_deliveries = 0
        self.stale_max = 0.0
        self.stale: list[float] = []
        self.expected = 0
        self.by_snapshot = 0
        self.silent = 0
        self.signalled = 0
        self.closes = 0
        self.connects = 0
        self.backwards = 0

    def summary(self, t: int) -> dict[str, Any]:
        stale = sorted(self.stale)
        p99 = stale[min(len(stale) - 1, int(len(stale) * 0.99))] if stale else None
        p50 = stale[len(stale) // 2] if stale else None
        return {
            "t": t,
            "deliveries": self.deliveries,
            "bot_updates": self.bot_updates,
            "bot_bytes": self.bot_bytes,
            "dashboard_deliveries": self.dashboard_deliveries,
            "stale_p50_ms": p50,
            "stale_p99_ms": p99,
            "stale_max_ms": self.stale_max if stale else None,
            "expected": self.expected,
            "by_snapshot": self.by_snapshot,
            "silent_gaps": self.silent,
            "signalled": self.signalled,
            "closes": self.closes,
            "connects": self.connects,
            "backwards": self.backwards,
        }


class Mark:
    """A fault at wall time `at_ms`: who has had data from after it, and when."""

    def __init__(self, name: str, at_ms: float, clients: list[Peer]) -> None:
        self.name = name
        self.at_ms = at_ms
        self.waiting = set(clients)
        self.current_at: dict[Peer, float] = {}
        self.closed: set[Peer] = set()  # lost their connection after the mark
        self.reported = False


class Board:
    """The shared accounting."""

    def __init__(self) -> None:
        self.start = time.time()
        self.seconds: list[Second] = []
        self.clients: list[Peer] = []
        self.marks: list[Mark] = []
        self.close_codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.handshake_failures: Counter[str] = Counter()

    def second(self, now: float) -> Second:
        index = int(now - self.start)
        while len(self.seconds) <= index:
            self.seconds.append(Second())
        return self.seconds[index]

    def stale(self, now: float, ts: float) -> None:
        ms = now * 1000.0 - ts
        bucket = self.second(now)
        bucket.stale.append(ms)
        if ms > bucket.stale_max:
            bucket.stale_max = ms

    def fresh(self, peer: Peer, now: float, ts: float) -> None:
        """`peer` got data of exchange time `ts`: is it current again for an open mark?"""
        for mark in self.marks:
            if not mark.reported and peer in mark.waiting and ts >= mark.at_ms:
                mark.waiting.discard(peer)
                mark.current_at[peer] = now
                if not mark.waiting:
                    self.report(mark)

    def closed(self, peer: Peer, now: float, code: str) -> None:
        self.close_codes[code] += 1
        self.second(now).closes += 1
        for mark in self.marks:
            if not mark.reported and peer not in mark.current_at:
                mark.closed.add(peer)

    def report(self, mark: Mark) -> None:
        mark.reported = True
        times = {peer: at - mark.at_ms / 1000.0 for peer, at in mark.current_at.items()}
        hit = [t for peer, t in times.items() if peer in mark.closed]
        spared = [t for peer, t in times.items() if peer not in mark.closed]
        ordered = sorted(times.values())
        emit(
            "current",
            name=mark.name,
            after_s=ordered[-1] if ordered else 0.0,
            first_s=ordered[0] if ordered else 0.0,  # the data is back: the first client has some
            p50_s=ordered[len(ordered) // 2] if ordered else 0.0,
            p90_s=ordered[int(len(ordered) * 0.9)] if ordered else 0.0,
            hit=len(hit),
            hit_max_s=max(hit) if hit else None,
            spared=len(spared),
            spared_max_s=max(spared) if spared else None,
            spared_p50_s=sorted(spared)[len(spared) // 2] if spared else None,
        )


class Peer:
    """One client: a bot or a dashboard, reconnecting until the run ends."""

    kind = "peer"

    def __init__(self, board: Board, index: int) -> None:
        self.board = board
        self.index = index
        self.ready = asyncio.Event()  # first data received
        self.connected = False
        self.connects = 0
        # Each client from its own loopback address, as users come from their own: nginx passes it on, and the
        # app's per-address limits (MARKET_WS_ANONYMOUS_PER_ADDRESS, login throttling) see many clients, not one.
        self.address = f"127.1.{index // 250}.{index % 250 + 1}"

    def __hash__(self) -> int:
        return id(self)

    async def run(self, url: str, headers: dict[str, str], tls: ssl.SSLContext | None, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            code = "1006"
            try:
                async with connect(
                    url,
                    additional_headers=headers,
                    ssl=tls,
                    open_timeout=30,
                    max_size=2**22,
                    ping_interval=None,
                    local_addr=(self.address, 0),
                ) as ws:
                    self.connected = True
                    self.connects += 1
                    self.board.second(time.time()).connects += 1
                    for reply in self.opened():
                        await ws.send(json.dumps(reply))
                    loop = asyncio.get_running_loop()
                    async with asyncio.timeout(SILENCE_S) as silence:
                        async for raw in ws:
                            silence.reschedule(loop.time() + SILENCE_S)
                            attempt = 0
                            now = time.time()
                            if self.kind == "bot":
                                self.board.second(now).bot_bytes += len(raw)
                            for reply in self.frame(json.loads(raw), now):
                                await ws.send(json.dumps(reply))
                    code = str(ws.close_code) if ws.close_code is not None else "1006"
            except ConnectionClosed as exc:
                code = str(exc.rcvd.code) if exc.rcvd is not None else "1006"
            except market_client.RetryLater:  # the example bot's answer to server_error: reconnect and resume
                code = "server_error"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.board.handshake_failures[type(exc).__name__] += 1
                code = "no connection"
            finally:
                if self.connected:
                    self.connected = False
                    if not stop.is_set():  # the run's end closes every socket: not a close to count
                        self.board.closed(self, time.time(), code)
                    self.dropped()
            if stop.is_set():
                return
            delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def opened(self) -> list[dict[str, Any]]:
        return []

    def frame(self, frame: dict[str, Any], now: float) -> list[dict[str, Any]]:
        raise NotImplementedError

    def dropped(self) -> None:
        pass


class Bot(Peer):
    """The example bot's protocol core behind an API token; `ticker` is the channel that says it is current."""

    kind = "bot"

    def __init__(self, board: Board, index: int, *, token: str, channels: list[str]) -> None:
        super().__init__(board, index)
        self.client = market_client.Client(channels, token=token, say=quiet)
        self.ticker = next(name for name in channels if name.startswith("ticker:"))

    def frame(self, frame: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if frame.get("type") == "batch":
            return [reply for message in frame["messages"] for reply in self.frame(message, now)]
        kind = frame.get("type")
        name = frame.get("ch")
        state = self.client.state.get(name) if name else None
        before = (state.epoch, state.seq, state.waiting) if state is not None else None
        gaps, updates = self.client.stats.gaps, self.client.stats.updates
        replies: list[dict[str, Any]] = self.client.handle(frame)
        bucket = self.board.second(now)
        silent = self.client.stats.gaps - gaps
        if silent:
            bucket.silent += silent
            log(f"bot {self.index}: silent gap on {name}: {frame}")
        if kind == "error":
            self.board.errors[str(frame.get("code"))] += 1
        if state is None or before is None:
            return replies
        epoch, seq, waiting = before
        moved = 0
        if state.epoch is not None and epoch is not None and state.epoch == epoch:
            moved = max(0, state.seq - seq)
        elif state.epoch is not None and epoch is not None:  # a new epoch: everything of it so far
            moved = state.seq
        if kind == "update" and self.client.stats.updates > updates:
            bucket.deliveries += 1
            bucket.bot_updates += 1
            bucket.expected += moved
            self.board.stale(now, frame["ts"])
            if name == self.ticker:
                self.board.fresh(self, now, frame["ts"])
            self.ready.set()
        elif kind == "snapshot":
            if epoch is not None and not waiting:  # unprompted: the server restated the channel
                bucket.signalled += 1
            bucket.expected += moved
            bucket.by_snapshot += moved
            if name == self.ticker and frame.get("ts"):
                self.board.fresh(self, now, frame["ts"])
            self.ready.set()
        elif kind == "resumed":
            if not frame["recovered"]:
                bucket.signalled += 1
        return replies

    def dropped(self) -> None:
        self.client.disconnected()


class Dashboard(Peer):
    """A signed-in /ws/portfolio/ stream: per held symbol, the newest (price_epoch, price_seq) seen."""

    kind = "dashboard"

    def __init__(self, board: Board, index: int) -> None:
        super().__init__(board, index)
        self.prices: dict[str, tuple[str, int]] = {}

    def frame(self, frame: dict[str, Any], now: float) -> list[dict[str, Any]]:
        kind = frame.get("type")
        if kind not in ("snapshot", "update"):
            if kind == "error":
                self.board.errors[f"dashboard {frame.get('code')}"] += 1
            return []
        bucket = self.board.second(now)
        for view in frame.get("portfolios", ()):
            for row in view.get("rows", ()):
                seq, epoch, ts = row.get("price_seq"), row.get("price_epoch"), row.get("price_ts")
                if not seq or ts is None:
                    continue
                last = self.prices.get(row["symbol"])
                newer = last is None or epoch != last[0] or seq > last[1]
                if last is not None and epoch == last[0] and seq < last[1]:
                    bucket.backwards += 1
                if kind == "update" and newer:
                    bucket.deliveries += 1
                    bucket.dashboard_deliveries += 1
                    self.board.stale(now, ts)
                if newer or kind == "snapshot":
                    self.prices[row["symbol"]] = (epoch, seq)
                self.board.fresh(self, now, ts)
        self.ready.set()
        return []


def tls_context(cafile: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=cafile) if cafile else None


async def commands(board: Board, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        parts = line.split()
        if parts[0] == "quit":
            break
        if parts[0] == "mark":
            mark = Mark(parts[1], float(parts[2]), list(board.clients))
            board.marks.append(mark)
        elif parts[0] == "waiting":  # who is not current yet since mark NAME
            mark = next(m for m in board.marks if m.name == parts[1])
            mark.reported = True
            emit(
                "waiting",
                name=mark.name,
                waiting=dict(Counter(f"{c.kind} {'connected' if c.connected else 'disconnected'}" for c in mark.waiting)),
                current=len(mark.current_at),
            )
    stop.set()


async def main(args: argparse.Namespace, accounts: dict[str, Any]) -> None:
    board = Board()
    tls = tls_context(args.cafile)
    stop = asyncio.Event()
    channels = args.channels.split(",")
    tasks = []
    gate = asyncio.Semaphore(args.concurrency)
    market_url, portfolio_url = f"{args.url}/ws/v1/market", f"{args.url}/ws/portfolio/"
    cookie = accounts["cookie"]

    async def start(peer: Peer, url: str, headers: dict[str, str]) -> None:
        async with gate:  # handshakes in flight at the start; reconnects later are not gated
            task = asyncio.ensure_future(peer.run(url, headers, tls, stop))
            tasks.append(task)
            ready = asyncio.ensure_future(peer.ready.wait())
            await asyncio.wait({ready, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()

    users = accounts["users"]
    starting = []
    for i in range(args.bots):
        bot = Bot(board, i, token=users[i % len(users)]["token"], channels=channels)
        board.clients.append(bot)
        starting.append(start(bot, market_url, {}))
    for i in range(args.dashboards):
        dashboard = Dashboard(board, args.bots + i)
        board.clients.append(dashboard)
        headers = {"Cookie": f"{cookie}={users[(args.bots + i) % len(users)]['session']}", "Origin": args.origin}
        starting.append(start(dashboard, portfolio_url, headers))
    control = asyncio.ensure_future(commands(board, stop))
    started = time.monotonic()
    await asyncio.gather(*starting)
    ready = sum(1 for c in board.clients if c.ready.is_set())
    emit("ready", clients=len(board.clients), with_data=ready, connect_s=time.monotonic() - started, start=board.start)
    await control
    still_open = sum(1 for c in board.clients if c.connected)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=15)
    for mark in board.marks:
        if not mark.reported:
            emit("current", name=mark.name, after_s=None, still_waiting=len(mark.waiting))
    bots = [c for c in board.clients if isinstance(c, Bot)]
    emit(
        "result",
        start=board.start,
        seconds=[s.summary(t) for t, s in enumerate(board.seconds)],
        close_codes=dict(board.close_codes),
        errors=dict(board.errors),
        handshake_failures=dict(board.handshake_failures),
        bots={
            key: sum(getattr(bot.client.stats, key) for bot in bots)
            for key in ("updates", "gaps", "reconnects", "recovered", "fresh_snapshots")
        },
        connects=sum(c.connects for c in board.clients),
        open=still_open,
        clients=len(board.clients),
        cpu_s=time.process_time(),
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="wss://HOST:PORT (the proxy)")
    parser.add_argument("--origin", required=True, help="the dashboards' Origin: https://HOST:PORT")
    parser.add_argument("--cafile", help="the proxy's certificate, trusted as a CA")
    parser.add_argument("--accounts", required=True, help="JSON: the session cookie's name and users with a session and a token")
    parser.add_argument("--bots", type=int, default=300)
    parser.add_argument("--dashboards", type=int, default=250)
    parser.add_argument("--channels", default="ticker:BTC-USD,trades:BTC-USD,candles:BTC-USD@1m")
    parser.add_argument("--concurrency", type=int, default=16, help="first handshakes in flight")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    asyncio.run(main(arguments, json.loads(Path(arguments.accounts).read_text(encoding="utf-8"))))
