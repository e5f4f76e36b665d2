"""What TLS costs a robot: the same transports over TLS and in the clear, side by side at concurrency 1.

Two `deepcrl serve --grpc-port P` processes on the same model, one of them with ``--tls-cert/--tls-key`` (a
self-signed P-256 pair made by the `openssl` command the README gives). One request at a time, one row per
request, over one kept connection, by `deepcrl bench serve`'s load generator (`deepcrl.bench.load.closed_loop`;
its HTTP and WebSocket connections and its gRPC channel take an `ssl.SSLContext` / channel credentials):
HTTP /v1 msgpack, WebSocket msgpack and gRPC unary ``ModelInfer``. The six targets alternate in `--rounds`
slices so they share the background load of a shared machine. Then the cost of a new connection: a fresh
connection (TCP, plus the TLS handshake) for each ``GET /healthz``, with the standard library's client.

Usage: python benchmarks/serve_tls.py [--duration-s 2] [--rounds 6] [--model POLICY.onnx]
Writes benchmarks/results/serve_tls.json (with machine facts and the load average).
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np

from deepcrl.bench.common import machine_facts, versions, write_result
from deepcrl.bench.grpc_load import free_port, grpc_connect, grpc_requests
from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests, stats, ws_connect
from deepcrl.bench.serve import _start, _stop
from deepcrl.bench.synthetic import write_policy

def _self_signed(out: Path) -> tuple[Path, Path]:
    cert, key = out / "server.pem", out / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=deepcrl-bench", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def _measure(servers: dict[str, tuple], name: str, rows, duration_s: float, rounds: int) -> dict[str, dict]:
    bodies = [msgpack.packb({"observation": o.tolist(), "goal": g.tolist()}) for o, g in rows]
    grpc_bodies = grpc_requests(name, rows)
    targets = {}
    for mode, (url, grpc_target, context, credentials, pid) in servers.items():
        targets[f"http v1 msgpack {mode}"] = (
            (lambda u=url, c=context: http_connect(u, c)),
            http_requests(url, "/v1/act", bodies, "application/msgpack", None), pid)
        targets[f"ws msgpack {mode}"] = ((lambda u=url, c=context: ws_connect(u, None, c)), bodies, pid)
        targets[f"grpc unary {mode}"] = (
            (lambda t=grpc_target, c=credentials: grpc_connect(t, credentials=c)), grpc_bodies, pid)
    runs = {label: Run() for label in targets}
    for _ in range(rounds):
        for label, (connect, payloads, pid) in targets.items():
            await closed_loop(connect, payloads, 1, duration_s / rounds, runs[label], pid, warmup=0.1)
    return {label: run.stats() for label, run in runs.items()}


def _fresh_connections(url: str, context, count: int) -> dict:
    """A new connection per ``GET /healthz`` (connect, TLS handshake when `context`, request, close)."""
    host, port = url.split("://")[1].split(":")
    lat, errors = [], 0
    start = time.perf_counter_ns()
    for _ in range(count):
        t = time.perf_counter_ns()
        conn = (http.client.HTTPConnection(host, int(port), timeout=10) if context is None else
                http.client.HTTPSConnection(host, int(port), timeout=10, context=context))
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().read() is None:
                errors += 1
        except OSError:
            errors += 1
        finally:
            conn.close()
        lat.append(time.perf_counter_ns() - t)
    return stats(lat, (time.perf_counter_ns() - start) / 1e9, errors)


def main() -> int:
    import grpc
    import uvloop

    from deepcrl.onnx_policy import OnnxPolicy
    from deepcrl.serve.tls import client_context

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an exported policy (default: a synthetic 256x256 student)")
    parser.add_argument("--duration-s", type=float, default=2.0, help="measured seconds per target, all rounds")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved slices per target")
    parser.add_argument("--connections", type=int, default=300, help="fresh connections per mode")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_tls.json"))
    args = parser.parse_args()
    machine = machine_facts(jax_devices=False)  # its load average is the one before measuring
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_policy(Path(tmp) / "policy.onnx", obs_size=4, goal_size=2, hidden=(256, 256))
        cert, key = _self_signed(Path(tmp))
        context = client_context(cert)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        servers = {}
        try:
            for mode, extra in (("plain", []), ("tls", ["--tls-cert", str(cert), "--tls-key", str(key)])):
                port = free_port()
                proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model), "--port",
                                    "0", "--grpc-port", str(port), *extra])
                procs.append(proc)
                servers[mode] = (url, f"127.0.0.1:{port}", context if mode == "tls" else None,
                                 credentials if mode == "tls" else None, proc.pid)
            policy = OnnxPolicy(model)
            rng = np.random.default_rng(0)
            rows = [(rng.uniform(-1, 1, policy.obs_size).astype(np.float32),
                     rng.uniform(-1, 1, policy.goal_size).astype(np.float32)) for _ in range(64)]
            cells = uvloop.run(_measure(servers, model.stem, rows, args.duration_s, args.rounds))
            fresh = {mode: _fresh_connections(servers[mode][0], servers[mode][2], args.connections)
                     for mode in servers}
        finally:
            for proc in procs:
                _stop(proc)
    ratios = {t: round(float(cells[f"{t} tls"]["p50_us"] / cells[f"{t} plain"]["p50_us"]), 3)
              for t in ("http v1 msgpack", "ws msgpack", "grpc unary")}
    results = {
        "benchmark": "serve_tls",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine, "versions": {**machine["versions"], **versions(("grpcio", "uvicorn", "websockets"))},
                    "shared_machine": "2 cores shared with other jobs: absolute latencies are noisy upper bounds; "
                                      "compare the ratios, measured in interleaved rounds"},
        "config": {"model": str(args.model or "synthetic 256x256 student (obs 4, goal 2)"),
                   "duration_s": args.duration_s, "rounds": args.rounds, "concurrency": 1, "rows_per_request": 1,
                   "connections": args.connections, "certificate": "self-signed P-256 (openssl req -x509)",
                   "servers": "two `deepcrl serve --grpc-port P` processes, one with --tls-cert/--tls-key"},
        "cells": cells,
        "p50_tls_over_plain": ratios,
        "fresh_connection": fresh,
        "fresh_connection_p50_tls_over_plain": round(float(fresh["tls"]["p50_us"] / fresh["plain"]["p50_us"]), 3),
    }
    write_result(args.out, results)
    for label, cell in cells.items():
        print(f"{label:24s} p50 {cell['p50_us']:8.0f} us  p99 {cell['p99_us']:8.0f} us  errors {cell['errors']}")
    for mode, cell in fresh.items():
        print(f"fresh connection {mode:7s} p50 {cell['p50_us']:8.0f} us  p99 {cell['p99_us']:8.0f} us")
    print(f"p50 tls / plain: {ratios}; fresh connection {results['fresh_connection_p50_tls_over_plain']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
