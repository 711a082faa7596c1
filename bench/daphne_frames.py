"""What daphne alone spends per WebSocket frame sent, by frame size (docs/scaling.md, M-figures).

A bare ASGI application under daphne (no Django, no Channels, no Livefolio) sends `--frames` rounds
of one text frame of a given size to each of `--sockets` sockets, socket after socket, as the
dashboards' flusher does (so a frame is not merged with the next one of its socket into one write).
The clients (websockets, in this process, on the other core) read everything. The daphne process's CPU time (user + system, psutil) over the sending, divided
by the frames sent, is daphne's (Twisted's and autobahn's) cost per frame plus the minimal ASGI
application's. Some seconds per size.

    .venv/bin/python bench/daphne_frames.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import websockets

APP = """
import asyncio

SOCKETS = []  # (send, done) of every open socket
STARTED = []


async def rounds(count, size):
    # One frame per socket per round, socket after socket, as the dashboards' flusher sends them.
    frame = "x" * size
    for _ in range(count):
        for send, _ in list(SOCKETS):
            await send({"type": "websocket.send", "text": frame})
        await asyncio.sleep(0)
    for send, done in list(SOCKETS):
        await send({"type": "websocket.send", "text": "done"})
        done.set()
    STARTED.clear()


async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    done = asyncio.Event()
    SOCKETS.append((send, done))
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            break
        count, size = (int(x) for x in message["text"].split())
        if not STARTED:
            STARTED.append(asyncio.ensure_future(rounds(count, size)))
        await done.wait()
    SOCKETS.remove((send, done))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(port: int, frames: int, size: int, ready: asyncio.Event) -> int:
    async with websockets.connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
        await ready.wait()
        await ws.send(f"{frames} {size}")  # the first socket's request starts the rounds for all
        got = 0
        while (await ws.recv()) != "done":
            got += 1
        return got


async def run(port: int, proc: psutil.Process, sockets: int, frames: int, size: int) -> tuple[float, int, float]:
    ready = asyncio.Event()
    tasks = [asyncio.create_task(client(port, frames, size, ready)) for _ in range(sockets)]
    await asyncio.sleep(1.0)  # every socket open
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    ready.set()
    got = sum(await asyncio.gather(*tasks))
    cpu1, t1 = proc.cpu_times(), time.monotonic()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return cpu, got, t1 - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--frames", type=int, default=1000, help="frames per socket per size")
    parser.add_argument("--sizes", default="200,2000,5000")
    args = parser.parse_args()
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="daphne-frames-"))
    env = dict(os.environ, PYTHONPATH=str(folder))
    (folder / "_daphne_frames_app.py").write_text(APP)
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "_daphne_frames_app:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        proc = psutil.Process(server.pid)
        print(f"daphne, a bare ASGI app; {args.sockets} sockets × {args.frames} frames per size; CPU = the daphne process's user + system")
        print("| frame bytes | frames | daphne CPU s | µs per frame | frames/s |")
        print("|---:|---:|---:|---:|---:|")
        for size in [int(x) for x in args.sizes.split(",")]:
            cpu, got, wall = asyncio.run(run(port, proc, args.sockets, args.frames, size))
            print(f"| {size:,} | {got:,} | {cpu:.2f} | {cpu / got * 1e6:.1f} | {got / wall:,.0f} |")
    finally:
        server.terminate()
        server.wait(10)
        (folder / "_daphne_frames_app.py").unlink(missing_ok=True)
        folder.rmdir()


if __name__ == "__main__":
    main()
