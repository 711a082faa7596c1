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
from marketdata.feeds.options import FeedKind, options_check, strings
from marketdata.feeds.synthetic import SyntheticFeed, SyntheticInstrument
from marketdata.models import AssetClass, Instrument
from marketdata.models import Feed as FeedRow
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

DEFAULT_START_PRICE = Decimal("100")


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


def feed_build(row: FeedRow, *, symbols: SymbolMap, instruments: Iterable[Instrument], only: set[str] | None = None) -> Feed | None:
    """The feed object for a configured feed. `instruments`: the active ones (what a synthetic feed walks).

    `only` (`run_feeds --symbols`): a synthetic feed walks these of its instruments only, and is None when it walks
    none of them; the other kinds are filtered through `symbols.wanted`, which the caller sets."""
    options_check(kind=row.kind, options=row.options, symbols=row.symbol_list)
    opts = row.options
    if row.kind == FeedKind.SYNTHETIC:
        wanted = set(row.symbol_list)
        chosen = [i for i in instruments if not wanted or i.symbol in wanted]
        missing = sorted(wanted - {i.symbol for i in chosen})
        if missing:
            raise ValueError(f"not an active instrument: {', '.join(missing)}")
        if only is not None:
            chosen = [i for i in chosen if i.symbol in only]
            if not chosen:
                return None
        return SyntheticFeed(
            instruments=[synthetic_instrument(i) for i in chosen],
            ticks_per_second=float(opts.get("ticks_per_second", settings.SYNTHETIC_TICKS_PER_SECOND)),
            volatility=float(opts.get("volatility", settings.SYNTHETIC_VOLATILITY)),
            seed=opts.get("seed"),
        )
    if row.kind == FeedKind.BINANCE:
        from marketdata.feeds.binance_live import BinanceLive

        extra: dict[str, Any] = {k: tuple(strings(v)) if k == "streams" else v for k, v in opts.items()}
        return BinanceLive(symbols=row.symbol_list, symbol_map=symbols, **extra)
    if row.kind == FeedKind.COINBASE:
        from marketdata.feeds.coinbase_live import CoinbaseLive

        extra = {k: tuple(strings(v)) if k == "channels" else v for k, v in opts.items()}
        return CoinbaseLive(symbols=row.symbol_list, symbol_map=symbols, **extra)
    from marketdata.feeds.registry import file_sources
    from marketdata.worker.replay import Replay

    file_options = {str(k): str(v) for k, v in opts.get("options", {}).items()}
    if "symbol" in opts:
        file_options["symbol"] = opts["symbol"]
    speed = opts.get("speed", 1)
    sources = file_sources(
        paths=[Path(p) for p in strings(opts["paths"])],
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
