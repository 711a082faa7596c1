"""The one place channel-layer group names, event types and the market hub's Redis channel names are built.

Channels accepts group names of `[A-Za-z0-9._-]` under 100 characters, while
symbols carry `/`, `^`, `:` and friends (EUR/USD, ^GSPC). Symbols are encoded
reversibly: characters outside `[A-Za-z0-9-]` become `_XX` (hex), so the
`.` separator and `_` escape stay unambiguous.
"""

from __future__ import annotations

import re

PRICE_EVENT = "md.price"  # handled by consumers as `md_price`
PORTFOLIO_RELOAD_EVENT = "portfolio.reload"  # handled as `portfolio_reload`

_SAFE = re.compile(r"[A-Za-z0-9-]")
_MAX_GROUP_LENGTH = 99


def _encode(symbol: str) -> str:
    return "".join(ch if _SAFE.fullmatch(ch) else f"_{ord(ch):02X}" for ch in symbol)


def _group(prefix: str, symbol: str) -> str:
    if not symbol:
        raise ValueError("symbol must not be empty")
    if any(ord(ch) > 0xFF for ch in symbol):
        raise ValueError(f"symbol {symbol!r} contains characters outside Latin-1")
    name = f"{prefix}.{_encode(symbol)}"
    if len(name) > _MAX_GROUP_LENGTH:
        raise ValueError(f"symbol {symbol!r} is too long for a group name ({len(name)} > {_MAX_GROUP_LENGTH})")
    return name


def symbol_group(symbol: str) -> str:
    """Group that receives every price broadcast for `symbol`."""
    return _group("md", symbol)


def live_channel(prefix: str, symbol: str) -> str:
    """The Redis pub/sub channel of `symbol`'s market-channel messages (ticker, trades, candles, books).

    Not a channel-layer group: the worker publishes there and each server process's hub
    (`marketdata.delivery.fanout`) subscribes, so portfolio connections never receive book and trade
    traffic. Redis channel names are binary-safe: the symbol goes in as it is.
    """
    if not symbol:
        raise ValueError("symbol must not be empty")
    return f"{prefix}:live:{symbol}"


def symbol_from_group(group: str) -> str:
    """Inverse of `symbol_group`."""
    prefix, _, encoded = group.partition(".")
    if prefix != "md" or not encoded:
        raise ValueError(f"{group!r} is not a symbol group")
    return re.sub(r"_([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), encoded)


def user_group(user_id: int) -> str:
    """Group reaching every live connection of one user (portfolio changes)."""
    return f"user.{int(user_id)}"
