"""Import daily closes from a vendor's CSV (Yahoo Finance, Stooq, or date,symbol,close), or make them from stored candles."""

from __future__ import annotations

import io
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata import services
from marketdata.closes_csv import FormatError, parse_date


class Command(BaseCommand):
    help = (
        "Import daily closes from a CSV file: a Yahoo Finance or Stooq download of one symbol (--symbol), or date,symbol,close rows. "
        "Bad rows are listed with their line and skipped; importing again updates. With --from-candles, make daily closes "
        "from the stored 1-minute candles instead (each instrument's last candle of each UTC day)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="CSV file, or - for standard input.")
        parser.add_argument("--symbol", default="", help="The instrument a Yahoo or Stooq file is for (symbol or alias).")
        parser.add_argument("--adjusted", action="store_true", help="Take Yahoo's Adj Close (dividends reinvested) instead of Close.")
        parser.add_argument("--dry-run", action="store_true", help="Check and count, but write nothing.")
        parser.add_argument("--from-candles", action="store_true", help="Make daily closes from the stored candles; no file.")
        parser.add_argument("--since", default="", help="With --from-candles: only days from this one (YYYY-MM-DD).")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        if options["from_candles"]:
            self.from_candles(since=self.since(options["since"]), started=started)
            return
        path = options["file"]
        if not path:
            raise CommandError("import_prices: name a CSV file (or - for standard input), or use --from-candles")
        try:
            with self.source(path) as stream:
                result = services.daily_closes_import(
                    lines=stream, symbol=options["symbol"], adjusted=options["adjusted"], dry_run=options["dry_run"]
                )
        except FormatError as exc:
            raise CommandError(f"import_prices: {exc}") from None
        except KeyboardInterrupt:
            raise CommandError("import_prices: interrupted; nothing written", returncode=130) from None
        for bad in result.bad:
            self.stderr.write(f"line {bad.line}: {bad.reason}")
        ending = "dry run: nothing written" if result.dry_run else "written"
        self.stdout.write(f"import_prices: {result.summary()} in {time.monotonic() - started:.1f} s; {ending}")

    def since(self, text: str) -> date | None:
        if not text:
            return None
        try:
            return parse_date(text)
        except ValueError as exc:
            raise CommandError(f"import_prices: --since: {exc}") from None

    def from_candles(self, *, since: date | None, started: float) -> None:
        days = services.daily_closes_days_with_candles(since=since)
        rows = 0
        try:
            for day in days:
                rows += services.daily_closes_from_candles(day=day)
        except KeyboardInterrupt:
            raise CommandError(f"import_prices: interrupted after {rows} closes (each day is written whole)", returncode=130) from None
        self.stdout.write(f"import_prices: {rows} closes from candles over {len(days)} days in {time.monotonic() - started:.1f} s")

    def source(self, path: str) -> AbstractContextManager[TextIO]:
        # utf-8-sig: a byte-order mark (as Excel writes) is dropped; newline="" as the csv module needs.
        if path == "-":
            return nullcontext(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline=""))
        try:
            return open(path, encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise CommandError(f"import_prices: cannot read {path}: {exc.strerror}") from None
