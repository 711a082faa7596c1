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
from marketdata.management.base import metrics_arguments, metrics_served, until_stopped, worker_build
from marketdata.models import Feed as FeedRow
from marketdata.models import FeedKind


class Command(BaseCommand):
    help = "Run the feed worker: publishes prices from the enabled feeds (admin → Feeds) until Ctrl-C/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--feed", nargs="+", help="Only these feeds, by name (default: every enabled feed).")
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
        instruments = list(selectors.instruments_active())
        feeds: list[Feed] = []
        for row in rows:
            if row.kind == FeedKind.SYNTHETIC and not instruments:
                raise CommandError(f"feed {row.name}: no active instruments to walk; add some in the admin or run `manage.py seed_demo`")
            try:
                feeds.append(feed_build(row, symbols=symbols, instruments=instruments))
            except (ValueError, FeedError) as exc:
                raise CommandError(f"feed {row.name}: {exc}") from exc
        feed = feeds[0] if len(feeds) == 1 else Merged(feeds, names=[row.name for row in rows])
        worker = worker_build(
            feed=feed, conflation_ms=options["conflation_ms"], command="run_feeds", symbols=symbols, takeover=options["takeover"]
        )
        names = ", ".join(f"{row.name} ({row.kind})" for row in rows)
        self.stdout.write(f"run_feeds: {names}; epoch {worker.hub.epoch}; Ctrl-C to stop")
        with metrics_served(
            port=options["metrics_port"], address=options["metrics_address"], say=lambda line: self.stdout.write(f"run_feeds: {line}")
        ):
            stats = asyncio.run(until_stopped(worker.run, duration=options["duration"]))
        self.stdout.write(f"run_feeds: stopped: {stats.summary()}")
