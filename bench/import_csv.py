"""Benchmark: import a generated 10,000-row CSV ledger into a fresh SQLite database.

    python bench/import_csv.py [ROWS]

Target: a few seconds for 10,000 rows (parsing, checking every row, folding the
ledger, one bulk insert and the rebuild), well under 5 s on a laptop.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

HEADER = "executed_at,kind,symbol,quantity,price,fee,currency,fx_rate,note"
SYMBOLS = ("AAPL", "MSFT")


def ledger_lines(rows: int, *, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> Iterator[str]:
    """A sound USD ledger of `rows` rows, one a minute, line by line (each ending in "\\n"): a deposit, then buys with a
    sell and a dividend mixed in.

    Symbols alternate every 10 rows; row i sells 1 when i % 10 == 5, pays a dividend when i % 100 == 50,
    and otherwise buys 2. So 10,000 rows are 1 deposit, 8899 buys, 1000 sells and 100 dividends.
    """
    yield HEADER + "\n"
    yield f"{start:%Y-%m-%dT%H:%M:%SZ},deposit,,{rows * 1000},,,,,bench\n"
    for i in range(1, rows):
        at = f"{start + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ}"
        symbol = SYMBOLS[(i // 10) % 2]
        if i % 100 == 50:
            yield f"{at},dividend,{symbol},10,0.5,,,,\n"
        elif i % 10 == 5:
            yield f"{at},sell,{symbol},1,110,1,,,\n"
        else:
            yield f"{at},buy,{symbol},2,{100 + i % 7}.25,1,,,row {i}\n"


def ledger_csv(rows: int, *, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> str:
    """`ledger_lines` as one string."""
    return "".join(ledger_lines(rows, start=start))


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        os.environ["DATABASE_URL"] = f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        run(rows)


def run(rows: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from marketdata.models import AssetClass, Instrument
    from portfolio import csvio, services

    call_command("migrate", verbosity=0)
    for symbol in SYMBOLS:
        Instrument.objects.create(symbol=symbol, name=symbol, asset_class=AssetClass.EQUITY, quote_currency="USD")
    owner = get_user_model().objects.create_user("bench")
    portfolio = services.portfolio_create(owner_id=owner.pk, name="Bench")
    text = ledger_csv(rows)

    started = time.perf_counter()
    result = csvio.csv_import(portfolio=portfolio, lines=io.StringIO(text, newline=""))
    elapsed = time.perf_counter() - started

    print(f"{result.summary()}")
    print(f"imported {rows} rows in {elapsed:.2f} s: {rows / elapsed:,.0f} rows/s (target: a few seconds for 10,000 rows, under 5 s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
