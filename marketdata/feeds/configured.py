"""Feeds configured in the admin (`marketdata.models.Feed`): their options checked, and built into feed objects.

Options per kind (all optional unless marked), documented in docs/feeds.md:
- synthetic: ticks_per_second, volatility, seed
- binance: ws_url, rest_url, streams, depth_limit, stale_after; symbols required (BTCUSDT ...)
- coinbase: ws_url, channels, stale_after; symbols required (BTC-USD ...)
- replay: paths (required), format, symbol, speed (number or "max"), loop, rebase_time, options
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from marketdata.events import MarketEvent
from marketdata.feeds import Feed
from marketdata.feeds.files import Problems
from marketdata.feeds.synthetic import SyntheticFeed, SyntheticInstrument
from marketdata.models import AssetClass, FeedKind, Instrument
from marketdata.models import Feed as FeedRow
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

DEFAULT_START_PRICE = Decimal("100")
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
    if "paths" in options and not _strings(options["paths"]):
        raise ValueError("paths must name at least one file")


def _strings(value: str | list[str]) -> list[str]:
    return value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]


def price_places(start: Decimal, *, minimum: int) -> int:
    """Decimal places for a price: at least `minimum`, and enough for four significant digits.

    A sub-cent coin (0.00001234) quoted to 4 places rounds to nothing, and its
    spread then pushes the bid below zero.
    """
    return max(minimum, 3 - start.adjusted())


def synthetic_instrument(instrument: Instrument) -> SyntheticInstrument:
    """Start from the stored price so a restart continues where the last run ended."""
    quote = getattr(instrument, "quote", None)
    # A walk from zero or below stays there; start afresh rather than carry it on.
    start = quote.price if quote is not None and quote.price > 0 else DEFAULT_START_PRICE
    if instrument.asset_class == AssetClass.FX:
        return SyntheticInstrument(instrument.symbol, start, quote_only=True, places=price_places(start, minimum=5))
    return SyntheticInstrument(instrument.symbol, start, places=price_places(start, minimum=2 if start >= 10 else 4))


def feed_build(row: FeedRow, *, symbols: SymbolMap, instruments: Iterable[Instrument]) -> Feed:
    """The feed object for a configured feed. `instruments`: the active ones (what a synthetic feed walks)."""
    options_check(kind=row.kind, options=row.options, symbols=row.symbol_list)
    opts = row.options
    if row.kind == FeedKind.SYNTHETIC:
        wanted = set(row.symbol_list)
        chosen = [i for i in instruments if not wanted or i.symbol in wanted]
        missing = sorted(wanted - {i.symbol for i in chosen})
        if missing:
            raise ValueError(f"not an active instrument: {', '.join(missing)}")
        return SyntheticFeed(
            instruments=[synthetic_instrument(i) for i in chosen],
            ticks_per_second=float(opts.get("ticks_per_second", settings.SYNTHETIC_TICKS_PER_SECOND)),
            volatility=float(opts.get("volatility", settings.SYNTHETIC_VOLATILITY)),
            seed=opts.get("seed"),
        )
    if row.kind == FeedKind.BINANCE:
        from marketdata.feeds.binance_live import BinanceLive

        extra: dict[str, Any] = {k: tuple(_strings(v)) if k == "streams" else v for k, v in opts.items()}
        return BinanceLive(symbols=row.symbol_list, symbol_map=symbols, **extra)
    if row.kind == FeedKind.COINBASE:
        from marketdata.feeds.coinbase_live import CoinbaseLive

        extra = {k: tuple(_strings(v)) if k == "channels" else v for k, v in opts.items()}
        return CoinbaseLive(symbols=row.symbol_list, symbol_map=symbols, **extra)
    from marketdata.feeds.registry import file_sources
    from marketdata.worker.replay import Replay

    file_options = {str(k): str(v) for k, v in opts.get("options", {}).items()}
    if "symbol" in opts:
        file_options["symbol"] = opts["symbol"]
    speed = opts.get("speed", 1)
    sources = file_sources(
        paths=[Path(p) for p in _strings(opts["paths"])],
        format_name=opts.get("format"),
        symbols=symbols,
        options=file_options,
        problems=Problems(),
    )
    return Replay(
        sources=sources, speed=None if speed == "max" else float(speed), loop=opts.get("loop", False), rebase=opts.get("rebase_time", False)
    )


class Merged:
    """Several feeds as one, each event passed on as it arrives. A feed that fails is logged; the rest go on."""

    name = "merged"

    def __init__(self, feeds: Sequence[Feed], *, names: Sequence[str]) -> None:
        self.feeds = list(zip(names, feeds, strict=True))

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        # Bounded, so a fast feed waits for the worker instead of piling up memory.
        queue: asyncio.Queue[MarketEvent | None] = asyncio.Queue(maxsize=10_000)

        async def pump(name: str, feed: Feed) -> None:
            try:
                async for event in feed:
                    await queue.put(event)
                log.info("feed %s ended", name)
            except Exception:
                log.exception("feed %s failed; the other feeds go on", name)
            finally:
                await queue.put(None)

        tasks = [asyncio.create_task(pump(name, feed)) for name, feed in self.feeds]
        running = len(tasks)
        try:
            while running:
                event = await queue.get()
                if event is None:
                    running -= 1
                else:
                    yield event
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
