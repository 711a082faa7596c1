"""examples/market_client.py: its sequence and book logic on its own, and the whole bot against a real
daphne that is restarted under it while a recorded session is replayed."""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from marketdata import services
from marketdata.api.channels import book_checksum
from tests.conftest import AGGTRADES, needs_aggtrades
from tests.servers import manage, restartable_daphne, stack_env
from tests.test_asyncapi import payload_pointer, validator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "market_client.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("market_client", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


mc = load_example()

E = "1795262640000"


def update(ch: str, seq: int, data: dict[str, Any], *, epoch: str = E, first_seq: int | None = None) -> dict[str, Any]:
    frame = {"type": "update", "ch": ch, "epoch": epoch, "seq": seq, "ts": 1795262641000 + seq, "data": data}
    if first_seq is not None:
        frame["first_seq"] = first_seq
    return frame


def snapshot(ch: str, seq: int, data: dict[str, Any], *, epoch: str = E) -> dict[str, Any]:
    return {"type": "snapshot", "ch": ch, "epoch": epoch, "seq": seq, "ts": 1795262641000, "data": data}


def client(*channels: str, token: str | None = None, throttle_ms: int = 0) -> tuple[Any, list[str]]:
    lines: list[str] = []
    return mc.Client(list(channels), token=token, throttle_ms=throttle_ms, say=lines.append), lines


HELLO = {"type": "hello", "version": 1, "heartbeat_ms": 15000, "user": None, "limits": {}}
TICKER = {"last": "1", "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False}


# ---------------------------------------------------------------- sequence numbers


@pytest.mark.parametrize(
    ("epoch", "last", "frame", "verdict"),
    [
        (E, 41, update("ticker:X", 42, {}), "next"),
        (E, 41, update("ticker:X", 44, {}), "gap"),
        (E, 41, update("ticker:X", 41, {}), "stale"),
        (E, 41, update("ticker:X", 30, {}), "stale"),
        (E, 41, update("book:X@depth=10", 45, {}, first_seq=42), "next"),  # throttled: 42..45 in one
        (E, 41, update("book:X@depth=10", 45, {}, first_seq=43), "gap"),
        (E, 41, update("ticker:X", 1, {}, epoch="1795262700000"), "next"),  # the worker restarted
        (E, 41, update("ticker:X", 3, {}, epoch="1795262700000"), "gap"),
        ("", 0, update("ticker:X", 1, {}), "next"),  # the first data a channel sees
        ("", 0, update("ticker:X", 2, {}), "gap"),
    ],
)
def test_seq_verdict(epoch: str, last: int, frame: dict[str, Any], verdict: str) -> None:
    assert mc.seq_verdict(epoch, last, frame) == verdict


def test_a_gap_is_logged_and_resumed_from_the_last_seq_and_updates_wait_for_the_answer() -> None:
    bot, lines = client("ticker:X")
    [subscribe] = bot.handle(HELLO)
    assert subscribe == {"op": "subscribe", "id": 1, "channels": ["ticker:X"], "throttle_ms": 0}
    assert bot.handle(update("ticker:X", 5, TICKER)) == []  # before the snapshot: dropped
    bot.handle(snapshot("ticker:X", 41, TICKER))
    assert bot.handle(update("ticker:X", 42, TICKER)) == []
    [resume] = bot.handle(update("ticker:X", 44, TICKER))
    assert resume == {"op": "resume", "id": 2, "channels": {"ticker:X": {"epoch": E, "seq": 42}}, "throttle_ms": 0}
    assert any(line.startswith("gap ticker:X") for line in lines)
    assert bot.handle(update("ticker:X", 45, TICKER)) == []  # waiting for `resumed`: the replay restates it
    bot.handle({"type": "resumed", "id": 2, "ch": "ticker:X", "recovered": True, "epoch": E, "from_seq": 43, "seq": 45})
    for seq in (43, 44, 45, 45, 46):  # the replay, a duplicate, then live
        assert bot.handle(update("ticker:X", seq, TICKER)) == []
    assert (bot.stats.gaps, bot.stats.updates, bot.state["ticker:X"].seq) == (1, 5, 46)
    assert "resumed ticker:X recovered 43..45" in lines


def test_a_heartbeat_naming_an_unseen_seq_is_a_gap() -> None:
    bot, lines = client("ticker:X", "trades:X")
    bot.handle(HELLO)
    bot.handle(snapshot("ticker:X", 10, TICKER))
    bot.handle(snapshot("trades:X", 3, {"trades": []}))
    channels = {"ticker:X": {"epoch": E, "seq": 10}, "trades:X": {"epoch": E, "seq": 4}}
    [resume] = bot.handle({"type": "heartbeat", "ts": 1, "channels": channels})
    assert resume["channels"] == {"trades:X": {"epoch": E, "seq": 3}}
    assert bot.stats.gaps == 1
    assert [line for line in lines if line.startswith("gap")] == [
        "gap trades:X: heartbeat names seq 4 in epoch 1795262640000, we have 3; resuming"
    ]


def test_hello_auth_then_after_a_reconnect_resume_what_is_known_and_subscribe_the_rest() -> None:
    bot, lines = client("ticker:X", "book:X@depth=1", token="lf_t", throttle_ms=250)
    assert bot.handle(HELLO) == [{"op": "auth", "id": 1, "token": "lf_t"}]
    [subscribe] = bot.handle({"type": "authenticated", "id": 1, "user": "alice"})
    assert subscribe["channels"] == ["ticker:X", "book:X@depth=1"] and subscribe["throttle_ms"] == 250
    bot.handle(snapshot("ticker:X", 7, TICKER))
    bot.disconnected()
    bot.handle(HELLO)
    resume, subscribe = bot.handle({"type": "authenticated", "id": 4, "user": "alice"})
    assert resume["op"] == "resume" and resume["channels"] == {"ticker:X": {"epoch": E, "seq": 7}} and resume["throttle_ms"] == 250
    assert subscribe["op"] == "subscribe" and subscribe["channels"] == ["book:X@depth=1"]
    bot.handle({"type": "resumed", "id": 5, "ch": "ticker:X", "recovered": False, "epoch": "2", "seq": 3})
    assert bot.handle(update("ticker:X", 4, TICKER, epoch="2")) == []  # dropped: the fresh snapshot is coming
    bot.handle(snapshot("ticker:X", 3, TICKER, epoch="2"))
    bot.handle(update("ticker:X", 4, TICKER, epoch="2"))
    assert (bot.stats.fresh_snapshots, bot.stats.gaps, bot.stats.updates) == (1, 0, 1)
    assert any(line.startswith("resumed ticker:X snapshot") for line in lines)


def test_a_server_error_makes_the_bot_reconnect_and_resume_every_channel() -> None:
    # Also the one without an id: "'ticker:X' lost its history and was unsubscribed; subscribe again."
    bot, lines = client("ticker:X", "trades:X")
    bot.handle(HELLO)
    bot.handle(snapshot("ticker:X", 7, TICKER))
    bot.handle(snapshot("trades:X", 3, {"trades": []}))
    with pytest.raises(mc.RetryLater):
        bot.handle({"type": "error", "code": "server_error", "message": "'ticker:X' lost its history and was unsubscribed"})
    assert any(line.startswith("error server_error") for line in lines)
    bot.disconnected()
    [resume] = bot.handle(HELLO)
    assert resume["op"] == "resume" and set(resume["channels"]) == {"ticker:X", "trades:X"}
    assert bot.handle({"type": "error", "code": "unknown_channel", "message": "no"}) == []  # the client's own mistake: no retry


# ---------------------------------------------------------------- books


decimals = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**6), places=8, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(decimals, decimals), max_size=30), st.lists(st.tuples(decimals, decimals), max_size=30))
def test_the_examples_checksum_is_the_projects(bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]]) -> None:
    as_sent = [[(str(p.normalize()), str(q.normalize())) for p, q in side] for side in (bids, asks)]
    assert mc.book_checksum(*as_sent) == book_checksum(*as_sent)


def test_a_book_applies_absolute_quantities_sorted_by_price_not_by_text() -> None:
    book = mc.Book()
    book.load({"bids": [["9.5", "1"], ["10.25", "2"]], "asks": [["11", "3"], ["100", "1"], ["99.5", "4"]]})
    book.apply({"bids": [["9.5", "0"], ["10.5", "0.7"]], "asks": [["100", "0.000"], ["11", "2.5"]]})
    assert book.top(10) == ([("10.5", "0.7"), ("10.25", "2")], [("11", "2.5"), ("99.5", "4")])
    assert book.checksum() == book_checksum([("10.5", "0.7"), ("10.25", "2")], [("11", "2.5"), ("99.5", "4")])
    assert book.top(1) == ([("10.5", "0.7")], [("11", "2.5")])


def test_the_checksum_covers_the_best_ten_levels_a_side() -> None:
    book = mc.Book()
    bids = [[str(100 - i), "1"] for i in range(15)]
    asks = [[str(101 + i), "1"] for i in range(15)]
    book.load({"bids": bids, "asks": asks})
    assert book.checksum() == book_checksum([tuple(level) for level in bids[:10]], [tuple(level) for level in asks[:10]])


def test_the_documents_book_examples_keep_the_bots_copy_in_step() -> None:
    messages = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())["components"]["messages"]
    [snap] = [e["payload"] for e in messages["snapshot"]["examples"] if e["payload"]["ch"].startswith("book:")]
    [upd] = [e["payload"] for e in messages["update"]["examples"] if e["payload"]["ch"].startswith("book:")]
    bot, lines = client(snap["ch"])
    bot.handle(HELLO)
    assert bot.handle(snap) == []
    assert bot.handle(upd) == []
    assert (bot.stats.updates, bot.stats.gaps, bot.stats.checksum_mismatches) == (1, 0, 0), lines


def test_a_checksum_mismatch_subscribes_the_channel_again() -> None:
    bot, lines = client("book:X@depth=10")
    bot.handle(HELLO)
    levels = {"bids": [["10", "1"]], "asks": [["11", "1"]]}
    assert bot.handle(snapshot("book:X@depth=10", 4, {**levels, "checksum": book_checksum([("10", "1")], [("11", "1")])})) == []
    [again] = bot.handle(update("book:X@depth=10", 5, {"bids": [["10", "2"]], "asks": [], "checksum": 12345}))
    assert again == {"op": "subscribe", "id": 2, "channels": ["book:X@depth=10"], "throttle_ms": 0}
    assert bot.stats.checksum_mismatches == 1
    assert any(line.startswith("checksum book:X@depth=10 #5") for line in lines)
    assert bot.handle(update("book:X@depth=10", 6, {"bids": [], "asks": [], "checksum": 0})) == []  # waiting for the snapshot
    assert bot.stats.updates == 1


def test_the_example_is_self_contained() -> None:
    imports = re.findall(r"^(?:from|import) (\w+)", EXAMPLE.read_text(), flags=re.MULTILINE)
    assert set(imports) <= {
        "__future__",
        "argparse",
        "asyncio",
        "contextlib",
        "json",
        "os",
        "random",
        "signal",
        "sys",
        "zlib",
        "collections",
        "dataclasses",
        "decimal",
        "typing",
        "websockets",
    }


# ---------------------------------------------------------------- end to end


CHANNELS = ["ticker:BTC-USD", "trades:BTC-USD", "candles:BTC-USD@1m", "book:BTC-USD@depth=10", "book:BTC-USD@depth=1"]
UPDATE = re.compile(r"^update (\S+) #(\d+)")
RESUMED = re.compile(r"^resumed (\S+) (recovered|snapshot)")
SERVER_FRAMES = {"hello", "authenticated", "ack", "snapshot", "update", "pong", "error", "unsubscribed", "resumed", "heartbeat"}


class Bot:
    """examples/market_client.py in its own process, as a bot runs it; its output read as it goes."""

    def __init__(self, url: str, token: str, env: dict[str, str], logs: Path) -> None:
        self.log = logs / "market_client.log"
        with self.log.open("wb") as out:
            # The token through the environment, as a bot keeps it off its command line.
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--url", url, "--throttle-ms", "250", "--batch", "--duration", "90", *CHANNELS],
                env={**env, "LIVEFOLIO_TOKEN": token},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=logs,  # nothing of the project on its path: the example stands alone
            )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def since_drop(self) -> list[str]:
        """What it said from its first `disconnected` on."""
        out = self.lines()
        drops = [i for i, line in enumerate(out) if line.startswith("disconnected")]
        return out[drops[0] :] if drops else []

    def updates(self, lines: list[str]) -> int:
        """The fewest updates any channel got in `lines`."""
        return min(sum(1 for line in lines if line.startswith(f"update {ch} ")) for ch in CHANNELS)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"no {what} after {timeout} s; the bot said:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.1)

    def resumed(self) -> dict[str, str]:
        """How each channel came back after the drop: `recovered` or `snapshot`."""
        return {m[1]: m[2] for line in self.since_drop() if (m := RESUMED.match(line))}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        return self.proc.wait(timeout=20)

    def check(self, code: int) -> None:
        """A clean exit, no gap it could not explain, no book that drifted, and seqs that only rise per channel and epoch."""
        out = self.lines()
        text = "\n".join(out)
        assert code == 0, text
        assert out[0].startswith("hello v1 user -") and out[1] == f"authenticated as {settings.DEMO_USERNAME}", text
        assert not [line for line in out if line.startswith(("gap", "checksum", "error", "Traceback"))], text
        assert re.fullmatch(
            r"summary: \d+ updates, 0 gaps, 0 checksum mismatches, [1-9]\d* reconnects, \d+ recovered, \d+ fresh snapshots", out[-1]
        ), text
        runs: dict[str, list[list[int]]] = {}  # per channel, the seqs of each stretch between snapshots
        for line in out:
            if m := UPDATE.match(line):
                runs.setdefault(m[1], [[]])[-1].append(int(m[2]))
            elif line.startswith("snapshot "):
                runs.setdefault(line.split()[1], []).append([])
        for channel in CHANNELS:
            assert sum(map(len, runs[channel])) >= 10, (channel, text)
            for run in runs[channel]:
                assert all(a < b for a, b in itertools.pairwise(run)), (channel, run)


def collect_frames(url: str, token: str, frames: list[dict[str, Any]], stop: threading.Event) -> None:
    """A plain client beside the bot: every kind of request once, and every frame the server answers kept raw."""
    ids = itertools.count(1)
    with connect(url) as ws:  # no Origin

        def send(op: str, **fields: Any) -> None:
            ws.send(json.dumps({"op": op, "id": next(ids), **fields}))

        send("auth", token=token)
        send("subscribe", channels=CHANNELS)
        send("ping")
        send("subscribe", channels=["tickr:BTC-USD"])  # error: unknown_channel
        send("unsubscribe", channels=["trades:BTC-USD"])
        resumed = False
        while not stop.is_set():
            try:
                frame = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            frames.append(frame)
            if frame["type"] == "update" and frame["ch"] == "ticker:BTC-USD" and frame["seq"] > 3 and not resumed:
                resumed = True  # as after a reconnect: from two messages back, which the history still holds
                send("resume", channels={"ticker:BTC-USD": {"epoch": frame["epoch"], "seq": frame["seq"] - 2}})


@pytest.fixture
def stack(redis_url: str, layer_prefix: str) -> tuple[str, dict[str, str]]:
    """The demo data (BTC-USD, with Binance's BTCUSDT as its alias), a token of the demo user, and the processes' environment."""
    call_command("seed_demo", stdout=StringIO())
    _, token = services.token_create(user=get_user_model().objects.get(username=settings.DEMO_USERNAME), name="market bot")
    return token, stack_env(redis_url=redis_url, layer_prefix=layer_prefix)


def book_capture(path: Path) -> Path:
    """An order book beside the recorded trades: a snapshot, then a change a second for the session's
    12 minutes, as `record_feed` writes them (native JSONL). Quantities keep trailing zeros, as exchanges
    send them; the server sends its own spelling, which is what the checksum covers."""
    rng = random.Random(20260101)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # Prices in tenths: bids below 87648.0, asks from 87648.3, so the book never crosses.
    sides = {"bids": range(875800, 876480), "asks": range(876483, 877200)}
    book = {side: {tenths: "1.00000" for tenths in rng.sample(prices, 40)} for side, prices in sides.items()}

    def level(tenths: int, qty: str) -> list[str]:
        return [f"{tenths // 10}.{tenths % 10}", qty]

    def line(kind: str, second: int, changes: dict[str, list[list[str]]], ids: dict[str, int]) -> str:
        ts = (t0 + timedelta(seconds=second)).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return json.dumps({"type": kind, "ts": ts, "symbol": "BTC-USD", **changes, **ids, "source": "binance"}, separators=(",", ":"))

    full = {side: [level(t, q) for t, q in sorted(levels.items(), reverse=side == "bids")] for side, levels in book.items()}
    lines = [line("book", 0, full, {"update_id": 1000})]
    for second in range(1, 740):
        changes: dict[str, list[list[str]]] = {"bids": [], "asks": []}
        for _ in range(rng.randint(1, 4)):
            side = rng.choice(["bids", "asks"])
            tenths = rng.choice(list(book[side])) if rng.random() < 0.7 else rng.choice(sides[side])
            qty = "0" if rng.random() < 0.25 and tenths in book[side] else f"{rng.randint(1, 300000) / 100000:.5f}"
            if qty == "0":
                book[side].pop(tenths)
            else:
                book[side][tenths] = qty
            changes[side].append(level(tenths, qty))
        lines.append(line("book_delta", second, changes, {"first_id": 1000 + second, "last_id": 1000 + second}))
    path.write_text("\n".join(lines) + "\n")
    return path


def replay(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The recorded session's 12 minutes at x37 (about 20 s of trades and book changes), rebased to now. Each run is a new epoch."""
    book = log.parent / "btc-usd-book.jsonl"
    if not book.exists():
        book_capture(book)
    return manage("replay_feed", str(AGGTRADES), str(book), "--speed", "37", "--rebase-time", "--no-progress", env=env, log=log)


def ended(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


@needs_aggtrades
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_bot_rides_out_a_server_restart_without_an_unexplained_gap(
    stack: tuple[str, dict[str, str]], redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    token, env = stack
    frames: list[dict[str, Any]] = []
    stop = threading.Event()
    # Heartbeats every second, so the bot checks its seqs against them too, and the raw client sees some.
    with restartable_daphne(
        redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, env={"MARKET_WS_HEARTBEAT_SECONDS": "1"}
    ) as daphne:
        feed = replay(env, tmp_path / "replay_feed.log")
        url = daphne.url.replace("http", "ws", 1) + "/ws/v1/market"
        bot = Bot(url, token, env, tmp_path)
        raw = threading.Thread(target=collect_frames, args=(url, token, frames, stop))
        raw.start()
        try:
            bot.wait(
                lambda: bot.updates(bot.lines()) >= 8 and {f["type"] for f in frames} >= SERVER_FRAMES, "updates and every kind of frame"
            )
            stop.set()
            raw.join(timeout=10)
            daphne.restart()  # mid-stream, on the same port; the feed goes on
            bot.wait(lambda: set(bot.resumed()) >= set(CHANNELS), "resume of every channel")
            bot.wait(lambda: bot.updates(bot.since_drop()) >= 5, "updates after the restart")
            assert feed.wait(timeout=60) == 0, (tmp_path / "replay_feed.log").read_text()
            time.sleep(1)  # the last window's messages
            # An unknown token is refused with 4401, and the bot does not retry with it.
            refused = subprocess.run(
                [sys.executable, str(EXAMPLE), "--url", url, "--token", "lf_" + "x" * 43, "ticker:BTC-USD"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                cwd=tmp_path,
            )
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert "error auth_failed" in refused.stdout and "code 4401" in refused.stdout, refused.stdout
        finally:
            stop.set()
            code = bot.stop()
            ended(feed)
    bot.check(code)
    # The feed kept its epoch, and the history held what was missed: every channel is recovered, nothing resent.
    assert bot.resumed() == dict.fromkeys(CHANNELS, "recovered"), bot.lines()
    # Every frame the real server sent fits docs/asyncapi.yaml, and the plain client saw every kind of frame.
    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    for frame in frames:
        errors = [e.message for e in validator(doc, payload_pointer(doc, frame["type"])).iter_errors(frame)]
        assert not errors, (frame, errors)
    assert {frame["type"] for frame in frames} == SERVER_FRAMES


@needs_aggtrades
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_after_the_server_and_the_feed_restart_the_bot_takes_fresh_snapshots(
    stack: tuple[str, dict[str, str]], redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    token, env = stack
    with restartable_daphne(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as daphne:
        first = replay(env, tmp_path / "replay_feed-1.log")
        bot = Bot(daphne.url.replace("http", "ws", 1) + "/ws/v1/market", token, env, tmp_path)
        second = None
        try:
            bot.wait(lambda: bot.updates(bot.lines()) >= 5, "updates")
            # A deployment restarts everything: while the server is down, a new feed run (a new epoch) starts.
            daphne.stop()
            ended(first)
            second = replay(env, tmp_path / "replay_feed-2.log")
            bot.wait(lambda: "epoch" in (tmp_path / "replay_feed-2.log").read_text(), "second feed run")
            time.sleep(1.5)  # its first windows are written
            daphne.start()
            bot.wait(lambda: set(bot.resumed()) >= set(CHANNELS), "resume of every channel")
            bot.wait(lambda: bot.updates(bot.since_drop()) >= 5, "updates after the restart")
        finally:
            code = bot.stop()
            ended(first)
            if second is not None:
                ended(second)
    bot.check(code)
    resumed = bot.resumed()
    # The epoch changed: what the bot had cannot be continued, so every channel starts again from a snapshot.
    assert resumed == dict.fromkeys(CHANNELS, "snapshot"), bot.lines()
