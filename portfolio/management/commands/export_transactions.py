"""Export a portfolio's ledger as CSV, oldest first, in the format `import_transactions` reads."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portfolio import csvio
from portfolio.management.base import interrupt_on_sigterm, portfolio_get
from portfolio.models import Portfolio


class Command(BaseCommand):
    help = "Write a portfolio's transactions as CSV (see docs/csv-format.md), oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--portfolio", type=int, required=True, help="Id of the portfolio to export.")
        parser.add_argument("--out", help="File to write (default: standard output). Replaced only once the export is complete.")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        portfolio = portfolio_get(options["portfolio"])
        out = options["out"]
        try:
            with interrupt_on_sigterm():
                count = self.to_file(portfolio, Path(out)) if out else csvio.csv_export(portfolio=portfolio, stream=self.stdout)
        except KeyboardInterrupt:
            raise CommandError("export_transactions: interrupted" + (f"; {out} left as it was" if out else ""), returncode=130) from None
        self.stderr.write(
            f'export_transactions: {count} transactions from "{portfolio.name}" to {out or "standard output"} '
            f"in {time.monotonic() - started:.1f} s"
        )

    def to_file(self, portfolio: Portfolio, path: Path) -> int:
        # Written beside the target and renamed, so an interrupted export never leaves half a file.
        partial = path.with_name(path.name + ".part")
        try:
            with partial.open("w", encoding="utf-8", newline="") as stream:
                count = csvio.csv_export(portfolio=portfolio, stream=stream)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(f"cannot write {path}: {exc.strerror}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return count
