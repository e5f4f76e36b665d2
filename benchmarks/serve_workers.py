"""`deepcrl serve --workers N`: throughput, p99 and server CPU per request for 1 vs 2 workers.

Each worker count runs as a real `deepcrl serve` process tree; the load generator (deepcrl.bench.load's
keep-alive HTTP/1.1 client, closed loop, JSON bodies on /v1/act) runs in this process, interleaved in rounds
so that a change in the machine's load hits both worker counts alike. Server CPU is the user + system time of
the parent and all its workers over the timed part, divided by the requests answered. The load generator
shares the machine's cores with the server (2 cores here): throughput is what is left to the server, and
CPU per request is the steadier figure.

Usage: python benchmarks/serve_workers.py [--model policy.onnx] [--concurrency 16 32 64] [--duration-s 3]
Writes benchmarks/results/serve_workers.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class ServeWorkersBenchConfig:
    """Closed-loop HTTP load against `deepcrl serve` with 1 and with 2 workers."""

    model: Path | None = None
    """The .onnx policy to serve (default: a synthetic 2-layer policy, 64 wide, in the export format)."""
    workers: tuple[int, ...] = (1, 2)
    """Worker counts to compare."""
    concurrency: tuple[int, ...] = (16, 32, 64)
    """Connections, each with one request in flight."""
    duration_s: float = 3.0
    """Timed seconds per cell and round."""
    rounds: int = 2
    """Interleaved rounds (each round measures every cell once)."""
    max_queue_delay_us: int = 0
    """The servers' --max-queue-delay-us."""
    seed: int = 0
    """Seed of the request bodies."""
    out: Path = Path("benchmarks/results/serve_workers.json")
    """Result JSON."""


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (the workers)."""
    from deepcrl.bench.load import cpu_seconds

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(cpu_seconds(p) or 0.0 for p in [pid, *map(int, children)])


def _start(model: Path, workers: int, max_queue_delay_us: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model), "--port", "0",
                             "--workers", str(workers), "--max-queue-delay-us", str(max_queue_delay_us)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "ready at " not in line:
        proc.kill()
        raise RuntimeError(f"the server with {workers} workers did not start: {line!r}")
    return proc, line.split("ready at ")[1].split()[0]


def main(cfg: ServeWorkersBenchConfig) -> int:
    import numpy as np

    from deepcrl.bench.common import machine_facts, write_result
    from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests
    from deepcrl.bench.synthetic import write_policy

    machine = machine_facts(jax_devices=False)
    tmp = tempfile.TemporaryDirectory()
    model = cfg.model or write_policy(Path(tmp.name) / "policy.onnx", hidden=(64, 64))
    servers = {n: _start(model, n, cfg.max_queue_delay_us) for n in cfg.workers}
    rng = np.random.default_rng(cfg.seed)
    runs = {(n, c): Run() for n in cfg.workers for c in cfg.concurrency}
    cpu = {key: 0.0 for key in runs}
    try:
        import httpx

        info = httpx.get(servers[cfg.workers[0]][1] + "/v1/metadata").json()
        bodies = [json.dumps({"observation": rng.uniform(-1, 1, info["obs_size"]).tolist(),
                              "goal": rng.uniform(-1, 1, info["goal_size"]).tolist()}).encode() for _ in range(64)]
        for _ in range(cfg.rounds):
            for c in cfg.concurrency:
                for n in cfg.workers:
                    proc, url = servers[n]
                    requests = http_requests(url, "/v1/act", bodies, "application/json", None)
                    run = runs[n, c]
                    cpu0, answered0 = _tree_cpu_seconds(proc.pid), len(run.latencies)
                    asyncio.run(closed_loop(lambda: http_connect(url), requests, c, cfg.duration_s, run))
                    # the tree's CPU over the cell (its 0.2 s warm-up included, spread over the timed requests)
                    cpu[n, c] += _tree_cpu_seconds(proc.pid) - cpu0
                    assert len(run.latencies) > answered0, f"no answers from {n} workers at concurrency {c}"
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
        tmp.cleanup()
    cells = [{"workers": n, "concurrency": c, **runs[n, c].stats(),
              "server_cpu_us_per_request": round(cpu[n, c] / len(runs[n, c].latencies) * 1e6, 1)}
             for c in cfg.concurrency for n in cfg.workers]
    result = {"model": str(cfg.model or "synthetic 64x64"), "duration_s": cfg.duration_s, "rounds": cfg.rounds,
              "cells": cells,
              "note": ("the load generator runs on the same cores as the server (os.cpu_count() = "
                       f"{os.cpu_count()}); server CPU per request includes the closed loop's 0.2 s warm-up"),
              "machine": machine}
    path = write_result(cfg.out, result, jax_devices=False)
    for cell in cells:
        print(f"workers {cell['workers']} c={cell['concurrency']:>3}: {cell['throughput_rps']:>8.0f} req/s, "
              f"p50 {cell.get('p50_us', 0):>8.0f} us, p99 {cell.get('p99_us', 0):>8.0f} us, "
              f"server CPU {cell.get('server_cpu_us_per_request', float('nan')):>6.0f} us/request, "
              f"errors {cell['errors']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main(tyro.cli(ServeWorkersBenchConfig))
    print(f"({time.monotonic() - t0:.0f} s)")
    sys.exit(code)
