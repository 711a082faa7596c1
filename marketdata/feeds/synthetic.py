"""Synthetic prices: a seeded geometric random walk per instrument, paced in real time."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from marketdata.events import MarketEvent, Quote, Trade


@dataclass(frozen=True, slots=True)
class SyntheticInstrument:
    symbol: str
    start_price: Decimal
    quote_only: bool = False  # FX: quotes (bid/ask) only, no trades
    places: int = 2


class SyntheticFeed:
    name = "synthetic"

    def __init__(
        self,
        *,
        instruments: list[SyntheticInstrument],
        ticks_per_second: float,
        volatility: float,
        seed: int | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if ticks_per_second <= 0:
            raise ValueError("ticks_per_second must be positive")
        if volatility < 0:
            raise ValueError("volatility must not be negative")
        self.instruments = instruments
        self.interval = 1.0 / ticks_per_second
        # Per-tick standard deviation from the per-sqrt(second) figure.
        self.step_sigma = volatility * math.sqrt(self.interval)
        self.random = random.Random(seed)
        self.now = now
        self._prices = {i.symbol: float(i.start_price) for i in instruments}

    def step(self) -> Iterator[MarketEvent]:
        """One tick for every instrument, stamped now."""
        ts = self.now()
        for inst in self.instruments:
            mid = self._prices[inst.symbol] * math.exp(self.random.gauss(0.0, self.step_sigma))
            self._prices[inst.symbol] = mid
            quantum = Decimal(1).scaleb(-inst.places)
            half_spread = max(mid * 0.0001, float(quantum))
            bid = Decimal(mid - half_spread).quantize(quantum)
            ask = Decimal(mid + half_spread).quantize(quantum)
            yield Quote(symbol=inst.symbol, ts=ts, bid=bid, ask=ask, source=self.name)
            if not inst.quote_only:
                price = bid if self.random.random() < 0.5 else ask
                size = Decimal(self.random.randint(1, 500))
                yield Trade(symbol=inst.symbol, ts=ts, price=price, size=size, source=self.name)

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for event in self.step():
                yield event
            next_at += self.interval
            # Sleep to the schedule, not for a fixed interval, so the rate holds
            # however long publishing took; if far behind, skip ahead.
            delay = next_at - loop.time()
            if delay < -1.0:
                next_at = loop.time()
            await asyncio.sleep(max(delay, 0))
