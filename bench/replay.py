"""Benchmark: replay throughput at --speed max for every recorded format, and pacing at --speed 10.

    python bench/replay.py              (or: make bench-replay)
    python bench/replay.py --profile    (also: cProfile of one binance-aggtrades replay, top costs per event)

Input: the 5,000 real BTCUSDT aggregate trades in
../shared/data/binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv (relative to the project root).
From them it writes, in a temporary folder, one file of 100,000 events per format: the 5,000 rows
20 times over, each pass moved forward by the recorded span with ids continued, so every format
carries the same prices, sizes and times (binance-aggtrades, binance-trades, native, binance-ws,
coinbase-ws, histdata as quotes around the trade price, csv with a header and a column mapping).
Formats are detected by the registry (`file_sources`), as `replay_feed` does; csv is selected.

Measured per format, best of 3 runs:
- replay: `Worker(feed=Replay(speed=None), conflation=0.1)`: parse, normalize, hub state per event,
  and conflated publishing to an in-memory channel layer with one listener (no Redis, no database:
  the stores are no-ops, no minute hooks, no tape). Events/s by wall clock; CPU µs per event by
  process time.
- parse only: iterating the FileSource, without Replay or the worker, to show where time goes.

Targets:
- binance-aggtrades replay: at least 200,000 events/s on one core (the process pins itself to CPU 0
  where the platform allows). The other formats are reported, not judged.
- pacing: the first 20 s (exchange time) of the real file at --speed 10 take span/10 of wall time,
  within ±10 %.

Prints a markdown table and writes it to bench/results/replay.md, the raw numbers and the machine to
bench/results/replay.json. A missed target is reported as MISSED; the exit code stays 0 (a report).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
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

ROOT = Path(__file__).resolve().parent.parent
INPUT = ROOT.parent / "shared" / "data" / "binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv"
RESULTS = ROOT / "bench" / "results"

PASSES = 20  # × 5,000 rows = 100,000 events per format
RUNS = 3
CONFLATION = 0.1  # seconds: the default MARKETDATA_CONFLATION_MS
QUOTE_FLUSH = 1.0
TARGET_FORMAT = "binance-aggtrades"
TARGET_RATE = 200_000
PACING_SPEED = 10.0
PACING_WINDOW = timedelta(seconds=20)
PACING_TOLERANCE = 0.10

SYMBOL = "BTC-USD"  # the instrument every format resolves to
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EST = timezone(timedelta(hours=-5))  # HistData's clock


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


SPECS = (
    # The name of the shared file: the symbol comes from its name, the format from its content.
    Spec("binance-aggtrades", "binance_spot_btcusdt_aggtrades_2026-01-01_x20.csv", aggtrades_lines),
    Spec("binance-trades", "BTCUSDT-trades-2026-01-01.csv", trades_lines),
    Spec("native", "btc-usd.jsonl", native_lines),
    Spec("binance-ws", "binance_ws_capture.jsonl", binance_ws_lines),
    Spec("coinbase-ws", "coinbase_capture.jsonl", coinbase_lines),
    Spec("histdata", "DAT_ASCII_BTCUSD_T_202601.csv", histdata_lines),
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
        if spec.name == TARGET_FORMAT and lines[: len(original)] != list(original):
            sys.exit("bench/replay.py: the generated aggTrades file does not start with the original rows")
        path = folder / spec.file
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[spec.name] = path
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

    return SymbolMap(instruments={SYMBOL}, aliases={("binance", "BTCUSDT"): SYMBOL, ("histdata", "BTCUSD"): SYMBOL})


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
        if self.spec.name != TARGET_FORMAT:
            return "—"
        return f"≥ {TARGET_RATE:,}/s: {'PASS' if self.rate >= TARGET_RATE else 'MISSED'}"


def measure(spec: Spec, path: Path, expected: int) -> Result:
    result = Result(spec, [replay_run(spec, path) for _ in range(RUNS)], [parse_run(spec, path) for _ in range(RUNS)])
    for run in result.replay + result.parse:
        if run.events != expected:
            sys.exit(f"bench/replay.py: {spec.name} gave {run.events:,} events, expected {expected:,}")
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


def profile(path: Path, events: int) -> str:
    """cProfile of one binance-aggtrades replay: the top functions by own time, in µs per event."""
    spec = next(spec for spec in SPECS if spec.name == TARGET_FORMAT)
    sources = sources_of(spec, path)
    fresh_channel_layer()
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(replay_once(sources, speed=None))
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:25]  # type: ignore[attr-defined]
    out = io.StringIO()
    out.write(f"\n\nProfile of one {TARGET_FORMAT} replay ({events:,} events; cProfile inflates every call):\n\n")
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
        "| format | events | events/s | CPU µs/event | parse-only events/s | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        events = best(r.replay).events
        lines.append(f"| {r.spec.name} | {events:,} | {r.rate:,.0f} | {r.cpu_us:.2f} | {r.parse_rate:,.0f} | {r.verdict()} |")
    return "\n".join(lines)


def pacing_line(p: Pacing) -> str:
    return (
        f"Pacing: the first {PACING_WINDOW.total_seconds():g} s of the real file ({p.events:,} events, span {p.span:.3f} s) "
        f"at --speed {PACING_SPEED:g}: {p.wall:.3f} s wall, expected {p.expected:.3f} s, ratio {p.ratio:.3f}, "
        f"error {p.error_ms:+.1f} ms: {'PASS' if p.passed else 'FAIL'} (±{PACING_TOLERANCE:.0%})"
    )


def of_target(results: Sequence[Result]) -> Result:
    return next(r for r in results if r.spec.name == TARGET_FORMAT)


def report(results: Sequence[Result], pace: Pacing, info: Mapping[str, Any]) -> str:
    target = of_target(results)
    missed = target.rate < TARGET_RATE
    summary = (
        f"**MISSED**: {TARGET_FORMAT} replays at {target.rate:,.0f} events/s, below the {TARGET_RATE:,} target."
        if missed
        else f"{TARGET_FORMAT} meets the {TARGET_RATE:,} events/s target ({target.rate:,.0f})."
    )
    return "\n\n".join(
        [
            "# Replay throughput (bench/replay.py)",
            f"{info['date']}; Python {info['python']} on {info['platform']}; {info['cpu_count']} CPUs "
            f"({info['cpu_model'] or 'model unknown'}); {info['affinity']}.",
            f"{PASSES * 5_000:,} events per format (the 5,000 real BTCUSDT aggTrades of 2026-01-01 ×{PASSES}), best of {RUNS}. "
            f"events/s and CPU µs/event: Worker(Replay(--speed max)), {CONFLATION * 1000:g} ms conflation, in-memory channel "
            "layer with one listener, no database. Parse-only: iterating the FileSource alone. Wall time ends when the worker "
            "has flushed and returned.",
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
        "target": {"format": TARGET_FORMAT, "events_per_s": TARGET_RATE, "met": of_target(results).rate >= TARGET_RATE},
        "formats": {
            r.spec.name: {
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
    django_setup()
    original = INPUT.read_text(encoding="utf-8").splitlines()
    rows = read_rows(INPUT)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_inputs(Path(folder), repeated(rows, PASSES), original)
        results = []
        for spec in SPECS:
            results.append(measure(spec, paths[spec.name], len(rows) * PASSES))
            print(f"  {spec.name}: {results[-1].rate:,.0f} events/s", flush=True)
        pace = pacing(rows[0].ts)
        extra = profile(paths[TARGET_FORMAT], len(rows) * PASSES) if "--profile" in argv else ""
    info = machine(pinned)
    text = report(results, pace, info)
    print("\n" + text + extra)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.md").write_text(text + "\n", encoding="utf-8")
    (RESULTS / "replay.json").write_text(json.dumps(raw(results, pace, info), indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS / 'replay.md'} and {RESULTS / 'replay.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
