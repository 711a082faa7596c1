"""The seam between live data and its consumers.

Consumers subscribe and unsubscribe here; the worker publishes here; writes that
live connections must see are announced here, after commit. Today fan-out is a
channel-layer group per symbol; replacing it (e.g. with a per-process hub) is a
change to this module alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from marketdata import groups
from marketdata.events import PriceUpdate, encode_price_update


def _layer() -> Any:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return layer


async def subscribe_symbols(channel_name: str, symbols: Iterable[str]) -> None:
    layer = _layer()
    for symbol in symbols:
        await layer.group_add(groups.symbol_group(symbol), channel_name)


async def unsubscribe_symbols(channel_name: str, symbols: Iterable[str]) -> None:
    layer = _layer()
    for symbol in symbols:
        await layer.group_discard(groups.symbol_group(symbol), channel_name)


async def subscribe_user(channel_name: str, user_id: int) -> None:
    await _layer().group_add(groups.user_group(user_id), channel_name)


async def unsubscribe_user(channel_name: str, user_id: int) -> None:
    await _layer().group_discard(groups.user_group(user_id), channel_name)


async def publish_price(update: PriceUpdate) -> None:
    await _layer().group_send(groups.symbol_group(update.symbol), encode_price_update(update))


def notify_user_on_commit(user_id: int, event: dict[str, Any]) -> None:
    """Tell one user's live connections about a change, once the write is committed.

    Sent after commit so a connection that reloads on the event reads the new
    rows; a rolled-back write sends nothing.
    """
    group = groups.user_group(user_id)
    # robust: a lost notification must not turn a committed write into an error.
    transaction.on_commit(lambda: async_to_sync(_layer().group_send)(group, event), robust=True)
