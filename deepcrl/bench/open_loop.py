"""The open-loop load pattern: requests at a fixed rate (or a schedule of rates), latency counted from each
request's *scheduled* time, so a stall delays every request due during it (no coordinated omission)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Awaitable, Callable

import numpy as np

from deepcrl.bench.measure import Run, close_quietly, cpu_seconds


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
            await close_quietly(conn)
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
            loop.create_task(close_quietly(conn))
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
        await close_quietly(conn)
