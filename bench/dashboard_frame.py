"""What a dashboard's frame costs in the server process, apart from daphne (docs/scaling.md, M-figures).

In-process, no sockets: one USD portfolio of `--holdings` holdings and cash as a LiveBook (what
`/ws/portfolio/` holds per connection), prices applied (`LiveBook.apply`, what a delivery does),
then `take_changes()` and `encode_frame` (what the flusher's tick does per dirty dashboard), for
1, 2, 5 and all holdings changed per frame; and what the minute hook spends valuing one portfolio
(`portfolio.history.portfolio_values_store`, without the database). Best of `--repeat` rounds of
process time.

    .venv/bin/python bench/dashboard_frame.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from marketdata.delivery.fanout import encode_frame  # noqa: E402
from marketdata.events import PriceUpdate  # noqa: E402
from portfolio.live import LiveBook, View  # noqa: E402
from portfolio.selectors import Market, PortfolioBook  # noqa: E402
from portfolio.valuation import Cash, Flows, Line, Price  # noqa: E402

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def book(holdings: int) -> tuple[LiveBook, list[str]]:
    symbols = [f"S{i:03d}" for i in range(holdings)]
    lines = tuple(
        Line(s, f"Instrument {s}", "equity", "USD", Decimal(10 + i), Decimal(1000 + i), Decimal(1000 + i)) for i, s in enumerate(symbols)
    )
    flows = Flows(Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(100000))
    books = [PortfolioBook(1, "Bench", "USD", lines, (Cash("USD", Decimal("5000.00")),), flows)]
    prices = {s: Price(Decimal("100.00"), T0, 1, "1", Decimal("99.50")) for s in symbols}
    return LiveBook(books, Market(prices=prices, pairs={}, asset_classes={"equity": "Equity"})), symbols


def run(holdings: int, changed: int, frames: int) -> tuple[float, float, int]:
    """Process seconds per applied price and per frame (take_changes + encode), and the frame's length."""
    live, symbols = book(holdings)
    seq = 1
    updates = []
    for _ in range(frames):
        seq += 1
        for s in symbols[:changed]:
            price = Decimal(100) + Decimal(seq % 97) / 100
            updates.append(PriceUpdate(s, seq, "1", price, None, None, T0 + timedelta(milliseconds=seq), "bench", 1, Decimal("99.50")))
    start = time.process_time()
    for u in updates:
        live.apply(u)
    applied = time.process_time() - start
    # The frames: the same prices again, `changed` at a time, each followed by its frame.
    live2, _ = book(holdings)
    length = 0
    spent = 0.0
    for i in range(frames):
        batch = updates[i * changed : (i + 1) * changed]
        for u in batch:
            live2.apply(u)
        start = time.process_time()
        text = encode_frame(live2.take_changes() or {})
        spent += time.process_time() - start
        length = len(text)
    return applied / len(updates), spent / frames, length


def minute_value(holdings: int, portfolios: int) -> float:
    """Process seconds per portfolio of what the minute hook does in Python for each one, per minute
    (`portfolio.history.portfolio_values_store`: a View of the book at the minute's prices, its total value)."""
    live, _ = book(holdings)
    market, books = live.market, [view.book for view in live.views]
    start = time.process_time()
    for _ in range(portfolios):
        for b in books:
            view = View(b, market)
            if view.rows and all(row.market_value is not None for row in view.rows.values()):
                view.totals()
    return (time.process_time() - start) / portfolios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdings", type=int, default=10)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.holdings} holdings + cash, {args.frames} frames per round, best of {args.repeat}")
    print("| holdings changed per frame | µs per applied price | µs per frame (revalue + build + encode) | frame bytes |")
    print("|---:|---:|---:|---:|")
    for changed in sorted({1, 2, 5, args.holdings}):
        rounds = [run(args.holdings, changed, args.frames) for _ in range(args.repeat)]
        apply = min(r[0] for r in rounds)
        frame = min(r[1] for r in rounds)
        print(f"| {changed} | {apply * 1e6:.1f} | {frame * 1e6:.1f} | {rounds[0][2]:,} |")
    valued = min(minute_value(args.holdings, args.frames) for _ in range(args.repeat))
    print(f"\nminute hook, valuing one portfolio of {args.holdings} holdings + cash in Python (no database): {valued * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
