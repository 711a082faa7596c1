"""A generated Binance depth capture, faithful to what a recorder of the diff depth stream writes.

The recorder follows Binance's "How to manage a local order book correctly"
(https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams):
it opens `<symbol>@depth@100ms`, and while the first diffs arrive it fetches
the REST snapshot (`GET /api/v3/depth`). Each line is the receive time (epoch
ms) and the frame as received (docs/replay-formats.md, `binance-ws`):

    1767225599012 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1767225599000,"s":"BTCUSDT","U":...,"u":...,"b":[...],"a":[...]}}
    1767225599655 {"lastUpdateId":...,"bids":[...],"asks":[...]}

What makes it faithful, and consistent enough for a strict local book:
- diffs every 100 ms, `U` = the previous `u` + 1, and `u` - `U` + 1 at least the
  number of levels changed (several updates of one level fold into one);
- the REST snapshot arrives after some diffs, and its `lastUpdateId` falls inside
  a diff's `U`..`u`: it holds part of that diff (removals first, so the partial
  book is never crossed), and the first diff to apply after it straddles it;
- quantities are absolute, "0" removes a level; prices and quantities are
  written with eight decimals as Binance does ("87648.21000000");
- the book follows a trade file: after a taker sell at p the best bid is p,
  after a taker buy the best ask is p, the spread one tick.

`write_depth_capture` returns the book as it stands after the last diff, so a test
can check what a client ends up showing against it.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

TICK = Decimal("0.01")
EIGHT = Decimal("0.00000001")
INTERVAL_MS = 100


@dataclass
class Capture:
    """What was written: counts, the time span (epoch ms), and the book after the last diff."""

    path: Path
    diffs: int = 0
    first_ms: int = 0
    last_ms: int = 0
    snapshot_id: int = 0
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)

    def top(self, n: int) -> tuple[list[list[str]], list[list[str]]]:
        """The best `n` levels each side, best first, spelled as the market channels spell decimals (no trailing zeros)."""
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return [[wire(p), wire(q)] for p, q in bids], [[wire(p), wire(q)] for p, q in asks]


def wire(value: Decimal) -> str:
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def binance(value: Decimal) -> str:
    """Binance's spelling: eight decimals."""
    return f"{value.quantize(EIGHT):f}"


def read_trades(path: Path) -> list[tuple[int, Decimal, str]]:
    """(time in epoch ms, price, taker side) of each row of a Binance aggTrades CSV (µs or ms times, by length)."""
    out = []
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if not row or not row[0].strip().isdigit():
                continue  # a header
            raw = row[5].strip()
            ms = int(raw) // 1000 if len(raw) >= 16 else int(raw)
            out.append((ms, Decimal(row[1]), "sell" if row[6].strip() == "True" else "buy"))
    return out


class _Book:
    """The exchange's book as the generator moves it: price → quantity per side."""

    def __init__(self, rng: random.Random, levels: int) -> None:
        self.rng = rng
        self.levels = levels
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def qty(self) -> Decimal:
        # Mostly small resting orders, now and then a large one.
        size = self.rng.expovariate(1 / 0.25) if self.rng.random() < 0.9 else self.rng.uniform(1, 6)
        return max(Decimal("0.00001"), Decimal(str(round(size, 5))))

    def step(self, best_bid: Decimal, best_ask: Decimal) -> list[tuple[str, Decimal, Decimal]]:
        """Move the book one 100 ms step: (side, price, new quantity) per changed level, removals first."""
        changes: dict[tuple[str, Decimal], Decimal] = {}

        def put(side: str, price: Decimal, qty: Decimal) -> None:
            book = self.bids if side == "b" else self.asks
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)
            changes[(side, price)] = qty

        # The touch moves with the trades: what crossed it goes, the new best levels appear.
        for price in [p for p in self.bids if p > best_bid]:
            put("b", price, Decimal(0))
        for price in [p for p in self.asks if p < best_ask]:
            put("a", price, Decimal(0))
        if best_bid not in self.bids:
            put("b", best_bid, self.qty())
        if best_ask not in self.asks:
            put("a", best_ask, self.qty())
        # Orders come and go near the touch, more rarely deeper.
        for _ in range(self.rng.randint(1, 6)):
            side = self.rng.choice("ba")
            book = self.bids if side == "b" else self.asks
            ordered = sorted(book, reverse=side == "b")
            if not ordered:
                continue
            index = min(len(ordered) - 1, int(self.rng.expovariate(1 / 4)))
            price = ordered[index]
            if index > 0 and self.rng.random() < 0.2:
                put(side, price, Decimal(0))
            else:
                put(side, price, self.qty())
        if self.rng.random() < 0.6:
            side = self.rng.choice("ba")
            offset = TICK * self.rng.randint(1, 120)
            price = best_bid - offset if side == "b" else best_ask + offset
            if price not in (self.bids if side == "b" else self.asks):
                put(side, price, self.qty())
        # Keep some depth on both sides, and not too much.
        for side, book in (("b", self.bids), ("a", self.asks)):
            while len(book) < self.levels:
                worst = min(book) if side == "b" else max(book)
                offset = TICK * self.rng.randint(1, 40)
                put(side, worst - offset if side == "b" else worst + offset, self.qty())
            while len(book) > self.levels * 3 // 2:
                put(side, min(book) if side == "b" else max(book), Decimal(0))
        # Removals first: a client holding part of this diff (a snapshot taken inside it) is never crossed.
        ordered_changes = sorted(changes.items(), key=lambda item: item[1] != 0)
        return [(side, price, qty) for (side, price), qty in ordered_changes]


def _levels(changes: list[tuple[str, Decimal, Decimal]], side: str) -> list[list[str]]:
    rows = sorted(((p, q) for s, p, q in changes if s == side), reverse=side == "b")
    return [[binance(p), binance(q)] for p, q in rows]


def write_depth_capture(
    path: Path,
    *,
    trades: Path,
    symbol: str = "BTCUSDT",
    seed: int = 20260101,
    levels: int = 60,
    lead_ms: int = 1_000,
    snapshot_at_ms: int = 400,
    first_update_id: int = 79_151_223_001,
) -> Capture:
    """Write a capture of `symbol@depth@100ms` covering the trades of `trades` (an aggTrades CSV), a REST snapshot early on.

    The stream starts `lead_ms` before the first trade; the snapshot is taken inside the diff
    at about `snapshot_at_ms` into the stream and received a little later.
    """
    rng = random.Random(seed)
    prices = read_trades(trades)
    if not prices:
        raise ValueError(f"{trades} holds no trades")
    stream = f"{symbol.lower()}@depth@100ms"
    start = (prices[0][0] - lead_ms) // INTERVAL_MS * INTERVAL_MS
    end = prices[-1][0] + INTERVAL_MS

    book = _Book(rng, levels)
    first_price = prices[0][1]
    book.step(first_price - TICK, first_price)  # the book before the recorder connects
    capture = Capture(path=path, first_ms=start)

    lines: list[tuple[int, str]] = []  # (receive time, line)
    update_id = first_update_id
    trade = 0
    snapshot_pending = True
    for event_ms in range(start, end + 1, INTERVAL_MS):
        while trade + 1 < len(prices) and prices[trade + 1][0] <= event_ms:
            trade += 1
        price, side = prices[trade][1], prices[trade][2]
        best_bid, best_ask = (price, price + TICK) if side == "sell" else (price - TICK, price)
        before = (dict(book.bids), dict(book.asks))
        changes = book.step(best_bid, best_ask)
        if not changes:
            continue
        first = update_id
        # Several updates of one level fold into one entry: the ids run further than the levels listed.
        last = first + len(changes) - 1 + rng.randint(0, 2 * len(changes))
        update_id = last + 1
        # Exchange time: the 100 ms tick plus a little; receive time: plus the network.
        exchange_ms = event_ms + rng.randint(0, 3)
        received_ms = exchange_ms + rng.randint(2, 25)
        data = {
            "e": "depthUpdate",
            "E": exchange_ms,
            "s": symbol,
            "U": first,
            "u": last,
            "b": _levels(changes, "b"),
            "a": _levels(changes, "a"),
        }
        lines.append((received_ms, json.dumps({"stream": stream, "data": data}, separators=(",", ":"))))
        capture.diffs += 1
        capture.last_ms = exchange_ms

        if snapshot_pending and event_ms - start >= snapshot_at_ms and len(changes) >= 2:
            # The REST snapshot is taken inside this diff: it holds its first few changes (ids first..snapshot_id).
            held = rng.randint(1, len(changes) - 1)
            snapshot_id = first + held - 1
            bids, asks = before
            for change_side, change_price, qty in changes[:held]:
                levels_of = bids if change_side == "b" else asks
                if qty:
                    levels_of[change_price] = qty
                else:
                    levels_of.pop(change_price, None)
            snapshot = {
                "lastUpdateId": snapshot_id,
                "bids": [[binance(p), binance(q)] for p, q in sorted(bids.items(), reverse=True)],
                "asks": [[binance(p), binance(q)] for p, q in sorted(asks.items())],
            }
            # REST is slower than the stream: a few more diffs arrive before the answer does.
            lines.append((received_ms + 230 + rng.randint(0, 60), json.dumps(snapshot, separators=(",", ":"))))
            capture.snapshot_id = snapshot_id
            snapshot_pending = False

    # A capture is in receive order.
    lines.sort(key=lambda item: item[0])
    with path.open("w") as handle:
        for received_ms, line in lines:
            handle.write(f"{received_ms} {line}\n")
    capture.bids, capture.asks = book.bids, book.asks
    return capture
