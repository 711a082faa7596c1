"""Rebuild portfolios' daily value history from their ledgers and the daily closes (docs/accounting.md, "Performance")."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portfolio.management.base import interrupt_on_sigterm, portfolio_get
from portfolio.models import Portfolio
from portfolio.performance import daily_values_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the daily values of every portfolio (or one) from the ledger and the daily closes, e.g. after import_prices. "
        "Each portfolio is rebuilt in its own transaction. The feed worker does this once a day by itself."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--portfolio", type=int, help="Only this portfolio (id).")
        parser.add_argument("--since", default="", help="Only days from this one (YYYY-MM-DD); default: all.")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        since = self.since(options["since"])
        portfolios = [portfolio_get(options["portfolio"])] if options["portfolio"] else list(Portfolio.objects.order_by("pk"))
        days = incomplete = failed = done = 0
        try:
            with interrupt_on_sigterm():
                for portfolio in portfolios:
                    result = daily_values_rebuild(portfolio=portfolio, since=since)
                    if result.error:
                        failed += 1
                        self.stderr.write(f"portfolio {portfolio.pk} ({portfolio.name}): {result.error}")
                    days, incomplete, done = days + result.days, incomplete + result.incomplete, done + 1
        except KeyboardInterrupt:
            raise CommandError(f"rebuild_daily_values: interrupted after {done} of {len(portfolios)} portfolios", returncode=130) from None
        summary = f"rebuild_daily_values: {len(portfolios)} portfolios, {days} days written ({incomplete} incomplete)"
        if failed:
            raise CommandError(f"{summary}; {failed} could not be replayed")
        self.stdout.write(f"{summary} in {time.monotonic() - started:.1f} s")

    def since(self, text: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise CommandError(f"rebuild_daily_values: --since {text!r} is not YYYY-MM-DD") from None
