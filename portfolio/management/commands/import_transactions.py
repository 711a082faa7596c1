"""Import a CSV ledger into a portfolio, all or nothing (format: docs/csv-format.md)."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from portfolio import csvio
from portfolio.ledger import plain
from portfolio.management.base import interrupt_on_sigterm, portfolio_get
from portfolio.services import LedgerProblems


class Command(BaseCommand):
    help = "Import transactions from a CSV file into a portfolio: every row is checked first, and nothing is written unless all are sound."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV file (see docs/csv-format.md), or - for standard input.")
        parser.add_argument("--portfolio", type=int, required=True, help="Id of the portfolio to import into.")
        parser.add_argument("--dry-run", action="store_true", help="Check everything and show the result, but write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        portfolio = portfolio_get(options["portfolio"])
        written = False
        try:
            with interrupt_on_sigterm(), self.source(options["file"]) as stream:
                result = csvio.csv_import(portfolio=portfolio, lines=self.progress(stream), dry_run=options["dry_run"])
                written = not result.dry_run
        except LedgerProblems as exc:
            for problem in exc.problems:
                self.stderr.write(csvio.describe(problem))
            if unlisted := exc.total - len(exc.problems):
                self.stderr.write(
                    f"... and {unlisted} more problem{'s' if unlisted != 1 else ''} (the first {len(exc.problems)} are listed)"
                )
            count, source = exc.total, "standard input" if options["file"] == "-" else options["file"]
            raise CommandError(f"import_transactions: {count} problem{'s' if count != 1 else ''} in {source}; nothing imported") from None
        except KeyboardInterrupt:
            outcome = "the import was already written" if written else "nothing written"
            raise CommandError(f"import_transactions: interrupted; {outcome}", returncode=130) from None
        if result.dry_run:
            self.preview(result)
        ending = "dry run: nothing written" if result.dry_run else "written"
        self.stdout.write(f"import_transactions: {result.summary()} in {time.monotonic() - started:.1f} s; {ending}")

    @contextmanager
    def source(self, path: str) -> Iterator[TextIO]:
        # utf-8-sig: a byte-order mark (as Excel writes) is dropped; newline="" as the csv module needs.
        if path == "-":
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
            try:
                yield stdin
            finally:
                stdin.detach()  # leave sys.stdin open
            return
        try:
            stream = open(path, encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        with stream:
            yield stream

    def progress(self, lines: Iterable[str]) -> Iterable[str]:
        """Lines read so far, on stderr when it is a terminal."""
        return tqdm(lines, desc="reading", unit=" lines", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)

    def preview(self, result: csvio.CsvImport) -> None:
        self.stdout.write(f"Would import: {result.kind_counts() or 'nothing'}")
        self.stdout.write("Holdings after the import:" if result.holdings() else "Holdings after the import: none")
        for symbol, quantity, average in result.holdings():
            self.stdout.write(f"  {symbol:<12} {plain(quantity):>20}  average cost {plain(average)}")
        self.stdout.write("Cash after the import:" if result.cash() else "Cash after the import: none")
        for currency, amount in result.cash():
            self.stdout.write(f"  {currency:<12} {plain(amount):>20}")
