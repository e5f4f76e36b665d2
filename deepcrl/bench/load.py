"""The load generator of the serve benchmark: connections that do one round trip at a time, and the
closed- and open-loop patterns that drive them.

The HTTP client is a minimal keep-alive HTTP/1.1 client on an asyncio protocol with pre-encoded requests, so
the generator costs little next to what it measures (the numbers still include its cost). The WebSocket one
is the `websockets` asyncio client. Open loop schedules requests at a fixed rate from a timer thread and
counts latency from each request's *scheduled* time, so a stall delays every request due during it (no
coordinated omission).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import msgpack
import numpy as np

from deepcrl.errors import DeepcrlError

# ---- connections: one roundtrip(payload) -> ok coroutine per kind ------------------------------------------


class HttpConnection(asyncio.Protocol):
    """Keep-alive HTTP/1.1 on a raw asyncio protocol: one request in flight, responses framed by Content-Length."""

    def __init__(self):
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def roundtrip(self, request: bytes) -> bool:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter == 200

    async def close(self) -> None:
        self.transport.close()


async def http_connect(url: str) -> HttpConnection:
    parts = urlsplit(url)
    _, conn = await asyncio.get_running_loop().create_connection(HttpConnection, parts.hostname, parts.port)
    return conn


def http_requests(url: str, path: str, bodies: list[bytes], media: str, token: str | None) -> list[bytes]:
    host = urlsplit(url).netloc
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media}\r\nAccept: {media}\r\n{auth}"
             f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


class WsConnection:
    def __init__(self, ws):
        self.ws = ws

    async def roundtrip(self, frame: bytes) -> bool:
        await self.ws.send(frame)
        reply = msgpack.unpackb(await self.ws.recv())
        return reply.get("type") in ("action", "pong")

    async def close(self) -> None:
        await self.ws.close()


async def ws_connect(url: str, token: str | None) -> WsConnection:
    from websockets.asyncio.client import connect

    headers = {"authorization": f"Bearer {token}"} if token else None
    ws = await connect(url.replace("http://", "ws://", 1) + "/v1/stream", compression=None, max_size=None,
                       additional_headers=headers)
    meta = msgpack.unpackb(await ws.recv())
    if meta.get("type") != "metadata":
        raise DeepcrlError("the server's WebSocket did not send a metadata frame first.")
    return WsConnection(ws)


# ---- load patterns ------------------------------------------------------------------------------------------


def stats(latencies_ns: list[int] | np.ndarray, seconds: float, errors: int) -> dict[str, Any]:
    """Percentiles (µs), throughput and errors of one cell's latencies (ns)."""
    lat = np.asarray(latencies_ns, np.float64) / 1e3
    if lat.size == 0:
        return {"requests": 0, "errors": errors, "throughput_rps": 0.0}
    p = np.percentile(lat, [50, 90, 99, 99.9])
    return {"requests": int(lat.size), "errors": int(errors), "throughput_rps": round(lat.size / seconds, 1),
            "p50_us": round(p[0], 1), "p90_us": round(p[1], 1), "p99_us": round(p[2], 1),
            "p999_us": round(p[3], 1), "max_us": round(float(lat.max()), 1), "mean_us": round(float(lat.mean()), 1)}


class Run:
    """Raw measurements of one cell, accumulated over interleaved rounds."""

    def __init__(self):
        self.latencies: list[int] = []
        self.lateness: list[int] = []
        self.seconds = 0.0
        self.errors = 0
        self.server_cpu: float | None = 0.0

    def add_cpu(self, before: float | None, after: float | None) -> None:
        if self.server_cpu is not None and before is not None and after is not None:
            self.server_cpu += after - before
        else:
            self.server_cpu = None

    def stats(self) -> dict[str, Any]:
        out = stats(self.latencies, self.seconds, self.errors)
        if self.server_cpu is not None and self.latencies:
            # CPU time the server process spent per answered request: unlike wall-clock figures it barely
            # moves with the other jobs on a shared machine, so its ratio to the baseline is the steady one.
            out["server_cpu_us_per_request"] = round(self.server_cpu / len(self.latencies) * 1e6, 1)
        if self.lateness:
            out["generator_lateness_p99_us"] = round(float(np.percentile(self.lateness, 99)) / 1e3, 1)
        return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere or without a pid)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def closed_loop(connect: Callable[[], Awaitable], payloads: list[bytes], concurrency: int,
                       duration: float, run: Run, pid: int | None = None, warmup: float = 0.2) -> None:
    conns = [await connect() for _ in range(concurrency)]
    n = len(payloads)
    clock = time.perf_counter_ns

    async def worker(conn, k: int, stop_ns: int, record: bool) -> None:
        i = k
        while clock() < stop_ns:
            t = clock()
            try:
                ok = await conn.roundtrip(payloads[i % n])
            except (ConnectionError, OSError):
                ok = False
            if record:
                run.latencies.append(clock() - t)
                run.errors += not ok
            i += 1

    try:
        await asyncio.gather(*(worker(c, k, clock() + int(warmup * 1e9), False) for k, c in enumerate(conns)))
        cpu = cpu_seconds(pid)
        start = clock()
        await asyncio.gather(*(worker(c, k, start + int(duration * 1e9), True) for k, c in enumerate(conns)))
        run.seconds += (clock() - start) / 1e9
        run.add_cpu(cpu, cpu_seconds(pid))
    finally:
        for c in conns:
            await c.close()


async def open_loop(connect: Callable[[], Awaitable], payloads: list[bytes], rate: float, duration: float,
                     run: Run, pid: int | None = None, pool: int = 64) -> None:
    """Requests due at t0 + i/rate; a timer thread (µs-precise sleeps, unlike the loop's ms timers) releases
    them. Latency is measured from the due time, including any wait for a free connection."""
    loop = asyncio.get_running_loop()
    conns = [await connect() for _ in range(pool)]
    free: asyncio.Queue = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    total = max(1, int(rate * duration))
    done = asyncio.Event()
    finished = 0
    n = len(payloads)
    cpu = cpu_seconds(pid)
    t0 = time.perf_counter_ns() + 50_000_000
    due = [t0 + int(i * 1e9 / rate) for i in range(total)]

    async def one(i: int) -> None:
        nonlocal finished
        run.lateness.append(time.perf_counter_ns() - due[i])
        conn = await free.get()
        try:
            ok = await conn.roundtrip(payloads[i % n])
        except (ConnectionError, OSError):
            ok = False
        run.latencies.append(time.perf_counter_ns() - due[i])
        run.errors += not ok
        free.put_nowait(conn)
        finished += 1
        if finished == total:
            done.set()

    def start(i: int) -> None:
        loop.create_task(one(i))

    def timer() -> None:
        for i, t in enumerate(due):
            wait = (t - time.perf_counter_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
            loop.call_soon_threadsafe(start, i)

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    try:
        await asyncio.wait_for(done.wait(), duration + 10.0)
    except TimeoutError:
        run.errors += total - finished
    thread.join(1.0)
    run.seconds += (time.perf_counter_ns() - t0) / 1e9
    run.add_cpu(cpu, cpu_seconds(pid))
    for c in conns:
        await c.close()
