"""The one place channel-layer group names, event types and the market hub's Redis channel names are built.

Channels accepts group names of `[A-Za-z0-9._-]` under 100 characters; the only
channel-layer groups left are per user (ledger changes). Prices and every other
market message travel on the hub's Redis channels, one per symbol.
"""

from __future__ import annotations

PORTFOLIO_RELOAD_EVENT = "portfolio.reload"  # handled as `portfolio_reload`


def live_channel(prefix: str, symbol: str) -> str:
    """The Redis pub/sub channel of `symbol`'s market-channel messages (tickers, trades, candles, books).

    Not a channel-layer group: the worker publishes there and each server process's hub
    (`marketdata.delivery.fanout`) subscribes. Redis channel names are binary-safe: the
    symbol goes in as it is.
    """
    if not symbol:
        raise ValueError("symbol must not be empty")
    return f"{prefix}:live:{symbol}"


def producer_key(symbol: str) -> str:
    """What one producer owns and publishes under: a symbol's live channel, history and lease are keyed by it."""
    if not symbol:
        raise ValueError("symbol must not be empty")
    return symbol


def lease_key(prefix: str, key: str) -> str:
    """The Redis key of the lease on a producer key (`marketdata.worker.leases`)."""
    return f"{prefix}:lease:{key}"


def fence_key(prefix: str, key: str) -> str:
    """The Redis counter of a producer key's fencing tokens (`marketdata.worker.leases`)."""
    return f"{prefix}:fence:{key}"


def user_group(user_id: int) -> str:
    """Group reaching every live connection of one user (portfolio changes)."""
    return f"user.{int(user_id)}"
