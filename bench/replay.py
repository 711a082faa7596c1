"""Benchmark: replay throughput at --speed max for every recorded format, and pacing at --speed 10.

    python bench/replay.py              (or: make bench-replay)
    python bench/replay.py --profile    (also: cProfile of one binance-aggtrades replay, top costs per event)
    python bench/replay.py --only binance-ws --only cryptofeed --profile-format binance-ws
                                        (some formats only, printed, nothing written; cProfile of any format)

Input: the 5,000 real BTCUSDT aggregate trades in
../shared/data/binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv (relative to the project root).
From them it writes, in a temporary folder, one file of 100,000 trades per format: the 5,000 rows
20 times over, each pass moved forward by the recorded span with ids continued, so every format
carries the same prices, sizes and times: binance-aggtrades, binance-trades, native, binance-ws (µs
times, and again with hftbacktest's ns receive-time prefix), coinbase-ws, cryptofeed (its JSON
envelope around the Coinbase messages), tardis (trades CSV), histdata (quotes around the trade
price), lean-equity (trade ticks, New York ms after midnight, deci-cents), lobster (a limit order at
each trade's price and its execution, against a standing book, with the orderbook file: 3 events a
trade, each message verified against its orderbook row) and csv (a header and a column mapping).
Formats are detected by the registry (`file_sources`), as `replay_feed` does; csv is selected.

Measured per format, best of 3 runs:
- replay: `Worker(feed=Replay(speed=None), conflation=0.1, event_time=True)`, as `replay_feed` runs
  it: parse, normalize, hub state per event, a window per 100 ms of exchange time with its market
  messages built, appended to the (in-process) history and published to an in-memory channel layer
  with one listener (no Redis, no database: the stores are no-ops, no minute hooks, no tape).
  Events/s by wall clock; CPU µs per event by process time.
- parse only: iterating the FileSource, without Replay or the worker, to show where time goes.

Targets (replay events/s on one core; the process pins itself to CPU 0 where the platform allows):
- binance-aggtrades: at least 200,000 events/s;
- the JSON captures binance-ws, coinbase-ws and cryptofeed: at least 150,000 events/s.
  The other formats are reported, not judged.
- pacing: the first 20 s (exchange time) of the real file at --speed 10 take span/10 of wall time,
  within ±10 %.

Prints a markdown table and writes it to bench/results/replay.md, the raw numbers and the machine to
bench/results/replay.json. A missed target is reported as MISSED; the exit code stays 0 (a report).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
INPUT = ROOT.parent / "shared" / "data" / "binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv"
RESULTS = ROOT / "bench" / "results"

PASSES = 20  # × 5,000 rows = 100,000 events per format
RUNS = 3
CONFLATION = 0.1  # seconds: the default MARKETDATA_CONFLATION_MS
QUOTE_FLUSH = 1.0
TARGET_FORMAT = "binance-aggtrades"
TARGET_RATE = 200_000
JSON_RATE = 150_000  # the JSON capture formats
TARGETS = {TARGET_FORMAT: TARGET_RATE, "binance-ws": JSON_RATE, "coinbase-ws": JSON_RATE, "cryptofeed": JSON_RATE}
PACING_SPEED = 10.0
PACING_WINDOW = timedelta(seconds=20)
PACING_TOLERANCE = 0.10

SYMBOL = "BTC-USD"  # the instrument every format resolves to
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EST = timezone(timedelta(hours=-5))  # HistData's clock
NEW_YORK = ZoneInfo("America/New_York")  # Lean's and LOBSTER's
RECEIVE_DELAY_US = 1_250  # receive time − exchange time in the captures that carry both


# -- input ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One aggregate trade of the real file, its numbers kept as the file wrote them."""

    agg_id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    time_us: int
    buyer_maker: bool
    best_match: str

    @property
    def ts(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.time_us)

    @property
    def taker_side(self) -> str:
        return "sell" if self.buyer_maker else "buy"


def read_rows(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        agg_id, price, qty, first_id, last_id, time_us, maker, best = line.split(",")
        rows.append(Row(int(agg_id), price, qty, int(first_id), int(last_id), int(time_us), maker == "True", best))
    return rows


def repeated(rows: Sequence[Row], passes: int) -> list[Row]:
    """`rows` `passes` times, each pass moved forward by the recorded span, ids continued.

    The first row of a pass shares its time with the last of the one before: equal times are
    allowed in every format, only times going backwards are refused."""
    span = rows[-1].time_us - rows[0].time_us
    agg_step = rows[-1].agg_id - rows[0].agg_id + 1
    trade_step = rows[-1].last_id - rows[0].first_id + 1
    out = []
    for k in range(passes):
        for row in rows:
            out.append(
                replace(
                    row,
                    agg_id=row.agg_id + k * agg_step,
                    first_id=row.first_id + k * trade_step,
                    last_id=row.last_id + k * trade_step,
                    time_us=row.time_us + k * span,
                )
            )
    return out


# -- one file per format -------------------------------------------------------------------------


def aggtrades_lines(rows: Sequence[Row]) -> Iterator[str]:
    for r in rows:
        yield f"{r.agg_id},{r.price},{r.qty},{r.first_id},{r.last_id},{r.time_us},{r.buyer_maker},{r.best_match}"


def trades_lines(rows: Sequence[Row]) -> Iterator[str]:
    for r in rows:
        quote_qty = Decimal(r.price) * Decimal(r.qty)
        yield f"{r.first_id},{r.price},{r.qty},{quote_qty:f},{r.time_us},{r.buyer_maker},{r.best_match}"


def native_lines(rows: Sequence[Row]) -> Iterator[str]:
    from marketdata.events import Trade
    from marketdata.feeds import native

    for r in rows:
        yield native.encode(Trade(SYMBOL, r.ts, Decimal(r.price), Decimal(r.qty), "binance", r.taker_side))


def binance_ws_lines(rows: Sequence[Row]) -> Iterator[str]:
    # Times in µs, as a connection with timeUnit=MICROSECOND receives them: the file's own precision.
    for r in rows:
        data = {"e": "aggTrade", "E": r.time_us, "s": "BTCUSDT", "a": r.agg_id, "p": r.price, "q": r.qty}
        data |= {"f": r.first_id, "l": r.last_id, "T": r.time_us, "m": r.buyer_maker, "M": True}
        yield json.dumps({"stream": "btcusdt@aggTrade", "data": data}, separators=(",", ":"))


def rfc3339_ns(ts: datetime) -> str:
    """Coinbase's timestamp form: nanosecond digits and Z."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def coinbase_lines(rows: Sequence[Row]) -> Iterator[str]:
    for sequence, r in enumerate(rows):
        at = rfc3339_ns(r.ts)
        # Coinbase's side is the maker's: the opposite of the taker's side Binance implies.
        trade = {"trade_id": str(r.agg_id), "product_id": SYMBOL, "price": r.price, "size": r.qty}
        trade |= {"side": "BUY" if r.buyer_maker else "SELL", "time": at}
        message = {"channel": "market_trades", "client_id": "", "timestamp": at, "sequence_num": sequence}
        message["events"] = [{"type": "update", "trades": [trade]}]
        yield json.dumps(message, separators=(",", ":"))


def histdata_lines(rows: Sequence[Row]) -> Iterator[str]:
    tick = Decimal("0.01")
    for r in rows:
        local = r.ts.astimezone(EST)
        price = Decimal(r.price)
        yield f"{local:%Y%m%d %H%M%S}{local.microsecond // 1000:03d},{price - tick:f},{price + tick:f},0"


def binance_ws_ns_lines(rows: Sequence[Row]) -> Iterator[str]:
    """As hftbacktest's collector writes them: the receive time in ns since the epoch, a space, the frame."""
    for r, frame in zip(rows, binance_ws_lines(rows), strict=True):
        yield f"{(r.time_us + RECEIVE_DELAY_US) * 1000 + 417} {frame}"


def cryptofeed_lines(rows: Sequence[Row]) -> Iterator[str]:
    """cryptofeed's raw capture of the Coinbase messages: an envelope with the receive time and the message as text."""
    for r, message in zip(rows, coinbase_lines(rows), strict=True):
        received = (r.time_us + RECEIVE_DELAY_US) / 1e6
        yield json.dumps({"type": "ws", "timestamp": received, "data": message}, separators=(",", ":"))


def tardis_lines(rows: Sequence[Row]) -> Iterator[str]:
    yield "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
    for r in rows:
        yield f"binance,BTCUSDT,{r.time_us},{r.time_us + RECEIVE_DELAY_US},{r.agg_id},{r.taker_side},{r.price},{r.qty}"


def _since_ny_midnight_us(ts: datetime) -> int:
    local = ts.astimezone(NEW_YORK)
    return (local - local.replace(hour=0, minute=0, second=0, microsecond=0)) // timedelta(microseconds=1)


def lean_lines(rows: Sequence[Row]) -> Iterator[str]:
    """Lean trade ticks: ms after New York midnight (µs as a fraction), deci-cents, size, exchange, condition, suspicious."""
    for r in rows:
        ms, us = divmod(_since_ny_midnight_us(r.ts), 1000)
        yield f"{ms}.{us:03d},{int(Decimal(r.price).scaleb(4))},{r.qty},P,00000000,0"


# LOBSTER: a standing book far from the trade prices, 10 levels a side; each trade is a limit order
# at its price on the maker's side (the submission) and its execution by the taker, so the book
# runs through a new best level, a level pushed out of the top 10, and back, and is verified
# against the orderbook row after every message. Sizes in whole units of 10⁻⁸ BTC.
LOBSTER_LEVELS = 10
_ASKS = [(1_000_000 + k) * 10_000 for k in range(LOBSTER_LEVELS + 1)]
_BIDS = [(LOBSTER_LEVELS + 1 - k) * 10_000 for k in range(LOBSTER_LEVELS + 1)]


def _lobster_row(bid: tuple[int, int] | None, ask: tuple[int, int] | None) -> str:
    asks = ([ask] if ask else []) + [(p, 100) for p in _ASKS]
    bids = ([bid] if bid else []) + [(p, 100) for p in _BIDS]
    return ",".join(f"{a[0]},{a[1]},{b[0]},{b[1]}" for a, b in zip(asks[:LOBSTER_LEVELS], bids[:LOBSTER_LEVELS], strict=True))


def lobster_files(rows: Sequence[Row]) -> tuple[list[str], list[str]]:
    """(message lines, orderbook lines): two messages and two rows per trade."""
    messages, book = [], []
    for order_id, r in enumerate(rows, start=1):
        us = _since_ny_midnight_us(r.ts)
        at = f"{us // 1_000_000}.{us % 1_000_000:06d}000"
        price, size = int(Decimal(r.price).scaleb(4)), int(Decimal(r.qty).scaleb(8))
        direction = 1 if r.buyer_maker else -1  # the maker's order: a buy limit order when the buyer was the maker
        messages.append(f"{at},1,{order_id},{size},{price},{direction}")
        book.append(_lobster_row((price, size), None) if direction == 1 else _lobster_row(None, (price, size)))
        messages.append(f"{at},4,{order_id},{size},{price},{direction}")
        book.append(_lobster_row(None, None))
    return messages, book


def lobster_lines(rows: Sequence[Row]) -> Iterator[str]:
    yield from lobster_files(rows)[0]


def lobster_book_lines(rows: Sequence[Row]) -> Iterator[str]:
    yield from lobster_files(rows)[1]


def csv_lines(rows: Sequence[Row]) -> Iterator[str]:
    yield "time,symbol,price,size,side"
    for r in rows:
        yield f"{r.time_us},{SYMBOL},{r.price},{r.qty},{r.taker_side}"


@dataclass(frozen=True)
class Spec:
    """One format under test: its file and how `replay_feed` would be asked to read it."""

    name: str  # the registry's format name
    file: str
    lines: Callable[[Sequence[Row]], Iterable[str]]
    detect: bool = True  # found by sniffing, as replay_feed does without --format
    options: Mapping[str, str] = field(default_factory=dict)  # what --option gives
    label: str = ""  # the row's name in the table, when one format is measured twice
    events_per_row: int = 1  # events each trade becomes
    beside: tuple[str, Callable[[Sequence[Row]], Iterable[str]]] | None = None  # a second file next to it (LOBSTER's orderbook)

    @property
    def title(self) -> str:
        return self.label or self.name


SPECS = (
    # The name of the shared file: the symbol comes from its name, the format from its content.
    Spec("binance-aggtrades", "binance_spot_btcusdt_aggtrades_2026-01-01_x20.csv", aggtrades_lines),
    Spec("binance-trades", "BTCUSDT-trades-2026-01-01.csv", trades_lines),
    Spec("native", "btc-usd.jsonl", native_lines),
    Spec("binance-ws", "binance_ws_capture.jsonl", binance_ws_lines),
    Spec("coinbase-ws", "coinbase_capture.jsonl", coinbase_lines),
    Spec("binance-ws", "binance_ws_hftbacktest.jsonl", binance_ws_ns_lines, label="binance-ws (hftbacktest ns prefix)"),
    Spec("cryptofeed", "cryptofeed_coinbase.jsonl", cryptofeed_lines),
    Spec("tardis", "binance_trades_2026-01-01_BTCUSDT.csv", tardis_lines),
    Spec("histdata", "DAT_ASCII_BTCUSD_T_202601.csv", histdata_lines),
    Spec("lean-equity", "20251231_btcusd_Trade_Tick.csv", lean_lines),
    Spec(
        "lobster",
        "BTCUSD_2025-12-31_68400000_86400000_message_10.csv",
        lobster_lines,
        events_per_row=3,  # submission: a BookDelta (the first: the snapshot); execution: a Trade and a BookDelta
        beside=("BTCUSD_2025-12-31_68400000_86400000_orderbook_10.csv", lobster_book_lines),
    ),
    Spec(
        "csv",
        "trades.csv",
        csv_lines,
        detect=False,
        options={"time": "time", "time_format": "epoch_us", "symbol_column": "symbol", "price": "price", "size": "size"},
    ),
)


def write_inputs(folder: Path, rows: Sequence[Row], original: Sequence[str]) -> dict[str, Path]:
    paths = {}
    for spec in SPECS:
        lines = list(spec.lines(rows))
        if spec.title == TARGET_FORMAT and lines[: len(original)] != list(original):
            sys.exit("bench/replay.py: the generated aggTrades file does not start with the original rows")
        path = folder / spec.file
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if spec.beside is not None:
            name, beside = spec.beside
            (folder / name).write_text("\n".join(beside(rows)) + "\n", encoding="utf-8")
        paths[spec.title] = path
    return paths


# -- Django and the pieces of a replay ------------------------------------------------------------


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    # Publishing stays real (group_send, serialization, delivery to a listener) but local: no Redis.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    fresh_channel_layer()


def fresh_channel_layer() -> None:
    """Forget the layer, so the next run gets one (and its queues) on its own event loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()


def symbol_map() -> Any:
    from marketdata.symbols import SymbolMap

    aliases = {(source, "BTCUSD"): SYMBOL for source in ("histdata", "lean", "lobster")}
    return SymbolMap(instruments={SYMBOL}, aliases={("binance", "BTCUSDT"): SYMBOL, **aliases})


def sources_of(spec: Spec, path: Path) -> list[Any]:
    """The sources `replay_feed` would build; strict, so a line the generator got wrong stops the bench."""
    from marketdata.feeds.files import Problems
    from marketdata.feeds.registry import file_sources

    found = file_sources(
        paths=[path],
        format_name=None if spec.detect else spec.name,
        symbols=symbol_map(),
        options=spec.options,
        problems=Problems(strict=True),
    )
    if found[0].format.name != spec.name:
        sys.exit(f"bench/replay.py: {path.name} was detected as {found[0].format.name}, not {spec.name}")
    return found


async def _no_quotes(updates: Iterable[Any]) -> int:
    return 0


async def _no_candles(candles: Sequence[Any]) -> int:
    return 0


async def _no_prune(before: datetime) -> int:
    return 0


def bench_worker(feed: Any) -> Any:
    from marketdata.worker.loop import Worker

    return Worker(
        feed=feed,
        conflation=CONFLATION,
        quote_flush=QUOTE_FLUSH,
        store_quotes=_no_quotes,
        store_candles=_no_candles,
        prune_candles=_no_prune,
        minute_hooks=(),
        replay=True,
        event_time=True,  # as replay_feed runs it (management.base.worker_build): windows of exchange time
        tape=False,
    )


class Listener:
    """A hub sink standing in for a dashboard: takes each ticker's price, as a portfolio book does."""

    def deliver(self, update: Any) -> None:
        update.price  # noqa: B018  # decoded once per process, as for any number of dashboards

    def missed(self, channels: Any) -> None:
        pass


@dataclass
class Run:
    events: int
    wall: float  # seconds
    cpu: float  # seconds of process time
    broadcasts: int = 0


async def replay_once(sources: list[Any], *, speed: float | None, end: datetime | None = None) -> tuple[Run, Any]:
    from marketdata.delivery import streams
    from marketdata.worker.replay import Replay

    replay = Replay(sources=sources, speed=speed, end=end)
    worker = bench_worker(replay)
    await streams.subscribe_market(Listener(), [f"ticker:{SYMBOL}"])  # a dashboard's share of the work: each price decoded
    wall, cpu = time.perf_counter(), time.process_time()
    stats = await worker.run(asyncio.Event())
    cpu, done = time.process_time() - cpu, time.perf_counter()
    return Run(stats.events, done - wall, cpu, stats.broadcasts), replay


def replay_run(spec: Spec, path: Path) -> Run:
    fresh_channel_layer()
    run, _ = asyncio.run(replay_once(sources_of(spec, path), speed=None))
    return run


def parse_run(spec: Spec, path: Path) -> Run:
    (source,) = sources_of(spec, path)
    events = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in source:
        events += 1
    return Run(events, time.perf_counter() - wall, time.process_time() - cpu)


def best(runs: Sequence[Run]) -> Run:
    return min(runs, key=lambda run: run.wall)


# -- measurements ----------------------------------------------------------------------------------


@dataclass
class Result:
    spec: Spec
    replay: list[Run]
    parse: list[Run]

    @property
    def rate(self) -> float:
        run = best(self.replay)
        return run.events / run.wall

    @property
    def cpu_us(self) -> float:
        run = best(self.replay)
        return run.cpu / run.events * 1e6

    @property
    def parse_rate(self) -> float:
        run = best(self.parse)
        return run.events / run.wall

    def verdict(self) -> str:
        target = TARGETS.get(self.spec.title)
        if target is None:
            return "—"
        return f"≥ {target:,}/s: {'PASS' if self.met else 'MISSED'}"

    @property
    def met(self) -> bool:
        return self.rate >= TARGETS.get(self.spec.title, 0)


def measure(spec: Spec, path: Path, expected: int) -> Result:
    result = Result(spec, [replay_run(spec, path) for _ in range(RUNS)], [parse_run(spec, path) for _ in range(RUNS)])
    for run in result.replay + result.parse:
        if run.events != expected:
            sys.exit(f"bench/replay.py: {spec.title} gave {run.events:,} events, expected {expected:,}")
    return result


@dataclass
class Pacing:
    events: int
    span: float  # seconds of exchange time between the first and the last event
    wall: float  # seconds from the start of the worker until the last event was applied
    expected: float

    @property
    def ratio(self) -> float:
        return self.wall / self.expected

    @property
    def error_ms(self) -> float:
        return (self.wall - self.expected) * 1000

    @property
    def passed(self) -> bool:
        return abs(self.ratio - 1) <= PACING_TOLERANCE


def pacing(first: datetime) -> Pacing:
    """The first PACING_WINDOW of the real file at ×PACING_SPEED, with the worker, as replay_feed would."""
    spec = Spec(TARGET_FORMAT, INPUT.name, aggtrades_lines)
    fresh_channel_layer()
    run, replay = asyncio.run(replay_once(sources_of(spec, INPUT), speed=PACING_SPEED, end=first + PACING_WINDOW))
    span = (replay.stats.last - replay.stats.first).total_seconds()
    return Pacing(run.events, span, run.wall, span / PACING_SPEED)


def profile(path: Path, title: str) -> str:
    """cProfile of one replay of a format: the top functions by own time, in µs per event."""
    spec = next(spec for spec in SPECS if spec.title == title)
    sources = sources_of(spec, path)
    fresh_channel_layer()
    profiler = cProfile.Profile()
    profiler.enable()
    run, _ = asyncio.run(replay_once(sources, speed=None))
    profiler.disable()
    events = run.events
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:25]  # type: ignore[attr-defined]
    out = io.StringIO()
    out.write(f"\n\nProfile of one {title} replay ({events:,} events; cProfile inflates every call):\n\n")
    out.write("| own µs/event | total µs/event | calls/event | function |\n|---:|---:|---:|---|\n")
    for (file, line, name), (_, calls, own, total, _) in rows:
        where = f"{Path(file).name}:{line} {name}" if line else name
        out.write(f"| {own / events * 1e6:.2f} | {total / events * 1e6:.2f} | {calls / events:.2f} | `{where}` |\n")
    return out.getvalue()


# -- report ------------------------------------------------------------------------------------


def pin() -> str:
    """Pin to one core, as the target is stated for one core; say what happened."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    try:
        os.sched_setaffinity(0, {0})
    except OSError as exc:
        return f"not pinned ({exc})"
    return "pinned to CPU 0"


def machine(pinned: str) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "affinity": pinned,
    }


def table(results: Sequence[Result]) -> str:
    lines = [
        "| format | events | windows | events/s | CPU µs/event | parse-only events/s | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        run = best(r.replay)
        lines.append(
            f"| {r.spec.title} | {run.events:,} | {run.broadcasts:,} | {r.rate:,.0f} | {r.cpu_us:.2f} | {r.parse_rate:,.0f} | {r.verdict()} |"
        )
    return "\n".join(lines)


def pacing_line(p: Pacing) -> str:
    return (
        f"Pacing: the first {PACING_WINDOW.total_seconds():g} s of the real file ({p.events:,} events, span {p.span:.3f} s) "
        f"at --speed {PACING_SPEED:g}: {p.wall:.3f} s wall, expected {p.expected:.3f} s, ratio {p.ratio:.3f}, "
        f"error {p.error_ms:+.1f} ms: {'PASS' if p.passed else 'FAIL'} (±{PACING_TOLERANCE:.0%})"
    )


def of_target(results: Sequence[Result]) -> Result:
    return next(r for r in results if r.spec.title == TARGET_FORMAT)


def report(results: Sequence[Result], pace: Pacing, info: Mapping[str, Any]) -> str:
    summary = " ".join(
        f"{r.spec.title} meets the {TARGETS[r.spec.title]:,} events/s target ({r.rate:,.0f})."
        if r.met
        else f"**MISSED**: {r.spec.title} replays at {r.rate:,.0f} events/s, below the {TARGETS[r.spec.title]:,} target."
        for r in results
        if r.spec.title in TARGETS
    )
    return "\n\n".join(
        [
            "# Replay throughput (bench/replay.py)",
            f"{info['date']}; Python {info['python']} on {info['platform']}; {info['cpu_count']} CPUs "
            f"({info['cpu_model'] or 'model unknown'}); {info['affinity']}.",
            f"{PASSES * 5_000:,} events per format (the 5,000 real BTCUSDT aggTrades of 2026-01-01 ×{PASSES}), best of {RUNS}. "
            f"events/s and CPU µs/event: Worker(Replay(--speed max), event_time=True) as replay_feed runs it: a window per "
            f"{CONFLATION * 1000:g} ms of exchange time, each window's messages (ticker, trades, candle, books) built, written to "
            "the market history and published; in-memory channel layer with one listener, no database. windows: ticker "
            "updates published (one per window with a price change; the sparse trades make a window per ~2.75 events). "
            "Parse-only: iterating the FileSource alone. Wall time ends when the worker has flushed and returned.",
            table(results),
            summary,
            pacing_line(pace),
        ]
    )


def raw(results: Sequence[Result], pace: Pacing, info: Mapping[str, Any]) -> dict[str, Any]:
    def runs(items: Sequence[Run]) -> list[dict[str, Any]]:
        return [{"events": r.events, "wall_s": r.wall, "cpu_s": r.cpu, "broadcasts": r.broadcasts} for r in items]

    return {
        "machine": dict(info),
        "config": {"input": INPUT.name, "passes": PASSES, "runs": RUNS, "conflation_s": CONFLATION},
        "targets": {r.spec.title: {"events_per_s": TARGETS[r.spec.title], "met": r.met} for r in results if r.spec.title in TARGETS},
        "formats": {
            r.spec.title: {
                "format": r.spec.name,
                "file": r.spec.file,
                "events": best(r.replay).events,
                "events_per_s": r.rate,
                "cpu_us_per_event": r.cpu_us,
                "parse_only_events_per_s": r.parse_rate,
                "replay_runs": runs(r.replay),
                "parse_runs": runs(r.parse),
            }
            for r in results
        },
        "pacing": {
            "speed": PACING_SPEED,
            "window_s": PACING_WINDOW.total_seconds(),
            "events": pace.events,
            "span_s": pace.span,
            "wall_s": pace.wall,
            "expected_s": pace.expected,
            "ratio": pace.ratio,
            "error_ms": pace.error_ms,
            "tolerance": PACING_TOLERANCE,
            "passed": pace.passed,
        },
    }


def main(argv: Sequence[str]) -> None:
    if not INPUT.is_file():
        sys.exit(f"bench/replay.py: the input {INPUT} is missing; it is the shared test data (../shared/data/README.md)")
    pinned = pin()
    print(f"bench/replay.py: {pinned}", flush=True)
    only = {value for flag, value in itertools.pairwise(argv) if flag == "--only"}
    profiled = [value for flag, value in itertools.pairwise(argv) if flag == "--profile-format"]
    if "--profile" in argv:
        profiled.insert(0, TARGET_FORMAT)
    django_setup()
    original = INPUT.read_text(encoding="utf-8").splitlines()
    rows = read_rows(INPUT)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_inputs(Path(folder), repeated(rows, PASSES), original)
        results = []
        for spec in SPECS:
            if only and spec.title not in only:
                continue
            results.append(measure(spec, paths[spec.title], len(rows) * PASSES * spec.events_per_row))
            print(f"  {spec.title}: {results[-1].rate:,.0f} events/s", flush=True)
        if only:
            print("\n" + table(results) + "".join(profile(paths[title], title) for title in profiled))
            return  # a partial run: nothing written
        pace = pacing(rows[0].ts)
        extra = "".join(profile(paths[title], title) for title in profiled)
    info = machine(pinned)
    text = report(results, pace, info)
    print("\n" + text + extra)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.md").write_text(text + "\n", encoding="utf-8")
    (RESULTS / "replay.json").write_text(json.dumps(raw(results, pace, info), indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS / 'replay.md'} and {RESULTS / 'replay.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
