"""The soak (bench/soak.py): its clients' accounting, and the short variant run whole, with its faults, in make test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from bench import soak
from bench.soak_clients import Board, Bot, Dashboard

E = "1795262640000"


def update(ch: str, seq: int, *, epoch: str = E, ts: float | None = None) -> dict[str, Any]:
    return {"type": "update", "ch": ch, "epoch": epoch, "seq": seq, "ts": ts or time.time() * 1000, "data": {}}


def snapshot(ch: str, seq: int, *, epoch: str = E) -> dict[str, Any]:
    return {"type": "snapshot", "ch": ch, "epoch": epoch, "seq": seq, "ts": time.time() * 1000, "data": {}}


def subscribed_bot(board: Board) -> Bot:
    bot = Bot(board, 0, token="lf_x", channels=["ticker:X", "trades:X"])
    now = time.time()
    bot.frame({"type": "hello", "version": 1, "heartbeat_ms": 15000, "user": None}, now)
    bot.frame({"type": "authenticated", "id": 1, "user": "bench00000"}, now)
    bot.frame(snapshot("ticker:X", 10), now)
    bot.frame(snapshot("trades:X", 3), now)
    return bot


def totals(board: Board) -> dict[str, int]:
    rows = [s.summary(t) for t, s in enumerate(board.seconds)]
    keys = ("silent_gaps", "signalled", "expected", "by_snapshot", "bot_updates", "backwards", "dashboard_deliveries")
    return {key: sum(r[key] for r in rows) for key in keys}


def test_an_update_that_skips_seqs_unannounced_is_a_silent_gap() -> None:
    board = Board()
    bot = subscribed_bot(board)
    bot.frame(update("ticker:X", 11), time.time())
    replies = bot.frame(update("ticker:X", 14), time.time())  # 12 and 13 never came, nothing said why
    assert [r["op"] for r in replies] == ["resume"]  # the example bot repairs it, but it was silent
    assert totals(board)["silent_gaps"] == 1


def test_a_gap_the_server_announces_with_a_snapshot_is_not_silent_and_counts_as_restated() -> None:
    board = Board()
    bot = subscribed_bot(board)
    bot.frame(update("ticker:X", 11), time.time())
    bot.frame(snapshot("ticker:X", 20), time.time())  # unprompted: the history could not fill 12..20
    bot.frame(update("ticker:X", 21), time.time())
    bot.frame(snapshot("trades:X", 2, epoch="2"), time.time())  # a new epoch (a standby took over)
    assert totals(board) == {
        "silent_gaps": 0,
        "signalled": 2,
        "expected": 2 + 9 + 2,
        "by_snapshot": 9 + 2,
        "bot_updates": 2,
        "backwards": 0,
        "dashboard_deliveries": 0,
    }


def test_a_resume_after_a_reconnect_that_replays_what_was_missed_has_no_gap() -> None:
    board = Board()
    bot = subscribed_bot(board)
    bot.dropped()
    now = time.time()
    bot.frame({"type": "hello", "version": 1, "heartbeat_ms": 15000, "user": None}, now)
    [resume] = bot.frame({"type": "authenticated", "id": 2, "user": "bench00000"}, now)
    assert resume["channels"]["ticker:X"] == {"epoch": E, "seq": 10}
    bot.frame({"type": "resumed", "id": 3, "ch": "ticker:X", "recovered": True, "epoch": E, "from_seq": 11, "seq": 12}, now)
    for seq in (11, 12, 13):
        bot.frame(update("ticker:X", seq), now)
    assert (totals(board)["silent_gaps"], totals(board)["bot_updates"], totals(board)["expected"]) == (0, 3, 3)


def test_a_client_is_current_again_once_it_has_data_from_after_the_mark() -> None:
    board = Board()
    bot = subscribed_bot(board)
    dashboard = Dashboard(board, 1)
    board.clients += [bot, dashboard]
    at = time.time() * 1000
    row = {"kind": "holding", "symbol": "X", "price_seq": 5, "price_epoch": E, "price_ts": at - 500}
    dashboard.frame({"type": "snapshot", "portfolios": [{"id": 1, "rows": [row]}]}, time.time())
    from bench.soak_clients import Mark

    mark = Mark("fault", at, board.clients)
    board.marks.append(mark)
    bot.frame(update("ticker:X", 11, ts=at - 1), time.time())  # published before the fault
    dashboard.frame({"type": "update", "portfolios": [{"id": 1, "rows": [{**row, "price_seq": 4}]}]}, time.time())
    assert mark.waiting == {bot, dashboard} and totals(board)["backwards"] == 1
    bot.frame(update("ticker:X", 12, ts=at + 5), time.time())
    dashboard.frame({"type": "update", "portfolios": [{"id": 1, "rows": [{**row, "price_seq": 6, "price_ts": at + 5}]}]}, time.time())
    assert mark.reported and not mark.waiting


# -- the short soak, run whole -----------------------------------------------------------------------------------

# Seconds from a fault until every client has data published after it (`current_after_s`), and until half of them
# have (`p50_s`: the data is back). Measured on the 2-core machine (see docs/operations.md, "The soak"); the recorded
# session itself has quiet spells of up to about a second, which every client waits out too. The worker's bound is
# the lease TTL (3 s in the short run) + 2 s, as issue 16 asks, + 1 s of the session's own pace. During a Redis
# failover every socket is closed with 1013 and handshakes are refused the same way until the sentinels have promoted
# the replica (about 2 s): clients that failed several times in a row wait out their exponential backoff (full jitter,
# 0.5 s doubling), so the last of them came back 4.4-16.7 s after the kill over 13 runs; half were back within 2.3-5.1 s.
EVERY_CLIENT_BOUND_S = {"daphne": 5.0, "slow": 5.0, "postgres": 5.0, "worker": soak.SHORT.lease_ttl_s + 3.0, "redis": 30.0}
HALF_BOUND_S = {**EVERY_CLIENT_BOUND_S, "redis": 10.0}


@pytest.mark.skipif(soak.unavailable() is not None, reason=soak.unavailable() or "")
@pytest.mark.timeout(240)
def test_the_short_soak_survives_every_fault_with_no_silent_gap_and_every_client_current_again(tmp_path: Path) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--short", "--out", str(tmp_path)],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=200,
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    windows = {w["name"]: w for w in report["windows"]}
    every = ", ".join(f"{n} {w['current_after_s'] or 0:.2f}" for n, w in windows.items() if n != "baseline")
    half = (windows.get("redis", {}).get("current") or {}).get("p50_s") or 0
    print(f"FIGURE short soak in {elapsed:.0f} s: every client current again after {every} s; half after the Redis failover {half:.2f} s")
    assert list(windows) == ["baseline", *soak.FAULTS]
    for name, window in windows.items():
        assert window["silent_gaps"] == 0, (name, window)
        assert window["backwards"] == 0, (name, window)
        assert window["bot_updates"] > 0 and window["dashboard_deliveries"] > 0, (name, window)
        # Whatever was published reached the bots as updates or was restated by a snapshot the server sent.
        assert window["bot_updates"] + window["bot_by_snapshot"] == window["bot_expected"], (name, window)
        if name != "baseline":
            assert window["current_after_s"] is not None, (name, window["current"])
            assert window["current_after_s"] <= EVERY_CLIENT_BOUND_S[name], (name, window["current"])
            assert window["current"]["p50_s"] <= HALF_BOUND_S[name], (name, window["current"])
    # Each fault did what it says: the killed daphne's clients moved, the standby took over, the slow client held.
    assert windows["daphne"]["current"]["hit"] > 0
    assert windows["worker"]["fault"]["new_holder"] == "worker-b"
    assert windows["worker"]["signalled"] > 0  # the new epoch's snapshots
    assert windows["postgres"]["fault"]["readyz_during"] == [503]
    assert windows["worker"]["fault"]["takeover_s"] <= soak.SHORT.lease_ttl_s + 2
    for name, window in windows.items():
        assert window["stale_p99_after_ms"] is not None and window["stale_p99_after_ms"] < 3000, (name, window)
    clients = report["run"]["clients"]
    assert clients["open"] == clients["clients"] == report["schedule"]["bots"] + report["schedule"]["dashboards"]
