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
    """Keep-alive HTTP/1.1 on a raw asyncio protocol: one request in flight, responses framed by Content-Length.

    `roundtrip` returns the response's status; a lost connection or an unreadable response raises
    `ConnectionError` (the caller counts it by kind). A response with ``Connection: close`` marks it `closed`.
    """

    def __init__(self):
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        try:
            at = head.find(b"content-length:")
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15:eol if eol > 0 else None]) if at >= 0 else 0
            status = int(head[9:12])
        except ValueError:
            self._fail(ConnectionError("unreadable response head"))
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        if b"\r\nconnection: close" in head:
            self.closed = True
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._fail(ConnectionResetError("connection lost"))

    async def roundtrip(self, request: bytes) -> int:
        if self.closed:
            raise ConnectionResetError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    async def close(self) -> None:
        self.closed = True
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
        self.closed = False

    async def roundtrip(self, frame: bytes) -> int:
        """The frame's status: 200 for an action or a pong, the error frame's status otherwise."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(frame)
            reply = msgpack.unpackb(await self.ws.recv())
        except ConnectionClosed as exc:
            self.closed = True
            raise ConnectionResetError(f"websocket closed ({exc})") from exc
        return 200 if reply.get("type") in ("action", "pong") else int(reply.get("status", 0))

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


def error_kind(status: int | None, exc: BaseException | None = None) -> str:
    """How a request failed, for the error counts: ``http_<status>``, or the exception's kind."""
    if exc is None:
        return f"http_{status}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionError, OSError)):
        return "connection"
    return type(exc).__name__


class Run:
    """Raw measurements of one cell, accumulated over interleaved rounds.

    Every request leaves a latency (ns), its status (HTTP status or error frame status; 0 for a failure without
    one) and, for the open loop, its due time and the generator's own lateness in sending it. `errors` counts
    answers other than 200, `error_kinds` by kind (``http_503``, ``http_504``, ``connection``, ``timeout``...).
    """

    def __init__(self):
        self.latencies: list[int] = []
        self.statuses: list[int] = []
        self.due: list[int] = []
        self.lateness: list[int] = []
        self.seconds = 0.0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.server_cpu: float | None = 0.0
        self.t0 = 0  # open loop: when its first request was due (ns, perf_counter)

    def record(self, latency_ns: int, status: int, exc: BaseException | None = None) -> None:
        self.latencies.append(latency_ns)
        self.statuses.append(status)
        if status != 200 or exc is not None:
            self.errors += 1
            kind = error_kind(status, exc)
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def fail_unanswered(self, kind: str, count: int) -> None:
        """Requests that never got an answer (no latency to record)."""
        if count:
            self.errors += count
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count

    def add_cpu(self, before: float | None, after: float | None) -> None:
        if self.server_cpu is not None and before is not None and after is not None:
            self.server_cpu += after - before
        else:
            self.server_cpu = None

    def stats(self) -> dict[str, Any]:
        out = stats(self.latencies, self.seconds, self.errors)
        if self.error_kinds:
            out["errors_by_kind"] = dict(sorted(self.error_kinds.items()))
        if self.server_cpu is not None and self.latencies:
            # CPU time the server process spent per answered request: unlike wall-clock figures it barely
            # moves with the other jobs on a shared machine, so its ratio to the baseline is the steady one.
            out["server_cpu_us_per_request"] = round(self.server_cpu / len(self.latencies) * 1e6, 1)
        if self.lateness:
            out["generator_lateness_p50_us"] = round(float(np.percentile(self.lateness, 50)) / 1e3, 1)
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
    """`concurrency` connections, each sending its next request when its last answer arrives. A connection
    the server closed is reopened; every failure is counted by kind, none escapes."""
    conns = [await connect() for _ in range(concurrency)]
    n = len(payloads)
    clock = time.perf_counter_ns

    async def worker(k: int, stop_ns: int, record: bool) -> None:
        i = k
        while clock() < stop_ns:
            t = clock()
            status, error = 0, None
            try:
                if conns[k].closed:
                    await conns[k].close()
                    conns[k] = await connect()
                status = await conns[k].roundtrip(payloads[i % n])
            except Exception as exc:  # noqa: BLE001 - counted by kind; the load goes on
                error = exc
                conns[k].closed = True
            if record:
                run.record(clock() - t, status, error)
            elif error is not None:
                await asyncio.sleep(0.001)
            i += 1

    try:
        await asyncio.gather(*(worker(k, clock() + int(warmup * 1e9), False) for k in range(concurrency)))
        cpu = cpu_seconds(pid)
        start = clock()
        await asyncio.gather(*(worker(k, start + int(duration * 1e9), True) for k in range(concurrency)))
        run.seconds += (clock() - start) / 1e9
        run.add_cpu(cpu, cpu_seconds(pid))
    finally:
        for c in conns:
            await _close_quietly(c)


async def _close_quietly(conn) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001 - already broken: nothing more to do with it
        pass


async def open_loop(connect: Callable[[], Awaitable], payloads: list[bytes], rate: float, duration: float,
                     run: Run, pid: int | None = None, pool: int = 64, max_connections: int = 1024,
                     grace_s: float = 5.0, schedule: list[tuple[float, float]] | None = None) -> None:
    """Requests due at t0 + i/rate (or, with `schedule`, at each (rate, seconds) segment's rate in turn; `rate`
    and `duration` are then ignored), each on a free connection (a new one is opened while fewer than
    `max_connections` are open, as a fleet of clients would; past that a request waits for a free one).

    A timer thread (µs-precise sleeps, unlike the loop's ms timers) releases every request due by the time it
    wakes in one hand-off to the event loop. Latency runs from the due time, so a stall of the server or of
    this generator delays every request due during it (no coordinated omission); `run.lateness` records how
    late the generator itself sent each request (scheduling and waiting for a free connection: its share of the
    latency on a shared machine). Requests
    not answered `grace_s` after the last one was due are cancelled and counted as ``timeout``; nothing
    escapes as an unretrieved task exception.
    """
    loop = asyncio.get_running_loop()
    free: list = [await connect() for _ in range(pool)]
    opened = len(free)
    waiters: list[asyncio.Future] = []
    offsets, begin = [], 0.0
    for seg_rate, seg_s in (schedule or [(rate, duration)]):
        offsets.append(begin + np.arange(max(1, int(seg_rate * seg_s))) * (1e9 / seg_rate))
        begin += seg_s * 1e9
    n = len(payloads)
    clock = time.perf_counter_ns
    cpu = cpu_seconds(pid)
    t0 = clock() + 50_000_000
    due_ns = (t0 + np.concatenate(offsets)).astype(np.int64)
    run.t0 = t0
    total = len(due_ns)
    cancelled_after_send = 0
    tasks: set[asyncio.Task] = set()
    all_released = asyncio.Event()

    async def acquire():
        nonlocal opened
        while free:
            conn = free.pop()
            if not conn.closed:
                return conn
            opened -= 1
            await _close_quietly(conn)
        if opened < max_connections:
            opened += 1
            try:
                return await connect()
            except BaseException:
                opened -= 1
                raise
        waiter = loop.create_future()
        waiters.append(waiter)
        return await waiter

    def release(conn) -> None:
        nonlocal opened
        if conn.closed:
            opened -= 1
            loop.create_task(_close_quietly(conn))
            if waiters and opened < max_connections:  # a waiter would otherwise wait for a connection forever
                waiter = waiters.pop(0)
                opened += 1
                task = loop.create_task(connect())
                task.add_done_callback(lambda t, w=waiter: _hand_over(t, w))
            return
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(conn)
                return
        free.append(conn)

    def _hand_over(task: asyncio.Task, waiter: asyncio.Future) -> None:
        nonlocal opened
        if task.cancelled() or task.exception() is not None:
            opened -= 1
            if not waiter.done():
                waiter.set_exception(ConnectionRefusedError("could not open a connection"))
        elif not waiter.done():
            waiter.set_result(task.result())
        else:
            free.append(task.result())

    async def one(i: int, due: int) -> None:
        nonlocal cancelled_after_send
        late = clock() - due
        conn, status, error = None, 0, None
        try:
            conn = await acquire()
            late = clock() - due  # the generator's own delay: scheduling, plus waiting for a free connection
            status = await conn.roundtrip(payloads[i % n])
        except asyncio.CancelledError:
            if conn is not None:
                cancelled_after_send += 1
                conn.closed = True
                release(conn)
            raise
        except Exception as exc:  # noqa: BLE001 - counted by kind; the load goes on
            error = exc
            if conn is not None:
                conn.closed = True
        if conn is not None:
            release(conn)
        run.due.append(due)
        run.lateness.append(late)
        run.record(clock() - due, status, error)

    def start(first: int, last: int) -> None:
        for i in range(first, last):
            task = loop.create_task(one(i, int(due_ns[i])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if last >= total:
            all_released.set()

    def timer() -> None:
        i = 0
        while i < total:
            wait = (int(due_ns[i]) - clock()) / 1e9
            if wait > 0:
                time.sleep(wait)
            last = max(i + 1, int(np.searchsorted(due_ns, clock(), "right")))
            try:
                loop.call_soon_threadsafe(start, i, last)
            except RuntimeError:  # the loop is gone
                return
            i = last

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    await all_released.wait()
    end = clock() + int(grace_s * 1e9)
    while tasks and clock() < end:
        await asyncio.wait(set(tasks), timeout=max(0.0, (end - clock()) / 1e9))
    unfinished = len(tasks)
    for task in list(tasks):
        task.cancel()
    if unfinished:
        await asyncio.gather(*list(tasks), return_exceptions=True)
    # Cancelled before they were sent: the generator fell that far behind (its lateness, not the server's).
    run.fail_unanswered("timeout", cancelled_after_send)
    run.fail_unanswered("generator_never_sent", unfinished - cancelled_after_send)
    thread.join(1.0)
    run.seconds += (clock() - t0) / 1e9
    run.add_cpu(cpu, cpu_seconds(pid))
    for conn in free:
        await _close_quietly(conn)
