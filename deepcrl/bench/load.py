"""The load generator of the serve benchmark: connections that do one round trip at a time, and the
closed- and open-loop patterns that drive them.

This module is the closed loop and the generator's one import point; the parts live beside it:
`deepcrl.bench.connections` (the raw HTTP/1.1 and WebSocket connections), `deepcrl.bench.measure` (`Run`,
percentiles, error kinds, server CPU time) and `deepcrl.bench.open_loop` (the fixed-rate pattern).
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from deepcrl.bench.connections import HttpConnection, WsConnection, http_connect, http_requests, ws_connect
from deepcrl.bench.measure import Run, close_quietly, cpu_seconds, error_kind, stats
from deepcrl.bench.open_loop import open_loop

__all__ = ["HttpConnection", "Run", "WsConnection", "closed_loop", "cpu_seconds", "error_kind", "http_connect",
           "http_requests", "open_loop", "stats", "ws_connect"]


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
            await close_quietly(c)
