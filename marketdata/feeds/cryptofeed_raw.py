"""Raw captures of cryptofeed (https://github.com/bmoscon/cryptofeed): what its raw-data collection
writes, every line as the exchange sent it with the receive time (`--format cryptofeed`).

Two spellings of the same records are read, line by line:

- JSON Lines envelopes: `{"type": "ws", "timestamp": 1714557600.123456, "data": "<the message>"}`
  (`data` a JSON string or the object; `ts` is taken for `timestamp`; no `type` means "ws").
- cryptofeed's `AsyncFileCallback` text lines: `<timestamp>: <message>` for a websocket message;
  `<address> <-> <timestamp>` (connected), `<address> <- <timestamp>: <sent>` (a subscribe request),
  `<address> -> <timestamp>: <response>` (an HTTP request, e.g. the symbol list) and
  `configuration: {...}`.

Websocket messages are Coinbase Advanced Trade messages (`coinbase.parse_message`) or Binance
combined-stream frames (`binance_ws.parse_frame`), told apart by their keys. Every other record (an
HTTP response, a connect, a sent request, the configuration) is no market data: it is passed over
and counted by its type, never reported as a bad line.

The timestamp is cryptofeed's receive time, epoch seconds with a fraction (any unit is read, see
`jsonfields.epoch_us`). Clocks: exchange (default; the messages' own times, as in `coinbase` and
`binance_ws`) or receive (`clock=receive`). Coinbase's trade snapshot on subscribing (the last trades,
newest first) becomes `backfill` trades.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from marketdata.events import MarketEvent
from marketdata.feeds import binance_ws, coinbase
from marketdata.feeds.files import EXCHANGE, RECEIVE, BadLine, ClockOffsets, PassOver, clock_choose
from marketdata.feeds.jsonfields import decode, receive_time
from marketdata.symbols import SymbolMap

# The text form's non-message records: `<address> <marker> <timestamp>[: data]`.
_TEXT_KINDS = {" <-> ": "connect", " <- ": "sent", " -> ": "http"}
_MESSAGE_TYPES = frozenset({"ws", "message"})


def split_record(line: str) -> tuple[str, datetime | None, Any]:
    """(type, receive time, message: text or object) of a capture line; the type is "ws" for a market message."""
    if line.startswith("{"):
        envelope = decode(line)
        if "data" not in envelope and "type" not in envelope:
            raise BadLine("not a frame", f"a JSON object with neither 'type' nor 'data': {line[:80]}")
        kind = str(envelope.get("type", "ws"))
        stamp = envelope.get("timestamp", envelope.get("ts"))
        received = None if stamp is None else receive_time(stamp, "timestamp")
        return kind, received, envelope.get("data")
    if line.startswith("configuration: "):
        return "configuration", None, None
    stamp, colon, rest = line.partition(": ")
    if stamp[:1].isdigit() and colon:
        return "ws", receive_time(stamp, "timestamp"), rest
    for marker, kind in _TEXT_KINDS.items():
        if marker in line and "://" in line.partition(marker)[0]:
            return kind, None, None
    raise BadLine("not a frame", f"line starts with {line[:40]!r}: neither a cryptofeed record nor a JSON envelope")


class CryptofeedCapture:
    """`--format cryptofeed`: a cryptofeed raw capture of Coinbase or Binance."""

    name: ClassVar[str] = "cryptofeed"
    reorder: ClassVar[timedelta] = timedelta(seconds=2)  # receive order, as in any capture
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE, RECEIVE)

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        self.path = path
        self.symbols = symbols
        self.clock = clock_choose(type(self), path, options)
        self.offsets = ClockOffsets()
        self.reset()

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        line = first_line.strip()
        try:
            if line.startswith("{"):  # an envelope naming its type and time; a bare `{"ts", "data"}` is coinbase-ws's
                envelope = decode(line)
                return "type" in envelope and "timestamp" in envelope
            kind, received, _ = split_record(line)
        except BadLine:
            return False
        return received is not None or kind != "ws"

    def reset(self) -> None:
        """Forget what earlier lines taught, to read the file again from its start."""
        self.offsets.clear()
        self.coinbase = coinbase.CoinbaseState()
        self.binance = binance_ws.BinanceFrameState(clock=self.clock, offsets=self.offsets)

    def parse(self, line: str) -> list[MarketEvent]:
        kind, received, data = split_record(line)
        if kind not in _MESSAGE_TYPES:
            raise PassOver(kind)
        message = coinbase.message_of(data)
        if "stream" in message or "lastUpdateId" in message:
            return binance_ws.parse_frame(message, symbols=self.symbols, received=received, state=self.binance)
        return coinbase.parse_received(message, received, symbols=self.symbols, state=self.coinbase, clock=self.clock, offsets=self.offsets)
