"""Recording what flows through the workers, as native JSONL (`record_feed`).

The recorder claims the tape (`streams.tape_listen`) every second; while it
does, workers append every event they apply, in chunks, to a capped Redis
stream. The recorder copies the chunks to the file in order. A chunk lost on
the way (a worker that could not write, a recorder too far behind) shows as a
jump in the worker's chunk count and is reported as a gap, never hidden.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TextIO

from marketdata.delivery import streams

log = logging.getLogger(__name__)

CLAIM_EVERY = 1.0  # seconds; well inside streams.TAPE_LISTEN_SECONDS


@dataclass
class RecordStats:
    events: int = 0
    chunks: int = 0
    gaps: int = 0  # chunks known to be missing
    epochs: set[str] = field(default_factory=set)  # worker runs recorded from


class Recorder:
    def __init__(self, *, out: TextIO, symbols: Collection[str] | None = None) -> None:
        self.out = out
        self.symbols = None if symbols is None else set(symbols)
        self.stats = RecordStats()
        self.listening = asyncio.Event()  # set once workers have been asked to tape
        self._last_n: dict[str, int] = {}

    async def run(self, stop: asyncio.Event) -> RecordStats:
        """Record until `stop` is set, then take what the tape already holds and return."""
        await streams.tape_listen()
        after = await streams.tape_end()
        self.listening.set()
        loop = asyncio.get_running_loop()
        claimed = loop.time()
        while not stop.is_set():
            if loop.time() - claimed >= CLAIM_EVERY:
                await streams.tape_listen()
                claimed = loop.time()
            after = self._write(await streams.tape_read(after, block_ms=int(CLAIM_EVERY * 500)), after)
        while chunks := await streams.tape_read(after, block_ms=None):
            after = self._write(chunks, after)
        self.out.flush()
        return self.stats

    def _write(self, chunks: list[streams.TapeChunk], after: str) -> str:
        for chunk in chunks:
            last = self._last_n.get(chunk.epoch)
            if last is not None and chunk.n != last + 1:
                self.stats.gaps += chunk.n - last - 1
                log.warning("the recording has a gap: %d chunks of worker %s are missing", chunk.n - last - 1, chunk.epoch)
            self._last_n[chunk.epoch] = chunk.n
            self.stats.epochs.add(chunk.epoch)
            self.stats.chunks += 1
            lines = chunk.lines.splitlines(keepends=True)
            if self.symbols is not None:
                lines = [line for line in lines if json.loads(line)["symbol"] in self.symbols]
            self.out.writelines(lines)
            self.stats.events += len(lines)
            after = chunk.id
        return after
