"""The messages of the market channels (`/ws/v1/market`), built once per worker window from the hub.

Pure and synchronous. The feed worker's hub only collects per event (the
window's trades, which books changed); at the end of each conflation window
`MarketBuilder.build` turns that, and the window's drained `PriceUpdate`s, into
channel messages:

    {"ch": "ticker:BTC-USD", "epoch": "1795262640000", "seq": 42, "ts": 1795262641223, "data": {...}}

- `seq` rises by one per message on its channel, from 1; `epoch` is the worker's, until a symbol's channels start
  over (`restart`: another producer held it, or Redis lost what was published): then a new one of the symbol's,
  newer than any it had (epochs are milliseconds since 1970, compared as numbers by `portfolio.live`).
- `ts` is the exchange time (epoch ms) of the latest event the message stands for.
- `data` is as docs/websocket-api.md describes per channel kind.

Decimals are written in their shortest fixed-point form (`wire`: no exponent,
no trailing zeros), so one value always has one spelling. That matters for the
book: a client keys its levels by these strings and the checksum covers them.

Books: each `book:SYM@depth=N` channel sends, while the book is in sync, the
levels of its top N that differ from the top N it last sent, as absolute
quantities ("0": the level is gone, emptied or pushed out of the top N), and
the checksum of the new top N, the book's `state` and the source's `update_id`
(Binance `u`, Coinbase sequence, LOBSTER order id) of the latest update it
shows, so a client can line its copy up with exchange data. When the book loses
sync, one message says `state: "out_of_sync"` and removes every level sent
(a client never shows a book that is no longer known); once it is back, the
whole top N goes out again with `state: "synced"`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from marketdata.api.channels import BOOK_DEPTHS, CHECKSUM_LEVELS, book_checksum, in_session, session_suffix
from marketdata.events import Candle, Level, PriceUpdate, Trade, from_epoch_ms, to_epoch_ms
from marketdata.worker.hub import Hub
from marketdata.worker.references import minute_of

Message = dict[str, Any]
WireLevel = Sequence[str]  # [price, quantity] as sent

CENT = Decimal("0.01")
ZERO = Decimal(0)
DEEPEST = max(BOOK_DEPTHS)


_WIRED: dict[Decimal, str] = {}  # recent spellings: a replay writes the same prices and sizes over and over
_WIRED_MAX = 4096


def wire(value: Decimal) -> str:
    """The one spelling of a decimal on the market channels: fixed point, no trailing zeros ("87648.2", "0", "100")."""
    # Equal decimals (87648.20 and 87648.2) have one spelling, so they may share a cache entry.
    text = _WIRED.get(value)
    if text is not None:
        return text
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(_WIRED) >= _WIRED_MAX:
        _WIRED.clear()
    _WIRED[value] = text
    return text


def _wire(value: Decimal | None) -> str | None:
    return None if value is None else wire(value)


def checksum(bids: Iterable[WireLevel], asks: Iterable[WireLevel]) -> int:
    """`channels.book_checksum` of levels as sent (strings, best first): the top CHECKSUM_LEVELS of each side."""
    # book_checksum writes each level as f"{price}:{quantity}", so the exact strings sent go through unchanged.
    top_bids = [(price, qty) for price, qty in list(bids)[:CHECKSUM_LEVELS]]
    top_asks = [(price, qty) for price, qty in list(asks)[:CHECKSUM_LEVELS]]
    return book_checksum(cast("list[Level]", top_bids), cast("list[Level]", top_asks))


def ticker_data(update: PriceUpdate) -> dict[str, str | bool | None]:
    """`ticker:SYM` data: last, bid, ask, the day-change reference and the change against it (null while unknown),
    and whether the price comes from a replayed session."""
    ref = update.reference
    change = change_pct = None
    if ref is not None:
        diff = update.price - ref
        change = wire(diff)
        if ref:
            change_pct = f"{(diff * 100 / ref).quantize(CENT):f}"
    return {
        "last": wire(update.price),
        "bid": _wire(update.bid),
        "ask": _wire(update.ask),
        "ref": _wire(ref),
        "change": change,
        "change_pct": change_pct,
        "replay": update.replay,
    }


def ticker_price(message: Message) -> PriceUpdate:
    """The price a `ticker:SYM` message carries: what portfolio books revalue with (the inverse of `ticker_data`).

    ValueError when `message` is not a well-formed ticker message.
    """
    try:
        channel, data = message["ch"], message["data"]
        kind, _, symbol = channel.partition(":")
        if kind != "ticker" or not symbol:
            raise ValueError(f"{channel!r} is not a ticker channel")
        if in_session(channel):
            raise ValueError(f"{channel!r} is a replay session's: it prices no portfolio")
        bid, ask, ref = data["bid"], data["ask"], data["ref"]
        return PriceUpdate(
            symbol=symbol,
            seq=int(message["seq"]),
            epoch=str(message["epoch"]),
            price=Decimal(data["last"]),
            bid=None if bid is None else Decimal(bid),
            ask=None if ask is None else Decimal(ask),
            ts=from_epoch_ms(int(message["ts"])),
            source="",
            ticks=0,
            reference=None if ref is None else Decimal(ref),
            replay=bool(data["replay"]),
        )
    except (KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        raise ValueError(f"malformed ticker message ({type(exc).__name__}: {exc}): {message!r:.200}") from None


def trade_data(trade: Trade) -> dict[str, Any]:
    return {"price": wire(trade.price), "size": wire(trade.size), "side": trade.side, "ts": to_epoch_ms(trade.ts)}


def candle_data(candle: Candle, *, closed: bool) -> dict[str, Any]:
    return {
        "start": to_epoch_ms(candle.start),
        "open": wire(candle.open),
        "high": wire(candle.high),
        "low": wire(candle.low),
        "close": wire(candle.close),
        "volume": wire(candle.volume),
        "trades": candle.trades,
        "closed": closed,
    }


class _Names:
    __slots__ = ("book", "candles", "ticker", "trades")

    def __init__(self, symbol: str, session: str = "") -> None:
        # As channels.Channel(...).name spells them: a replay session's end in `?session=NAME`.
        end = session_suffix(session)
        self.ticker = f"ticker:{symbol}{end}"
        self.trades = f"trades:{symbol}{end}"
        self.candles = f"candles:{symbol}@1m{end}"
        self.book = {depth: f"book:{symbol}@depth={depth}{end}" for depth in BOOK_DEPTHS}


# The top N a book channel last sent: price → quantity per side.
_Top = tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]


class MarketBuilder:
    """Numbers and builds the market-channel messages of one worker (one epoch).

    Call `minute_closed` when the hub closes a minute (`Hub.take_minute`), and
    `build` once per window after draining the hub; the closed-minute messages go
    out with the next `build`. `session`: name the channels of that replay session
    (`ticker:SYM?session=NAME`, ...) instead of the live ones.
    """

    def __init__(self, *, epoch: str, session: str = "") -> None:
        self.epoch = epoch
        self.epochs: dict[str, str] = {}  # symbol → its channels' epoch, when not the worker's (`restart`)
        self.session = session
        self.seqs: dict[str, int] = {}  # channel → seq of its last message
        self._names: dict[str, _Names] = {}
        self._owners: dict[str, str] = {}  # channel → its symbol
        self._pending: dict[str, list[Message]] = {}  # closed-minute candle messages, per symbol, for the next build
        self._candle_sent: dict[str, dict[str, Any]] = {}  # symbol → the open candle last sent
        self._tops: dict[str, _Top] = {}  # book channel → the top N last sent
        self._book_states: dict[str, tuple[str, int | None]] = {}  # book channel → the state and update id last sent

    def names(self, symbol: str) -> _Names:
        names = self._names.get(symbol)
        if names is None:
            names = self._names[symbol] = _Names(symbol, self.session)
            self._owners.update(dict.fromkeys([names.ticker, names.trades, names.candles, *names.book.values()], symbol))
        return names

    def restart(self, symbol: str, *, epoch: str | None = None) -> list[str]:
        """Forget what the symbol's channels last sent (another producer published them meanwhile, or what was
        published was lost): the next candle and book messages are whole, so a history started over from them holds
        complete snapshots. `epoch`: the symbol's channels start over under it, from seq 1 (clients take a fresh
        snapshot). Returns the symbol's channel names."""
        names = self.names(symbol)
        channels = [names.ticker, names.trades, names.candles, *names.book.values()]
        self._candle_sent.pop(symbol, None)
        for channel in names.book.values():
            self._tops.pop(channel, None)
            self._book_states.pop(channel, None)
        if epoch is not None:
            self.epochs[symbol] = epoch
            for channel in channels:
                self.seqs.pop(channel, None)
            self._pending.pop(symbol, None)
        return channels

    def epoch_of(self, symbol: str) -> str:
        return self.epochs.get(symbol, self.epoch)

    def restate(self, hub: Hub, update: PriceUpdate, *, minute: datetime | None = None) -> list[Message]:
        """The whole state of a symbol as messages (after `restart`): its latest price, its open candle and, when it has a
        book, the whole top N of every depth; what a client needs after the symbol's channels started over."""
        symbol = update.symbol
        out = [self._message(self.names(symbol).ticker, to_epoch_ms(update.ts), ticker_data(update))]
        candle = self._open_candle(hub, symbol, minute)
        if candle is not None:
            out.append(candle)
        if symbol in hub.books:
            out.extend(self._books(symbol, to_epoch_ms(update.ts), hub.book_top(symbol, DEEPEST), hub.book_update_id(symbol)))
        return out

    def _message(self, channel: str, ts: int, data: dict[str, Any]) -> Message:
        seq = self.seqs[channel] = self.seqs.get(channel, 0) + 1
        epoch = self.epochs.get(self._owners[channel], self.epoch) if self.epochs else self.epoch
        return {"ch": channel, "epoch": epoch, "seq": seq, "ts": ts, "data": data}

    # -- candles -----------------------------------------------------------------------------

    def minute_closed(self, candles: Sequence[Candle], hub: Hub, *, closed: bool = True) -> None:
        """The candles `hub.take_minute` just gave: one message each, `closed: true`, sent with the next build.

        `closed=False` is for the minute still open when the worker stops: its latest
        state goes out as an open-candle update (if it changed), never as closed.
        """
        for candle in candles:
            state = hub.symbols.get(candle.symbol)
            ts = to_epoch_ms(state.ts) if state is not None and state.ts is not None else to_epoch_ms(candle.start)
            data = candle_data(candle, closed=closed)
            if closed:
                self._candle_sent.pop(candle.symbol, None)
            elif self._candle_sent.get(candle.symbol) == data:
                continue
            else:
                self._candle_sent[candle.symbol] = data
            message = self._message(self.names(candle.symbol).candles, ts, {"candle": data})
            self._pending.setdefault(candle.symbol, []).append(message)

    def _open_candle(self, hub: Hub, symbol: str, minute: datetime | None) -> Message | None:
        state = hub.symbols.get(symbol)
        if state is None or state.open is None or state.price is None or state.ts is None:
            return None
        start = minute if minute is not None else minute_of(state.ts)
        candle = Candle(symbol, start, state.open, state.high, state.low, state.price, state.volume, state.trades)
        data = candle_data(candle, closed=False)
        if self._candle_sent.get(symbol) == data:
            return None
        self._candle_sent[symbol] = data
        return self._message(self.names(symbol).candles, to_epoch_ms(state.ts), {"candle": data})

    # -- books -------------------------------------------------------------------------------

    def _books(self, symbol: str, ts: int, top: tuple[list[Level], list[Level]] | None, update_id: int | None) -> list[Message]:
        """`top`: the book's best levels, None while it is out of sync."""
        state = "synced" if top is not None else "out_of_sync"
        bids, asks = top if top is not None else ([], [])
        out = []
        for depth in BOOK_DEPTHS:
            channel = self.names(symbol).book[depth]
            new_bids, new_asks = dict(bids[:depth]), dict(asks[:depth])
            old_bids, old_asks = self._tops.get(channel, ({}, {}))
            bid_changes = _changes(old_bids, new_bids, best_first=True)
            ask_changes = _changes(old_asks, new_asks, best_first=False)
            if not bid_changes and not ask_changes and self._book_states.get(channel, ("none",))[0] == state:
                continue
            self._tops[channel] = (new_bids, new_asks)
            self._book_states[channel] = (state, update_id)
            top_bids = [[wire(p), wire(q)] for p, q in bids[: min(depth, CHECKSUM_LEVELS)]]
            top_asks = [[wire(p), wire(q)] for p, q in asks[: min(depth, CHECKSUM_LEVELS)]]
            data = {
                "bids": bid_changes,
                "asks": ask_changes,
                "checksum": checksum(top_bids, top_asks),
                "state": state,
                "update_id": update_id,
            }
            out.append(self._message(channel, ts, data))
        return out

    def book_view(self, channel: str) -> dict[str, Any]:
        """What a book channel last sent, as snapshot data: its top N, checksum, state and update id (empty before any)."""
        bids, asks = self._tops.get(channel, ({}, {}))
        wire_bids = [[wire(p), wire(q)] for p, q in sorted(bids.items(), reverse=True)]
        wire_asks = [[wire(p), wire(q)] for p, q in sorted(asks.items())]
        state, update_id = self._book_states.get(channel, ("none", None))
        return {"bids": wire_bids, "asks": wire_asks, "checksum": checksum(wire_bids, wire_asks), "state": state, "update_id": update_id}

    # -- the window --------------------------------------------------------------------------

    def build(self, hub: Hub, updates: Sequence[PriceUpdate], *, minute: datetime | None = None) -> dict[str, list[Message]]:
        """The messages of one window, per symbol, each channel's in seq order.

        `updates`: every PriceUpdate drained from the hub in the window (one ticker
        message each). Takes the hub's collected trades and book changes.
        `minute`: start of the open minute (the worker's event-time minute); by
        default the minute of each symbol's latest event.
        """
        out: dict[str, list[Message]] = {}
        for update in updates:
            ts = to_epoch_ms(update.ts)
            out.setdefault(update.symbol, []).append(self._message(self.names(update.symbol).ticker, ts, ticker_data(update)))
        for symbol, trades in hub.take_trades().items():
            if trades:
                data = {"trades": [trade_data(t) for t in trades]}
                out.setdefault(symbol, []).append(self._message(self.names(symbol).trades, to_epoch_ms(trades[-1].ts), data))
        pending, self._pending = self._pending, {}
        for symbol, messages in pending.items():
            out.setdefault(symbol, []).extend(messages)
        # An open candle changes only with an event that makes a price update.
        for symbol in dict.fromkeys(u.symbol for u in updates):
            message = self._open_candle(hub, symbol, minute)
            if message is not None:
                out.setdefault(symbol, []).append(message)
        for symbol, at in hub.take_book_changes().items():
            messages = self._books(symbol, to_epoch_ms(at), hub.book_top(symbol, DEEPEST), hub.book_update_id(symbol))
            if messages:
                out.setdefault(symbol, []).extend(messages)
        return out


def _changes(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal], *, best_first: bool) -> list[list[str]]:
    """Levels of `new` whose quantity differs from `old`, and "0" for those of `old` no longer in `new`; best first."""
    changed = [(price, qty) for price, qty in new.items() if old.get(price) != qty]
    changed.extend((price, ZERO) for price in old if price not in new)
    if not changed:
        return []
    changed.sort(reverse=best_first)
    return [[wire(price), wire(qty)] for price, qty in changed]
