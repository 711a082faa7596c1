"""Run the feed worker: synthetic prices for every active instrument, until stopped."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from marketdata import selectors
from marketdata.feeds.synthetic import SyntheticFeed, SyntheticInstrument
from marketdata.models import AssetClass, Instrument
from marketdata.worker import MinuteHook, Worker

DEFAULT_START_PRICE = Decimal("100")


def minute_hooks() -> list[MinuteHook]:
    """The hooks other apps run after each closed minute of event time (settings.MARKETDATA_MINUTE_HOOKS)."""
    return [import_string(path) for path in settings.MARKETDATA_MINUTE_HOOKS]


def price_places(start: Decimal, *, minimum: int) -> int:
    """Decimal places for a price: at least `minimum`, and enough for four significant digits.

    A sub-cent coin (0.00001234) quoted to 4 places rounds to nothing, and its
    spread then pushes the bid below zero.
    """
    return max(minimum, 3 - start.adjusted())


def synthetic_instrument(instrument: Instrument) -> SyntheticInstrument:
    """Start from the stored price so a restart continues where the last run ended."""
    quote = getattr(instrument, "quote", None)
    # A walk from zero or below stays there; start afresh rather than carry it on.
    start = quote.price if quote is not None and quote.price > 0 else DEFAULT_START_PRICE
    if instrument.asset_class == AssetClass.FX:
        return SyntheticInstrument(instrument.symbol, start, quote_only=True, places=price_places(start, minimum=5))
    return SyntheticInstrument(instrument.symbol, start, places=price_places(start, minimum=2 if start >= 10 else 4))


class Command(BaseCommand):
    help = "Run the feed worker: publishes live prices for active instruments until Ctrl-C/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbols", nargs="+", help="Only these symbols (default: every active instrument).")
        parser.add_argument(
            "--tick-rate", type=float, default=float(settings.SYNTHETIC_TICKS_PER_SECOND), help="Ticks per second per symbol."
        )
        parser.add_argument(
            "--volatility", type=float, default=float(settings.SYNTHETIC_VOLATILITY), help="Relative move per sqrt(second), e.g. 0.001."
        )
        parser.add_argument("--seed", type=int, help="Random seed, for a reproducible walk.")
        parser.add_argument("--conflation-ms", type=int, default=settings.MARKETDATA_CONFLATION_MS, help="Broadcast window per symbol.")
        parser.add_argument("--duration", type=float, help="Stop after this many seconds (default: run until stopped).")

    def handle(self, *args: Any, **options: Any) -> None:
        instruments = list(selectors.instruments_active(symbols=options["symbols"]))
        if options["symbols"]:
            missing = sorted(set(options["symbols"]) - {i.symbol for i in instruments})
            if missing:
                raise CommandError(f"not an active instrument: {', '.join(missing)}")
        if not instruments:
            raise CommandError("no active instruments: add some in the admin or run `manage.py seed_demo`")
        if options["conflation_ms"] < 1:
            raise CommandError("--conflation-ms must be at least 1")
        try:
            feed = SyntheticFeed(
                instruments=[synthetic_instrument(i) for i in instruments],
                ticks_per_second=options["tick_rate"],
                volatility=options["volatility"],
                seed=options["seed"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        worker = Worker(
            feed=feed,
            conflation=options["conflation_ms"] / 1000,
            quote_flush=float(settings.MARKETDATA_QUOTE_FLUSH_SECONDS),
            references=selectors.references_load(now=datetime.now(UTC)),
            minute_hooks=minute_hooks(),
            retention=timedelta(days=settings.HISTORY_RETENTION_DAYS),
        )
        self.stdout.write(
            f"run_feeds: {len(instruments)} instruments, {options['tick_rate']:g} ticks/s each, epoch {worker.hub.epoch}; Ctrl-C to stop"
        )
        stats = asyncio.run(self._run(worker, options["duration"]))
        self.stdout.write(f"run_feeds: stopped: {stats.summary()}")

    async def _run(self, worker: Worker, duration: float | None) -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        return await worker.run(stop)
