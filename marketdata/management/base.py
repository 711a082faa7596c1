"""Shared by the feed commands (run_feeds, replay_feed, record_feed): one way to build and run a worker."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.core.management.base import CommandError
from django.utils.module_loading import import_string

from marketdata import selectors
from marketdata.feeds import Feed
from marketdata.symbols import SymbolMap
from marketdata.worker.loop import MinuteHook, Worker
from marketdata.worker.references import References

T = TypeVar("T")


def minute_hooks() -> list[MinuteHook]:
    """The hooks other apps run after each closed minute of event time (settings.MARKETDATA_MINUTE_HOOKS)."""
    return [import_string(path) for path in settings.MARKETDATA_MINUTE_HOOKS]


def conflation_seconds(milliseconds: int) -> float:
    if milliseconds < 1:
        raise CommandError("--conflation-ms must be at least 1")
    return milliseconds / 1000


async def _store_nothing(_items: object) -> int:
    return 0


def worker_build(*, feed: Feed, conflation_ms: int, symbols: SymbolMap | None = None, replay: bool = False, sandbox: str = "") -> Worker:
    """A worker publishing `feed` the way every feed is published: same hub, stores, hooks and tape.

    `sandbox`: publish into that replay session instead (`replay_feed --sandbox NAME`), touching no live
    state: its own channels, streams and history (`?session=NAME`), and no quotes, candles or portfolio
    history in the database, no tape for `record_feed`, no day-change reference from the stored
    candles (only from the minutes the session itself replays).
    """
    if sandbox:
        return Worker(
            feed=feed,
            conflation=conflation_seconds(conflation_ms),
            quote_flush=float(settings.MARKETDATA_QUOTE_FLUSH_SECONDS),
            references=References(selectors.references_load(now=datetime.now(UTC)).markets),
            store_quotes=_store_nothing,
            store_candles=_store_nothing,
            prune_candles=_store_nothing,
            replay=replay,
            symbols=symbols,
            tape=False,
            session=sandbox,
        )
    return Worker(
        feed=feed,
        conflation=conflation_seconds(conflation_ms),
        quote_flush=float(settings.MARKETDATA_QUOTE_FLUSH_SECONDS),
        references=selectors.references_load(now=datetime.now(UTC)),
        minute_hooks=minute_hooks(),
        retention=timedelta(days=settings.HISTORY_RETENTION_DAYS),
        replay=replay,
        symbols=symbols,
    )


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
