"""The micro-batcher on its own: batch limits, waiting for company, draining on stop, refusing when full."""

from __future__ import annotations

import asyncio
import queue
import threading

import numpy as np
import pytest

from deepcrl.serve.runner import InferenceError, MicroBatcher, Overloaded


class _Recorder:
    """A model that returns each row's sum and records the batch sizes it was called with."""

    name = "recorder"

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, observation, goal):
        self.batches.append(observation.shape[0])
        return np.concatenate([observation, goal], axis=1).sum(axis=1, keepdims=True)


class _Gated(_Recorder):
    """A recorder whose first call signals `entered` and then blocks until `release` is set: the test knows
    the worker is busy, and queues behind it, without racing the clock."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, observation, goal):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30), "the test never released the model"
        return super().__call__(observation, goal)


async def _until(event: threading.Event, timeout_s: float = 30.0) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout_s), "never happened"


def _rows(i: int, n: int = 1):
    return np.full((n, 2), i, np.float32), np.full((n, 1), i, np.float32)


def test_concurrent_requests_share_calls_within_max_batch_and_get_their_own_rows():
    async def main():
        model = _Gated()  # the worker is held in its first call until all 10 are queued
        batcher = MicroBatcher(model, max_batch=4, max_delay_us=50_000)
        batcher.start(asyncio.get_running_loop())
        futures = [batcher.submit(*_rows(i)) for i in range(10)]
        await _until(model.entered)
        model.release.set()
        results = await asyncio.gather(*futures)
        batcher.stop()
        return model, results

    model, results = asyncio.run(main())
    assert [float(actions[0, 0]) for actions, _ in results] == [3.0 * i for i in range(10)]
    assert sum(model.batches) == 10 and max(model.batches) <= 4 and len(model.batches) <= 4
    assert max(timing.batch_rows for _, timing in results) == 4


def test_a_request_that_does_not_fit_waits_for_the_next_call():
    async def main():
        model = _Recorder()
        batcher = MicroBatcher(model, max_batch=4, max_delay_us=20_000)
        batcher.start(asyncio.get_running_loop())
        results = await asyncio.gather(*(batcher.submit(*_rows(i, 3)) for i in range(3)))
        batcher.stop()
        return model, results

    model, results = asyncio.run(main())
    assert model.batches == [3, 3, 3]
    assert [actions.shape for actions, _ in results] == [(3, 1)] * 3


class _SpyQueue(queue.SimpleQueue):
    """The batcher's queue, recording every timed wait for more requests (the only way the worker waits)."""

    def __init__(self):
        self.waits: list[float] = []

    def get(self, block=True, timeout=None):
        if timeout is not None:
            self.waits.append(timeout)
        return super().get(block, timeout)


def _lone_request(max_delay_us: int):
    async def main():
        model = _Recorder()
        batcher = MicroBatcher(model, max_batch=64, max_delay_us=max_delay_us)
        batcher._queue = spy = _SpyQueue()
        batcher.start(asyncio.get_running_loop())
        actions, timing = await asyncio.wait_for(batcher.submit(*_rows(1)), 30)
        batcher.stop()
        return model, spy, actions, timing

    return asyncio.run(main())


def test_without_delay_a_lone_request_does_not_wait():
    model, spy, actions, timing = _lone_request(max_delay_us=0)
    assert spy.waits == [] and model.batches == [1] and timing.batch_rows == 1
    assert float(actions[0, 0]) == 3.0
    # The spy sees waiting when there is some: with a delay, the lone request waits for company once.
    model, spy, _, _ = _lone_request(max_delay_us=20_000)
    assert len(spy.waits) == 1 and 0 < spy.waits[0] <= 0.02 and model.batches == [1]


def test_stop_answers_everything_queued_then_refuses():
    async def main():
        # It would wait 10 minutes for company: the 5 s bound below passes only because stop() cuts that short.
        batcher = MicroBatcher(_Recorder(), max_batch=64, max_delay_us=600_000_000)
        batcher.start(asyncio.get_running_loop())
        futures = [batcher.submit(*_rows(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        stopper = threading.Thread(target=batcher.stop)
        stopper.start()
        results = await asyncio.wait_for(asyncio.gather(*futures), 5)
        stopper.join()
        with pytest.raises(Overloaded):
            batcher.submit(*_rows(9))
        return results

    results = asyncio.run(main())
    assert [float(a[0, 0]) for a, _ in results] == [0.0, 3.0, 6.0]


def test_full_queue_is_refused_and_cancelled_requests_are_skipped():
    async def main():
        model = _Gated()
        batcher = MicroBatcher(model, max_batch=2, max_delay_us=0, max_queue_rows=3)
        batcher.start(asyncio.get_running_loop())
        first = batcher.submit(*_rows(0))
        await _until(model.entered)  # the worker is busy with `first` until released
        queued = [batcher.submit(*_rows(i)) for i in (1, 2, 3)]
        with pytest.raises(Overloaded, match="3 rows are already waiting"):
            batcher.submit(*_rows(4))
        queued[0].cancel()
        model.release.set()
        await first
        results = await asyncio.gather(*queued[1:])
        batcher.stop()
        return model, results

    model, results = asyncio.run(main())
    assert model.batches == [1, 2]  # the cancelled row was never computed
    assert [float(a[0, 0]) for a, _ in results] == [6.0, 9.0]


def test_a_failing_model_fails_its_requests_with_the_cause_and_the_worker_lives_on():
    class _Flaky(_Recorder):
        def __call__(self, observation, goal):
            if observation[0, 0] < 0:
                raise RuntimeError("ORT kernel failed")
            return super().__call__(observation, goal)

    async def main():
        batcher = MicroBatcher(_Flaky(), max_batch=4, max_delay_us=0)
        batcher.start(asyncio.get_running_loop())
        with pytest.raises(InferenceError, match=r"inference failed \(RuntimeError: ORT kernel failed\)") as info:
            await asyncio.wait_for(batcher.submit(*_rows(-1)), 30)
        actions, _ = await asyncio.wait_for(batcher.submit(*_rows(2)), 30)
        batcher.stop()
        return info.value, actions

    error, actions = asyncio.run(main())
    assert isinstance(error.__cause__, RuntimeError) and float(actions[0, 0]) == 6.0


def test_a_fast_model_is_called_on_the_loop_once_per_turn_and_a_slow_one_keeps_the_worker():
    class _Slow(_Recorder):
        def __call__(self, observation, goal):
            threading.Event().wait(0.005)
            return super().__call__(observation, goal)

    async def main(model, **kwargs):
        batcher = MicroBatcher(model, max_batch=4, max_delay_us=0, **kwargs)
        batcher.start(asyncio.get_running_loop())
        first = await batcher.submit(*_rows(1))  # measured on the worker: no call time is known before
        futures = [batcher.submit(*_rows(i)) for i in range(6)]  # queued in one turn of the loop
        results = await asyncio.gather(*futures)
        batcher.stop()
        return batcher, first, results

    fast = _Recorder()
    batcher, first, results = asyncio.run(main(fast, inline_max_us=1e6))
    assert batcher.inline_calls == 2 and fast.batches == [1, 4, 2]  # 6 rows: max_batch 4, then the other 2
    assert first[0][0, 0] == 3.0 and [r[0][0, 0] for r in results] == [3.0 * i for i in range(6)]
    assert [r[1].batch_rows for r in results] == [4, 4, 4, 4, 2, 2]
    slow = _Slow()
    batcher, _, results = asyncio.run(main(slow, inline_max_us=1000))  # 5 ms calls: over the bound
    assert batcher.inline_calls == 0 and [r[0][0, 0] for r in results] == [3.0 * i for i in range(6)]
    assert MicroBatcher(fast, max_delay_us=10, inline_max_us=1e6).inline_max_s == 0.0  # a batching window wins
