"""Channels of the market-data WebSocket API v1 (`/ws/v1/market`): names, and the checksum of a book.

Pure. A channel is one stream of messages a client can subscribe to:

    ticker:BTC-USD            last, bid, ask, day change
    trades:BTC-USD            the trades of each window
    candles:BTC-USD@1m        the open one-minute candle as it changes, and each close
    book:BTC-USD@depth=10     the top N levels (N of 1, 10, 50) as absolute quantities per level
    portfolio, portfolio:12   the user's portfolios (all of them, or one)

A market channel may name a replay session (`replay_feed --sandbox NAME`) after a `?`:

    ticker:BTC-USD?session=day1   candles:BTC-USD@1m?session=day1   book:BTC-USD@depth=10?session=day1

Such a channel is the session's own stream, apart from the live one of the same
symbol: its own history, snapshots and seq. The session is part of the name, so
everything keyed by a channel's name (history, hub routes, resume) needs no
special case.

Market channels are produced by the feed worker: every message carries the
channel's `epoch` (the worker run) and `seq` (+1 per message on that channel),
and is kept in a capped history per channel for `resume`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from marketdata import groups
from marketdata.events import Level

KINDS = ("ticker", "trades", "candles", "book")
BOOK_DEPTHS = (1, 10, 50)
CANDLE_INTERVALS = ("1m",)
# Levels per side that the book checksum covers (fewer when the channel's depth is smaller).
CHECKSUM_LEVELS = 10

# A replay session's name: lowercase letters, digits, `_` and `-`, up to 32, starting with a letter or digit.
SESSION_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
_SESSION = re.compile(rf"^{SESSION_PATTERN}$")
_MARKET = re.compile(r"^(?P<kind>ticker|trades|candles|book):(?P<symbol>[^@?\s]{1,30})(?:@(?P<param>[A-Za-z0-9=]+))?(?:\?(?P<query>.*))?$")
_PORTFOLIO = re.compile(r"^portfolio(?::(?P<id>[1-9][0-9]{0,18}))?$")


class ChannelError(ValueError):
    """A channel name that is not one of ours; `code` is the API error code (unknown_channel)."""

    code = "unknown_channel"


@dataclass(frozen=True, slots=True)
class Channel:
    kind: str  # ticker, trades, candles, book, portfolio
    symbol: str = ""  # market channels
    depth: int = 0  # book
    portfolio_id: int | None = None  # portfolio:ID; None for all of the user's portfolios
    session: str = ""  # market channels of a replay session (`?session=NAME`); "" for the live ones

    @property
    def name(self) -> str:
        if self.kind == "portfolio":
            return "portfolio" if self.portfolio_id is None else f"portfolio:{self.portfolio_id}"
        if self.kind == "candles":
            base = f"candles:{self.symbol}@1m"
        elif self.kind == "book":
            base = f"book:{self.symbol}@depth={self.depth}"
        else:
            base = f"{self.kind}:{self.symbol}"
        return base + session_suffix(self.session)

    @property
    def is_market(self) -> bool:
        return self.kind != "portfolio"

    @property
    def market_key(self) -> str:
        """The key of the stream this market channel travels on (`groups.market_key`): its symbol's, or its session's."""
        return groups.market_key(self.symbol, self.session)


def session_suffix(session: str) -> str:
    """What a session adds to a market channel's name: `?session=NAME` ("" for the live channels)."""
    return f"?session={session}" if session else ""


def in_session(name: str) -> bool:
    """Whether a (well-formed) market channel name is a replay session's; cheaper than parsing it."""
    return "?session=" in name


def session_check(session: str) -> str:
    """`session` when it is a valid replay session name; ValueError saying what is wrong otherwise."""
    if not _SESSION.match(session):
        raise ValueError(f"{session[:40]!r} is not a session name: 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit")
    return session


def channel_parse(name: object) -> Channel:
    """The channel a client named, or ChannelError saying what is wrong with the name."""
    if not isinstance(name, str):
        raise ChannelError(f"a channel is a string such as 'ticker:BTC-USD', not {type(name).__name__}")
    if portfolio := _PORTFOLIO.match(name):
        return Channel("portfolio", portfolio_id=None if portfolio["id"] is None else int(portfolio["id"]))
    market = _MARKET.match(name)
    if market is None:
        raise ChannelError(
            f"{name[:80]!r} is not a channel: use ticker:SYM, trades:SYM, candles:SYM@1m, book:SYM@depth=N or portfolio[:ID]"
        )
    kind, symbol, param, query = market["kind"], market["symbol"], market["param"], market["query"]
    session = ""
    if query is not None:
        session = query.removeprefix("session=") if query.startswith("session=") else ""
        if not _SESSION.match(session):
            raise ChannelError(
                f"{name[:80]!r}: after `?` comes session=NAME, NAME being 1 to 32 of a-z, 0-9, _ and - ({kind}:{symbol}...?session=day1)"
            )
    if kind in ("ticker", "trades"):
        if param is not None:
            raise ChannelError(f"{name!r}: {kind} takes no @ parameter")
        return Channel(kind, symbol, session=session)
    if kind == "candles":
        if param not in CANDLE_INTERVALS:
            raise ChannelError(f"{name!r}: candles come in intervals {', '.join(CANDLE_INTERVALS)} (candles:{symbol}@1m)")
        return Channel(kind, symbol, session=session)
    depth = param.removeprefix("depth=") if param and param.startswith("depth=") else ""
    if not depth.isdigit() or int(depth) not in BOOK_DEPTHS:
        raise ChannelError(f"{name!r}: a book has depth 1, 10 or 50 (book:{symbol}@depth=10)")
    return Channel(kind, symbol, depth=int(depth), session=session)


def market_channels(symbol: str, session: str = "") -> list[Channel]:
    """Every market channel of one symbol (live, or of a replay session)."""
    return [
        Channel("ticker", symbol, session=session),
        Channel("trades", symbol, session=session),
        Channel("candles", symbol, session=session),
        *(Channel("book", symbol, depth=depth, session=session) for depth in BOOK_DEPTHS),
    ]


def book_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """CRC32 (unsigned) of the top levels, so a client can check its copy of a book.

    Over the best `CHECKSUM_LEVELS` bids (best first) then the best asks (best first), each
    level written `price:quantity` with the decimal strings as sent on the wire, joined by `|`:
    `crc32("87648.2:1.5|87648.1:0.2|87648.3:0.4")`. An empty book gives crc32("").
    """
    text = "|".join(f"{price}:{qty}" for price, qty in (*bids[:CHECKSUM_LEVELS], *asks[:CHECKSUM_LEVELS]))
    return zlib.crc32(text.encode())
