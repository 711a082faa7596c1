"""The naive publisher: one `group_send` per tick through `RedisChannelLayer`, as a tutorial's worker does.

Run by `python -m bench.fanout publish --system naive` (DJANGO_SETTINGS_MODULE=bench.naive.settings).
The ticks due at one moment are sent concurrently (they are for different symbols, so each
symbol's order holds); a tutorial awaits them one by one, which only makes the publisher slower.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import get_channel_layer

from bench.naive.consumers import group_name

EPOCH = "1"


async def publish(source: Any, stop: asyncio.Event) -> dict[str, Any]:
    layer = get_channel_layer()
    assert layer is not None, "bench.naive.settings configures CHANNEL_LAYERS"
    async for batch in source.batches(stop):
        await asyncio.gather(
            *(
                layer.group_send(
                    group_name(tick.symbol),
                    {"type": "ticker.tick", "symbol": tick.symbol, "epoch": EPOCH, "seq": tick.seq, "ts": tick.ts, "price": tick.price},
                )
                for tick in batch
            )
        )
    return {}
