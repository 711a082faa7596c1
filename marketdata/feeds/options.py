"""The kinds of configured feed and the options each takes, checked without touching the database.

Its own module so `marketdata.models` (which validates a Feed row's options) and
`marketdata.feeds.configured` (which builds feeds from rows) both import it and
not each other. Options per kind are documented in docs/feeds.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models


class FeedKind(models.TextChoices):
    SYNTHETIC = "synthetic", "Synthetic random walk"
    BINANCE = "binance", "Binance spot (live)"
    COINBASE = "coinbase", "Coinbase Advanced Trade (live)"
    REPLAY = "replay", "Recorded files (replay)"


_NUMBER = (int, float)
_STRINGS = (list, str)
OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    FeedKind.SYNTHETIC: {"ticks_per_second": _NUMBER, "volatility": _NUMBER, "seed": (int,)},
    FeedKind.BINANCE: {"ws_url": (str,), "rest_url": (str,), "streams": _STRINGS, "depth_limit": (int,), "stale_after": _NUMBER},
    FeedKind.COINBASE: {"ws_url": (str,), "channels": _STRINGS, "stale_after": _NUMBER},
    FeedKind.REPLAY: {
        "paths": _STRINGS,
        "format": (str,),
        "symbol": (str,),
        "speed": (*_NUMBER, str),
        "loop": (bool,),
        "rebase_time": (bool,),
        "options": (dict,),
    },
}
REQUIRED: dict[str, tuple[str, ...]] = {FeedKind.REPLAY: ("paths",)}


def options_check(*, kind: str, options: Any, symbols: Sequence[str]) -> None:
    """Raise ValueError saying what is wrong with a feed's kind, options or symbols."""
    if kind not in OPTIONS:
        raise ValueError(f"unknown kind {kind!r}")
    if not isinstance(options, dict):
        raise ValueError('options must be a JSON object, e.g. {"speed": 10}')
    known = OPTIONS[kind]
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"{key!r} is not an option of a {kind} feed; its options are {', '.join(known)}")
        if (isinstance(value, bool) and bool not in known[key]) or not isinstance(value, known[key]):
            raise ValueError(f"{key!r} must be {' or '.join(t.__name__ for t in known[key])}, not {value!r}")
    for key in REQUIRED.get(kind, ()):
        if key not in options:
            raise ValueError(f"a {kind} feed needs {key!r}")
    if kind in (FeedKind.BINANCE, FeedKind.COINBASE) and not symbols:
        raise ValueError(f"a {kind} feed needs symbols, as the exchange spells them")
    speed = options.get("speed")
    if speed is not None and speed != "max" and (isinstance(speed, str) or speed <= 0):
        raise ValueError(f'speed must be a number above 0 or "max", not {speed!r}')
    if options.get("ticks_per_second", 1) <= 0:
        raise ValueError("ticks_per_second must be positive")
    if options.get("volatility", 0) < 0:
        raise ValueError("volatility must not be negative")
    if "paths" in options and not strings(options["paths"]):
        raise ValueError("paths must name at least one file")


def strings(value: str | list[str]) -> list[str]:
    return value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
