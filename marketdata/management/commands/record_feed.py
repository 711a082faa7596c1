"""Record what flows through the feed workers as native JSONL, for `replay_feed`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata import selectors
from marketdata.management.base import symbols_wanted, until_stopped
from marketdata.worker.recording import Recorder


class Command(BaseCommand):
    help = "Record every event the running feed workers apply (live or replayed) to a native JSONL file, until Ctrl-C or --duration."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="File to write (refuses to overwrite one that exists).")
        parser.add_argument("--symbols", nargs="+", help="Only these instruments (symbols or aliases).")
        parser.add_argument("--duration", type=float, help="Stop after this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path = options["out"]
        wanted = symbols_wanted(selectors.symbol_map_load(), options["symbols"])
        if options["duration"] is not None and options["duration"] <= 0:
            raise CommandError("--duration must be above 0")
        try:
            stream = out.open("x", encoding="utf-8", newline="\n")
        except FileExistsError:
            raise CommandError(f"{out} exists; choose another --out") from None
        except OSError as exc:
            raise CommandError(f"cannot write {out}: {exc}") from exc
        with stream:
            recorder = Recorder(out=stream, symbols=wanted)
            self.stdout.write(f"record_feed: recording to {out}; Ctrl-C to stop")
            try:
                stats = asyncio.run(until_stopped(recorder.run, duration=options["duration"]))
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc
        gaps = f", {stats.gaps} chunks lost (see the log)" if stats.gaps else ", no gaps"
        self.stdout.write(f"record_feed: {stats.events:,} events from {len(stats.epochs)} worker runs written to {out}{gaps}")
