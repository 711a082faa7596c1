"""What `/ws/v1/market` allows a connection, and how it paces what it sends. Pure: no I/O, no clock of its own.

- `TokenBucket`: inbound frames per second with a burst (`rate_limited`).
- `Throttle`: one channel's outbound pacing for `throttle_ms` — at most one
  update per interval, the latest value always arriving at the end, the
  messages of an interval merged (`merge`).
- `parse_request`: a client frame checked field by field, or a `FrameError`
  carrying the API error code (`bad_json`, `bad_request`, `unknown_op`).

Messages are the market store's: `{"ch", "epoch", "seq", "ts", "data"}`; a
merged one also carries `first_seq`, the first message it stands for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

Message = dict[str, Any]

OPS = ("auth", "subscribe", "unsubscribe", "resume", "ping")
THROTTLE_MAX_MS = 60_000
ID_MAX_LENGTH = 128
# An integer id must be exact in every JSON client (JavaScript numbers: ±(2**53 - 1)).
ID_MAX_INT = 2**53 - 1


# ------------------------------------------------------------------ inbound rate


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; each frame takes one. Starts full."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> bool:
        """Take a token for a frame arriving at `now`; False when the bucket is empty (the frame is refused)."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# ------------------------------------------------------------------ outbound throttle


def _decimal(text: object) -> Decimal | None:
    try:
        value = Decimal(str(text))
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _merge_levels(older: list[Any], newer: list[Any], *, descending: bool) -> list[Any]:
    """Level changes of two book messages as one: per price, the later absolute quantity wins; best first."""
    levels: dict[object, Any] = {}
    for level in (*older, *newer):
        price = level[0]
        key = _decimal(price)
        levels[key if key is not None else price] = level
    prices = [key for key in levels if isinstance(key, Decimal)]
    if len(prices) < len(levels):
        return list(levels.values())  # a price that is not a number: keep the order given
    return [levels[price] for price in sorted(prices, reverse=descending)]


def _candle(message: Message) -> dict[str, Any]:
    data = message.get("data") or {}
    candle = data.get("candle") if isinstance(data, dict) else None
    return candle if isinstance(candle, dict) else {}


def mergeable(kind: str, older: Message, newer: Message) -> bool:
    """Whether `newer` may be folded into `older`: the next message of the same epoch, and never past a closed candle."""
    if older["epoch"] != newer["epoch"] or newer["seq"] != older["seq"] + 1:
        return False
    # A minute's close is sent once and must not be overwritten by the next minute.
    return not (kind == "candles" and _candle(older).get("closed"))


def merge(kind: str, older: Message, newer: Message) -> Message:
    """One message standing for `older` (itself possibly merged) followed by `newer`.

    ticker and candles: the latest value; trades: every trade, oldest first;
    book: the level changes of both, later absolute quantities winning, with
    the latest checksum (it describes the book after the last message).
    """
    merged: Message = {**newer, "first_seq": older.get("first_seq", older["seq"])}
    if kind == "trades":
        merged["data"] = {**newer["data"], "trades": [*older["data"].get("trades", []), *newer["data"].get("trades", [])]}
    elif kind == "book":
        old, new = older["data"], newer["data"]
        merged["data"] = {
            **new,
            "bids": _merge_levels(old.get("bids", []), new.get("bids", []), descending=True),
            "asks": _merge_levels(old.get("asks", []), new.get("asks", []), descending=False),
        }
    return merged


@dataclass
class Throttle:
    """One channel's pacing: at most one update per `interval` seconds, the latest value always sent at the end.

    `push` says what to send now; what it holds back is merged and handed out
    by `flush` once `due()` has come. An interval normally yields one update;
    a candle's close is never merged away, so an interval in which a minute
    closes may yield the closed candle and then the next minute's.
    """

    kind: str
    interval: float  # seconds; 0 sends everything at once
    pending: list[Message] = field(default_factory=list)
    last_sent: float | None = None

    def push(self, message: Message, now: float) -> list[Message]:
        if self.interval <= 0:
            return [message]
        if self.pending:
            last = self.pending[-1]
            if mergeable(self.kind, last, message):
                self.pending[-1] = merge(self.kind, last, message)
            else:
                self.pending.append(message)
            return []
        if self.last_sent is None or now - self.last_sent >= self.interval:
            self.last_sent = now
            return [message]
        self.pending.append(message)
        return []

    def due(self) -> float | None:
        """When the held-back update is to go out (None: nothing held back)."""
        if not self.pending:
            return None
        return (self.last_sent or 0.0) + self.interval

    def flush(self, now: float) -> list[Message]:
        out, self.pending = self.pending, []
        if out:
            self.last_sent = now
        return out

    def clear(self) -> None:
        """Forget what is held back (a fresh snapshot supersedes it)."""
        self.pending = []


# ------------------------------------------------------------------ inbound frames


class FrameError(Exception):
    """A client frame the server cannot use: `code` is the API error code, `id` the request's when it had a usable one."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    op: str
    id: int | str | None = None
    token: str = ""  # auth
    channels: tuple[str, ...] = ()  # subscribe, unsubscribe; the names of `positions` for resume
    positions: dict[str, tuple[str, int]] = field(default_factory=dict)  # resume: channel → (epoch, seq)
    throttle_ms: int = 0  # subscribe, resume
    batch: bool | None = None  # subscribe, resume: true opts the connection in to batch frames, false out; None leaves it


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _request_id(frame: dict[str, Any]) -> int | str | None:
    request_id = frame.get("id")
    if request_id is None:
        return None
    if (_is_int(request_id) and abs(request_id) <= ID_MAX_INT) or (isinstance(request_id, str) and len(request_id) <= ID_MAX_LENGTH):
        return request_id
    raise FrameError(
        "bad_request", f"'id' is an integer of at most 2**53 - 1 or a string of at most {ID_MAX_LENGTH} characters, not {request_id!r:.40}"
    )


def peek_id(text: str | None) -> int | str | None:
    """The id of a frame the server will not process (rate limited), when it has a usable one; never raises."""
    try:
        frame = json.loads(text) if text is not None else None
        return _request_id(frame) if isinstance(frame, dict) else None
    except (ValueError, RecursionError, FrameError):
        return None


def _channel_list(frame: dict[str, Any], request_id: int | str | None) -> tuple[str, ...]:
    channels = frame.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(name, str) for name in channels):
        raise FrameError("bad_request", f"'channels' is a non-empty list of channel names, not {_describe(channels)}", request_id)
    return tuple(dict.fromkeys(channels))  # each once, in the order given


def _throttle_ms(frame: dict[str, Any], request_id: int | str | None) -> int:
    throttle = frame.get("throttle_ms", 0)
    if not _is_int(throttle) or not 0 <= throttle <= THROTTLE_MAX_MS:
        raise FrameError("bad_request", f"'throttle_ms' is an integer from 0 to {THROTTLE_MAX_MS}, not {throttle!r:.40}", request_id)
    return int(throttle)


def _positions(frame: dict[str, Any], request_id: int | str | None) -> dict[str, tuple[str, int]]:
    channels = frame.get("channels")
    if not isinstance(channels, dict) or not channels:
        raise FrameError("bad_request", f"'channels' is an object of channel → {{epoch, seq}}, not {_describe(channels)}", request_id)
    positions = {}
    for name, position in channels.items():
        epoch = position.get("epoch") if isinstance(position, dict) else None
        seq = position.get("seq") if isinstance(position, dict) else None
        if not isinstance(epoch, str) or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise FrameError("bad_request", f'{name[:80]!r}: give {{"epoch": "...", "seq": 57}} (a string and an integer ≥ 0)', request_id)
        positions[name] = (epoch, int(seq))
    return positions


def _batch(frame: dict[str, Any], request_id: int | str | None) -> bool | None:
    batch = frame.get("batch")
    if batch is not None and not isinstance(batch, bool):
        raise FrameError("bad_request", f"'batch' is true or false, not {batch!r:.40}", request_id)
    return batch


def parse_request(text: str | None = None, data: bytes | None = None) -> Request:
    """The request in one client frame, or FrameError saying what is wrong with it."""
    if text is None:
        raise FrameError("bad_json", "Frames are JSON text; a binary frame is not accepted.")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise FrameError("bad_json", f"Frame is not JSON: {str(exc)[:200]}") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_json", f'A frame is a JSON object such as {{"op": "ping"}}, not {_describe(frame)}.')
    request_id = _request_id(frame)
    op = frame.get("op")
    if not isinstance(op, str):
        raise FrameError("bad_request", f"'op' is missing or not a string ({_describe(op)}); use one of {', '.join(OPS)}", request_id)
    if op not in OPS:
        raise FrameError("unknown_op", f"{op[:40]!r} is not an op: use one of {', '.join(OPS)}", request_id)
    if op == "ping":
        return Request(op, request_id)
    if op == "auth":
        token = frame.get("token")
        if not isinstance(token, str):
            raise FrameError(
                "bad_request", f"'token' is a string (an API token from your profile page), not {_describe(token)}", request_id
            )
        return Request(op, request_id, token=token)
    if op == "resume":
        positions = _positions(frame, request_id)
        throttle = _throttle_ms(frame, request_id)
        return Request(
            op, request_id, channels=tuple(positions), positions=positions, throttle_ms=throttle, batch=_batch(frame, request_id)
        )
    channels = _channel_list(frame, request_id)
    if op == "subscribe":
        return Request(op, request_id, channels=channels, throttle_ms=_throttle_ms(frame, request_id), batch=_batch(frame, request_id))
    return Request(op, request_id, channels=channels)
