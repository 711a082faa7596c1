"""config/metrics.py: the names, the tallies synced into Prometheus, the worker's metrics, and several processes summed
through one PROMETHEUS_MULTIPROC_DIR; and, through config.asgi.application, sockets counted by endpoint and closes
by reason."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from django.conf import settings as django_settings
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from config import metrics
from marketdata.delivery import fanout
from marketdata.worker.book import OrderBook
from marketdata.worker.loop import WorkerStats
from marketdata.worker.outage import Outage
from tests.conftest import until
from tests.marketdata.api.test_consumer import connect
from tests.servers import Daphne, process, stack_env

DASHBOARD_JSON = Path(django_settings.BASE_DIR) / "docs" / "deploy" / "grafana-livefolio.json"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- names ---------------------------------------------------------------------------------


def test_every_metric_is_a_livefolio_name_in_base_units() -> None:
    names = metrics.sample_names()
    assert len(metrics.METRICS) >= 30
    for name in names:
        assert re.fullmatch(r"livefolio_[a-z_]+", name), name
    counters = [m for m in metrics.METRICS if m._type == "counter"]
    assert all(f"{m._name}_total" in names for m in counters)
    assert "livefolio_ws_sent_bytes_total" in names and "livefolio_worker_publish_seconds_bucket" in names
    assert not [name for name in names if "millis" in name or name.endswith(("_ms", "_kb"))]  # seconds and bytes only


def test_only_bounded_labels_are_used() -> None:
    allowed = {"endpoint", "reason", "worker", "component", "symbol"}
    for metric in metrics.METRICS:
        assert set(metric._labelnames) <= allowed, (metric._name, metric._labelnames)


def test_every_close_code_counted_stands_for_a_documented_reason() -> None:
    assert set(metrics._CLOSE_CODES.values()) <= set(metrics.CLOSE_REASONS)
    assert metrics._CLOSE_CODES[4408] == "slow_consumer" and metrics._CLOSE_CODES[4429] == "rate_limited"


def test_the_grafana_dashboard_uses_only_names_defined_here() -> None:
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\blivefolio_[a-z_]+", expr)}
    assert used, "the dashboard queries no livefolio metric"
    assert used <= metrics.sample_names(), sorted(used - metrics.sample_names())


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    text = DASHBOARD_JSON.read_text()
    for name in (
        "livefolio_ws_connections",
        "livefolio_ws_subscriptions",
        "livefolio_hub_deliveries_total",
        "livefolio_ws_frames_sent_total",
        "livefolio_ws_sent_bytes_total",
        "livefolio_ws_closes_total",
        "livefolio_fanout_lag_seconds_total",
        "livefolio_worker_windows_total",
        "livefolio_feed_last_update_timestamp_seconds",
        "livefolio_book_synced",
        "livefolio_replay_position_timestamp_seconds",
        "livefolio_redis_errors_total",
        "livefolio_database_errors_total",
    ):
        assert name in text, name


# -- tallies and sync ----------------------------------------------------------------------


def test_tallied_frames_and_bytes_reach_prometheus_only_at_sync() -> None:
    metrics.sync()
    frames, sent = (
        value("livefolio_ws_frames_sent_total", endpoint="portfolio"),
        value("livefolio_ws_sent_bytes_total", endpoint="portfolio"),
    )
    tally = metrics.endpoint_tally("portfolio")
    tally.frames += 3
    tally.sent += 120
    assert value("livefolio_ws_frames_sent_total", endpoint="portfolio") == frames
    metrics.sync()
    assert value("livefolio_ws_frames_sent_total", endpoint="portfolio") == frames + 3
    assert value("livefolio_ws_sent_bytes_total", endpoint="portfolio") == sent + 120
    metrics.sync()  # nothing new: nothing added twice
    assert value("livefolio_ws_frames_sent_total", endpoint="portfolio") == frames + 3


def test_an_unknown_endpoint_or_path_is_counted_as_other() -> None:
    assert metrics.endpoint_of_path("/ws/v1/market") == "market"
    assert metrics.endpoint_of_path("/ws/portfolio/") == "portfolio"
    assert metrics.endpoint_of_path("/ws/anything") == "other"
    assert metrics.endpoint_tally("nonsense") is metrics.TALLIES["other"]


class Sink:
    endpoint = "market"

    def __init__(self) -> None:
        self.got: list[fanout.Update] = []

    def deliver(self, update: fanout.Update) -> None:
        self.got.append(update)

    def missed(self, channels: Any) -> None:
        pass


async def test_a_hub_counts_deliveries_subscriptions_and_lag_and_prometheus_hears_at_sync() -> None:
    hub = fanout.LocalHub()
    sinks = [Sink(), Sink()]
    metrics.sync()
    deliveries, subscriptions = value("livefolio_hub_deliveries_total"), value("livefolio_ws_subscriptions", endpoint="market")
    lag, timed = value("livefolio_fanout_lag_seconds_total"), value("livefolio_fanout_lag_payloads_total")
    for sink in sinks:
        await hub.subscribe(sink, ["ticker:AAPL"])
    message = {"ch": "ticker:AAPL", "epoch": "1", "seq": 1, "ts": 0, "data": {"price": "1"}}
    hub.publish_local("AAPL", fanout.encode_payload([message], None, 1.0))  # published at Unix time 1: a long lag
    assert all(len(sink.got) == 1 for sink in sinks)
    metrics.sync()
    assert value("livefolio_hub_deliveries_total") == deliveries + 2
    assert value("livefolio_ws_subscriptions", endpoint="market") == subscriptions + 2
    assert value("livefolio_fanout_lag_payloads_total") == timed + 1
    assert value("livefolio_fanout_lag_seconds_total") - lag > 1_000_000_000
    assert value("livefolio_fanout_lag_max_seconds") > 1_000_000_000
    hub.unsubscribe(sinks[0], ["ticker:AAPL"])
    metrics.sync()
    assert value("livefolio_ws_subscriptions", endpoint="market") == subscriptions + 1
    hub.unsubscribe(sinks[1], ["ticker:AAPL"])


async def test_a_malformed_payload_is_counted_as_a_hub_drop() -> None:
    hub = fanout.LocalHub()
    sink = Sink()
    await hub.subscribe(sink, ["ticker:MSFT"])
    metrics.sync()
    before = value("livefolio_hub_dropped_total", reason="malformed")
    hub.publish_local("MSFT", b"not json")
    metrics.sync()
    assert value("livefolio_hub_dropped_total", reason="malformed") == before + 1
    hub.unsubscribe(sink, ["ticker:MSFT"])


# -- the worker ----------------------------------------------------------------------------


def fake_worker(books: dict[str, OrderBook]) -> Any:
    outage = {"first": 0.1, "cap": 1.0}
    return SimpleNamespace(
        stats=WorkerStats(),
        redis_outage=Outage("Redis", **outage),
        db_outage=Outage("the database", **outage),
        leases=object(),
        held_symbols=frozenset({"AAPL", "MSFT"}),
        hub=SimpleNamespace(books=books),
    )


def test_worker_metrics_count_windows_drops_errors_leases_and_book_state() -> None:
    book = OrderBook("TESTBOOK")
    worker = fake_worker({"TESTBOOK": book})
    watched = metrics.WorkerMetrics("run_feeds")
    before = {
        "windows": value("livefolio_worker_windows_total", worker="run_feeds"),
        "dropped": value("livefolio_worker_dropped_messages_total", worker="run_feeds", reason="redis_down"),
        "redis": value("livefolio_redis_errors_total", component="worker"),
        "db": value("livefolio_database_errors_total", component="worker"),
    }
    worker.stats.windows += 5
    worker.stats.undelivered += 7
    worker.redis_outage.failed(ConnectionError("refused"), what="publishing")
    worker.db_outage.failed(OSError("gone"), what="storing quotes")
    watched.sync(worker, force=True)
    assert value("livefolio_worker_windows_total", worker="run_feeds") == before["windows"] + 5
    assert value("livefolio_worker_dropped_messages_total", worker="run_feeds", reason="redis_down") == before["dropped"] + 7
    assert value("livefolio_redis_errors_total", component="worker") == before["redis"] + 1
    assert value("livefolio_database_errors_total", component="worker") == before["db"] + 1
    assert value("livefolio_worker_leases_held", worker="run_feeds") == 2
    assert value("livefolio_book_synced", symbol="TESTBOOK") == 0  # no snapshot yet
    book._synced = True
    book.losses = 1
    worker.stats.windows += 1
    watched.sync(worker)  # within a second of the last: nothing yet
    assert value("livefolio_worker_windows_total", worker="run_feeds") == before["windows"] + 5
    watched.sync(worker, force=True)
    assert value("livefolio_book_synced", symbol="TESTBOOK") == 1
    assert value("livefolio_book_sync_losses_total", symbol="TESTBOOK") >= 1
    watched.stopped()
    assert value("livefolio_worker_leases_held", worker="run_feeds") == 0


def test_a_published_symbol_gets_its_last_update_time_unless_it_is_a_sandbox() -> None:
    sandbox, live = metrics.WorkerMetrics("replay_feed", per_symbol=False), metrics.WorkerMetrics("run_feeds")
    sandbox.published(["SANDBOXED"])
    sandbox.sync(fake_worker({}), force=True)
    assert REGISTRY.get_sample_value("livefolio_feed_last_update_timestamp_seconds", {"symbol": "SANDBOXED"}) is None
    live.published(["STALE-TEST"])
    live.sync(fake_worker({}), force=True)
    assert value("livefolio_feed_last_update_timestamp_seconds", symbol="STALE-TEST") > 1.7e9


# -- several processes ---------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    import django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from config import metrics
    metrics.ws_closed("market", "rate_limited")
    metrics.endpoint_tally("market").connections += 2
    metrics.endpoint_tally("market").frames += 10
    metrics.sync()
    print("counted", flush=True)
    sys.stdin.read()  # alive until the test closes our stdin
    """
)


def test_two_processes_sharing_a_multiprocess_dir_are_summed_and_a_dead_ones_open_connections_go(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, cwd=django_settings.BASE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "counted"

        def collected() -> CollectorRegistry:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(tmp_path))
            return registry

        registry = collected()
        assert registry.get_sample_value("livefolio_ws_closes_total", {"endpoint": "market", "reason": "rate_limited"}) == 2
        assert registry.get_sample_value("livefolio_ws_frames_sent_total", {"endpoint": "market"}) == 20
        assert registry.get_sample_value("livefolio_ws_connections", {"endpoint": "market"}) == 4
        children[0].kill()
        children[0].wait()
        assert metrics.reap_dead_processes(str(tmp_path)) == [children[0].pid]
        registry = collected()
        assert registry.get_sample_value("livefolio_ws_connections", {"endpoint": "market"}) == 2  # the living one's only
        assert registry.get_sample_value("livefolio_ws_closes_total", {"endpoint": "market", "reason": "rate_limited"}) == 2  # totals stay
    finally:
        for child in children:
            if child.poll() is None:
                assert child.stdin is not None
                child.stdin.close()
                child.wait(timeout=10)


# -- through config.asgi.application -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_market_connection_is_counted_by_endpoint_while_open(instruments: Any) -> None:
    metrics.sync()
    before = value("livefolio_ws_connections", endpoint="market")
    opened = value("livefolio_ws_connections_opened_total", endpoint="market")
    async with connect() as ws:
        assert ws.hello["type"] == "hello"
        metrics.sync()
        assert value("livefolio_ws_connections", endpoint="market") == before + 1
        assert value("livefolio_ws_connections_opened_total", endpoint="market") == opened + 1
        assert value("livefolio_ws_frames_sent_total", endpoint="market") >= 1  # the hello
    metrics.sync()
    assert value("livefolio_ws_connections", endpoint="market") == before


@pytest.mark.django_db(transaction=True)
async def test_a_flood_of_frames_is_dropped_then_closed_4429_and_both_are_counted(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_MESSAGES_PER_SECOND = 1
    settings.MARKET_WS_BURST = 1
    metrics.sync()
    closes = value("livefolio_ws_closes_total", endpoint="market", reason="rate_limited")
    dropped = value("livefolio_ws_dropped_frames_total", endpoint="market", reason="rate_limited")
    async with connect() as ws:
        for n in range(12):
            await ws.send({"op": "ping", "id": n})
        code = None
        while code is None:
            output = await ws.ws.receive_output(timeout=3)
            if output["type"] == "websocket.close":
                code = output["code"]
        assert code == 4429
    metrics.sync()
    assert value("livefolio_ws_closes_total", endpoint="market", reason="rate_limited") == closes + 1
    assert value("livefolio_ws_dropped_frames_total", endpoint="market", reason="rate_limited") >= dropped + 9


# -- the real processes: two daphne and a feed worker on one machine -----------------------


def scrape(base: str) -> dict[str, float]:
    """GET /metrics (from this machine, no token), as {'name{labels}': value}."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310 (a loopback URL of our own)
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, number = line.rpartition(" ")
            samples[name] = float(number)
    return samples


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_one_scrape_of_one_daphne_sums_both_daphnes_and_the_worker_and_forgets_a_killed_one(
    instruments: Any, synthetic_feed: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**stack_env(redis_url=redis_url, layer_prefix=layer_prefix), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    a, b = Daphne(env=env, logs=tmp_path / "a"), Daphne(env=env, logs=tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a.start()
    b.start()
    connections = 'livefolio_ws_connections{endpoint="market"}'

    async def scraped(condition: Any) -> dict[str, float]:
        samples: dict[str, float] = {}

        async def met() -> bool:
            nonlocal samples
            samples = await asyncio.to_thread(scrape, a.url)
            return bool(condition(samples))

        await until(met, timeout=20, what="the scrape to show it")
        return samples

    try:
        with process([sys.executable, "manage.py", "run_feeds"], env, tmp_path / "run_feeds.log"):
            async with AsyncExitStack() as stack:
                for base in (a.url, b.url):
                    ws = await stack.enter_async_context(websockets.connect(base.replace("http", "ws", 1) + "/ws/v1/market"))
                    assert json.loads(await ws.recv())["type"] == "hello"
                    await ws.send(json.dumps({"op": "subscribe", "id": 1, "channels": ["ticker:BTC-USD"]}))
                samples = await scraped(
                    lambda s: (
                        s.get(connections) == 2
                        # each daphne's gauges are synced on its own clock: the second subscribe may be in a later sync
                        and s.get('livefolio_ws_subscriptions{endpoint="market"}') == 2
                        and s.get('livefolio_worker_windows_total{worker="run_feeds"}', 0) > 0
                        and s.get("livefolio_hub_deliveries_total", 0) >= 2
                    )
                )
                assert samples["livefolio_hub_connected"] == 2  # one hub per daphne, both connected
                assert samples['livefolio_feed_last_update_timestamp_seconds{symbol="BTC-USD"}'] > time.time() - 10
                assert samples['livefolio_worker_leases_held{worker="run_feeds"}'] >= 1
                assert b.proc is not None
                b.proc.kill()  # kill -9: nothing of b's runs any more, and nobody told the metrics
                b.proc.wait()
                b.proc = None
                samples = await scraped(lambda s: s.get(connections) == 1)
                assert samples["livefolio_hub_connected"] == 1
    finally:
        a.stop()
        b.stop()


def test_a_multiprocess_dir_set_after_prometheus_client_was_imported_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from django.core.exceptions import ImproperlyConfigured

    assert metrics.multiprocess_dir() == ""  # the tests run in per-process mode
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ImproperlyConfigured, match="before the process starts"):
        metrics.multiprocess_dir()


async def test_a_slow_consumer_close_is_counted_with_the_frames_it_dropped() -> None:
    from marketdata.delivery.outbox import Outbox

    stuck = asyncio.get_running_loop().create_future()  # the server never takes the first frame

    async def send(message: dict[str, Any]) -> None:
        await stuck

    async def close(code: int) -> None:
        pass

    slow: list[str] = []
    box = Outbox(send=send, close=close, on_slow=slow.append, limit=100, slow_seconds=5, tally=metrics.endpoint_tally("portfolio"))
    metrics.sync()
    closes = value("livefolio_ws_closes_total", endpoint="portfolio", reason="slow_consumer")
    dropped = value("livefolio_ws_dropped_frames_total", endpoint="portfolio", reason="slow_consumer")
    for _ in range(4):  # the first is with the server; three wait, 600 characters past the hard limit of 400
        box.put("x" * 200)
    assert slow, "the outbox did not find the connection slow"
    metrics.sync()
    assert value("livefolio_ws_closes_total", endpoint="portfolio", reason="slow_consumer") == closes + 1
    assert value("livefolio_ws_dropped_frames_total", endpoint="portfolio", reason="slow_consumer") == dropped + 3
    stuck.cancel()


@pytest.mark.django_db(transaction=True)
async def test_capacity_and_unauthenticated_closes_are_counted_by_endpoint_and_reason(instruments: Any, settings: Any) -> None:
    from channels.testing import WebsocketCommunicator

    from config.asgi import application
    from tests.marketdata.api.test_consumer import HOST, ORIGIN

    def closes(endpoint: str, reason: str) -> float:
        return value("livefolio_ws_closes_total", endpoint=endpoint, reason=reason)

    capacity, unauthenticated = closes("market", "capacity"), closes("portfolio", "auth_failed")
    dashboard = WebsocketCommunicator(application, "/ws/portfolio/", headers=[HOST, ORIGIN])  # no session
    try:
        assert (await dashboard.connect(timeout=5))[0]
        assert (await dashboard.receive_output(timeout=3))["code"] == 4401
    finally:
        await dashboard.disconnect()
    assert closes("portfolio", "auth_failed") == unauthenticated + 1
    settings.WS_MAX_CONNECTIONS = 1
    async with connect() as first:
        assert first.hello["type"] == "hello"
        refused = WebsocketCommunicator(application, "/ws/v1/market", headers=[HOST, ORIGIN])
        try:
            assert (await refused.connect(timeout=5))[0]
            assert (await refused.receive_output(timeout=3))["code"] == 1013
        finally:
            await refused.disconnect()
    assert closes("market", "capacity") == capacity + 1
