"""`deepcrl serve --workers 2`: both workers answer on one port, /metrics adds up over them, a killed worker
is replaced without leaving its live gauges behind, SIGTERM drains all of them and exits 0 within a bound."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families


def _requests_answered(metrics_text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(metrics_text) if family.name == "deepcrl_requests"
               for s in family.samples if s.name == "deepcrl_requests_total" and s.labels.get("endpoint") == "act"
               and s.labels.get("status") == "200")


@pytest.mark.slow  # a worker supervisor with two server processes
def test_two_workers_share_a_port_sum_their_metrics_and_drain_on_sigterm(policy_onnx, reference, tmp_path,
                                                                          stop_served):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the workers' metric files land under tmp_path
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(policy_onnx), "--port", "0",
                             "--workers", "2", "--warmup", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until the ready line (or EOF if the server failed)
        assert "ready at http://127.0.0.1:" in line and "2 workers" in line, line + proc.stderr.read()
        url = line.split("ready at ")[1].split()[0]
        obs = np.full((1, reference.obs_size), 0.25, np.float32)
        goal = np.full((1, reference.goal_size), -0.5, np.float32)
        expected = reference(obs, goal)[0]
        body = {"observation": obs[0].tolist(), "goal": goal[0].tolist()}

        def one(_):  # a new connection per request, so the kernel hands connections to both workers
            with httpx.Client(timeout=30) as client:
                return client.post(f"{url}/v1/act", json=body).json()["action"]

        n = 120
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            actions = list(pool.map(one, range(n)))
        np.testing.assert_allclose(np.asarray(actions), np.tile(expected, (n, 1)), atol=1e-6)

        pids = {f.name for f in tmp_path.glob("deepcrl-metrics-*/counter_*.db")}
        assert len(pids) == 2, pids  # both workers answered requests (each writes its own counter file)
        for _ in range(2):  # whichever worker answers /metrics, it reports both workers' requests
            assert _requests_answered(httpx.get(f"{url}/metrics", timeout=30).text) == n

        # A killed worker is replaced, and its live gauges (in-flight requests) leave the sum.
        victim = int(sorted(pids)[0].split("_")[1].split(".")[0])
        assert list(tmp_path.glob(f"deepcrl-metrics-*/gauge_livesum_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while list(tmp_path.glob(f"deepcrl-metrics-*/gauge_livesum_{victim}.db")):
            assert time.monotonic() < deadline, "the killed worker's gauges were never dropped"
            time.sleep(0.2)
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("deepcrl-metrics-*/gauge_livesum_*.db"))) < 2:  # its replacement is up
            assert time.monotonic() < deadline, "the killed worker was never replaced"
            time.sleep(0.2)
        assert one(0) == pytest.approx(expected.tolist(), abs=1e-6)
        assert _requests_answered(httpx.get(f"{url}/metrics", timeout=30).text) == n + 1  # counters stay
    finally:
        t0 = time.monotonic()
        code = stop_served(proc, 60)
    assert code == 0, proc.stderr.read()[-3000:]
    assert time.monotonic() - t0 < 30  # uvicorn's 10 s graceful drain bounds it; typically ~1 s
    assert not list(tmp_path.glob("deepcrl-metrics-*"))  # the metric files are removed with the server
