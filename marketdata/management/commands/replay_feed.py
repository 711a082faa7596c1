"""Replay recorded market sessions through the path live data takes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from config.metrics import ReplayMetrics
from marketdata import selectors
from marketdata.api.channels import session_check
from marketdata.feeds.files import EXCHANGE, RECEIVE, FeedError, FileSource, Problems, clock_summary
from marketdata.feeds.registry import file_sources, formats
from marketdata.management.base import metrics_arguments, metrics_served, symbols_wanted, until_stopped, worker_build
from marketdata.symbols import SymbolMap
from marketdata.worker.leases import LeaseRefused
from marketdata.worker.loop import Worker, WorkerStats
from marketdata.worker.replay import Replay


def speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        factor = float(value)
    except ValueError:
        raise CommandError(f"--speed {value!r}: give a number such as 10, or max") from None
    if not factor > 0:
        raise CommandError(f"--speed {value!r}: must be above 0")
    return factor


def instant(value: str | None, flag: str) -> datetime | None:
    """An ISO 8601 time; without an offset it is UTC."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{flag} {value!r} is not an ISO 8601 time such as 2026-01-01T00:05:00Z") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def sandbox_name(value: str) -> str:
    try:
        return session_check(value)
    except ValueError as exc:
        raise CommandError(f"--sandbox: {exc}") from None


def option_pairs(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--option {pair!r}: write it as key=value")
        options[key.strip()] = value.strip()
    return options


class Command(BaseCommand):
    help = "Replay recorded market data files (merged in time order) through the feed worker, as if live."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="Recorded files (.gz and one-file .zip work too).")
        parser.add_argument("--format", choices=sorted(formats()), help="Format of every file (default: detected per file).")
        parser.add_argument("--symbol", help="Symbol for files that do not name it (Binance CSV, HistData), as the source spells it.")
        parser.add_argument(
            "--option", action="append", default=[], metavar="KEY=VALUE", help="Format option, e.g. time=ts for --format csv (repeatable)."
        )
        parser.add_argument(
            "--clock",
            choices=(EXCHANGE, RECEIVE),
            help="Replay on the exchange's times (default where a format has them) or the recorder's receive times.",
        )
        parser.add_argument("--speed", type=speed, default=1.0, help="×N recorded time (default 1), or max for as fast as possible.")
        parser.add_argument("--loop", action="store_true", help="Start again at the end, with time moving on, until stopped.")
        parser.add_argument("--symbols", nargs="+", help="Only these instruments (symbols or aliases).")
        parser.add_argument("--from", dest="start", help="Skip events before this time (ISO 8601, UTC unless it says).")
        parser.add_argument("--to", dest="end", help="Stop at this time (ISO 8601, UTC unless it says).")
        parser.add_argument("--rebase-time", action="store_true", help="Shift the session so it starts now (for demos).")
        parser.add_argument("--strict", action="store_true", help="Stop at the first bad line instead of skipping and counting it.")
        parser.add_argument("--create-instruments", action="store_true", help="Create an instrument for each unknown symbol.")
        parser.add_argument("--conflation-ms", type=int, default=settings.MARKETDATA_CONFLATION_MS, help="Broadcast window per symbol.")
        parser.add_argument(
            "--takeover",
            action="store_true",
            help="Publish symbols another worker holds: it stops publishing them and its clients get a fresh snapshot.",
        )
        parser.add_argument(
            "--sandbox",
            type=sandbox_name,
            metavar="NAME",
            help="Publish into replay session NAME (its own channels, ?session=NAME) instead of the live ones: "
            "no quotes, candles or portfolio history stored, no tape for record_feed. Safe on a production install.",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (it shows only on a terminal anyway).")
        metrics_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        sandbox: str = options["sandbox"] or ""
        if sandbox and options["create_instruments"]:
            raise CommandError("--sandbox writes nothing to the database: --create-instruments cannot go with it")
        format_options = option_pairs(options["option"])
        if options["symbol"]:
            format_options["symbol"] = options["symbol"]
        if options["clock"]:
            format_options["clock"] = options["clock"]
        symbols = selectors.symbol_map_load(create=options["create_instruments"])
        symbols.wanted = symbols_wanted(symbols, options["symbols"])
        problems = Problems(strict=options["strict"])
        try:
            sources = file_sources(
                paths=options["paths"], format_name=options["format"], symbols=symbols, options=format_options, problems=problems
            )
            replay = Replay(
                sources=sources,
                speed=options["speed"],
                loop=options["loop"],
                start=instant(options["start"], "--from"),
                end=instant(options["end"], "--to"),
                rebase=options["rebase_time"],
            )
        except (FeedError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        worker = worker_build(
            feed=replay,
            conflation_ms=options["conflation_ms"],
            command="replay_feed",
            symbols=symbols,
            replay=True,
            takeover=options["takeover"],
            sandbox=sandbox,
        )
        pace = "max speed" if options["speed"] is None else f"×{options['speed']:g}"
        files = f"{len(sources)} file" + ("s" if len(sources) != 1 else "")
        self.stdout.write(f"replay_feed: {files} at {pace}, epoch {worker.hub.epoch}; Ctrl-C to stop")
        if sandbox:
            self.stdout.write(f"replay_feed: sandbox {sandbox}, nothing live touched; watch it at /market/<symbol>/?session={sandbox}")
        started = time.monotonic()
        served = metrics_served(
            port=options["metrics_port"], address=options["metrics_address"], say=lambda line: self.stdout.write(f"replay_feed: {line}")
        )
        try:
            with served:
                asyncio.run(until_stopped(lambda stop: self._run(worker, stop, progress=not options["no_progress"])))
        except FeedError as exc:
            raise CommandError(f"stopped at a bad line (--strict): {exc}") from exc
        except LeaseRefused as exc:
            raise CommandError(f"refused: {exc}") from exc
        self.stdout.write(self.summary(replay, worker, problems, symbols, max(time.monotonic() - started, 1e-9), sources))

    async def _run(self, worker: Worker, stop: asyncio.Event, *, progress: bool) -> WorkerStats:
        bar = tqdm(desc="replaying", unit=" events", file=sys.stderr, disable=not progress or not sys.stderr.isatty(), leave=False)
        run = asyncio.create_task(worker.run(stop))
        replay = worker.feed.stats if isinstance(worker.feed, Replay) else None
        progress_metrics = ReplayMetrics()
        try:
            while not run.done():
                await asyncio.wait({run}, timeout=0.25)
                bar.update(worker.stats.events - bar.n)
                if replay is not None:
                    progress_metrics.progress(read=replay.read, position=replay.last)
        finally:
            bar.close()
            if replay is not None:
                progress_metrics.progress(read=replay.read, position=replay.last)
            progress_metrics.stopped()
        return await run

    @staticmethod
    def summary(
        replay: Replay, worker: Worker, problems: Problems, symbols: SymbolMap, wall: float, sources: Sequence[FileSource] = ()
    ) -> str:
        stats = worker.stats
        skipped = dict(problems.skipped)
        if symbols.unknown:
            skipped[f"unknown symbol ({symbols.report()})"] = sum(symbols.unknown.values())
        if symbols.filtered:
            skipped["not in --symbols"] = symbols.filtered
        if replay.stats.before_window:
            skipped["before --from"] = replay.stats.before_window
        span = ""
        if replay.stats.first is not None and replay.stats.last is not None:
            span = f"; recorded {replay.stats.first:%Y-%m-%d %H:%M:%S} to {replay.stats.last:%Y-%m-%d %H:%M:%S} UTC"
        for symbol, count in stats.not_held.items():
            skipped[f"{symbol} published by another producer"] = count
        passed = ", ".join(f"{kind} {count:,}" for kind, count in sorted(problems.passed_over.items()))
        faults = [found] if (found := stats.faults(worker.hub)) != "none" else []
        for source in sources:
            gaps = getattr(source.format, "gaps", 0)
            if gaps:
                faults.append(f"{source.path.name}: sequence gaps {gaps:,} ({getattr(source.format, 'missed', 0):,} messages lost)")
        lost = "; ".join(f"lost {symbol} to {holder}" for symbol, holder in stats.lost.items())
        return (
            f"replay_feed: {replay.stats.read:,} events read, {stats.events:,} published as {stats.broadcasts:,} updates; "
            f"skipped: {', '.join(f'{reason} {count:,}' for reason, count in skipped.items()) or 'none'}; "
            + (f"passed over (no market data): {passed}; " if passed else "")
            + f"data faults: {', '.join(faults) or 'none'}; "
            + (f"{lost}; " if lost else "")
            + f"{clock_summary(sources)}; "
            f"{wall:.2f} s wall, {stats.events / wall:,.0f} events/s{span}"
        )
