"""The one place channel-layer group names, event types and the market hub's Redis channel names are built.

Channels accepts group names of `[A-Za-z0-9._-]` under 100 characters; the only
channel-layer groups left are per user (ledger changes). Prices and every other
market message travel on the hub's Redis channels, one per stream (`market_key`: a symbol, or a
symbol in a replay session).
"""

from __future__ import annotations

PORTFOLIO_RELOAD_EVENT = "portfolio.reload"  # handled as `portfolio_reload`
ALERT_FIRED_EVENT = "alert.fired"  # handled as `alert_fired`: a notification for the user's open dashboards


def market_key(symbol: str, session: str = "") -> str:
    """The key of one symbol's stream of market messages: what one producer publishes under (`live_channel`), what
    each server process's hub subscribes to, and what a producer's per-symbol lease is keyed by.

    Live: the symbol itself ("BTC-USD"). A replay session (`replay_feed --sandbox day1`):
    "BTC-USD?session=day1", so a sandbox replay never shares a stream, or a lease, with
    the live producer of the symbol. (Spelled as the session's channel names end:
    `marketdata.api.channels.session_suffix`.)
    """
    if not symbol:
        raise ValueError("symbol must not be empty")
    return f"{symbol}?session={session}" if session else symbol


def live_channel(prefix: str, key: str) -> str:
    """The Redis pub/sub channel of one stream's market-channel messages (tickers, trades, candles, books).

    `key` is the stream's `market_key`: a symbol, or a symbol in a replay session. Not a
    channel-layer group: the worker publishes there and each server process's hub
    (`marketdata.delivery.fanout`) subscribes. Redis channel names are binary-safe: the
    key goes in as it is.
    """
    if not key:
        raise ValueError("symbol must not be empty")
    return f"{prefix}:live:{key}"


def lease_key(prefix: str, key: str) -> str:
    """The Redis key of the lease on a producer key (`marketdata.worker.leases`)."""
    return f"{prefix}:lease:{key}"


def fence_key(prefix: str, key: str) -> str:
    """The Redis counter of a producer key's fencing tokens (`marketdata.worker.leases`)."""
    return f"{prefix}:fence:{key}"


def user_group(user_id: int) -> str:
    """Group reaching every live connection of one user (portfolio changes)."""
    return f"user.{int(user_id)}"


def alerts_version_key(prefix: str) -> str:
    """The Redis counter bumped after every committed change to alerts: feed workers reload their index when it moves."""
    return f"{prefix}:alerts:version"
