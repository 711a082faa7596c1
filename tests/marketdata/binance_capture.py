"""A Binance spot combined-stream capture built by hand from the exchange's documentation, for replay tests.

https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams: a true order
book changes one update id at a time; the diff depth stream (`<sym>@depth@100ms`) sends the
changes of each 100 ms as one `depthUpdate` covering ids U..u; `<sym>@bookTicker` sends the
top after a change, with that change's id `u`; `<sym>@aggTrade` the trades. The recorder asks
for the REST snapshot after subscribing, so the snapshot's `lastUpdateId` falls inside a diff
that was already received: its line comes after that diff ("straddling"), as the doc's
"How to manage a local order book correctly" expects.

Each line is `<receive time> <frame>`, the receive time 5 ms after the event time, in the
unit asked for (ms, or ns as hftbacktest's collector writes it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of every conflation window
TICK = Decimal("0.01")


@dataclass
class Capture:
    lines: list[str] = field(default_factory=list)
    # bookTickers whose `u` is a diff's `u`: u → (bid, bid qty, ask, ask qty), the top after that diff.
    checkpoints: dict[int, tuple[str, str, str, str]] = field(default_factory=dict)
    snapshot_id: int = 0  # lastUpdateId of the REST snapshot
    diffs: int = 0
    trades: int = 0

    def write(self, path: Path) -> Path:
        path.write_text("".join(line + "\n" for line in self.lines))
        return path


def _q(value: Decimal) -> str:
    return f"{value:.8f}"


def binance_capture(*, seed: int = 7, diffs: int = 100, snapshot_after: int = 3, receive_unit: str = "ms") -> Capture:
    """`diffs` depth updates 100 ms apart (at E = base + 100·k + 37 ms), the snapshot after diff `snapshot_after`."""
    rng = random.Random(seed)
    scale = {"ms": 1, "ns": 1_000_000}[receive_unit]
    mid = Decimal("100.00")
    bids = {mid - TICK * i: Decimal(rng.randint(1, 9)) for i in range(1, 30)}
    asks = {mid + TICK * i: Decimal(rng.randint(1, 9)) for i in range(0, 30)}
    update_id = 1000
    capture = Capture()
    trade_id = 500

    def line(ms: int, stream: str, data: dict[str, object]) -> None:
        frame = json.dumps({"stream": f"btcusdt@{stream}", "data": data}, separators=(",", ":"))
        capture.lines.append(f"{(ms + 5) * scale} {frame}")

    def top() -> tuple[str, str, str, str]:
        bid, ask = max(bids), min(asks)
        return (str(bid), _q(bids[bid]), str(ask), _q(asks[ask]))

    def snapshot_line() -> str:
        levels = {
            "lastUpdateId": update_id,
            "bids": [[str(p), _q(q)] for p, q in sorted(bids.items(), reverse=True)],
            "asks": [[str(p), _q(q)] for p, q in sorted(asks.items())],
        }
        return f"{(event_ms + 5) * scale} {json.dumps(levels, separators=(',', ':'))}"

    pending_snapshot: str | None = None
    for k in range(diffs):
        event_ms = BASE_MS + 100 * k + 37
        first = update_id + 1
        changed: dict[str, dict[Decimal, Decimal]] = {"b": {}, "a": {}}
        for _ in range(rng.randint(2 if k == snapshot_after else 1, 4)):
            update_id += 1
            side, book = ("b", bids) if rng.random() < 0.5 else ("a", asks)
            best_bid, best_ask = max(bids), min(asks)
            if side == "b":
                price = best_bid + TICK * rng.randint(-3, 1)
                price = min(price, best_ask - TICK)
            else:
                price = best_ask + TICK * rng.randint(-1, 3)
                price = max(price, best_bid + TICK)
            qty = Decimal(0) if price in book and rng.random() < 0.3 and len(book) > 5 else Decimal(rng.randint(1, 9))
            if qty:
                book[price] = qty
            else:
                del book[price]
            changed[side][price] = qty
            if snapshot_after == k and pending_snapshot is None and update_id == first + 0:
                # The REST answer is taken in the middle of this diff's changes: lastUpdateId inside U..u.
                pending_snapshot = snapshot_line()
                capture.snapshot_id = update_id
            if rng.random() < 0.3:
                # A bookTicker for an id inside the diff: not a checkpoint (no diff ends there).
                bid, bid_qty, ask, ask_qty = top()
                line(event_ms - 10, "bookTicker", {"u": update_id, "s": "BTCUSDT", "b": bid, "B": bid_qty, "a": ask, "A": ask_qty})
        data = {
            "e": "depthUpdate",
            "E": event_ms,
            "s": "BTCUSDT",
            "U": first,
            "u": update_id,
            "b": [[str(p), _q(q)] for p, q in sorted(changed["b"].items(), reverse=True)],
            "a": [[str(p), _q(q)] for p, q in sorted(changed["a"].items())],
        }
        line(event_ms, "depth@100ms", data)
        capture.diffs += 1
        if pending_snapshot is not None and k == snapshot_after:
            capture.lines.append(pending_snapshot)
        bid, bid_qty, ask, ask_qty = top()
        line(event_ms + 1, "bookTicker", {"u": update_id, "s": "BTCUSDT", "b": bid, "B": bid_qty, "a": ask, "A": ask_qty})
        capture.checkpoints[update_id] = (bid, bid_qty, ask, ask_qty)
        for at in sorted(event_ms + rng.randint(2, 50) for _ in range(rng.randint(0, 3))):
            trade_id += 1
            price = max(bids) if rng.random() < 0.5 else min(asks)
            trade = {"e": "aggTrade", "E": at, "s": "BTCUSDT", "a": trade_id, "p": str(price), "q": "0.5", "f": trade_id, "l": trade_id}
            line(at, "aggTrade", trade | {"T": at, "m": price == max(bids), "M": True})
            capture.trades += 1
    return capture
