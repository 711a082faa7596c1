"""Recording: what flows through a worker, taped through real Redis, replays to the very same recording."""

import asyncio
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from marketdata.events import Candle, MarketEvent, PriceUpdate
from marketdata.feeds.binance_csv import BinanceAggTrades
from marketdata.feeds.files import FileSource, Problems
from marketdata.feeds.native import NativeJsonl
from marketdata.symbols import SymbolMap
from marketdata.worker.loop import Worker
from marketdata.worker.recording import Recorder
from marketdata.worker.replay import Replay
from tests.conftest import AGGTRADES, needs_aggtrades

pytestmark = pytest.mark.redis


def symbols() -> SymbolMap:
    return SymbolMap(instruments=["BTC-USD"], aliases={("binance", "BTCUSDT"): "BTC-USD"})


def aggtrades() -> FileSource:
    fmt = BinanceAggTrades(path=AGGTRADES, symbols=symbols(), options={})
    return FileSource(path=AGGTRADES, format=fmt, problems=Problems(strict=True))


def recording(path: Path) -> FileSource:
    return FileSource(path=path, format=NativeJsonl(path=path, symbols=symbols(), options={}), problems=Problems(strict=True))


async def nothing_stored(rows: Iterable[PriceUpdate] | Sequence[Candle]) -> int:
    return 0


async def record_a_replay(sources: list[FileSource]) -> tuple[str, Any]:
    """Replay `sources` at full speed through a worker while a recorder listens; the recording and the worker's stats."""
    out = io.StringIO()
    recorder = Recorder(out=out)
    stop = asyncio.Event()
    recording_task = asyncio.create_task(recorder.run(stop))
    await asyncio.wait_for(recorder.listening.wait(), timeout=10)
    worker = Worker(
        feed=Replay(sources=sources),
        conflation=0.01,
        quote_flush=60,
        store_quotes=nothing_stored,
        store_candles=nothing_stored,
        replay=True,
    )
    stats = await worker.run(asyncio.Event())
    # Everything is on the tape once the worker returns; stopping, the recorder takes what is left.
    stop.set()
    record_stats = await asyncio.wait_for(recording_task, timeout=20)
    assert (record_stats.events, record_stats.gaps) == (stats.taped, 0)
    return out.getvalue(), stats


@needs_aggtrades
async def test_record_replay_record_gives_the_identical_file(redis_layer: Any, tmp_path: Path) -> None:
    first, stats = await record_a_replay([aggtrades()])
    assert stats.taped == stats.events == 5000
    lines = first.splitlines()
    assert len(lines) == 5000
    assert lines[0] == (
        '{"type":"trade","ts":"2026-01-01T00:00:00.039409Z","symbol":"BTC-USD","price":"87648.21000000",'
        '"size":"0.08185000","side":"sell","trade_id":3800397495,"source":"binance"}'
    )
    # The recording holds the source's events, in order, unchanged.
    path = tmp_path / "session.jsonl"
    path.write_text(first)
    replayed: list[MarketEvent] = list(recording(path))
    assert replayed == list(aggtrades())

    second, _ = await record_a_replay([recording(path)])
    assert second == first


async def test_without_a_recorder_nothing_is_taped(redis_layer: Any, tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text(
        '{"type":"trade","ts":"2026-01-01T00:00:00.000000Z","symbol":"BTC-USD","price":"1","size":"1","side":null,"source":"x"}\n'
    )
    worker = Worker(
        feed=Replay(sources=[recording(path)]), conflation=0.01, quote_flush=60, store_quotes=nothing_stored, store_candles=nothing_stored
    )
    stats = await worker.run(asyncio.Event())
    assert (stats.events, stats.taped) == (1, 0)
