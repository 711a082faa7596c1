"""The fan-out benchmark's dashboard scenario (bench/fanout.py): its bench population, and how its runs are judged."""

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from bench import fanout
from config.asgi import application
from marketdata.models import AssetClass, Instrument
from portfolio.models import Holding

SYMBOLS = fanout.symbol_names(5)


def test_holdings_spread_evenly_over_the_symbols() -> None:
    symbols = fanout.symbol_names(50)
    held = [fanout.holding_symbols(i, 10, symbols) for i in range(1000)]
    assert all(len(set(mine)) == 10 for mine in held)
    assert Counter(symbol for mine in held for symbol in mine) == dict.fromkeys(symbols, 1000 * 10 // 50)


def create_population(users: int, holdings: int) -> list[str]:
    Instrument.objects.bulk_create(
        [Instrument(symbol=s, name=f"Bench {s}", asset_class=AssetClass.CRYPTO, quote_currency="USD") for s in SYMBOLS]
    )
    return fanout.dashboard_population_create(users=users, holdings=holdings, symbols=SYMBOLS, now=datetime.now(UTC))


@pytest.mark.django_db
def test_each_bench_user_holds_their_share_of_the_symbols() -> None:
    keys = create_population(users=5, holdings=2)
    assert len(set(keys)) == 5
    held = Counter(Holding.objects.values_list("instrument__symbol", flat=True))
    assert held == dict.fromkeys(SYMBOLS, 5 * 2 // 5)


@pytest.mark.django_db(transaction=True)
async def test_a_bench_session_opens_a_dashboard_with_valued_rows() -> None:
    keys = await database_sync_to_async(create_population)(users=3, holdings=2)
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"origin", b"http://127.0.0.1:8000"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={keys[1]}".encode()),
    ]
    communicator = WebsocketCommunicator(application, fanout.DASHBOARD_PATH, headers=headers)
    try:
        connected, _ = await communicator.connect()
        assert connected
        snapshot = json.loads(await communicator.receive_from(timeout=5))
    finally:
        await communicator.disconnect()
    assert snapshot["type"] == "snapshot"
    [portfolio] = snapshot["portfolios"]
    holdings = [row for row in portfolio["rows"] if row["kind"] == "holding"]
    assert [row["symbol"] for row in holdings] == fanout.holding_symbols(1, 2, SYMBOLS)
    assert all(row["price"] is not None and row["market_value"] is not None and row["price_seq"] is not None for row in holdings)


def params(**changes: Any) -> fanout.Params:
    values: dict[str, Any] = {
        "sockets": 10, "per_socket": 1, "symbols": 10, "ticks": 10.0, "duration": 5.0, "other_duration": 5.0, "sweep": [],
        "sweep_duration": 5.0, "warmup": 1.0, "idle": 0, "slow": False, "slow_duration": 5.0, "slow_systems": [], "systems": [],
        "conflation_ms": 100, "concurrency": 32, "scenario": "dashboard", "dashboards": 1000, "dashboard_idle": 5000,
        "dashboard_systems": ["livefolio-before-daphne", "livefolio-daphne"],
    }  # fmt: skip
    return fanout.Params(**(values | changes))


def dashboard_run(system: str, *, cpu_us: float, p99: float, util: float, connect_s: float, snapshot_p99: float) -> dict[str, Any]:
    seconds = [{"t": t, "p99": p99} for t in range(60)]
    return {
        "system": system,
        "kind": "dashboard",
        "dashboards": 1000,
        "window_s": 60.0,
        "cpu_us_per_delivery": cpu_us,
        "server_cpu_util": util,
        "staleness_ms": {"p50": p99 / 2, "p99": p99, "max": p99},
        "per_second": seconds,
        "deliveries_per_s": 10_000.0,
        "expected_deliveries_per_s": 10_000.0,
        "frames_per_s": 2_000.0,
        "bytes_per_s": 4e6,
        "skipped": 3,
        "skip_events": 2,
        "repeats": 0,
        "backwards": 0,
        "rss_mb": {"start": 80.0, "open": 120.0, "end": 121.0},
        "flags": [],
        "samples": [{"t": t + 1, "server_cpu_s": util * (t + 1), "server_rss_mb": 120.0} for t in range(60)],
        "connect": {
            "connected": 1000,
            "failed": 0,
            "outcomes": {"snapshot": 1000},
            "connect_s": connect_s,
            "snapshot_ms": {"p50": snapshot_p99 / 2, "p99": snapshot_p99, "max": snapshot_p99},
        },
    }


def idle_run(system: str, kb: float) -> dict[str, Any]:
    return {
        "system": system,
        "kind": "dashboard-idle",
        "connections": 5000,
        "connected": 5000,
        "connect_s": 90.0,
        "rss_kb_per_connection": kb,
    }


def test_dashboard_targets_are_judged_per_system_in_one_order() -> None:
    before = dashboard_run("livefolio-before-daphne", cpu_us=350.0, p99=900.0, util=0.97, connect_s=21.0, snapshot_p99=900.0)
    after = dashboard_run("livefolio-daphne", cpu_us=20.0, p99=300.0, util=0.2, connect_s=3.0, snapshot_p99=120.0)
    idle = [idle_run("livefolio-before-daphne", 64.0), idle_run("livefolio-daphne", 30.0)]
    judged = fanout.evaluate_dashboards([before, after], idle, params())
    assert [entry["system"] for entry in judged] == ["livefolio-before-daphne", "livefolio-daphne"]
    assert [check["pass"] for check in judged[0]["checks"]] == [False, False, False, False]
    assert [check["pass"] for check in judged[1]["checks"]] == [True, True, True, True]
    assert [check["target"] for check in judged[0]["checks"]] == [check["target"] for check in judged[1]["checks"]]


def test_a_dashboard_slower_to_open_than_five_seconds_fails_even_with_quick_snapshots() -> None:
    run = dashboard_run("livefolio-daphne", cpu_us=20.0, p99=300.0, util=0.2, connect_s=5.5, snapshot_p99=120.0)
    [entry] = fanout.evaluate_dashboards([run], [], params(dashboard_systems=["livefolio-daphne"]))
    opening = next(check for check in entry["checks"] if check["target"].startswith("open 1,000 dashboards"))
    assert opening["pass"] is False
    assert next(check for check in entry["checks"] if "RSS" in check["target"])["pass"] is None  # not measured


def before_and_after_report() -> dict[str, Any]:
    before = dashboard_run("livefolio-before-daphne", cpu_us=350.0, p99=900.0, util=0.97, connect_s=21.0, snapshot_p99=900.0)
    after = dashboard_run("livefolio-daphne", cpu_us=20.0, p99=300.0, util=0.2, connect_s=3.0, snapshot_p99=120.0)
    idle = [idle_run("livefolio-before-daphne", 64.0), idle_run("livefolio-daphne", 30.0)]
    p = params()
    machine = {
        "date": "2026-12-03",
        "python": "3.11",
        "platform": "Linux",
        "cpu_count": 2,
        "cpu_model": "",
        "affinity": "pinned",
        "redis": "private",
    }
    return {
        "machine": machine,
        "command": "python bench/fanout.py --scenario dashboard --before-rev abc1234",
        "livefolio_source": "the working tree",
        "livefolio_before_source": "commit abc1234",
        "params": p.__dict__,
        "runs": [],
        "idle": [],
        "slow": [],
        "dashboard": [before, after],
        "dashboard_idle": idle,
        "elapsed_s": 600.0,
        "dashboard_targets": fanout.evaluate_dashboards([before, after], idle, p),
    }


def test_the_report_shows_before_beside_after_and_the_command_that_produced_it() -> None:
    text = fanout.markdown(before_and_after_report())
    assert "`python bench/fanout.py --scenario dashboard --before-rev abc1234`" in text
    assert "| | livefolio-before (daphne) | livefolio (daphne) |" in text
    assert "| server CPU per price delivered to a dashboard ≤ 30 µs | FAIL: 350.0 µs | PASS: 20.0 µs |" in text
    assert "## Market scenario" not in text


def test_the_plot_of_a_dashboard_only_run_is_drawn(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")  # a benchmark dependency (requirements-bench.txt)
    fanout.plot(before_and_after_report(), tmp_path / "fanout.png")
    assert (tmp_path / "fanout.png").stat().st_size > 0
