"""`/ws/portfolio/`: the logged-in user's portfolios, revalued live.

A protocol adapter: loads the user's books once (and again after a ledger
change), subscribes to the held symbols and the FX pairs they convert through
(via `marketdata.delivery.streams`), and turns
price events into coalesced update frames. No database access per price.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from marketdata.delivery import streams
from marketdata.events import decode_price_update
from portfolio import selectors
from portfolio.live import Frame, LiveBook
from portfolio.selectors import Market, PortfolioBook

CLOSE_NOT_AUTHENTICATED = 4401


class LivePortfolios:
    """A user's portfolios as one LiveBook, loaded and reloaded from the database: all of them, or one.

    Shared by `/ws/portfolio/` (all of them) and the `portfolio` / `portfolio:ID`
    channels of `/ws/v1/market` (`marketdata.api.consumer`).
    """

    def __init__(self, user: Any, book: LiveBook, portfolio_id: int | None = None) -> None:
        self.user = user
        self.book = book
        self.portfolio_id = portfolio_id

    @classmethod
    async def open(cls, user: Any, portfolio_id: int | None = None) -> LivePortfolios | None:
        """The user's portfolios (or the one with `portfolio_id`); None when that one is not the user's."""
        books, market = await cls._load(user, portfolio_id)
        if portfolio_id is not None and not books:
            return None
        return cls(user, LiveBook(books, market), portfolio_id)

    async def reload(self) -> None:
        """After a ledger change: fresh books, keeping the newer prices (a deleted portfolio leaves the book empty)."""
        self.book.replace(*await self._load(self.user, self.portfolio_id))

    @staticmethod
    async def _load(user: Any, portfolio_id: int | None) -> tuple[list[PortfolioBook], Market]:
        books, market = await database_sync_to_async(selectors.live_books_for_user)(user=user)
        if portfolio_id is not None:
            books = [book for book in books if book.id == portfolio_id]
        return books, market


class PortfolioConsumer(AsyncWebsocketConsumer):
    live: LivePortfolios
    book: LiveBook
    _flush: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            # Accept first so the browser sees the reason (a refused handshake is only 1006).
            await self.accept()
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        live = await LivePortfolios.open(self.user)
        assert live is not None  # all of a user's portfolios: never refused
        self.live, self.book = live, live.book
        await streams.subscribe_user(self.channel_name, self.user.pk)
        await streams.subscribe_symbols(self.channel_name, self.book.symbols)
        await self.accept()
        await self._send(self.book.snapshot())

    async def disconnect(self, code: int) -> None:
        if self._flush is not None:
            self._flush.cancel()
        if hasattr(self, "book"):
            await streams.unsubscribe_symbols(self.channel_name, self.book.symbols)
            await streams.unsubscribe_user(self.channel_name, self.user.pk)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # A read-only stream: a client may only ping, or pick the combined view's currency.
        try:
            message = json.loads(text_data) if text_data is not None else None
        except ValueError as exc:
            await self._send({"type": "error", "code": "bad_json", "message": f"Frame is not JSON: {exc}."})
            return
        if not isinstance(message, dict):
            message = {}
        kind = message.get("type")
        if kind == "ping":
            await self._send({"type": "pong"})
        elif kind == "view":
            await self._view(message.get("currency"))
        else:
            await self._send(
                {"type": "error", "code": "unknown_message", "message": 'Send {"type": "ping"} or {"type": "view", "currency": "EUR"}.'}
            )

    async def _view(self, currency: object) -> None:
        if currency not in self.book.currencies:
            offered = ", ".join(self.book.currencies)
            await self._send({"type": "error", "code": "unknown_currency", "message": f"Choose one of {offered}, not {currency!r}."})
            return
        before = self.book.symbols
        self.book.set_currency(str(currency))
        await self._resubscribe(before)
        await self._send(self.book.snapshot())

    async def md_price(self, event: dict[str, Any]) -> None:
        if self.book.apply(decode_price_update(event)) and self._flush is None:
            self._schedule_flush()

    async def portfolio_reload(self, event: dict[str, Any]) -> None:
        before = self.book.symbols
        await self.live.reload()
        await self._resubscribe(before)
        await self._send(self.book.snapshot())

    async def _resubscribe(self, before: set[str]) -> None:
        after = self.book.symbols
        await streams.subscribe_symbols(self.channel_name, after - before)
        await streams.unsubscribe_symbols(self.channel_name, before - after)

    def _schedule_flush(self) -> None:
        self._flush = asyncio.create_task(self._send_changes(settings.PORTFOLIO_COALESCE_MS / 1000))

    async def _send_changes(self, delay: float) -> None:
        # Every price arriving during the delay joins this one frame.
        await asyncio.sleep(delay)
        self._flush = None
        frame = self.book.take_changes()
        if frame is not None:
            await self._send(frame)

    async def _send(self, frame: Frame) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))
