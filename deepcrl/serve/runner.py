"""A micro-batcher in front of a model (an `OnnxPolicy`): concurrent requests share one inference call.

One worker thread per model owns the session. Requests queue (observation, goal) rows with an asyncio future;
the worker takes every queued row up to `max_batch`, waiting at most `max_delay_us` for more, makes one call,
and hands the slices back to the event loop in a single `call_soon_threadsafe`. With `max_delay_us=0` the first
request never waits, yet requests that arrive while a call runs share the next one, so batching grows with load
without costing a lone client anything. ORT releases the GIL during the call, so the event loop keeps parsing.

**Inline calls.** A hand-off to the worker costs two thread switches, a GIL hand-over and a wake-up of the event
loop per batch, and the GIL hand-over waits while the loop is busy (under overload, several milliseconds per
request). So with `max_delay_us=0` and a model whose calls take less than `inline_max_us` (a running average of
the measured calls), requests are gathered on the event loop instead: every request parsed in one turn of the
loop joins one call, made at the end of that turn on the loop's own thread (`_flush_inline`). A slow model (a deep
teacher) keeps the worker, so that its calls never stall the loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from deepcrl.errors import DeepcrlError


@dataclass
class Timing:
    """Where one request's time went, in microseconds."""

    queue_us: float
    infer_us: float
    batch_rows: int


class _Item:
    __slots__ = ("obs", "goals", "rows", "future", "enqueued", "deadline")

    def __init__(self, obs, goals, future, deadline):
        self.obs, self.goals, self.future, self.deadline = obs, goals, future, deadline
        self.rows = obs.shape[0]
        self.enqueued = time.perf_counter()


class Overloaded(Exception):
    """The queue is full: the server answers 503 instead of letting latency grow without bound."""


class DeadlineExceeded(Exception):
    """The request's deadline passed while it waited for a call: it was not computed (the server answers 504)."""


class InferenceError(DeepcrlError):
    """The model failed on a batch (not the client's fault: the server answers 500); the cause is kept."""


class MicroBatcher:
    """Gathers concurrent requests for one model into single ORT calls, on a worker thread.

    Args:
        model: the model: an `OnnxPolicy`, or any callable ``(obs[B, o], goal[B, g]) -> action[B, a]`` with
            a `name`.
        max_batch: most rows per call.
        max_delay_us: longest the first queued request waits for company (0: never).
        max_queue_rows: rows allowed to wait before new requests are refused (`Overloaded`).
        metrics: a `ServeMetrics` to record batch sizes, inference time and queue depth (optional).
        inline_max_us: with `max_delay_us=0`, a model whose calls average less than this is called on the
            event loop's thread (see the module's docstring); 0 always uses the worker.
    """

    def __init__(self, model, max_batch: int = 64, max_delay_us: int = 0,
                 max_queue_rows: int | None = None, metrics=None, inline_max_us: float = 0.0):
        self.model, self.max_batch, self.max_delay = model, max_batch, max_delay_us * 1e-6
        self.inline_max_s = inline_max_us * 1e-6 if max_delay_us == 0 else 0.0
        self._inline: list[_Item] = []  # loop only: requests waiting for the end of this turn of the loop
        self._rows_inline = 0  # loop only: rows answered (or dropped) by inline calls
        self._call_s: float | None = None  # running average of a call's duration (both paths write it)
        self.inline_calls = 0
        self.max_queue_rows = max_queue_rows or 64 * max_batch
        # A C-level SimpleQueue rather than a Condition around a deque: one put/get per hand-off, no Python
        # lock dance (measured at concurrency 1: ~23 vs 24-30 µs per round trip, ~30 vs ~35 µs of CPU).
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._carry: _Item | None = None  # worker only: the item that did not fit in the last batch
        # Rows queued and rows taken, each written by one thread only (loop / worker), so no lock is needed.
        self._rows_in = self._rows_out = 0
        self._stopping = False
        self._stop_seen = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0
        self.expired = 0  # requests dropped unanswered by the model because their deadline had passed
        if metrics is not None:
            self._m_batch = metrics.batch_size.labels(model.name)
            self._m_infer = metrics.inference.labels(model.name)
            self._m_queue = metrics.queue_depth.labels(model.name)
        else:
            self._m_batch = self._m_infer = self._m_queue = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stopping = self._stop_seen = False
        self._thread = threading.Thread(target=self._work, name=f"deepcrl-batcher-{self.model.name}", daemon=True)
        self._thread.start()

    def begin_stop(self) -> None:
        """Refuse new requests from now on and tell the worker to finish (call it on the event loop's thread,
        where `submit` runs, so that no request is queued behind the worker's last look at the queue)."""
        self._stopping = True
        self._queue.put(None)  # wakes the worker; it answers what is queued, then exits

    def stop(self, timeout: float = 10.0) -> None:
        """Finish every queued request, then end the worker thread."""
        if not self._stopping:
            self.begin_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, observation: np.ndarray, goal: np.ndarray, deadline: float = float("inf")) -> asyncio.Future:
        """Queue validated float32 rows (from the event loop's thread); the future resolves to
        ``(action[B, a], Timing)``, or fails with `DeadlineExceeded` when the worker reaches the request after
        `deadline` (a `time.perf_counter()` instant): such a request is not computed."""
        if self._thread is None or self._stopping:
            raise Overloaded("the model's batcher is not running (starting up or shutting down)")
        waiting = self._rows_in - self._rows_out - self._rows_inline
        rows = observation.shape[0]
        if waiting + rows > self.max_queue_rows:
            raise Overloaded(f"{waiting} rows are already waiting")
        future = self._loop.create_future()
        self._rows_in += rows
        item = _Item(observation, goal, future, deadline)
        call_s = self._call_s
        if call_s is not None and call_s < self.inline_max_s:  # a fast model: this turn of the loop calls it
            if not self._inline:
                self._loop.call_soon(self._flush_inline)
            self._inline.append(item)
        else:
            self._queue.put(item)
        return future

    def _flush_inline(self) -> None:
        """Runs on the event loop at the end of the turn that queued `_inline`: one call per `max_batch` rows."""
        items, self._inline = self._inline, []
        now = time.perf_counter()
        live: list[_Item] = []
        expired: list[_Item] = []
        for item in items:
            self._rows_inline += item.rows
            if item.deadline < now:
                expired.append(item)
            elif not item.future.cancelled():
                live.append(item)
        if expired:
            self.expired += len(expired)
            _expire(expired)
        first = 0
        while first < len(live):
            last, rows = first + 1, live[first].rows
            while last < len(live) and rows + live[last].rows <= self.max_batch:
                rows += live[last].rows
                last += 1
            batch, first = live[first:last], last
            self.inline_calls += 1
            _resolve(batch, *self._call(batch))
        if self._m_queue is not None:
            self._m_queue.set(self._rows_in - self._rows_out - self._rows_inline)

    def _call(self, batch: list[_Item]):
        """(actions, error, start, end) of one model call on `batch`; records the call's duration."""
        start = time.perf_counter()
        try:
            if len(batch) == 1:
                obs, goal = batch[0].obs, batch[0].goals
            else:
                obs = np.concatenate([i.obs for i in batch])
                goal = np.concatenate([i.goals for i in batch])
            actions = self.model(obs, goal)
            error = None
        except Exception as exc:  # noqa: BLE001 - an ORT failure fails these requests, not the worker
            actions = None
            error = InferenceError(f"inference failed ({type(exc).__name__}: {exc}).")
            error.__cause__ = exc
        end = time.perf_counter()
        self.calls += 1
        took = end - start
        self._call_s = took if self._call_s is None else 0.9 * self._call_s + 0.1 * took
        if self._m_batch is not None:
            self._m_batch.observe(sum(i.rows for i in batch))
            self._m_infer.observe(took)
        return actions, error, start, end

    def _take(self) -> list[_Item] | None:
        """Wait for work; return the next batch (None once stopped with nothing left)."""
        if self._carry is not None:
            item, self._carry = self._carry, None
        elif self._stop_seen:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return None
        else:
            item = self._queue.get()
        batch: list[_Item] = []
        expired: list[_Item] = []
        rows, deadline = 0, 0.0
        now = time.perf_counter()
        while True:
            if item is None:
                self._stop_seen = True
            elif rows + item.rows > self.max_batch:
                self._carry = item
                break
            else:
                self._rows_out += item.rows
                if item.deadline < now:  # its deadline passed while it waited: not computed, answered 504
                    expired.append(item)
                elif not item.future.cancelled():  # a request that timed out while queued is not computed
                    if not batch:
                        deadline = item.enqueued + self.max_delay
                    batch.append(item)
                    rows += item.rows
                if rows >= self.max_batch:
                    break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self._stop_seen or not batch:
                    break
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                now = time.perf_counter()
        if expired:
            self.expired += len(expired)
            try:
                self._loop.call_soon_threadsafe(_expire, expired)
            except RuntimeError:  # the event loop is closed: nobody waits for these answers any more
                pass
        if self._m_queue is not None:
            self._m_queue.set(self._rows_in - self._rows_out)
        if not batch and self._stop_seen and self._carry is None:
            return None
        return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            result = self._call(batch)
            try:
                self._loop.call_soon_threadsafe(_resolve, batch, *result)
            except RuntimeError:  # the event loop is closed: nobody is waiting for these answers any more
                return


def _expire(items: list[_Item]) -> None:
    """Runs on the event loop: fail the requests whose deadline passed in the queue."""
    for item in items:
        if not item.future.done():
            item.future.set_exception(DeadlineExceeded())


def _resolve(batch: list[_Item], actions, error, start: float, end: float) -> None:
    """Runs on the event loop: slice the batch's actions back to their requests."""
    infer_us = (end - start) * 1e6
    rows = sum(i.rows for i in batch)
    offset = 0
    for item in batch:
        if not item.future.done():
            if error is not None:
                item.future.set_exception(error)
            else:
                timing = Timing((start - item.enqueued) * 1e6, infer_us, rows)
                item.future.set_result((actions[offset:offset + item.rows], timing))
        offset += item.rows
