"""Livefolio's Prometheus metrics: every name is defined here, and nowhere else (docs/operations.md, "Metrics and health").

**Nothing per tick touches Prometheus.** A `prometheus_client` update costs ~2 µs (a lock and, in
multiprocess mode, a write to a memory-mapped file), more than a tenth of what delivering an update
to a socket costs. So the hot paths count in plain integers, once per process: the hub's own
`HubStats`, and an `EndpointTally` per endpoint that every outbox, the connection cap and the hub's
subscriptions add to (an integer add per frame). `sync()` moves what changed into the Prometheus
metrics, once a second on each server process's event loop (`ensure_sync`), and before every
scrape. The feed worker moves its `WorkerStats` at most once a second, after a publish (`WorkerMetrics`). Rare events
(a close, an outage) update their metric directly.

**Several processes on one machine** (N daphne processes, the feed workers): with
PROMETHEUS_MULTIPROC_DIR set in their environment before they start, `prometheus_client` keeps each
process's values in files there, and a scrape of any one process's `/metrics` sums them all
(`registry()`); the files of live-mode gauges of processes that are gone are removed at each scrape
(`reap_dead_processes`). Without it each process has its own registry and its `/metrics` shows
only itself. Gauges say how they combine across processes: `livesum` (open connections: the sum
over running processes), `livemax` (a book's sync state), `max` (the newest update of a symbol,
which must outlive a killed worker so that its staleness shows).

Labels are bounded: `endpoint` (market, portfolio, other), `reason` (a fixed list each), `worker`
(run_feeds, replay_feed), `component`, and `symbol` only for per-symbol feed state (one per instrument
published live; replay sandboxes are left out).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.metrics import MetricWrapperBase

SYNC_SECONDS = 1.0
ENDPOINTS = ("market", "portfolio", "other")
_PATHS = {"/ws/v1/market": "market", "/ws/portfolio/": "portfolio"}

# Closes the server decides, by reason (the code each stands for: docs/websocket-api.md, "Close codes").
CLOSE_REASONS = {
    "slow_consumer": "4408: unsent data stayed over MARKET_WS_SEND_BUFFER_BYTES",
    "rate_limited": "4429: too many frames, or too many requests waiting",
    "capacity": "1013: WS_MAX_CONNECTIONS or MARKET_WS_ANONYMOUS_MAX reached",
    "too_many_connections": "4409: MARKET_WS_CONNECTIONS_PER_USER or MARKET_WS_ANONYMOUS_PER_ADDRESS reached",
    "outage": "1013: Redis or the database unreachable",
    "message_too_big": "1009 (4009 under daphne): a frame over MARKET_WS_MAX_MESSAGE_BYTES",
    "auth_failed": "4401: a bad API token, or a dashboard without a session",
    "auth_locked": "4423: too many failed logins from the address",
}
_CLOSE_CODES = {4408: "slow_consumer", 4429: "rate_limited", 4409: "too_many_connections", 1013: "outage", 1009: "message_too_big"}
_CLOSE_CODES |= {4009: "message_too_big", 4401: "auth_failed", 4423: "auth_locked"}

# --- the web processes (daphne) -----------------------------------------------------------------

WS_CONNECTIONS = Gauge(
    "livefolio_ws_connections", "Open WebSockets (past the origin check), by endpoint.", ["endpoint"], multiprocess_mode="livesum"
)
WS_CONNECTIONS_OPENED = Counter(
    "livefolio_ws_connections_opened_total", "WebSockets let in past the connection cap, by endpoint.", ["endpoint"]
)
WS_SUBSCRIPTIONS = Gauge(
    "livefolio_ws_subscriptions",
    "Market channels held on the process's hub by sockets (an API socket's channels and its portfolio books' tickers; "
    "a dashboard's tickers), by endpoint.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
WS_CLOSES = Counter("livefolio_ws_closes_total", "WebSockets the server closed, by endpoint and reason.", ["endpoint", "reason"])
WS_FRAMES_SENT = Counter("livefolio_ws_frames_sent_total", "WebSocket frames handed to the ASGI server, by endpoint.", ["endpoint"])
WS_SENT_BYTES = Counter(
    "livefolio_ws_sent_bytes_total",
    "Characters of those frames (bytes, for the ASCII JSON they nearly always are), by endpoint.",
    ["endpoint"],
)
WS_DROPPED_FRAMES = Counter(
    "livefolio_ws_dropped_frames_total",
    "Frames dropped: inbound over the rate (rate_limited), or queued for a socket closed as slow (slow_consumer).",
    ["endpoint", "reason"],
)
HUB_PAYLOADS = Counter("livefolio_hub_payloads_total", "Payloads the fan-out hubs received (one per symbol per worker window).")
HUB_MESSAGES = Counter("livefolio_hub_messages_total", "Market messages in those payloads.")
HUB_DELIVERIES = Counter(
    "livefolio_hub_deliveries_total", "Messages handed to local sockets (one per message per socket holding its channel)."
)
HUB_DROPPED = Counter(
    "livefolio_hub_dropped_total",
    "Payloads or messages the hubs dropped: malformed, or fenced (from a producer that lost its lease).",
    ["reason"],
)
HUB_RECONNECTS = Counter("livefolio_hub_reconnects_total", "Times a hub lost its Redis connection (and reconnected).")
HUB_CONNECTED = Gauge(
    "livefolio_hub_connected",
    "Hubs holding a live Redis subscription connection (one per process that has subscribers).",
    multiprocess_mode="livesum",
)
HUB_SYMBOLS = Gauge("livefolio_hub_symbols", "Streams (symbols) the hubs subscribe to in Redis.", multiprocess_mode="livesum")
FANOUT_LAG = Counter(
    "livefolio_fanout_lag_seconds_total", "Seconds from the worker's publish to a hub's receipt, summed over the payloads timed."
)
FANOUT_LAG_PAYLOADS = Counter("livefolio_fanout_lag_payloads_total", "Payloads timed for livefolio_fanout_lag_seconds_total.")
FANOUT_LAG_MAX = Gauge(
    "livefolio_fanout_lag_max_seconds", "The longest publish-to-hub lag of the last second, in any process.", multiprocess_mode="livemax"
)
REDIS_ERRORS = Counter(
    "livefolio_redis_errors_total",
    "Redis failures seen: worker (a failed write or lease renewal), hub (a lost subscription connection), web (a socket closed on the outage), "
    "readyz (a server that did not answer /readyz's PING).",
    ["component"],
)
DATABASE_ERRORS = Counter(
    "livefolio_database_errors_total",
    "Database failures seen: worker (a failed write), web (a page answered 503, a socket closed on the outage).",
    ["component"],
)

# --- the feed workers (run_feeds, replay_feed) ---------------------------------------------------

WORKER_EVENTS = Counter("livefolio_worker_events_total", "Events a worker applied (trades, quotes, book updates).", ["worker"])
WORKER_WINDOWS = Counter("livefolio_worker_windows_total", "Conflation windows a worker closed.", ["worker"])
WORKER_UPDATES = Counter(
    "livefolio_worker_updates_total", "Price updates a worker published (at most one per symbol per window).", ["worker"]
)
WORKER_MESSAGES = Counter("livefolio_worker_published_messages_total", "Market-channel messages a worker published.", ["worker"])
WORKER_PUBLISH = Histogram(
    "livefolio_worker_publish_seconds",
    "Time to publish a batch of closed windows (history write, then one PUBLISH per symbol in one round trip).",
    ["worker"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
WORKER_DROPPED = Counter(
    "livefolio_worker_dropped_messages_total",
    "Market messages a worker could not deliver: redis_down (dropped while Redis was unreachable), lease_lost (unpublished when its lease went).",
    ["worker", "reason"],
)
WORKER_SKIPPED = Counter(
    "livefolio_worker_skipped_events_total", "Events a worker skipped because another producer holds the symbol (standing by).", ["worker"]
)
WORKER_LEASES = Gauge(
    "livefolio_worker_leases_held", "Symbol leases a worker holds (one producer per symbol).", ["worker"], multiprocess_mode="livesum"
)
WORKER_LEASE_LOSSES = Counter(
    "livefolio_worker_lease_losses_total", "Leases a worker lost to another producer (taken over or fenced).", ["worker"]
)
WORKER_RESTATES = Counter(
    "livefolio_worker_restates_total", "Times a worker published every symbol afresh under a new epoch once Redis was back.", ["worker"]
)
FEED_LAST_UPDATE = Gauge(
    "livefolio_feed_last_update_timestamp_seconds",
    "Unix time a symbol's last update was published live (staleness: time() minus this).",
    ["symbol"],
    multiprocess_mode="max",
)
BOOK_SYNCED = Gauge(
    "livefolio_book_synced",
    "1 while a symbol's order book is in sync with the exchange, 0 while it waits for a snapshot.",
    ["symbol"],
    multiprocess_mode="livemax",
)
BOOK_LOSSES = Counter(
    "livefolio_book_sync_losses_total", "Times a symbol's order book lost its sync (an update id gap, a crossed book).", ["symbol"]
)
BOOK_RESYNCS = Counter("livefolio_book_resyncs_total", "Times a snapshot brought a symbol's order book back in sync.", ["symbol"])
REPLAY_READ = Counter("livefolio_replay_read_events_total", "Events replay_feed read from its files.")
REPLAY_POSITION = Gauge(
    "livefolio_replay_position_timestamp_seconds", "Recorded time (Unix) of the last event replay_feed read.", multiprocess_mode="livemax"
)
REPLAY_RUNNING = Gauge("livefolio_replay_running", "Replays running.", multiprocess_mode="livesum")

METRICS: tuple[MetricWrapperBase, ...] = tuple(value for value in list(globals().values()) if isinstance(value, MetricWrapperBase))


def sample_names() -> set[str]:
    """Every sample name these metrics expose (`x_total` of a counter, `x_bucket`/`x_sum`/`x_count` of a histogram)."""
    names: set[str] = set()
    for metric in METRICS:
        for family in metric.describe():
            kind = family.type
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}[kind]
            names.update(family.name + suffix for suffix in suffixes)
    return names


# --- multiprocess mode ---------------------------------------------------------------------------


def multiprocess_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR, or "" in per-process mode; refuses a half-configured process."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if bool(path) != bool(getattr(values.ValueClass, "_multiprocess", False)):
        from django.core.exceptions import ImproperlyConfigured  # here: the API's session imports this module without Django

        raise ImproperlyConfigured(
            "PROMETHEUS_MULTIPROC_DIR must be in the environment before the process starts (prometheus_client reads it once, "
            "at import): set it in the service's environment or .env, not at run time"
        )
    return path


_PID_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def reap_dead_processes(path: str) -> list[int]:
    """Remove the live-mode gauge files of processes that are no longer running (killed, crashed): their open connections,
    leases and subscriptions no longer count. Counters stay: a dead process's totals still happened."""
    dead = set()
    for name in os.listdir(path):
        match = _PID_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def registry() -> CollectorRegistry:
    """What `/metrics` exposes: every process's metrics on this machine (multiprocess mode), or this process's own."""
    path = multiprocess_dir()
    if not path:
        return REGISTRY
    reap_dead_processes(path)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, path=path)
    return combined


def exposition() -> bytes:
    """The text a scrape gets (call `sync()` first, on the event loop, so that this process's latest counts are in it).
    Safe off the event loop: it reads files and metric values only."""
    return generate_latest(registry())


# --- the hot paths' tallies, synced once a second --------------------------------------------------


class EndpointTally:
    """One endpoint's counts in this process, as plain integers: what the hot path adds to."""

    __slots__ = ("connections", "dropped", "endpoint", "frames", "opened", "sent", "subscriptions")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.frames = 0  # frames handed to the server
        self.sent = 0  # their characters
        self.connections = 0  # open now
        self.opened = 0
        self.subscriptions = 0  # hub routes held now
        self.dropped: Tally[str] = Tally()


TALLIES = {endpoint: EndpointTally(endpoint) for endpoint in ENDPOINTS}


def endpoint_tally(endpoint: str) -> EndpointTally:
    return TALLIES.get(endpoint, TALLIES["other"])


def endpoint_of_path(path: str) -> str:
    return _PATHS.get(path, "other")


def sink_tally(sink: object) -> EndpointTally:
    """The tally of a hub sink (a consumer says its `endpoint`)."""
    return endpoint_tally(getattr(sink, "endpoint", "other"))


def ws_closed(endpoint: str, reason: str) -> None:
    """A socket the server closed, for `reason` (one of CLOSE_REASONS)."""
    WS_CLOSES.labels(endpoint, reason).inc()


def ws_closed_with(endpoint: str, code: int) -> None:
    """A socket the server closed with `code`, counted under the reason the code stands for (codes not listed are not counted)."""
    reason = _CLOSE_CODES.get(code)
    if reason is not None:
        ws_closed(endpoint, reason)


_hubs: weakref.WeakSet[Any] = weakref.WeakSet()
_synced: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
_endpoint_synced: dict[str, Tally[str]] = {endpoint: Tally() for endpoint in ENDPOINTS}
_lag: list[float] = [0.0, 0, 0.0]  # publish-to-hub lag since the last sync: sum, payloads, max


def hub_created(hub: Any) -> None:
    """A fan-out hub (`marketdata.delivery.fanout.LocalHub`) whose stats `sync` reports."""
    _hubs.add(hub)


def lag_observed(seconds: float) -> None:
    """A payload's publish-to-receipt lag (one call per payload, not per socket)."""
    lag = _lag
    lag[0] += seconds
    lag[1] += 1
    if seconds > lag[2]:
        lag[2] = seconds


def _delta(seen: dict[str, int] | Tally[str], name: str, value: int) -> int:
    change = value - seen.get(name, 0)
    seen[name] = value
    return change


def sync() -> None:
    """Move what the tallies and the hubs counted since the last call into the Prometheus metrics."""
    for endpoint, tally in TALLIES.items():
        ends = _endpoint_synced[endpoint]
        WS_CONNECTIONS.labels(endpoint).set(tally.connections)
        WS_SUBSCRIPTIONS.labels(endpoint).set(tally.subscriptions)
        for metric, name, value in (
            (WS_FRAMES_SENT, "frames", tally.frames),
            (WS_SENT_BYTES, "sent", tally.sent),
            (WS_CONNECTIONS_OPENED, "opened", tally.opened),
        ):
            if change := _delta(ends, name, value):
                metric.labels(endpoint).inc(change)
        for reason, count in tally.dropped.items():
            if change := _delta(ends, f"dropped:{reason}", count):
                WS_DROPPED_FRAMES.labels(endpoint, reason).inc(change)
    connected = symbols = 0
    for hub in list(_hubs):
        stats = hub.stats
        seen = _synced.setdefault(hub, {})
        for metric, name in (
            (HUB_PAYLOADS, "payloads"),
            (HUB_MESSAGES, "messages"),
            (HUB_DELIVERIES, "deliveries"),
            (HUB_RECONNECTS, "reconnects"),
        ):
            if change := _delta(seen, name, getattr(stats, name)):
                metric.inc(change)
                if name == "reconnects":
                    REDIS_ERRORS.labels("hub").inc(change)
        for reason in ("malformed", "fenced"):
            if change := _delta(seen, reason, getattr(stats, reason)):
                HUB_DROPPED.labels(reason).inc(change)
        if hub.redis is not None:
            connected += hub.connection_id is not None
            symbols += len(hub.symbols())
    HUB_CONNECTED.set(connected)
    HUB_SYMBOLS.set(symbols)
    total, timed, longest = _lag
    _lag[:] = [0.0, 0, 0.0]
    if timed:
        FANOUT_LAG.inc(total)
        FANOUT_LAG_PAYLOADS.inc(timed)
    FANOUT_LAG_MAX.set(longest)


_syncing: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def ensure_sync() -> None:
    """Sync once a second on the running event loop, from now on (once per loop; cheap to call per connection)."""
    loop = asyncio.get_running_loop()
    if loop not in _syncing:
        _syncing.add(loop)
        loop.call_later(SYNC_SECONDS, _tick, loop)


def _tick(loop: asyncio.AbstractEventLoop) -> None:
    try:
        sync()
    finally:
        if not loop.is_closed():
            loop.call_later(SYNC_SECONDS, _tick, loop)


# --- the feed worker -----------------------------------------------------------------------------


class WorkerMetrics:
    """A worker's `WorkerStats`, its outages and its books, moved into the metrics at most once a second (it is asked
    after each publish) and when it stops.

    `worker`: the command (run_feeds, replay_feed); `per_symbol`: report feed staleness and book state per symbol
    (not for a replay sandbox, whose symbols are not the live ones).
    """

    def __init__(self, worker: str, *, per_symbol: bool = True) -> None:
        self.worker = worker
        self.per_symbol = per_symbol
        self._seen: dict[str, int] = {}
        self._books: dict[str, tuple[bool, int, int]] = {}
        self._published: dict[str, float] = {}  # symbol → when it was last published, not yet in the metrics
        self._synced_at = float("-inf")

    def published(self, symbols: Iterable[str]) -> None:
        """These symbols were just published live (their staleness starts again at the next sync)."""
        if self.per_symbol:
            self._published.update(dict.fromkeys(symbols, time.time()))

    def publish_took(self, seconds: float) -> None:
        WORKER_PUBLISH.labels(self.worker).observe(seconds)

    def sync(self, worker: Any, *, force: bool = False) -> None:
        """Move what `worker` (a `marketdata.worker.loop.Worker`) counted since the last sync into the metrics: at most
        once per SYNC_SECONDS unless `force`."""
        now = time.monotonic()
        if not force and now - self._synced_at < SYNC_SECONDS:
            return
        self._synced_at = now
        name, stats, seen = self.worker, worker.stats, self._seen
        published, self._published = self._published, {}
        for symbol, at in published.items():
            FEED_LAST_UPDATE.labels(symbol).set(at)
        for metric, key, value in (
            (WORKER_EVENTS, "events", stats.events),
            (WORKER_WINDOWS, "windows", stats.windows),
            (WORKER_UPDATES, "broadcasts", stats.broadcasts),
            (WORKER_MESSAGES, "messages", stats.market_messages),
            (WORKER_SKIPPED, "skipped", sum(stats.not_held.values())),
            (WORKER_LEASE_LOSSES, "losses", stats.lease_losses),
            (WORKER_RESTATES, "restated", stats.restated),
        ):
            if change := _delta(seen, key, value):
                metric.labels(name).inc(change)
        for reason, value in (("redis_down", stats.undelivered), ("lease_lost", stats.lease_dropped)):
            if change := _delta(seen, reason, value):
                WORKER_DROPPED.labels(name, reason).inc(change)
        if change := _delta(seen, "redis_errors", worker.redis_outage.failures + stats.market_store_errors):
            REDIS_ERRORS.labels("worker").inc(change)
        if change := _delta(seen, "database_errors", worker.db_outage.failures):
            DATABASE_ERRORS.labels("worker").inc(change)
        WORKER_LEASES.labels(name).set(len(worker.held_symbols) if worker.leases is not None else 0)
        if self.per_symbol:
            self._sync_books(worker.hub.books)

    def _sync_books(self, books: dict[str, Any]) -> None:
        for symbol, book in books.items():
            state = (book.synced, book.losses, book.resyncs)
            before = self._books.get(symbol)
            if state == before:
                continue
            self._books[symbol] = state
            BOOK_SYNCED.labels(symbol).set(1 if book.synced else 0)
            old_losses, old_resyncs = (before[1], before[2]) if before is not None else (0, 0)
            if book.losses > old_losses:
                BOOK_LOSSES.labels(symbol).inc(book.losses - old_losses)
            if book.resyncs > old_resyncs:
                BOOK_RESYNCS.labels(symbol).inc(book.resyncs - old_resyncs)

    def stopped(self) -> None:
        """The worker is done: it holds no lease any more."""
        WORKER_LEASES.labels(self.worker).set(0)


class ReplayMetrics:
    """replay_feed's progress: events read and the recorded time reached."""

    def __init__(self) -> None:
        self._read = 0
        REPLAY_RUNNING.inc()

    def progress(self, *, read: int, position: Any) -> None:
        if read > self._read:
            REPLAY_READ.inc(read - self._read)
            self._read = read
        if position is not None:
            REPLAY_POSITION.set(position.timestamp())

    def stopped(self) -> None:
        REPLAY_RUNNING.dec()
