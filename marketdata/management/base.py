"""Shared by the feed commands (run_feeds, replay_feed, record_feed): one way to build and run a worker."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils.module_loading import import_string
from prometheus_client import start_http_server

from config.metrics import WorkerMetrics
from config.metrics import multiprocess_dir as metrics_dir
from marketdata import selectors
from marketdata.delivery import streams
from marketdata.feeds import Feed
from marketdata.symbols import SymbolMap
from marketdata.worker.leases import Leases, holder_name
from marketdata.worker.loop import MinuteHook, PriceWatcher, Worker
from marketdata.worker.references import References

T = TypeVar("T")


def minute_hooks() -> list[MinuteHook]:
    """The hooks other apps run after each closed minute of event time (settings.MARKETDATA_MINUTE_HOOKS)."""
    return [import_string(path) for path in settings.MARKETDATA_MINUTE_HOOKS]


def price_watchers() -> list[PriceWatcher]:
    """What other apps watch every window's prices with (settings.MARKETDATA_PRICE_WATCHERS): one of each per worker."""
    return [import_string(path)() for path in settings.MARKETDATA_PRICE_WATCHERS]


def conflation_seconds(milliseconds: int) -> float:
    if milliseconds < 1:
        raise CommandError("--conflation-ms must be at least 1")
    return milliseconds / 1000


async def _store_nothing(_items: object) -> int:
    return 0


def worker_build(
    *,
    feed: Feed,
    conflation_ms: int,
    command: str,
    symbols: SymbolMap | None = None,
    replay: bool = False,
    takeover: bool = False,
    sandbox: str = "",
) -> Worker:
    """A worker publishing `feed` the way every feed is published: same hub, stores, hooks and tape.

    A replay's windows follow event time, so the same file always publishes the same messages.
    With a Redis channel layer the worker holds a lease per symbol (`marketdata.worker.leases`):
    a replay stops when another producer holds one of its symbols (unless `takeover`); a live
    worker (`run_feeds`) stands by for such a symbol and takes it when the other stops.

    `sandbox`: publish into that replay session instead (`replay_feed --sandbox NAME`), touching no live
    state: its own channels, streams, history and leases (`?session=NAME`), and no quotes, candles or
    portfolio history in the database, no tape for `record_feed`, no day-change reference from the
    stored candles (only from the minutes the session itself replays), no alerts.
    """
    metrics_dir()  # PROMETHEUS_MULTIPROC_DIR set after prometheus_client was imported: refuse to start (config/metrics.py)
    leases = None
    if streams.redis_target() is not None:
        # A session's fence counters expire with the rest of its keys.
        fence_expiry = settings.MARKETDATA_SANDBOX_TTL_SECONDS if sandbox else 0
        leases = Leases(holder=holder_name(command), ttl=float(settings.MARKETDATA_LEASE_TTL_SECONDS), fence_expiry=fence_expiry)
    common: dict[str, Any] = {
        "feed": feed,
        "conflation": conflation_seconds(conflation_ms),
        "quote_flush": float(settings.MARKETDATA_QUOTE_FLUSH_SECONDS),
        "replay": replay,
        "symbols": symbols,
        "event_time": replay,
        "leases": leases,
        "takeover": takeover,
        "standby": not replay,
    }
    if sandbox:
        references = References(selectors.references_load(now=datetime.now(UTC)).markets)
        nothing = _store_nothing
        worker = Worker(
            **common, references=references, store_quotes=nothing, store_candles=nothing, prune_candles=nothing, tape=False, session=sandbox
        )
    else:
        worker = Worker(
            **common,
            references=selectors.references_load(now=datetime.now(UTC)),
            minute_hooks=minute_hooks(),
            watchers=price_watchers(),
            retention=timedelta(days=settings.HISTORY_RETENTION_DAYS),
        )
    worker.metrics = WorkerMetrics(command, per_symbol=not sandbox)
    return worker


def metrics_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Serve this worker's Prometheus metrics at http://ADDRESS:PORT/metrics (default: none; on the web servers' "
        "machine they share PROMETHEUS_MULTIPROC_DIR instead: docs/operations.md).",
    )
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", help="The address --metrics-port binds (default 127.0.0.1: this machine only)."
    )


@contextmanager
def metrics_served(*, port: int | None, address: str, say: Callable[[str], object]) -> Iterator[None]:
    """Serve this process's metrics on `address:port` (a thread of prometheus_client's) for the block; nothing without a port."""
    if port is None:
        yield
        return
    try:
        server, thread = start_http_server(port, addr=address)
    except OSError as exc:
        raise CommandError(f"--metrics-port {port} on {address}: {exc}") from exc
    say(f"metrics at http://{address}:{port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def symbols_wanted(symbols: SymbolMap, names: Iterable[str] | None) -> set[str] | None:
    """`--symbols` as instrument symbols: each name is one, or an alias of one (BTCUSDT for BTC-USD)."""
    if names is None:
        return None
    wanted, unknown = set(), []
    by_alias = {alias: symbol for (_, alias), symbol in symbols.aliases.items()}
    for name in names:
        symbol = name if name in symbols.instruments else by_alias.get(name)
        if symbol is None:
            unknown.append(name)
        else:
            wanted.add(symbol)
    if unknown:
        raise CommandError(f"--symbols: no instrument or alias {', '.join(unknown)}")
    return wanted


async def until_stopped(run: Callable[[asyncio.Event], Awaitable[T]], *, duration: float | None = None) -> T:
    """Run `run(stop)`; Ctrl-C, SIGTERM or `duration` seconds set `stop`, so it ends cleanly with what it holds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):
            pass  # not the main thread (a test calling the command): no signals to catch there
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        return await run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (RuntimeError, ValueError):
                pass
