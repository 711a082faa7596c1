"""Feed sources. Every module here has the same shape: a class constructed from
options whose async iteration yields normalized events (`marketdata.events`) in
time order. The worker (`marketdata.worker.loop`) does the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from marketdata.events import MarketEvent


class Feed(Protocol):
    """May also have `waiting_until: datetime | None`: while set, the feed has handed out every event before that
    time and waits for one at it (a paced replay between events); a worker on event time then closes its window."""

    name: str

    def __aiter__(self) -> AsyncIterator[MarketEvent]: ...
