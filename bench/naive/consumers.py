"""One consumer per socket: `group_add` per subscribed symbol, one JSON frame per group message.

Speaks the subset of Livefolio's `/ws/v1/market` protocol the load generator uses, so the same
client drives every system: `{"op": "subscribe", "channels": ["ticker:SYM", ...]}` is answered
with an `ack`, then every tick of those symbols arrives as
`{"type": "update", "ch", "epoch", "seq", "ts", "data"}`.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


def group_name(symbol: str) -> str:
    return f"ticker.{symbol}"


class TickerConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.joined: list[str] = []
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        request = json.loads(text_data or "{}")
        if request.get("op") != "subscribe":
            await self.send(text_data=json.dumps({"type": "error", "id": request.get("id"), "code": "unknown_op"}))
            return
        channels = [str(name) for name in request.get("channels", [])]
        for name in channels:
            group = group_name(name.partition(":")[2])
            if group not in self.joined:
                await self.channel_layer.group_add(group, self.channel_name)
                self.joined.append(group)
        await self.send(text_data=json.dumps({"type": "ack", "id": request.get("id"), "channels": [{"ch": name} for name in channels]}))

    async def ticker_tick(self, event: dict[str, Any]) -> None:
        """`{"type": "ticker.tick", "symbol", "epoch", "seq", "ts", "price"}` from the publisher: serialised again per socket."""
        frame = {
            "type": "update",
            "ch": f"ticker:{event['symbol']}",
            "epoch": event["epoch"],
            "seq": event["seq"],
            "ts": event["ts"],
            "data": {"last": event["price"], "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False},
        }
        await self.send(text_data=json.dumps(frame))
