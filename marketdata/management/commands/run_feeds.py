"""Run the feed worker on the feeds configured in the admin, until stopped."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata import selectors
from marketdata.feeds import Feed
from marketdata.feeds.configured import Merged, feed_build
from marketdata.feeds.files import FeedError
from marketdata.management.base import metrics_arguments, metrics_served, symbols_wanted, until_stopped, worker_build
from marketdata.models import Feed as FeedRow
from marketdata.models import FeedKind


class Command(BaseCommand):
    help = "Run the feed worker: publishes prices from the enabled feeds (admin → Feeds) until Ctrl-C/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--feed", nargs="+", help="Only these feeds, by name (default: every enabled feed).")
        parser.add_argument(
            "--symbols",
            nargs="+",
            metavar="SYMBOL",
            help="Only these instruments (symbols or aliases): the worker publishes, and takes the leases of, these only, "
            "so several workers can split the symbols, each with its own standby (docs/operations.md, 'Standby workers').",
        )
        parser.add_argument("--conflation-ms", type=int, default=settings.MARKETDATA_CONFLATION_MS, help="Broadcast window per symbol.")
        parser.add_argument("--duration", type=float, help="Stop after this many seconds (default: run until stopped).")
        parser.add_argument(
            "--takeover",
            action="store_true",
            help="Take the symbols another worker publishes (it stops publishing them); by default wait for them as a standby.",
        )
        metrics_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        rows = list(FeedRow.objects.filter(name__in=options["feed"]) if options["feed"] else FeedRow.objects.filter(enabled=True))
        if options["feed"]:
            missing = sorted(set(options["feed"]) - {row.name for row in rows})
            if missing:
                raise CommandError(f"no feed named {', '.join(missing)}")
        if not rows:
            raise CommandError("no enabled feeds: add one in the admin (Market data → Feeds) or run `manage.py seed_demo`")
        symbols = selectors.symbol_map_load()
        symbols.wanted = wanted = symbols_wanted(symbols, options["symbols"])
        instruments = list(selectors.instruments_active())
        feeds: dict[str, Feed] = {}
        for row in rows:
            if row.kind == FeedKind.SYNTHETIC and not instruments:
                raise CommandError(f"feed {row.name}: no active instruments to walk; add some in the admin or run `manage.py seed_demo`")
            try:
                built = feed_build(row, symbols=symbols, instruments=instruments, only=wanted)
            except (ValueError, FeedError) as exc:
                raise CommandError(f"feed {row.name}: {exc}") from exc
            if built is not None:
                feeds[f"{row.name} ({row.kind})"] = built
        if not feeds:
            raise CommandError(
                f"--symbols {' '.join(options['symbols'])}: none of the feeds ({', '.join(row.name for row in rows)}) has them"
            )
        feed = next(iter(feeds.values())) if len(feeds) == 1 else Merged(list(feeds.values()), names=list(feeds))
        worker = worker_build(
            feed=feed, conflation_ms=options["conflation_ms"], command="run_feeds", symbols=symbols, takeover=options["takeover"]
        )
        self.stdout.write(f"run_feeds: {', '.join(feeds)}; epoch {worker.hub.epoch}; Ctrl-C to stop")
        if wanted is not None:
            self.stdout.write(f"run_feeds: only {', '.join(sorted(wanted))} (--symbols); the feeds' other symbols are left out")
        if worker.leases is not None:
            how = "taking over" if options["takeover"] else "standing by for"
            self.stdout.write(
                f"run_feeds: one producer per symbol: leases of {worker.leases.ttl:g} s in Redis, {how} the symbols another "
                "worker publishes"
            )
        with metrics_served(
            port=options["metrics_port"], address=options["metrics_address"], say=lambda line: self.stdout.write(f"run_feeds: {line}")
        ):
            stats = asyncio.run(until_stopped(worker.run, duration=options["duration"]))
        lost = "".join(f"; lost {symbol} to {holder}" for symbol, holder in stats.lost.items())
        self.stdout.write(f"run_feeds: stopped: {stats.summary()}{lost}")
