"""Standby feed workers (issue 16): `run_feeds` started twice elects one producer per symbol through the Redis leases.

Real processes on loopback: a Redis of the test's own, daphne, and `run_feeds` workers on the synthetic feed with a
lease TTL of 2 s. The active worker killed (kill -9) or hung (SIGSTOP): the standby publishes within TTL + 2 s of
it, under a higher fencing token and a new epoch; a client of the market API sees the epoch change announced by a
snapshot, never a silent gap. The hung one, resumed (SIGCONT), finds its lease gone, says so, and stands by: nothing
it publishes with its old token reaches a client. Symbols split with --symbols: each one has one producer, and a
standby for all of them takes over the symbols of whichever worker dies.

What is watched, besides the client: every payload the workers publish on the symbols' Redis channels (as each
server's hub hears it: the token and the epoch), the workers' logs, and their metrics (--metrics-port).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from marketdata import groups
from marketdata.delivery.fanout import encode_payload
from marketdata.models import Instrument
from tests.faults.processes import Socket, redis_server
from tests.servers import free_port, manage, restartable_daphne, stack_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

TTL = 2.0
TAKEOVER = TTL + 2  # the bound the issue sets: lease TTL + 2 s after the active worker died or hung
SYMBOLS = ("AAPL", "BTC-USD", "EUR/USD", "MSFT", "SAP")  # every active instrument: what the synthetic feed walks
WATCHED = "BTC-USD"  # the symbol the market client follows
ROOT = Path(__file__).resolve().parents[2]
STARTUP = 60  # seconds a worker may take to start and take (or be refused) its leases on a loaded machine


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:  # noqa: ASYNC109
    """Wait for `condition` (polled); returns when it held (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic()


# -- what the workers publish ---------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    at: float  # time.monotonic() when heard
    symbol: str
    fence: int
    epochs: frozenset[str]
    seqs: tuple[int, ...]


class Heard:
    """Every payload published on the symbols' live channels, as a server's hub hears it (tests only decode them)."""

    def __init__(self, url: str, prefix: str, symbols: tuple[str, ...]) -> None:
        self.url = url
        self.channels = {groups.live_channel(prefix, symbol): symbol for symbol in symbols}
        self.payloads: list[Payload] = []

    async def run(self, ready: asyncio.Event) -> None:
        client = aioredis.from_url(self.url)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(*self.channels)
            ready.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                decoded = orjson.loads(message["data"])
                messages = decoded["messages"]
                self.payloads.append(
                    Payload(
                        at=time.monotonic(),
                        symbol=self.channels[message["channel"].decode()],
                        fence=decoded["fence"],
                        epochs=frozenset(m["epoch"] for m in messages),
                        seqs=tuple(m["seq"] for m in messages),
                    )
                )
        finally:
            await pubsub.aclose()
            await client.aclose()

    def of(self, symbol: str, *, since: float = 0.0) -> list[Payload]:
        return [p for p in self.payloads if p.symbol == symbol and p.at >= since]

    def first(self, symbol: str, condition: Callable[[Payload], bool]) -> Payload | None:
        return next((p for p in self.of(symbol) if condition(p)), None)


@asynccontextmanager
async def listening(url: str, prefix: str, symbols: tuple[str, ...] = SYMBOLS) -> AsyncIterator[Heard]:
    """`Heard` running for the block, from the moment Redis confirmed its subscriptions."""
    heard = Heard(url, prefix, symbols)
    ready = asyncio.Event()
    task = asyncio.create_task(heard.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield heard
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- the workers -----------------------------------------------------------------------------------


@dataclass
class Feeder:
    """One `run_feeds` process, its log and its metrics port."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    epoch: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text()

    def started(self) -> bool:
        """Its start line is out (the epoch it publishes under when it holds a symbol from the start)."""
        found = re.search(r"; epoch (\d+); Ctrl-C to stop", self.text())
        if found:
            self.epoch = found[1]
        return bool(found)

    def standing_by(self, symbol: str) -> bool:
        return (
            re.search(rf"^.*: {re.escape(symbol)} is published by run_feeds \(pid \d+ .*\): standing by", self.text(), re.MULTILINE)
            is not None
        )

    def metric(self, name: str) -> float | None:
        """One of its `worker="run_feeds"` metrics, scraped now (None while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        found = re.search(rf'^{re.escape(name)}{{worker="run_feeds"}} (\S+)$', text, re.MULTILINE)
        return None if found is None else float(found[1])


@contextmanager
def feeders(env: dict[str, str], logs: Path) -> Iterator[Callable[..., Feeder]]:
    """Start `run_feeds` processes with `start(name, *args)`; every one still running is killed at the end."""
    started: list[Feeder] = []

    def start(name: str, *args: str) -> Feeder:
        port = free_port()
        log = logs / f"{name}.log"
        proc = manage("run_feeds", "--metrics-port", str(port), *args, env=env, log=log)
        feeder = Feeder(name, proc, log, port)
        started.append(feeder)
        return feeder

    try:
        yield start
    finally:
        for feeder in started:
            if feeder.proc.poll() is None:
                feeder.proc.kill()  # a stopped (SIGSTOP) process dies of SIGKILL too
                feeder.proc.wait(timeout=10)


async def holding(feeder: Feeder, count: int) -> None:
    """Wait until the worker's metrics say it holds `count` leases (they are synced about once a second)."""
    await until(lambda: feeder.metric("livefolio_worker_leases_held") == count, STARTUP, f"{feeder.name} holding {count} leases")


async def metric_at_least(feeder: Feeder, name: str, value: float) -> None:
    def reached() -> bool:
        current = feeder.metric(name)
        return current is not None and current >= value

    await until(reached, 15, f"{feeder.name}'s {name} at {value} or more")


# -- the client --------------------------------------------------------------------------------------


def silent_gaps(socket: Socket) -> list[str]:
    """What a client following docs/websocket-api.md would have missed without being told: per channel, an update
    that is not the next seq of the epoch it holds (a snapshot, prompted or not, replaces the state), or a heartbeat
    naming a position past it."""
    state: dict[str, tuple[str, int]] = {}
    problems = []
    for _, frame in socket.frames:
        kind = frame.get("type")
        if kind == "snapshot":
            state[frame["ch"]] = (frame["epoch"], frame["seq"])
        elif kind == "update":
            held = state.get(frame["ch"])
            first = frame.get("first_seq", frame["seq"])
            # After an empty snapshot (no data yet: epoch "", seq 0) the first message of any epoch follows.
            if held is None or (held != (frame["epoch"], first - 1) and not (held == ("", 0) and first == 1)):
                problems.append(f"{frame['ch']}: had {held}, got epoch {frame['epoch']} seq {first}")
            state[frame["ch"]] = (frame["epoch"], frame["seq"])
        elif kind == "heartbeat":
            for channel, position in frame["channels"].items():
                held = state.get(channel)
                if held is not None and (held[0] != position["epoch"] or held[1] < position["seq"]):
                    problems.append(f"{channel}: heartbeat names {position}, the client has {held}")
    return problems


def epochs_seen(socket: Socket) -> list[str]:
    """The epochs of the watched ticker's frames, in order, each once."""
    out: list[str] = []
    for _, frame in socket.frames:
        if frame.get("ch") == f"ticker:{WATCHED}" and frame.get("type") in ("snapshot", "update") and frame["epoch"] not in out[-1:]:
            out.append(frame["epoch"])
    return out


def first_frame_of(socket: Socket, epoch: str) -> float | None:
    return next((at for at, frame in socket.frames if frame.get("ch") == f"ticker:{WATCHED}" and frame.get("epoch") == epoch), None)


def market_client(daphne_url: str) -> Socket:
    channels = [f"ticker:{WATCHED}", f"trades:{WATCHED}"]
    return Socket(daphne_url.replace("http", "ws", 1) + "/ws/v1/market", hello={"op": "subscribe", "id": 1, "channels": channels})


def hub_fenced(daphne_url: str) -> float:
    """Payloads daphne's hub dropped for an old fencing token (its /metrics, read from this machine)."""
    with urllib.request.urlopen(daphne_url + "/metrics", timeout=5) as response:  # noqa: S310 (http, built here)
        text = response.read().decode()
    found = re.search(r'^livefolio_hub_dropped_total{reason="fenced"} (\S+)$', text, re.MULTILINE)
    return 0.0 if found is None else float(found[1])


# -- the scenario both faults share --------------------------------------------------------------------


@dataclass
class Pair:
    """An active worker and its standby, with everything watching them."""

    active: Feeder
    standby: Feeder
    heard: Heard
    client: Socket
    token: int  # the active one's fencing token on WATCHED
    notes: list[str] = field(default_factory=list)


async def active_and_standby(start: Callable[..., Feeder], heard: Heard, client: Socket) -> Pair:
    """Start the first worker, then the second once the first holds every symbol: exactly one is active."""
    first = start("first")
    await until(first.started, STARTUP, "the first worker's start line")
    await holding(first, len(SYMBOLS))
    second = start("second")
    await until(second.started, STARTUP, "the second worker's start line")
    await until(lambda: all(second.standing_by(s) for s in SYMBOLS), STARTUP, "the second worker standing by for every symbol")
    await metric_at_least(second, "livefolio_worker_skipped_events_total", 1)
    assert second.metric("livefolio_worker_leases_held") == 0
    # Exactly one producer: from the second one standing by, a dozen payloads more, all the first one's.
    since = time.monotonic()
    await until(lambda: len(heard.of(WATCHED, since=since)) >= 12, 20, "payloads while both workers run")
    await until(lambda: f"ticker:{WATCHED}" in {f.get("ch") for _, f in client.frames}, 20, "the client's first frames")
    assert {p.epochs for p in heard.payloads} <= {frozenset({first.epoch})}, "another producer published"
    tokens = {p.fence for p in heard.of(WATCHED)}
    assert len(tokens) == 1, tokens
    assert first.metric("livefolio_worker_leases_held") == len(SYMBOLS)
    return Pair(first, second, heard, client, tokens.pop())


async def taken_over(pair: Pair, fault_at: float) -> tuple[Payload, str]:
    """The standby's first payload on WATCHED, within TAKEOVER of the fault, under a higher token and a newer epoch."""
    await until(lambda: pair.heard.first(WATCHED, lambda p: p.fence != pair.token) is not None, 30, "the standby's first payload")
    first = pair.heard.first(WATCHED, lambda p: p.fence != pair.token)
    assert first is not None
    took = first.at - fault_at
    assert took <= TAKEOVER, f"the standby published {took:.2f} s after the fault (TTL {TTL} s)"
    assert first.fence > pair.token
    [epoch] = first.epochs
    assert int(epoch) > int(pair.active.epoch)
    assert first.seqs[0] == 1  # the symbol's channels start over under the new epoch
    log = pair.standby.text()
    assert re.search(
        rf"{WATCHED}: the lease of run_feeds \(pid {pair.active.pid} .*ended; publishing it now \(token {first.fence}, epoch {epoch}\)", log
    ), log
    return first, epoch


async def client_follows(pair: Pair, epoch: str, fault_at: float) -> float:
    """The client moves to the new epoch through a snapshot and never sees the old one again; returns how long after
    the fault its first frame of the new epoch came."""
    await until(lambda: first_frame_of(pair.client, epoch) is not None, 20, "the client on the new epoch")
    at = first_frame_of(pair.client, epoch)
    assert at is not None
    seen = epochs_seen(pair.client)
    assert seen[-2:] == [pair.active.epoch, epoch], seen  # once from the old epoch to the new, never back
    new = [f for _, f in pair.client.frames if f.get("epoch") == epoch and f.get("ch") == f"ticker:{WATCHED}"]
    assert new[0]["type"] == "snapshot", new[0]  # the change is announced (docs/websocket-api.md, "Unprompted snapshots")
    assert at - fault_at <= TAKEOVER + 1, f"the client's first frame of the new epoch came {at - fault_at:.2f} s after the fault"
    return at - fault_at


@pytest.fixture
def stack(instruments: dict[str, Instrument], synthetic_feed: Any, layer_prefix: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    (tmp_path / "redis").mkdir()
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(tmp_path / "redis"))
        daphne = stack.enter_context(restartable_daphne(redis_url=redis.url, layer_prefix=layer_prefix, logs=tmp_path / "logs"))
        env = stack_env(redis_url=redis.url, layer_prefix=layer_prefix) | {"MARKETDATA_LEASE_TTL_SECONDS": str(TTL)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each worker serves its own metrics
        yield {"redis": redis, "daphne": daphne, "env": env, "prefix": layer_prefix, "logs": tmp_path / "logs"}


@contextmanager
def example_bot(daphne_url: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """examples/market_client.py following WATCHED's ticker and trades; stopped with SIGTERM (it prints its summary)."""
    args = [sys.executable, "examples/market_client.py", "--url", daphne_url.replace("http", "ws", 1) + "/ws/v1/market"]
    with log.open("wb") as out:
        bot = subprocess.Popen([*args, f"ticker:{WATCHED}", f"trades:{WATCHED}"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield bot
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(timeout=10)


async def test_kill_9_of_the_active_worker_the_standby_publishes_within_ttl_plus_2_s_on_a_new_epoch(stack: dict[str, Any]) -> None:
    stop = asyncio.Event()
    client = market_client(stack["daphne"].url)
    reading = asyncio.create_task(client.run(stop))
    bot_log = stack["logs"] / "market_client.log"
    try:
        with example_bot(stack["daphne"].url, stack["env"], bot_log) as bot, feeders(stack["env"], stack["logs"]) as start:
            async with listening(stack["redis"].url, stack["prefix"]) as heard:
                pair = await active_and_standby(start, heard, client)

                pair.active.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                payload, epoch = await taken_over(pair, killed)
                client_took = await client_follows(pair, epoch, killed)
                await holding(pair.standby, len(SYMBOLS))
                for symbol in SYMBOLS:  # every symbol moved, each under a higher token than the dead worker's
                    moved = heard.first(symbol, lambda p: p.at > killed and pair.active.epoch not in p.epochs)
                    assert moved is not None and moved.at - killed <= TAKEOVER, symbol
                assert pair.standby.proc.poll() is None

                # The example bot took the new epoch from the unprompted snapshot, and counted no gap.
                await until(
                    lambda: f"snapshot ticker:{WATCHED} epoch {epoch} " in bot_log.read_text(), 20, "the example bot on the new epoch"
                )
                bot.terminate()
                assert await asyncio.to_thread(bot.wait, 15) == 0, bot_log.read_text()
    finally:
        stop.set()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    bot_out = bot_log.read_text()
    assert re.search(r"^summary: [1-9]\d* updates, 0 gaps, 0 checksum mismatches, 0 reconnects", bot_out, re.MULTILINE), bot_out
    assert not silent_gaps(client), silent_gaps(client)
    assert not client.closes and not client.statuses, (client.closes, client.statuses)
    assert "Traceback" not in pair.standby.text(), pair.standby.text()
    print(
        f"\nFIGURE kill -9 of the active worker (lease TTL {TTL} s): the standby published {payload.at - killed:.2f} s later "
        f"(token {pair.token} -> {payload.fence}, epoch {pair.active.epoch} -> {epoch}); the client's first frame of the "
        f"new epoch {client_took:.2f} s after the kill, no silent gap; the example bot's {bot_out.strip().splitlines()[-1]}"
    )


async def test_sigstop_of_the_active_worker_the_standby_takes_over_and_the_resumed_one_stops_publishing(stack: dict[str, Any]) -> None:
    stop = asyncio.Event()
    client = market_client(stack["daphne"].url)
    reading = asyncio.create_task(client.run(stop))
    daphne_url = stack["daphne"].url
    try:
        with feeders(stack["env"], stack["logs"]) as start:
            async with listening(stack["redis"].url, stack["prefix"]) as heard:
                pair = await active_and_standby(start, heard, client)
                fenced_before = await asyncio.to_thread(hub_fenced, daphne_url)

                os.kill(pair.active.pid, signal.SIGSTOP)  # hung: it misses its renewals, its lease runs out
                stopped = time.monotonic()
                try:
                    payload, epoch = await taken_over(pair, stopped)
                    client_took = await client_follows(pair, epoch, stopped)
                    await holding(pair.standby, len(SYMBOLS))
                finally:
                    os.kill(pair.active.pid, signal.SIGCONT)
                resumed = time.monotonic()

                # At its next renewal (or fenced write) the old holder finds the lease gone, says so, and stands by.
                lost = f"lost the lease of {WATCHED} to run_feeds (pid {pair.standby.pid} "
                await until(lambda: lost in pair.active.text(), 15, "the resumed worker noticing it lost the lease")
                await holding(pair.active, 0)
                await metric_at_least(pair.active, "livefolio_worker_lease_losses_total", len(SYMBOLS))

                # What the resumed one published with its old token after the takeover (a window in flight when it was
                # stopped) is dropped by the hubs; so is a payload sent with that token now, as a stale producer would.
                late = [p for p in heard.of(WATCHED, since=payload.at) if p.fence == pair.token]
                stale = {"ch": f"ticker:{WATCHED}", "epoch": pair.active.epoch, "seq": 1_000_000, "ts": 1, "data": {"last": "1"}}
                publisher = aioredis.from_url(stack["redis"].url)
                try:
                    channel = groups.live_channel(stack["prefix"], WATCHED)
                    assert await publisher.publish(channel, encode_payload([stale], pair.token)) >= 2  # the hub and `heard`
                finally:
                    await publisher.aclose()
                fenced = len(late) + 1
                await until(lambda: hub_fenced(daphne_url) - fenced_before >= fenced, 15, "daphne's hub counting the fenced payloads")
                # The standby's stream goes on: more payloads after the resumed one noticed, all under the new token.
                since = time.monotonic()
                await until(lambda: len(heard.of(WATCHED, since=since)) >= 10, 20, "the new producer's payloads")
                assert {p.fence for p in heard.of(WATCHED, since=since)} == {payload.fence}
                assert pair.active.proc.poll() is None and pair.standby.proc.poll() is None
                pair.active.proc.terminate()  # stopped as a deployment does: its summary names what it lost
                assert await asyncio.to_thread(pair.active.proc.wait, 30) == 0, pair.active.text()
                summary = pair.active.text().splitlines()[-1]
                assert summary.startswith("run_feeds: stopped: ") and f"; lost {WATCHED} to run_feeds (pid {pair.standby.pid} " in summary
    finally:
        stop.set()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    switch = first_frame_of(client, epoch)
    assert switch is not None
    after = [f for at, f in client.frames if at >= switch and f.get("ch", "").endswith(WATCHED)]
    assert {f["epoch"] for f in after} == {epoch}, "the client got frames of the old producer after the takeover"
    assert all(f.get("seq") != 1_000_000 for _, f in client.frames)
    assert not silent_gaps(client), silent_gaps(client)
    assert not client.closes and not client.statuses, (client.closes, client.statuses)
    for feeder in (pair.active, pair.standby):
        assert "Traceback" not in feeder.text(), feeder.text()
    print(
        f"\nFIGURE SIGSTOP of the active worker (lease TTL {TTL} s): the standby published {payload.at - stopped:.2f} s later "
        f"(token {pair.token} -> {payload.fence}); the client's first frame of the new epoch {client_took:.2f} s after the stop; "
        f"resumed after {resumed - stopped:.1f} s, the old worker published {len(late)} late payloads with its old token, "
        f"dropped by the hub with the injected one ({fenced} fenced); no silent gap"
    )


async def test_symbols_split_across_two_active_workers_with_one_standby_for_both(stack: dict[str, Any]) -> None:
    """`--symbols`: AAPL and BTC-USD on one worker, the other three on another, both active; a third worker without
    --symbols stands by for all five and, when the first is killed, takes its two symbols only."""
    env, logs = stack["env"], stack["logs"]
    mine, theirs = ("AAPL", "BTC-USD"), ("EUR/USD", "MSFT", "SAP")
    with feeders(env, logs) as start:
        async with listening(stack["redis"].url, stack["prefix"]) as heard:
            first, second = start("first", "--symbols", *mine), start("second", "--symbols", *theirs)
            await until(lambda: first.started() and second.started(), STARTUP, "both workers' start lines")
            await holding(first, len(mine))
            await holding(second, len(theirs))
            standby = start("standby")
            await until(standby.started, STARTUP, "the standby's start line")
            await until(lambda: all(standby.standing_by(s) for s in SYMBOLS), STARTUP, "the standby standing by for every symbol")
            since = time.monotonic()
            await until(lambda: all(len(heard.of(s, since=since)) >= 10 for s in SYMBOLS), 20, "payloads of every symbol")
            # By worker, not by epoch: two workers started in the same millisecond have the same one (each epoch is per symbol).
            owner = {symbol: first for symbol in mine} | {symbol: second for symbol in theirs}
            tokens = {}
            for symbol in SYMBOLS:  # one producer per symbol: one token and the epoch of the worker it was given to
                payloads = heard.of(symbol)
                assert {p.epochs for p in payloads} == {frozenset({owner[symbol].epoch})}
                [tokens[symbol]] = {p.fence for p in payloads}
            for feeder in (first, second):
                assert not any(feeder.standing_by(s) for s in SYMBOLS), feeder.text()
            assert standby.metric("livefolio_worker_leases_held") == 0

            first.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()

            def moved(symbol: str) -> Payload | None:
                return heard.first(symbol, lambda p: p.fence > tokens[symbol])

            took = {}
            for symbol in mine:
                await until(lambda: moved(symbol) is not None, 30, f"{symbol} taken over")  # noqa: B023
                payload = moved(symbol)
                assert payload is not None
                took[symbol] = payload.at - killed
                assert took[symbol] <= TAKEOVER, (symbol, took)
            await holding(standby, len(mine))
            since = time.monotonic()
            await until(lambda: all(len(heard.of(s, since=since)) >= 5 for s in SYMBOLS), 20, "payloads of every symbol after the kill")
            for symbol in theirs:  # the second worker's symbols never moved
                assert {p.fence for p in heard.of(symbol)} == {tokens[symbol]}, symbol
            assert second.metric("livefolio_worker_leases_held") == len(theirs)
            for feeder in (second, standby):
                assert "Traceback" not in feeder.text(), feeder.text()
    print(
        f"\nFIGURE split with --symbols: {', '.join(mine)} on one worker, {', '.join(theirs)} on another, one standby for both; "
        f"the first killed, its symbols published by the standby {', '.join(f'{s} {t:.2f} s' for s, t in took.items())} later, "
        "the others untouched"
    )
