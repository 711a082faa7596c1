"""Feed sources. Every module here has the same shape: a class constructed from
options whose async iteration yields normalized events (`marketdata.events`) in
time order. The worker (`marketdata.worker.loop`) does the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from marketdata.events import MarketEvent


class Feed(Protocol):
    name: str

    def __aiter__(self) -> AsyncIterator[MarketEvent]: ...
