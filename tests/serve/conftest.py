"""Servers for the serve tests: real uvicorn on free loopback ports (threads), made once per session."""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pytest

TOKEN = "s3cret-token"


@pytest.fixture(scope="session")
def policy_onnx(request, tmp_path_factory):
    """An exported policy: the export stage's `tiny_onnx` when it exists, else a synthetic one in the same format."""
    try:
        return request.getfixturevalue("tiny_onnx")
    except pytest.FixtureLookupError:
        from deepcrl.bench.synthetic import write_policy

        return write_policy(tmp_path_factory.mktemp("serve") / "policy.onnx", hidden=(32, 32))


@pytest.fixture(scope="session")
def reference(policy_onnx):
    """The same file run in-process by `OnnxPolicy` (what the server's batcher calls)."""
    from deepcrl.onnx_policy import OnnxPolicy

    return OnnxPolicy(policy_onnx)


@pytest.fixture(scope="session")
def stop_served():
    """Stops a `deepcrl serve` subprocess started with ``start_new_session=True``: SIGTERM (the supervisor drains
    its workers), then, if it has not exited within `timeout_s`, its whole process group is killed and the
    test fails (``TimeoutExpired``). Returns its exit code."""

    def stop(proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise

    return stop


@pytest.fixture(scope="session")
def server(policy_onnx):
    """No auth, max_batch_size 8, never waits for company."""
    from deepcrl.serve.app import RunningServer, create_app

    with RunningServer(create_app(policy_onnx, max_batch_size=8, max_body_bytes=20_000, warmup=2)) as running:
        yield running


@pytest.fixture(scope="session")
def auth_server(policy_onnx):
    from deepcrl.serve.app import RunningServer, create_app

    with RunningServer(create_app(policy_onnx, token=TOKEN, warmup=2)) as running:
        running.token = TOKEN
        yield running


@pytest.fixture(scope="session")
def batching_server(policy_onnx):
    """Waits up to 30 ms for company, so concurrent requests share ORT calls."""
    from deepcrl.serve.app import RunningServer, create_app

    with RunningServer(create_app(policy_onnx, max_batch_size=16, max_queue_delay_us=30_000, warmup=2)) as running:
        yield running


@pytest.fixture
def inputs(reference):
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (5, reference.obs_size)).astype(np.float32)
    goal = rng.uniform(-1, 1, (5, reference.goal_size)).astype(np.float32)
    return obs, goal
