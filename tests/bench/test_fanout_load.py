"""The dashboard accounting of the fan-out load generator (bench/fanout_load.py): what counts as a delivery, a skip, a bug."""

import time
from typing import Any

import pytest

pytest.importorskip("picows")  # a benchmark dependency (requirements-bench.txt)

from bench.fanout_load import DashboardClient, DashboardStats


def holding(symbol: str, seq: int, *, epoch: str = "e1", ts: int | None = None) -> dict[str, Any]:
    return {"kind": "holding", "symbol": symbol, "price_seq": seq, "price_epoch": epoch, "price_ts": ts or int(time.time() * 1000)}


CASH = {"kind": "cash", "symbol": "USD", "price_seq": None, "price_epoch": None, "price_ts": None}


def frame(kind: str, *rows: dict[str, Any], combined: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "portfolios": [{"id": 1, "rows": list(rows)}], "combined": combined}


async def measuring() -> tuple[DashboardStats, DashboardClient]:
    stats = DashboardStats()
    client = DashboardClient(stats)
    stats.snapshot(client, frame("snapshot", holding("AAA", 5), holding("BBB", 7), CASH))
    stats.t0 = time.time() * 1000.0
    stats.measuring = True
    return stats, client


async def test_the_first_snapshot_opens_the_dashboard_and_later_ones_are_counted() -> None:
    stats, client = await measuring()
    assert client.outcome.result() == "snapshot"
    assert client.prices == {"AAA": ["e1", 5], "BBB": ["e1", 7]}
    stats.snapshot(client, frame("snapshot", holding("AAA", 6)))
    assert stats.later_snapshots == 1


async def test_each_holding_row_with_a_newer_price_is_one_delivery_and_cash_and_combined_are_not() -> None:
    stats, client = await measuring()
    now = int(time.time() * 1000)
    stats.update(client, frame("update", holding("AAA", 6, ts=now - 100), holding("BBB", 8, ts=now - 100), CASH), now, 100)
    stats.update(client, frame("update", combined={"id": "combined", "rows": [holding("AAA", 7)]}), now, 100)
    assert (stats.deliveries, client.window_deliveries, stats.frames, stats.bytes) == (2, 2, 2, 200)
    assert [round(ms) for ms in stats.latency[0]] == [100, 100]


async def test_a_jump_is_skipped_seqs_the_same_seq_a_repeat_and_a_lower_one_goes_backwards() -> None:
    stats, client = await measuring()
    now = time.time() * 1000
    stats.update(client, frame("update", holding("AAA", 9)), now, 1)  # 6, 7, 8 never seen
    stats.update(client, frame("update", holding("AAA", 9)), now, 1)
    stats.update(client, frame("update", holding("AAA", 4)), now, 1)
    assert (stats.deliveries, stats.skipped, stats.skip_events, stats.repeats, stats.backwards) == (1, 3, 1, 1, 1)


async def test_a_new_epoch_is_a_delivery_whatever_its_seq() -> None:
    stats, client = await measuring()
    stats.update(client, frame("update", holding("AAA", 1, epoch="e2")), time.time() * 1000, 1)
    assert (stats.deliveries, stats.epoch_changes, stats.backwards, stats.skipped) == (1, 1, 0, 0)
    assert client.prices["AAA"] == ["e2", 1]


async def test_outside_the_window_prices_are_followed_but_not_counted() -> None:
    stats, client = await measuring()
    stats.measuring = False
    stats.update(client, frame("update", holding("AAA", 8)), time.time() * 1000, 1)
    assert (stats.deliveries, stats.deliveries_total, stats.skipped, stats.frames) == (0, 1, 0, 0)
    assert client.prices["AAA"] == ["e1", 8]
