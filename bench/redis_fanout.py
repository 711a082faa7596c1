"""What one PUBLISH costs Redis as the number of subscribed server processes grows (docs/scaling.md, M-figures).

Each daphne process's hub is one Redis connection subscribed to the symbols its sockets hold, so a
payload the worker publishes is written by Redis once per process (`PUBSUB NUMSUB` counts processes).
This starts a private redis-server, opens `P` subscriber connections (raw sockets, read and thrown
away in one thread), each subscribed to the same `--channels` channels, publishes 383-byte payloads
(the layer-stream benchmark's size) at `--rate` per second in one pipeline per window, and reads the
redis-server's own CPU time (user + system) over `--seconds`. Some seconds per P.

    .venv/bin/python bench/redis_fanout.py
"""

from __future__ import annotations

import argparse
import selectors
import shutil
import socket
import subprocess
import threading
import time

import psutil
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Readers:
    """P subscriber connections; one thread reads whatever arrives and counts the bytes."""

    def __init__(self, port: int, count: int, channels: list[str]) -> None:
        self.sel = selectors.DefaultSelector()
        self.socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(resp("SUBSCRIBE", *channels))
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.socks.append(s)
        self.bytes = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            for key, _ in self.sel.select(0.1):
                try:
                    data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                self.bytes += len(data)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        for s in self.socks:
            s.close()


def measure(port: int, proc: psutil.Process, subscribers: int, args: argparse.Namespace) -> dict[str, float]:
    channels = [f"bench:live:S{i:03d}" for i in range(args.channels)]
    readers = Readers(port, subscribers, channels)
    client = redis.Redis(port=port)
    while sum(client.pubsub_numsub(channels[0])[0][1:]) < subscribers:  # every subscription confirmed
        time.sleep(0.05)
    payload = b"x" * 383
    window = args.channels / args.rate  # one payload per channel per window
    published = 0

    def publish_for(seconds: float) -> int:
        sent = 0
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            pipe = client.pipeline(transaction=False)
            for ch in channels:
                pipe.publish(ch, payload)
            pipe.execute()
            sent += len(channels)
            next_at += window
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return sent

    publish_for(1.0)  # warm-up
    cpu0, bytes0, t0 = proc.cpu_times(), readers.bytes, time.monotonic()
    published = publish_for(args.seconds)
    time.sleep(0.2)
    cpu1, bytes1, t1 = proc.cpu_times(), readers.bytes, time.monotonic()
    readers.close()
    client.close()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "subscribers": subscribers,
        "published_per_s": published / (t1 - t0),
        "deliveries_per_s": published * subscribers / (t1 - t0),
        "redis_cpu_share": cpu / (t1 - t0),
        "us_per_publish": cpu / published * 1e6,
        "us_per_delivery": cpu / (published * subscribers) * 1e6,
        "received_mb_per_s": (bytes1 - bytes0) / (t1 - t0) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1,4,16,64", help="subscriber connections (server processes) to try")
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--rate", type=int, default=2000, help="PUBLISHes per second")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [args.redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        version = client.info()["redis_version"]
        client.close()
        proc = psutil.Process(server.pid)
        print(
            f"redis-server {version} ({args.redis_server}), {args.channels} channels, 383-byte payloads, "
            f"{args.rate:,} PUBLISH/s for {args.seconds:g} s per row; CPU = the redis-server process's user + system"
        )
        print(
            "| subscribers (processes) | PUBLISH/s | deliveries/s | Redis CPU, share of a core | µs per PUBLISH | µs per delivery | received MB/s |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in [int(x) for x in args.subscribers.split(",")]:
            r = measure(port, proc, n, args)
            print(
                f"| {n} | {r['published_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} | {r['redis_cpu_share']:.0%} | "
                f"{r['us_per_publish']:.1f} | {r['us_per_delivery']:.2f} | {r['received_mb_per_s']:.1f} |"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
