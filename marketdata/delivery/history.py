"""History and snapshots of the market channels: what `subscribe` and `resume` read.

The feed worker appends each window's messages (`marketdata.worker.market`) here, then
publishes them live (`streams.publish_market`). A consumer reads:

- `head(ch)`: (epoch, seq) of the channel's latest message, ("", 0) when none;
- `since(ch, epoch=, seq=)`: every message after `seq` of that epoch, in order, or
  None when that cannot be done (another epoch, or the history no longer reaches
  back to seq + 1); [] when `seq` is the head;
- `snapshot(ch)`: {"ch", "epoch", "seq", "ts", "data"}, the channel's state as of
  its message `seq` (docs/websocket-api.md, "snapshot" column).

`market_store()` is Redis-backed when the channel layer is Redis (same server and
key prefix), otherwise an in-process store shared by everything using the same
in-memory channel layer, so one process can run worker and consumers.

Redis layout, `{prefix}` being the channel layer's prefix:

    {prefix}:hist:{channel}   stream, one entry per message: id "<seq>-0", fields
                              e (epoch), t (ts), d (data as JSON); XADD MAXLEN ~ MARKET_HISTORY_LENGTH.
                              One epoch only: a message of a new epoch deletes the stream first.
    {prefix}:snap:{channel}   string (JSON) for book and candles channels: {"ch", "epoch", "seq", "ts", ...}
                              book: "data" = the full top N; candles: "open" (the open candle or null) and
                              "closed" (the last RECENT_CLOSED closed candles, to bridge the database's lag).

A replay session's channels (`?session=NAME`, `replay_feed --sandbox`) are keyed by
their full names like any other, and their keys expire MARKETDATA_SANDBOX_TTL_SECONDS
after the session's last write to them, so an abandoned session does not stay in Redis.
Their candles snapshots hold the session's own candles only: the database holds the
live ones, and a sandbox never stores any there.

A window is written in one MULTI/EXEC pipeline, so readers see all of it or
none of it: a book or candles snapshot key always matches its stream's head.
Its XADDs go in one server-side script (`_XADDS`), not one command each.
(MULTI is atomic, not all-or-nothing: an entry Redis refuses inside it, such as
an id not above the stream's last, fails alone and `append` raises.)
Ticker and trades snapshots are read from the stream itself (its last 1 / up to
50 entries), in one command, so they are consistent too.

Races, stated honestly:
- `head`/`snapshot` then live messages: a consumer subscribes to the live group
  before it reads, so a message appended after the read also arrives live, and one
  appended before it arrives live too and is dropped by seq. Nothing is lost,
  some messages come twice (the consumer dedupes by seq).
- Live messages whose append failed (Redis down) are still published: a client
  sees them, but the history has a hole there, which `since` reports as not
  recoverable (it never returns a list with a gap).
- The candles snapshot adds the database's closed candles (read after the
  snapshot key): a minute that closed in between can appear both in the snapshot
  and, later, as its `closed: true` update. The update carries the same candle.
- An epoch change deletes the stream and writes the new epoch's first message in
  one MULTI, so a reader never sees two epochs mixed.

A fenced append (`fence=`, from a worker holding leases, `marketdata.worker.leases`)
WATCHes the fence counters of its producer keys and checks them against the
writer's tokens before the MULTI: if another producer took one over, nothing is
written and `Fenced` names the keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from config.redis_hosts import RedisServer
from marketdata import selectors
from marketdata.api.channels import Channel, channel_parse, in_session
from marketdata.delivery import streams
from marketdata.events import PriceUpdate, to_epoch_ms
from marketdata.worker.market import checksum, ticker_price, wire

log = logging.getLogger(__name__)

Message = dict[str, Any]

SNAPSHOT_TRADES = 50  # trades in a trades snapshot
SNAPSHOT_CANDLES = 120  # closed candles in a candles snapshot
RECENT_CLOSED = 10  # closed candles the store keeps itself, for the minutes the database has not stored yet


class MarketStore(Protocol):
    async def append(self, messages: Sequence[Message], *, fence: Fence | None = None) -> None: ...

    def forget(self, channels: Iterable[str]) -> None:
        """Another producer wrote these channels meanwhile: learn their epoch again before the next append."""

    async def head(self, channel: str) -> tuple[str, int]: ...

    async def since(self, channel: str, *, epoch: str, seq: int) -> list[Message] | None: ...

    async def snapshot(self, channel: str) -> Message: ...

    async def tickers(self, symbols: Iterable[str]) -> dict[str, Message]:
        """The newest `ticker:SYM` message of each symbol that has one, in one read."""
        ...


class Fenced(Exception):
    """A fenced append found a newer token than the writer's for these producer keys: another producer took them over
    (`marketdata.worker.leases`). Nothing of the append was written."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted(keys)
        super().__init__(f"fenced off {', '.join(self.keys)}: another producer holds a newer lease")


# A fenced append: producer key → (its fence counter's Redis key, the writer's token).
Fence = Mapping[str, tuple[str, int]]


def _dumps(value: Any) -> str:
    """Compact JSON of a message or record: orjson (a replay at --speed max writes one per message), and Python's
    json for what orjson refuses (an integer past 64 bits). Readers decode it; the values are the same either way."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":"))


def _market(channel: str) -> Channel:
    parsed = channel_parse(channel)
    if not parsed.is_market:
        raise ValueError(f"{channel!r} is not a market channel")
    return parsed


def _empty_book() -> dict[str, Any]:
    return {"bids": [], "asks": [], "checksum": checksum([], []), "state": "none", "update_id": None}


class _State:
    """What book and candles snapshots need beyond the history, kept by the writer as messages are appended."""

    __slots__ = ("book_state", "closed", "epoch", "levels", "open", "seq", "ts", "update_id")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.seq = 0
        self.ts = 0
        # book: price → (price, qty) as sent, per side
        self.levels: tuple[dict[Decimal, tuple[str, str]], dict[Decimal, tuple[str, str]]] = ({}, {})
        self.book_state = "none"
        self.update_id: int | None = None
        self.open: dict[str, Any] | None = None  # candles: the open candle
        self.closed: deque[dict[str, Any]] = deque(maxlen=RECENT_CLOSED)

    def apply(self, kind: str, message: Message) -> None:
        self.seq, self.ts = message["seq"], message["ts"]
        data = message["data"]
        if kind == "book":
            self.book_state, self.update_id = data.get("state", "synced"), data.get("update_id")
            for side, changes in zip(self.levels, (data.get("bids", ()), data.get("asks", ())), strict=True):
                for price, qty in changes:
                    if Decimal(qty):
                        side[Decimal(price)] = (price, qty)
                    else:
                        side.pop(Decimal(price), None)
        elif kind == "candles":
            candle = data["candle"]
            if candle.get("closed"):
                if self.closed and self.closed[-1]["start"] == candle["start"]:
                    self.closed.pop()
                self.closed.append(candle)
                if self.open is not None and self.open["start"] <= candle["start"]:
                    self.open = None
            else:
                self.open = candle

    def record(self, channel: str, kind: str) -> Message:
        """The snapshot record: a book snapshot message, or the candles' open and recent closed."""
        head = {"ch": channel, "epoch": self.epoch, "seq": self.seq, "ts": self.ts}
        if kind == "book":
            return head | {"data": self.book()}
        return head | {"open": self.open, "closed": list(self.closed)}

    def book(self) -> dict[str, Any]:
        bids, asks = self.levels
        top_bids = [list(bids[p]) for p in sorted(bids, reverse=True)]
        top_asks = [list(asks[p]) for p in sorted(asks)]
        return {
            "bids": top_bids,
            "asks": top_asks,
            "checksum": checksum(top_bids, top_asks),
            "state": self.book_state,
            "update_id": self.update_id,
        }

    @classmethod
    def load(cls, record: Message, kind: str) -> _State:
        state = cls(record["epoch"])
        state.seq, state.ts = record["seq"], record["ts"]
        if kind == "book":
            state.book_state, state.update_id = record["data"].get("state", "synced"), record["data"].get("update_id")
            for side, levels in zip(state.levels, (record["data"]["bids"], record["data"]["asks"]), strict=True):
                side.update((Decimal(price), (price, qty)) for price, qty in levels)
        else:
            state.open = record.get("open")
            state.closed.extend(record.get("closed") or ())
        return state


def _kind(channel: str) -> str:
    return channel.partition(":")[0]


def _last_trades(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The last SNAPSHOT_TRADES trades of trades messages given newest first; oldest first."""
    trades: list[dict[str, Any]] = []
    for message in messages:
        batch = message["data"].get("trades", [])
        trades[:0] = batch[-(SNAPSHOT_TRADES - len(trades)) :]
        if len(trades) >= SNAPSHOT_TRADES:
            break
    return trades


def _db_candles(symbol: str) -> list[dict[str, Any]]:
    return [
        {
            "start": to_epoch_ms(c.start),
            "open": wire(c.open),
            "high": wire(c.high),
            "low": wire(c.low),
            "close": wire(c.close),
            "volume": wire(c.volume),
            "trades": c.trades,
            "closed": True,
        }
        for c in selectors.candles_recent(symbol=symbol, limit=SNAPSHOT_CANDLES)
    ]


async def _candles(channel: Channel, record: Message | None) -> list[dict[str, Any]]:
    """The last SNAPSHOT_CANDLES closed candles (the database's, and the store's recent ones over them), then the open one.

    A replay session's: its own recent ones only (the database's are the live market's)."""
    stored = []
    if not channel.session:
        try:
            stored = await database_sync_to_async(_db_candles)(channel.symbol)
        except Exception:
            log.exception("could not read the stored candles of %s; the snapshot has only the recent ones", channel.symbol)
    by_start = {c["start"]: c for c in stored}
    open_candle = None
    if record is not None:
        by_start.update((c["start"], c) for c in record.get("closed") or ())
        open_candle = record.get("open")
    closed = sorted(by_start.values(), key=lambda c: c["start"])
    if open_candle is not None:
        # A minute the database holds as closed but the stream shows open (the previous run's last minute): open wins.
        closed = [c for c in closed if c["start"] < open_candle["start"]]
    return closed[-SNAPSHOT_CANDLES:] + ([open_candle] if open_candle is not None else [])


def _snapshot(channel: Channel, latest: Sequence[Message], record: Message | None, candles: list[dict[str, Any]] | None) -> Message:
    """Assemble a snapshot from the newest messages (newest first) or the snapshot record."""
    head: Message = {"ch": channel.name, "epoch": "", "seq": 0, "ts": 0}
    if channel.kind in ("ticker", "trades"):
        if latest:
            head |= {k: latest[0][k] for k in ("epoch", "seq", "ts")}
        data: dict[str, Any] = (latest[0]["data"] if latest else {}) if channel.kind == "ticker" else {"trades": _last_trades(latest)}
        return head | {"data": data}
    if record is not None:
        head |= {k: record[k] for k in ("epoch", "seq", "ts")}
    if channel.kind == "book":
        return head | {"data": record["data"] if record is not None else _empty_book()}
    return head | {"data": {"candles": candles or []}}


def _since(messages: Sequence[Message], head: tuple[str, int], *, epoch: str, seq: int) -> list[Message] | None:
    """Check what was read for a resume: `messages` should be seq + 1 .. head, all of `epoch`."""
    if head == (epoch, seq):
        return []
    head_epoch, head_seq = head
    if head_epoch != epoch or seq > head_seq or not messages:
        return None
    expected = seq + 1
    for message in messages:
        if message["seq"] != expected or message["epoch"] != epoch:
            return None  # trimmed past seq + 1, or a hole left by a failed write
        expected += 1
    return list(messages) if expected - 1 == head_seq else None


async def _stale(client: Any, fence: Fence) -> list[str]:
    """The producer keys of `fence` whose counter has moved past the writer's token."""
    current = await client.mget([counter for counter, _ in fence.values()])
    return [key for (key, (_, token)), value in zip(fence.items(), current, strict=True) if value is not None and int(value) != token]


# -- in process -------------------------------------------------------------------------------


class MemoryMarketStore:
    """The store in this process's memory: for the in-memory channel layer (tests, a single-process dev server).

    Messages are kept as JSON text and decoded on every read, so readers get fresh
    objects and exactly what the Redis store would give.
    """

    def __init__(self) -> None:
        self._history: dict[str, deque[tuple[int, str, str]]] = {}  # channel → (seq, epoch, message JSON)
        self._states: dict[str, _State] = {}

    def forget(self, channels: Iterable[str]) -> None:
        """Nothing cached: every append checks each channel's epoch."""

    async def append(self, messages: Sequence[Message], *, fence: Fence | None = None) -> None:
        """`fence` is not checked: leases live in Redis, so a process without it has no other producer to fence off."""
        limit = settings.MARKET_HISTORY_LENGTH
        for message in messages:
            channel, epoch, kind = message["ch"], message["epoch"], _kind(message["ch"])
            history = self._history.get(channel)
            if history is None or (history and history[-1][1] != epoch):
                history = self._history[channel] = deque()
                self._states.pop(channel, None)
            history.append((message["seq"], epoch, _dumps(message)))
            while len(history) > limit:
                history.popleft()
            if kind in ("book", "candles"):
                state = self._states.get(channel)
                if state is None:
                    state = self._states[channel] = _State(epoch)
                state.apply(kind, message)

    async def head(self, channel: str) -> tuple[str, int]:
        history = self._history.get(channel)
        if not history:
            return "", 0
        seq, epoch, _ = history[-1]
        return epoch, seq

    async def since(self, channel: str, *, epoch: str, seq: int) -> list[Message] | None:
        history = self._history.get(channel) or deque()
        head = await self.head(channel)
        after = [json.loads(text) for s, e, text in history if s > seq] if head[0] == epoch and head[1] > seq else []
        return _since(after, head, epoch=epoch, seq=seq)

    async def snapshot(self, channel: str) -> Message:
        parsed = _market(channel)
        history = self._history.get(parsed.name) or deque()
        latest = []
        if parsed.kind == "ticker" and history:
            latest = [json.loads(history[-1][2])]
        elif parsed.kind == "trades":
            latest = [json.loads(text) for _, _, text in reversed(list(history)[-SNAPSHOT_TRADES:])]
        state = self._states.get(parsed.name)
        record = json.loads(_dumps(state.record(parsed.name, parsed.kind))) if state is not None else None
        candles = await _candles(parsed, record) if parsed.kind == "candles" else None
        return _snapshot(parsed, latest, record, candles)

    async def tickers(self, symbols: Iterable[str]) -> dict[str, Message]:
        out = {}
        for symbol in symbols:
            history = self._history.get(f"ticker:{symbol}")
            if history:
                out[symbol] = json.loads(history[-1][2])
        return out


# -- Redis ------------------------------------------------------------------------------------


# Every XADD of a window in one command: redis-py spends ~30 µs packing each command of a MULTI and reading back
# its QUEUED, which at --speed max is most of a replay's time. KEYS[i] gets entry i: ARGV[1] the MAXLEN ~, then per
# entry its id, e, t and d. A refused entry (an id not above the stream's last) fails alone, as its own XADD would
# in the MULTI: the others are written, and the script's error makes `append` raise.
_XADDS = """
local err
for i = 1, #KEYS do
  local j = 2 + (i - 1) * 4
  local reply = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], ARGV[j], 'e', ARGV[j + 1], 't', ARGV[j + 2], 'd', ARGV[j + 3])
  if type(reply) == 'table' and reply.err then err = err or reply.err end
end
if err then return redis.error_reply(err) end
return #KEYS
"""


def _xadds(pipe: Any, keys: Sequence[str], args: Sequence[str | int], limit: int) -> None:
    if keys:
        pipe.eval(_XADDS, len(keys), *keys, limit, *args)


class RedisMarketStore:
    """The store in Redis, beside the channel layer's keys (see the module doc for the layout)."""

    def __init__(self, client: aioredis.Redis, prefix: str, *, address: RedisServer | str = "") -> None:
        self.client = client
        self.prefix = prefix
        self.address = address
        # Writer side: the epoch each channel is known to hold in Redis, and the snapshot state of book and candles channels.
        self._epochs: dict[str, str] = {}
        self._states: dict[str, _State] = {}

    def history_key(self, channel: str) -> str:
        return f"{self.prefix}:hist:{channel}"

    def snapshot_key(self, channel: str) -> str:
        return f"{self.prefix}:snap:{channel}"

    def _decode(self, channel: str, entries: Sequence[Any]) -> list[Message]:
        return [
            {
                "ch": channel,
                "epoch": fields["e"],
                "seq": int(entry_id.partition("-")[0]),
                "ts": int(fields["t"]),
                "data": json.loads(fields["d"]),
            }
            for entry_id, fields in entries
        ]

    async def _adopt(self, firsts: dict[str, str]) -> None:
        """First write to channels this writer has not touched: learn which epoch Redis holds for them.

        The same epoch (this worker wrote before, e.g. on another event loop): carry
        on from its snapshot record. Another epoch, or nothing: the append deletes the old.
        """
        channels = list(firsts)
        pipe = self.client.pipeline(transaction=False)
        for channel in channels:
            pipe.xrevrange(self.history_key(channel), count=1)
            pipe.get(self.snapshot_key(channel))
        replies: list[Any] = await pipe.execute()
        for i, channel in enumerate(channels):
            newest, record = replies[2 * i], replies[2 * i + 1]
            if newest and newest[0][1]["e"] == firsts[channel]:
                self._epochs[channel] = firsts[channel]
                kind = _kind(channel)
                state = self._states.get(channel)
                if kind in ("book", "candles") and record and (state is None or state.epoch != firsts[channel]):
                    self._states[channel] = _State.load(json.loads(record), kind)

    def forget(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self._epochs.pop(channel, None)
            self._states.pop(channel, None)

    async def append(self, messages: Sequence[Message], *, fence: Fence | None = None) -> None:
        if not messages:
            return
        new = {m["ch"]: m["epoch"] for m in reversed(messages) if m["ch"] not in self._epochs}
        if new:
            await self._adopt(new)
        async with self.client.pipeline(transaction=True) as pipe:
            if fence:
                # WATCH first: a takeover between the check and EXEC makes EXEC write nothing.
                await pipe.watch(*(counter for counter, _ in fence.values()))
                if stale := await _stale(pipe, fence):
                    raise Fenced(stale)
                pipe.multi()
            try:
                await self._write(pipe, messages)
            except aioredis.WatchError:
                raise Fenced(await _stale(self.client, fence or {}) or list(fence or ())) from None

    async def _write(self, pipe: Any, messages: Sequence[Message]) -> None:
        limit = settings.MARKET_HISTORY_LENGTH
        records: dict[str, str] = {}
        touched = set()
        keys: list[str] = []  # the entries not yet queued, for one XADDS call
        args: list[str | int] = []
        for message in messages:
            channel, epoch, kind = message["ch"], message["epoch"], _kind(message["ch"])
            touched.add(channel)
            if self._epochs.get(channel) != epoch:
                _xadds(pipe, keys, args, limit)  # what came before the delete stays before it
                keys, args = [], []
                pipe.delete(self.history_key(channel), self.snapshot_key(channel))
                self._epochs[channel] = epoch
                self._states.pop(channel, None)
            keys.append(self.history_key(channel))
            args += (f"{message['seq']}-0", epoch, message["ts"], _dumps(message["data"]))
            if kind in ("book", "candles"):
                state = self._states.get(channel)
                if state is None or state.epoch != epoch:
                    state = self._states[channel] = _State(epoch)
                state.apply(kind, message)
                records[channel] = _dumps(state.record(channel, kind))
        _xadds(pipe, keys, args, limit)
        sandbox_ttl = settings.MARKETDATA_SANDBOX_TTL_SECONDS
        for channel, record in records.items():
            pipe.set(self.snapshot_key(channel), record, ex=sandbox_ttl if in_session(channel) else None)
        for channel in touched:
            if in_session(channel):  # a replay session's: gone some time after its last write
                pipe.expire(self.history_key(channel), sandbox_ttl)
        try:
            await pipe.execute()
        except BaseException:
            # Unknown how much of it was written: learn the channels' epoch again before the next write.
            # The snapshot state stays: it is the truth, and the next write of each channel rewrites its record whole.
            for channel in touched:
                self._epochs.pop(channel, None)
            raise

    async def head(self, channel: str) -> tuple[str, int]:
        newest: Any = await self.client.xrevrange(self.history_key(channel), count=1)
        if not newest:
            return "", 0
        entry_id, fields = newest[0]
        return fields["e"], int(entry_id.partition("-")[0])

    async def since(self, channel: str, *, epoch: str, seq: int) -> list[Message] | None:
        key = self.history_key(channel)
        pipe = self.client.pipeline(transaction=True)  # both reads at one point of the stream
        pipe.xrange(key, min=f"{max(seq, 0) + 1}-0", max="+")
        pipe.xrevrange(key, count=1)
        entries, newest = await pipe.execute()
        head = ("", 0)
        if newest:
            head = (newest[0][1]["e"], int(newest[0][0].partition("-")[0]))
        return _since(self._decode(channel, entries), head, epoch=epoch, seq=seq)

    async def snapshot(self, channel: str) -> Message:
        parsed = _market(channel)
        latest: list[Message] = []
        record = None
        if parsed.kind in ("ticker", "trades"):
            count = 1 if parsed.kind == "ticker" else SNAPSHOT_TRADES
            entries: Any = await self.client.xrevrange(self.history_key(parsed.name), count=count)
            latest = self._decode(parsed.name, entries)
        else:
            text = await self.client.get(self.snapshot_key(parsed.name))
            record = json.loads(text) if text else None
        candles = await _candles(parsed, record) if parsed.kind == "candles" else None
        return _snapshot(parsed, latest, record, candles)

    async def tickers(self, symbols: Iterable[str]) -> dict[str, Message]:
        wanted = list(symbols)
        if not wanted:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for symbol in wanted:
                pipe.xrevrange(self.history_key(f"ticker:{symbol}"), count=1)
            replies = await pipe.execute()
        out = {}
        for symbol, entries in zip(wanted, replies, strict=True):
            if entries:
                out[symbol] = self._decode(f"ticker:{symbol}", entries)[0]
        return out


async def latest_prices(symbols: Iterable[str], *, cached: bool = True) -> list[PriceUpdate]:
    """The newest price (`ticker:SYM`) of each symbol that has one. With `cached`, from this process's hub where it
    follows the symbol without a break (no round trip); the rest (all of them without `cached`, after the hub lost
    messages) from the history, in one read."""
    hub = streams.market_hub()
    found, rest = [], []
    for symbol in symbols:
        message = hub.latest_ticker(symbol) if cached else None
        if message is None:
            rest.append(symbol)
        else:
            found.append(message)
    if rest:
        found.extend((await market_store().tickers(rest)).values())
    return [ticker_price(message) for message in found]


class ShardedMarketStore:
    """The store over several Redis servers: each channel's keys on its symbol's server (`streams.shard_of`), where its
    lease and fence counter are too, so a fenced append still checks and writes on one server.

    A window's append writes each server's part at once. When one part is fenced off, the others may have been written
    already; the worker then appends the rest of the window again, so a message already written here is skipped
    (by epoch and seq per channel) instead of being refused by its stream."""

    def __init__(self, stores: Sequence[RedisMarketStore]) -> None:
        self.stores = list(stores)
        self._written: dict[str, tuple[str, int]] = {}  # channel → (epoch, seq) of the last message this writer wrote

    def _index(self, channel: str) -> int:
        return streams.shard_of(channel_parse(channel).market_key)

    def store_of(self, channel: str) -> RedisMarketStore:
        return self.stores[self._index(channel)]

    def forget(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self._written.pop(channel, None)
            self.store_of(channel).forget([channel])

    async def append(self, messages: Sequence[Message], *, fence: Fence | None = None) -> None:
        parts: dict[int, list[Message]] = {}
        for message in messages:
            written = self._written.get(message["ch"])
            if written is not None and written[0] == message["epoch"] and message["seq"] <= written[1]:
                continue
            parts.setdefault(self._index(message["ch"]), []).append(message)
        fence = fence or {}

        async def one(index: int, part: list[Message]) -> None:
            keys = {channel_parse(m["ch"]).market_key for m in part}
            await self.stores[index].append(part, fence={key: fence[key] for key in keys if key in fence} or None)
            for message in part:
                self._written[message["ch"]] = (message["epoch"], message["seq"])

        outcomes = await asyncio.gather(*(one(index, part) for index, part in parts.items()), return_exceptions=True)
        fenced = [key for outcome in outcomes if isinstance(outcome, Fenced) for key in outcome.keys]
        if fenced:
            raise Fenced(fenced)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def head(self, channel: str) -> tuple[str, int]:
        return await self.store_of(channel).head(channel)

    async def since(self, channel: str, *, epoch: str, seq: int) -> list[Message] | None:
        return await self.store_of(channel).since(channel, epoch=epoch, seq=seq)

    async def snapshot(self, channel: str) -> Message:
        return await self.store_of(channel).snapshot(channel)

    async def tickers(self, symbols: Iterable[str]) -> dict[str, Message]:
        by_store: dict[int, list[str]] = {}
        for symbol in symbols:
            by_store.setdefault(streams.shard_of(symbol), []).append(symbol)
        found: dict[str, Message] = {}
        for part in await asyncio.gather(*(self.stores[i].tickers(names) for i, names in by_store.items())):
            found.update(part)
        return found


# -- which one --------------------------------------------------------------------------------

_redis_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisMarketStore] = weakref.WeakKeyDictionary()
_sharded_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[ShardedMarketStore, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)
_memory_stores: weakref.WeakKeyDictionary[Any, MemoryMarketStore] = weakref.WeakKeyDictionary()
_process_store = MemoryMarketStore()  # without any channel layer


def market_store() -> MarketStore:
    """The store for the configured channel layer: Redis (one client per event loop; several servers: sharded by
    symbol) or this process's memory."""
    target = streams.redis_target()
    servers = streams.redis_servers()
    if target is not None and servers is not None and len(servers) > 1:
        loop = asyncio.get_running_loop()
        known = _sharded_stores.get(loop)
        if known is None or known[1] != (servers, target[1]):
            stores = [RedisMarketStore(streams.redis_client(server), target[1], address=server) for server in servers]
            known = _sharded_stores[loop] = (ShardedMarketStore(stores), (servers, target[1]))
        return known[0]
    if target is not None:
        address, prefix = target
        loop = asyncio.get_running_loop()
        store = _redis_stores.get(loop)
        if store is None or (store.address, store.prefix) != target:
            store = _redis_stores[loop] = RedisMarketStore(streams.redis_client(address), prefix, address=address)
        return store
    layer = get_channel_layer()
    if layer is None:
        return _process_store
    memory = _memory_stores.get(layer)
    if memory is None:
        memory = _memory_stores[layer] = MemoryMarketStore()
    return memory
