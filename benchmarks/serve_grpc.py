"""gRPC against HTTP and WebSocket at concurrency 1, side by side on one `deepcrl serve --grpc-port` process.

One request at a time (a robot's control loop), one row per request, each transport's pre-encoded payloads sent
over one kept connection by the same asyncio (uvloop) load generator as `deepcrl bench serve`
(`deepcrl.bench.load.closed_loop`):

- ``grpc unary``: ``ModelInfer`` with raw tensor bytes (what tritonclient.grpc sends), through grpc.aio;
- ``grpc stream``: ``ModelStreamInfer``, one request written and its answer read per step, one stream;
- ``http v2 json``: ``POST /v2/models/NAME/infer`` with JSON tensors (tritonclient.http's default);
- ``http v1 json`` / ``http v1 msgpack``: ``POST /v1/act``;
- ``ws msgpack``: ``/v1/stream``.

The targets alternate in `--rounds` slices so they share the background load of a shared machine; the ratios
to gRPC unary are the figures to quote. The official sync clients at c=1 (tritonclient.grpc, tritonclient.http)
are measured after, as what a user's loop sees.

Usage: python benchmarks/serve_grpc.py [--duration-s 3] [--rounds 6] [--model POLICY.onnx]
Writes benchmarks/results/serve_grpc.json (with machine facts and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np

from deepcrl.bench.common import machine_facts, versions, write_result
from deepcrl.bench.grpc_load import free_port, grpc_connect, grpc_requests
from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests, ws_connect
from deepcrl.bench.serve import _start, _stop
from deepcrl.bench.synthetic import write_policy

def _rows(obs_size: int, goal_size: int, count: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-1, 1, obs_size).astype(np.float32), rng.uniform(-1, 1, goal_size).astype(np.float32))
            for _ in range(count)]


def _payloads(name: str, rows) -> dict[str, list[bytes]]:
    v2_bodies, v1_pairs = [], []
    for obs, goal in rows:
        v2_bodies.append(json.dumps({"inputs": [
            {"name": "observation", "shape": [1, obs.size], "datatype": "FP32", "data": obs.tolist()},
            {"name": "goal", "shape": [1, goal.size], "datatype": "FP32", "data": goal.tolist()}]}).encode())
        v1_pairs.append({"observation": obs.tolist(), "goal": goal.tolist()})
    return {"grpc": grpc_requests(name, rows), "v2_json": v2_bodies,
            "v1_json": [json.dumps(p).encode() for p in v1_pairs], "v1_msgpack": [msgpack.packb(p) for p in v1_pairs]}


async def _measure(url: str, grpc_target: str, name: str, rows, duration_s: float, rounds: int,
                   pid: int) -> dict[str, dict]:
    p = _payloads(name, rows)
    targets = {
        "grpc unary": (lambda: grpc_connect(grpc_target), p["grpc"]),
        "grpc stream": (lambda: grpc_connect(grpc_target, stream=True), p["grpc"]),
        "http v2 json": (lambda: http_connect(url), http_requests(url, f"/v2/models/{name}/infer", p["v2_json"],
                                                                   "application/json", None)),
        "http v1 json": (lambda: http_connect(url), http_requests(url, "/v1/act", p["v1_json"], "application/json",
                                                                   None)),
        "http v1 msgpack": (lambda: http_connect(url), http_requests(url, "/v1/act", p["v1_msgpack"],
                                                                      "application/msgpack", None)),
        "ws msgpack": (lambda: ws_connect(url, None), p["v1_msgpack"]),
    }
    runs = {label: Run() for label in targets}
    for _ in range(rounds):
        for label, (connect, payloads) in targets.items():
            await closed_loop(connect, payloads, 1, duration_s / rounds, runs[label], pid, warmup=0.1)
    return {label: run.stats() for label, run in runs.items()}


def _sync_clients(url: str, grpc_target: str, name: str, rows, duration_s: float) -> dict[str, dict]:
    """The official sync clients' `infer` at c=1 (client-side encoding and decoding included)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from deepcrl.bench.load import stats

    out = {}
    for label, module, client in (
            ("tritonclient.grpc", grpcclient, grpcclient.InferenceServerClient(grpc_target)),
            ("tritonclient.http", httpclient, httpclient.InferenceServerClient(url.removeprefix("http://")))):
        lat, errors = [], 0
        obs, goal = rows[0]
        inputs = [module.InferInput("observation", [1, obs.size], "FP32"),
                  module.InferInput("goal", [1, goal.size], "FP32")]
        try:
            for i in range(20):
                inputs[0].set_data_from_numpy(obs[None]), inputs[1].set_data_from_numpy(goal[None])
                client.infer(name, inputs)
            start = time.perf_counter_ns()
            stop = start + int(duration_s * 1e9)
            i = 0
            while (t := time.perf_counter_ns()) < stop:
                obs, goal = rows[i % len(rows)]
                inputs[0].set_data_from_numpy(obs[None]), inputs[1].set_data_from_numpy(goal[None])
                try:
                    client.infer(name, inputs).as_numpy("action")
                except Exception:  # noqa: BLE001 - counted
                    errors += 1
                lat.append(time.perf_counter_ns() - t)
                i += 1
        finally:
            client.close()
        out[label] = stats(lat, (time.perf_counter_ns() - start) / 1e9, errors)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an exported policy (default: a synthetic 256x256 student)")
    parser.add_argument("--duration-s", type=float, default=3.0, help="measured seconds per target, all rounds")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved slices per target")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_grpc.json"))
    args = parser.parse_args()
    machine = machine_facts(jax_devices=False)  # its load average is the one before measuring
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_policy(Path(tmp) / "policy.onnx", obs_size=4, goal_size=2, hidden=(256, 256))
        name = model.stem
        grpc_port = free_port()
        proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model), "--port", "0",
                            "--grpc-port", str(grpc_port)])
        try:
            from deepcrl.onnx_policy import OnnxPolicy

            policy = OnnxPolicy(model)
            rows = _rows(policy.obs_size, policy.goal_size)
            target = f"127.0.0.1:{grpc_port}"
            import uvloop

            cells = uvloop.run(_measure(url, target, name, rows, args.duration_s, args.rounds, proc.pid))
            clients = _sync_clients(url, target, name, rows, min(args.duration_s, 2.0))
        finally:
            _stop(proc)
    base = cells["grpc unary"]["p50_us"]
    results = {
        "benchmark": "serve_grpc",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine, "versions": {**machine["versions"], **versions(("grpcio", "protobuf", "tritonclient"))},
                    "shared_machine": "2 cores shared with other jobs: absolute latencies are noisy upper bounds; "
                                      "compare the ratios, measured in interleaved rounds"},
        "config": {"model": str(args.model or "synthetic 256x256 student (obs 4, goal 2)"),
                   "duration_s": args.duration_s, "rounds": args.rounds, "concurrency": 1, "rows_per_request": 1,
                   "server": "deepcrl serve --grpc-port P (one process, defaults)"},
        "load_generator": "deepcrl.bench.load closed_loop on uvloop: raw keep-alive HTTP/1.1 protocol, websockets "
                          "client, grpc.aio channel with pre-serialized messages; the server in its own process",
        "cells": cells,
        "p50_ratio_to_grpc_unary": {k: round(v["p50_us"] / base, 2) for k, v in cells.items()},
        "sync_clients_c1": clients,
    }
    path = write_result(args.out, results, jax_devices=False)
    width = max(map(len, cells))
    print(f"{'c=1, one row':<{width}}  {'p50 µs':>8} {'p99 µs':>8} {'req/s':>8} {'server cpu µs':>13} {'p50/grpc':>8}")
    for label, c in cells.items():
        print(f"{label:<{width}}  {c['p50_us']:>8} {c['p99_us']:>8} {c['throughput_rps']:>8} "
              f"{c.get('server_cpu_us_per_request', '-'):>13} {results['p50_ratio_to_grpc_unary'][label]:>8}")
    for label, c in clients.items():
        print(f"{label + ' (sync client)':<{width}}  {c['p50_us']:>8} {c['p99_us']:>8} {c['throughput_rps']:>8}")
    print(f"load average {os.getloadavg()[0]:.1f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
