"""One connection's frames on their way to the ASGI server: the outbox.

Each connection's frames go to the ASGI server through its `Outbox`, in
order. While the server takes frames without waiting, `put` hands each one over at once
(no task switch per frame); once the server pushes back, frames wait in the outbox and the
connection's writer task takes over until it catches up. Whoever produces a frame (the
hub, a request, a timer) never waits for the socket. What a connection has not sent yet
is its outbox plus what the server holds for it, where the server lets us see that:

- daphne: `send` returns as soon as Twisted has buffered the frame, whatever the peer reads.
  `server_backlog` reads the socket's Twisted write buffer (and autobahn's queue), and the
  outbox hands daphne no more frames while it holds over SERVER_BUFFER_BYTES; the rest
  waits in the outbox. So unsent = outbox + Twisted's buffer, both seen.
- uvicorn (websockets-sansio, websockets, wsproto): `send` itself waits while the
  transport's buffer is over asyncio's high-water mark (64 KiB), so the outbox grows
  behind it. Unsent = outbox (seen) + up to 64 KiB and one frame in the transport (not seen).
- any other server: the outbox only.

The kernel's socket buffers come before all of these and are seen by no one.

**Batches.** A connection that opted in (`batching`) has the frames produced for it in
one turn of the event loop (a window's payloads as the hub reads them, a subscribe's
ack and snapshots) joined into one `{"type": "batch", "messages": [...]}` frame,
made by concatenating the frames as they are, already encoded. So a client of ten
channels gets one frame per window instead of ten, and the server does the per-frame
work once. One process-wide callback at the end of the turn sends every pending
batch; a single frame goes out as it is; a batch never grows past BATCH_CHARACTERS.

A connection whose unsent data stays over `MARKET_WS_SEND_BUFFER_BYTES` for
`MARKET_WS_SLOW_SECONDS` (sampled every SAMPLE_SECONDS while it is over), or whose outbox
alone passes HARD_LIMIT_FACTOR × that bound, is a slow consumer: its outbox is dropped and
the consumer closes it with 4408. The close frame goes out after what the server already
buffered for the socket; a peer that is not reading at all never sees it, and the server
drops the TCP connection when its closing handshake times out (daphne: 1 s; uvicorn: when
its keepalive ping goes unanswered). Either way the client reconnects and resumes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from config import metrics
from marketdata.delivery.outage import OUTAGE

log = logging.getLogger(__name__)

SERVER_BUFFER_BYTES = 65536  # under daphne, the writer waits while Twisted holds more than this for the socket
SAMPLE_SECONDS = 0.1  # how often a connection over its bound is looked at again
HARD_LIMIT_FACTOR = 4  # an outbox past this many times the bound is closed at once: memory stays bounded
BATCH_CHARACTERS = 65536  # a batch frame is sent before it would grow past this
_BATCH_HEAD = '{"type":"batch","messages":['


def server_send(send: Any) -> Any:
    """The ASGI server's own `send` beneath channels' session middleware.

    `InstanceSessionWrapper.send` saves the session and sets its cookie on HTTP
    responses only; a WebSocket frame passes straight through it. Frames go to the
    server's `send` directly, which saves a wrapper per frame and lets
    `server_backlog` find the socket.
    """
    for _ in range(8):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            break
        send = inner
    return send


def server_backlog(send: Any) -> Callable[[], int] | None:
    """How many bytes the ASGI server holds unsent for the socket behind `send`, where it lets us see: daphne.

    daphne hands applications `functools.partial(server.handle_reply, protocol)`; the
    protocol is autobahn's, over a Twisted transport (TLS wraps a TCP one). Their unsent
    bytes are autobahn's send queue plus each Twisted buffer (`dataBuffer` from `offset`,
    and `_tempDataLen` not yet moved into it). None for any other server.
    """
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    transports = []
    transport = getattr(protocol, "transport", None)
    for _ in range(4):
        if transport is None:
            break
        if all(hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")):
            transports.append(transport)
        transport = getattr(transport, "transport", None)
    queue = getattr(protocol, "send_queue", None)
    if not transports or not isinstance(queue, deque):
        return None

    def backlog() -> int:
        total = sum(len(data) for data, _sync in queue) if queue else 0
        for buffered in transports:
            total += len(buffered.dataBuffer) - buffered.offset + buffered._tempDataLen
        return total

    return backlog


@dataclass(frozen=True, slots=True)
class _Close:
    code: int


def for_socket(
    base_send: Any, *, close: Callable[[int], Awaitable[None]], on_slow: Callable[[str], None], endpoint: str = "other"
) -> Outbox:
    """A consumer's outbox: on the ASGI server's own `send` beneath `base_send`, bounded by
    MARKET_WS_SEND_BUFFER_BYTES for MARKET_WS_SLOW_SECONDS, seeing the server's buffer where it can.
    Its frames are counted under `endpoint` (config/metrics.py)."""
    from django.conf import settings

    metrics.ensure_sync()
    send = server_send(base_send)
    return Outbox(
        tally=metrics.endpoint_tally(endpoint),
        send=send,
        close=close,
        on_slow=on_slow,
        limit=settings.MARKET_WS_SEND_BUFFER_BYTES,
        slow_seconds=settings.MARKET_WS_SLOW_SECONDS,
        backlog=server_backlog(send),
    )


# Tasks that outlive their connection's own (a slow consumer's close), kept referenced until done.
_detached: set[asyncio.Task[None]] = set()


def close_detached(close: Coroutine[Any, Any, None]) -> None:
    """Close a slow socket past its outbox (dropped by then): the close frame follows only what the server
    already buffered for it. Its own task, since the connection's tasks are being cancelled.

    Also runs other clean-up of a connection that is gone (leaving a group); its failure is logged here,
    since nobody awaits the task (Redis being down at that moment is expected, and only a warning)."""
    task = asyncio.ensure_future(close)
    _detached.add(task)
    task.add_done_callback(_detached_done)


def _detached_done(task: asyncio.Task[None]) -> None:
    _detached.discard(task)
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    if isinstance(exc, OUTAGE):
        log.warning("clean-up of a closed connection failed: %s: %s", type(exc).__name__, exc)
    else:
        log.error("clean-up of a closed connection failed", exc_info=exc)


class Outbox:
    """One connection's frames on their way to the ASGI server, in order and bounded (see the module docstring).

    `send` is the server's ASGI `send`; `close(code)` closes the socket. `on_slow(reason)`
    is called once, synchronously, when the connection is found slow: the outbox has
    dropped its frames by then, and the owner closes the socket (4408). `backlog` reports
    what the server holds unsent (`server_backlog`), when it can.

    A frame is handed to the server at once, from `put`, while the server takes frames
    without waiting (the server's `send` coroutine is run until it first suspends, as an
    eager task would be): no task switch per frame. Once the server pushes back (its
    `send` suspends, or under daphne it holds over SERVER_BUFFER_BYTES for the socket),
    frames queue here and the writer task takes over until the server catches up.
    """

    def __init__(
        self,
        *,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        on_slow: Callable[[str], None],
        limit: int,
        slow_seconds: float,
        backlog: Callable[[], int] | None = None,
        tally: metrics.EndpointTally | None = None,
    ) -> None:
        self._send = send
        self._tally = tally if tally is not None else metrics.endpoint_tally("other")  # frames and characters sent
        self._close = close
        self._on_slow = on_slow
        self.limit = limit
        self.hard_limit = HARD_LIMIT_FACTOR * limit
        self.slow_seconds = float(slow_seconds)
        self._backlog = backlog
        self._frames: deque[str | _Close] = deque()
        self.queued = 0  # characters of the frames queued (the bytes of ASCII JSON)
        self.peak = 0  # the most `unsent()` was seen to be
        self.over_since: float | None = None  # monotonic time unsent data went over the bound
        self.closed = False  # no more frames are taken
        self.finished = False  # the close was handed to the server, or the server refused a frame: nothing more goes out
        self._blocked: tuple[Coroutine[Any, Any, None], Any] | None = None  # a send the server suspended, and what it awaits
        self._holding = False  # daphne holds too much for the socket: the writer waits for it
        self._pumping = False
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None  # started the first time the server pushes back
        self.batching = False  # join the frames of one loop turn into one batch frame
        self._batch: list[str] = []
        self._batch_size = 0

    def _take_over(self) -> None:
        """The server pushes back: let the writer task carry on from here."""
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())

    @property
    def behind(self) -> bool:
        """Unsent data is over the bound: a producer that can merge its frames (a portfolio book) holds them back meanwhile."""
        return self.over_since is not None

    def unsent(self) -> int:
        """Characters not yet sent that we can see: the outbox, plus the server's buffer where visible."""
        return self.queued + (self._backlog() if self._backlog is not None else 0)

    def put(self, text: str) -> None:
        if self.closed:
            return
        if self.batching:
            if self._batch and self._batch_size + len(text) > BATCH_CHARACTERS:
                self.send_batch()
            self._batch.append(text)
            self._batch_size += len(text)
            if len(self._batch) == 1:
                _at_end_of_turn(self)
            return
        self._put(text)

    def send_batch(self) -> None:
        """Send the frames joined so far: one as it is, several as one batch frame."""
        frames, self._batch, self._batch_size = self._batch, [], 0
        if frames and not self.closed:
            self._put(frames[0] if len(frames) == 1 else _BATCH_HEAD + ",".join(frames) + "]}")

    def _put(self, text: str) -> None:
        backlog = self._backlog
        if not (self._frames or self._blocked is not None or self._holding or self._pumping) and (
            backlog is None or backlog() <= SERVER_BUFFER_BYTES
        ):
            # Nothing ahead of it and the server takes frames: straight to the server (the common case).
            if self._hand(text) and backlog is not None and self.over_since is None:
                self._check_over()
            return
        self._frames.append(text)
        self.queued += len(text)
        if self.queued > self.peak:
            self.peak = self.queued
        if self.queued > self.hard_limit:
            self._slow(f"{self.queued} characters queued, over the hard limit of {self.hard_limit}")
            return
        if self._blocked is None and not self._holding:
            self._pump()
        if self.over_since is None:
            self._check_over()

    def _check_over(self) -> None:
        unsent = self.unsent()
        if unsent > self.limit:
            self.peak = max(self.peak, unsent)
            self.over_since = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(SAMPLE_SECONDS, self._sample)

    def close(self, code: int) -> None:
        """Send what is queued, then close the socket with `code`; nothing more is taken."""
        if self.closed:
            return
        self.send_batch()
        self.closed = True
        self._frames.append(_Close(code))
        if self._blocked is None and not self._holding:
            self._pump()

    def abandon(self) -> None:
        """Drop everything and stop writing (the socket is gone, or is being closed as slow)."""
        self.closed = self.finished = True
        self._frames.clear()
        self._batch.clear()
        self.queued = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        elif self._blocked is not None:
            self._blocked[0].close()
            self._blocked = None

    def _pump(self) -> None:
        """Hand the server queued frames for as long as it takes them without waiting; else wake the writer."""
        if self._pumping:
            return  # a send re-entered put: the loop below takes the frame
        self._pumping = True
        frames = self._frames
        try:
            while frames and not self.finished:
                if self._backlog is not None and self._backlog() > SERVER_BUFFER_BYTES:
                    self._holding = True  # daphne never pushes back: hold the frames here meanwhile
                    self._take_over()
                    return
                item = frames.popleft()
                if isinstance(item, str):
                    self.queued -= len(item)
                else:
                    self.finished = True
                if not self._hand(item):
                    return
        finally:
            self._pumping = False

    def _hand(self, item: str | _Close) -> bool:
        """Give the server a frame (or the close): True when it took it without waiting.

        Its coroutine runs here until it first suspends; if it does (the server pushes
        back), the writer task sees it through and queued frames wait behind it.
        """
        if isinstance(item, str):
            tally = self._tally  # plain integers: Prometheus hears of them once a second (config/metrics.py)
            tally.frames += 1
            tally.sent += len(item)
            coroutine: Coroutine[Any, Any, None] = self._send({"type": "websocket.send", "text": item})  # type: ignore[assignment]
        else:
            coroutine = self._close(item.code)  # type: ignore[assignment]
        try:
            awaiting = coroutine.send(None)
        except StopIteration:
            return True
        except Exception as exc:
            self._refused(exc)
            return False
        self._blocked = (coroutine, awaiting)
        self._take_over()
        return False

    def _refused(self, exc: BaseException) -> None:
        # The server refused a frame: the socket is gone, and its disconnect follows.
        log.debug("outbox: the server refused a frame (%s); nothing more is sent", exc)
        self.closed = self.finished = True
        self._frames.clear()
        self.queued = 0

    async def _write(self) -> None:
        """Takes over while the server pushes back: finishes the suspended send, or waits for daphne's buffer to drain."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not (self.finished and self._blocked is None):
                if self._blocked is not None:
                    coroutine, awaiting = self._blocked
                    try:
                        await _see_through(coroutine, awaiting)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self._blocked = None
                        self._refused(exc)
                        break
                    self._blocked = None
                elif self._holding:
                    await asyncio.sleep(SAMPLE_SECONDS / 5)
                    self._holding = False
                else:
                    break
                self._pump()

    def _sample(self) -> None:
        self._timer = None
        if self.closed or self.over_since is None:
            return
        unsent = self.unsent()
        self.peak = max(self.peak, unsent)
        if unsent <= self.limit:
            self.over_since = None
            return
        behind = time.monotonic() - self.over_since
        if behind >= self.slow_seconds:
            self._slow(f"{unsent} characters unsent for {behind:.1f} s (bound {self.limit})")
            return
        self._timer = asyncio.get_running_loop().call_later(SAMPLE_SECONDS, self._sample)

    def _slow(self, reason: str) -> None:
        dropped = sum(isinstance(item, str) for item in self._frames) + len(self._batch)
        self.abandon()
        self._tally.dropped["slow_consumer"] += dropped
        metrics.ws_closed(self._tally.endpoint, "slow_consumer")
        self._on_slow(reason)


async def _see_through(coroutine: Coroutine[Any, Any, None], awaiting: Any) -> None:
    """Run a coroutine that was started by hand (`coroutine.send(None)`) and suspended on `awaiting`, to its end.

    What a task does for its coroutine: wait for the future it yielded (a bare `yield`
    is one turn of the loop), then resume it, which reads the future's result or
    exception. Cancelled meanwhile, the coroutine is closed.
    """
    try:
        while True:
            if awaiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([awaiting])
            awaiting = coroutine.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        coroutine.close()
        raise


# Outboxes with a batch pending, per event loop: one callback at the end of the turn sends them all.
_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Outbox, None]] = weakref.WeakKeyDictionary()


def _at_end_of_turn(outbox: Outbox) -> None:
    loop = asyncio.get_running_loop()
    pending = _pending.get(loop)
    if pending is None:
        pending = _pending[loop] = {}
    if not pending:
        loop.call_soon(_send_batches, pending)
    pending[outbox] = None


def _send_batches(pending: dict[Outbox, None]) -> None:
    outboxes = list(pending)
    pending.clear()
    for outbox in outboxes:
        try:
            outbox.send_batch()
        except Exception:
            log.exception("outbox: sending a batch failed")
