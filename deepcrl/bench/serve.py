"""`deepcrl bench serve`: latency and throughput of the policy server on loopback, honestly measured.

The servers run in their own processes (their own GIL and event loop), as in production; this process is the
load generator. Its HTTP client is a minimal keep-alive HTTP/1.1 client on an asyncio protocol with pre-encoded
requests, so the generator costs little next to what it measures (the numbers still include its cost). In the
same run it measures:

- floors: one in-process ONNX Runtime call, and the server's ``/v1/noop`` (and WebSocket ping), which parses
  and validates like ``/v1/act`` but skips the model: the transport's own cost;
- deepcrl's server over HTTP+JSON, HTTP+msgpack and WebSocket, closed loop (C connections, each sending its next
  request when its last answer arrives) and open loop (requests scheduled at a fixed rate by a timer thread;
  latency runs from the *scheduled* time, so a stall delays every request due during it: no coordinated
  omission);
- the hand-written baseline (`deepcrl.bench.baseline`) under the same load, so figures are ratios to it;
- the shipped clients (`PolicyClient`, `StreamClient`) at concurrency 1.

Every cell runs for a fixed time and the whole run has a hard time limit. Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import numpy as np

from deepcrl.bench.common import machine_facts, versions
from deepcrl.bench.config import BenchServeConfig
from deepcrl.bench.grpc_load import free_port, grpc_connect, grpc_requests, require_grpc
from deepcrl.bench.load import Run, closed_loop, http_connect, http_requests, open_loop, stats, ws_connect
from deepcrl.bench.serve_report import summary, write
from deepcrl.errors import DeepcrlError
from deepcrl.serve.admission import TIMEOUT_FIELD
from deepcrl import contract

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SHARED_MACHINE = ("2 cores shared with other jobs while measuring: absolute latencies are noisy upper bounds; "
                  "compare the ratios measured side by side in this run.")
_READY = re.compile(r"ready at (https?://\S+)")


# ---- processes ------------------------------------------------------------------------------------------------


def _start(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := _READY.search(line):
            # Keep draining its output so a chatty server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    raise DeepcrlError(f"the server did not start ({' '.join(cmd[:4])} ...): {''.join(lines)[-500:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _payloads(obs_size: int, goal_size: int, seed: int, count: int = 64) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    pairs = [{contract.OBSERVATION: rng.uniform(-1, 1, obs_size).astype(np.float32).tolist(),
              contract.GOAL: rng.uniform(-1, 1, goal_size).astype(np.float32).tolist()} for _ in range(count)]
    return ([json.dumps(p).encode() for p in pairs], [msgpack.packb(p) for p in pairs])


def _ort_floor(model_path: Path, obs_size: int, goal_size: int, duration: float,
               device: str = "cpu") -> dict[str, Any]:
    from deepcrl.onnx_policy import OnnxPolicy
    from deepcrl.serve.device import check_providers, providers_for

    model = OnnxPolicy(model_path, providers=providers_for(device))
    check_providers(device, model.session.get_providers(), model_path)
    model.warmup()
    obs, goal = np.zeros((1, obs_size), np.float32), np.zeros((1, goal_size), np.float32)
    lat = []
    start = time.perf_counter_ns()
    stop = start + int(duration * 1e9)
    while (t := time.perf_counter_ns()) < stop:
        model(obs, goal)
        lat.append(time.perf_counter_ns() - t)
    return {**stats(lat, (time.perf_counter_ns() - start) / 1e9, 0), "providers": model.session.get_providers()}


def _client_floor(make, obs_size: int, goal_size: int, duration: float) -> dict[str, Any]:
    """The shipped sync clients at concurrency 1 (what a robot's loop sees)."""
    client = make()
    obs, goal = np.zeros(obs_size, np.float32), np.zeros(goal_size, np.float32)
    lat, errors = [], 0
    try:
        for _ in range(20):
            client.act(obs, goal)
        start = time.perf_counter_ns()
        stop = start + int(duration * 1e9)
        while (t := time.perf_counter_ns()) < stop:
            try:
                client.act(obs, goal)
            except DeepcrlError:
                errors += 1
            lat.append(time.perf_counter_ns() - t)
    finally:
        client.close()
    return stats(lat, (time.perf_counter_ns() - start) / 1e9, errors)


def run(cfg: BenchServeConfig) -> dict[str, Any]:
    """Run the benchmark; writes ``cfg.out`` + .json and .png and returns the results dict."""
    if (cfg.model is None) == (cfg.url is None):
        raise DeepcrlError("give exactly one of --model (the benchmark starts its servers) or --url.")
    unknown = set(cfg.protocols) - {"json", "msgpack", "ws", "grpc"}
    if unknown:
        raise DeepcrlError(f"unknown protocol(s) {sorted(unknown)}; choose from json, msgpack, ws, grpc.")
    token, grpc_target, grpc_args = None, None, []
    if "grpc" in cfg.protocols:
        require_grpc()
        if cfg.url is not None and cfg.grpc_port is None:
            raise DeepcrlError("the grpc protocol with --url needs the running server's --grpc-port.")
        port = cfg.grpc_port if cfg.url is not None else free_port()
        host = "127.0.0.1" if cfg.url is None else urlsplit(cfg.url).hostname  # the name a TLS certificate carries
        grpc_target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        grpc_args = ["--grpc-port", str(port)]
    if cfg.url is not None:
        if urlsplit(cfg.url).hostname not in LOOPBACK:
            raise DeepcrlError(f"{cfg.url} is not a loopback address; the benchmark only measures 127.0.0.1/::1.")
        if cfg.token_env:
            token = os.environ.get(cfg.token_env) or None
    else:
        from deepcrl.onnx_policy import OnnxPolicy

        OnnxPolicy(cfg.model, providers=["CPUExecutionProvider"])  # fail early, with ArtifactError's sentence
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    procs: list[subprocess.Popen] = []
    pids: dict[str, int] = {}
    try:
        if cfg.url is None:
            proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(cfg.model), "--port",
                                "0", "--max-batch-size", str(cfg.max_batch_size), "--max-queue-delay-us",
                                str(cfg.max_queue_delay_us), "--device", cfg.device, *grpc_args])
            procs.append(proc)
            pids["deepcrl"] = proc.pid
            base_url = None
            if cfg.baseline:
                proc, base_url = _start([sys.executable, "-m", "deepcrl.bench.baseline", "--model", str(cfg.model)])
                procs.append(proc)
                pids["baseline"] = proc.pid
        else:
            url, base_url = cfg.url.rstrip("/"), None
        results = runner(_measure(cfg, url, base_url, token, pids, grpc_target, _tls_options(cfg)))
    finally:
        for proc in procs:
            _stop(proc)
    write(cfg, results)
    return results


def _tls_options(cfg: BenchServeConfig) -> dict[str, Path] | None:
    """The clients' TLS options (`PolicyClient`'s ``ca``, ``cert``, ``key``) for an https:// --url; None otherwise."""
    if cfg.url is None or not cfg.url.startswith("https://"):
        return None
    options = {"ca": cfg.tls_ca, "cert": cfg.tls_client_cert, "key": cfg.tls_client_key}
    return {k: v for k, v in options.items() if v is not None}


def _grpc_credentials(tls: dict[str, Path]):
    import grpc

    def read(key: str) -> bytes | None:
        return None if tls.get(key) is None else Path(tls[key]).read_bytes()

    return grpc.ssl_channel_credentials(root_certificates=read("ca"), private_key=read("key") or read("cert"),
                                        certificate_chain=read("cert"))


async def _measure(cfg: BenchServeConfig, url: str, base_url: str | None, token: str | None,
                   pids: dict[str, int], grpc_target: str | None = None,
                   tls: dict[str, Path] | None = None) -> dict[str, Any]:
    import httpx

    from deepcrl.serve.client import PolicyClient, StreamClient
    from deepcrl.serve.tls import client_context

    context = None if tls is None else client_context(**tls)  # every connection of the run over TLS
    credentials = None if tls is None or "grpc" not in cfg.protocols else _grpc_credentials(tls)
    tls = tls or {}

    started = time.monotonic()
    machine = machine_facts(jax_devices=False)  # at the start: its load average is the one before measuring
    deadline = started + 60.0 * cfg.max_minutes
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers, verify=context or True) as http:
        info = (await http.get(url + "/v1/metadata")).json()
    obs_size, goal_size = info[contract.OBS_SIZE], info[contract.GOAL_SIZE]
    json_bodies, msgpack_bodies = _payloads(obs_size, goal_size, cfg.seed)
    # WebSocket frames carry their deadline in the frame (HTTP requests in a header: `http_requests`)
    ws_frames = msgpack_bodies if cfg.timeout_us is None else [
        msgpack.packb({**msgpack.unpackb(b), TIMEOUT_FIELD: cfg.timeout_us}) for b in msgpack_bodies]
    cells: list[dict[str, Any]] = []
    skipped: list[str] = []
    samples: dict[str, np.ndarray] = {}

    def budget_left(name: str, cells_: int = 1) -> bool:
        if time.monotonic() + cells_ * (cfg.duration_s + 0.5) + 1.0 > deadline:
            skipped.append(name)
            return False
        return True

    def http_target(server_url: str, path: str, fmt: str, timeout_us: int | None = cfg.timeout_us):
        bodies = json_bodies if fmt == "json" else msgpack_bodies
        media = "application/json" if fmt == "json" else "application/msgpack"
        return (lambda: http_connect(server_url, context)), http_requests(server_url, path, bodies, media, token,
                                                                          timeout_us)

    def ws_target(frames: list[bytes]):
        return (lambda: ws_connect(url, token, context)), frames

    targets: list[tuple[str, str, str, Any]] = []  # (server, protocol, label, (connect, payloads))
    for proto in cfg.protocols:
        if proto == "grpc":
            rows = [(np.asarray(p[contract.OBSERVATION], np.float32), np.asarray(p[contract.GOAL], np.float32))
                    for p in map(json.loads, json_bodies)]  # the same rows as the HTTP bodies
            connect = lambda: grpc_connect(grpc_target, token=token, credentials=credentials)  # noqa: E731
            targets.append(("deepcrl", "grpc", "deepcrl grpc", (connect, grpc_requests(info["name"], rows,
                                                                                       cfg.timeout_us))))
        elif proto == "ws":
            targets.append(("deepcrl", "ws", "deepcrl ws", ws_target(ws_frames)))
        else:
            targets.append(("deepcrl", proto, f"deepcrl http+{proto}", http_target(url, "/v1/act", proto)))
    if base_url:
        targets.append(("baseline", "json", "baseline http+json", http_target(base_url, "/v1/act", "json", None)))

    floors: dict[str, Any] = {}
    if cfg.model is not None:
        floors["ort_in_process"] = _ort_floor(cfg.model, obs_size, goal_size, min(cfg.duration_s, 1.0), cfg.device)
    for name, label, (connect, payloads) in (
            ("noop_http_json", "noop http+json c=1", http_target(url, "/v1/noop", "json")),
            ("noop_ws", "noop ws c=1", ws_target([msgpack.packb({"type": "ping"})]))):
        if (name == "noop_ws" and "ws" not in cfg.protocols) or not budget_left(label):
            continue
        run = Run()
        await closed_loop(connect, payloads, 1, cfg.duration_s, run, pids.get("deepcrl"))
        floors[name], samples[label] = run.stats(), np.asarray(run.latencies)

    # Every load level is measured in `rounds` slices that alternate between the targets, so the cells that
    # are compared share the background load of the shared machine instead of each catching its own gusts.
    rounds = max(1, cfg.rounds)
    slice_s = cfg.duration_s / rounds
    levels = [("closed", c) for c in cfg.concurrency] + [("open", r) for r in cfg.rates]
    for mode, level in levels:
        tag = f"c={level}" if mode == "closed" else f"{level}/s"
        level_targets = [t for t in targets if t[1] != "grpc" or (mode, level) == ("closed", 1)]  # grpc: c=1 only
        if not budget_left(f"{mode} {tag}", len(level_targets)):
            continue
        runs = [Run() for _ in level_targets]
        for _ in range(rounds):
            for (server, proto, label, (connect, payloads)), run in zip(level_targets, runs):
                if mode == "closed":
                    await closed_loop(connect, payloads, level, slice_s, run, pids.get(server))
                else:
                    await open_loop(connect, payloads, level, slice_s, run, pids.get(server))
        for (server, proto, label, _), run in zip(level_targets, runs):
            key = {"concurrency": level} if mode == "closed" else {"rate": level, "offered_rps": level}
            cells.append({"server": server, "protocol": proto, "mode": mode, **key, **run.stats()})
            if mode == "closed" and level == 1:
                samples[f"{label} c=1"] = np.asarray(run.latencies)

    clients: dict[str, Any] = {}
    if budget_left("PolicyClient"):
        clients["PolicyClient_msgpack_c1"] = await asyncio.to_thread(
            _client_floor, lambda: PolicyClient(url, token=token, **tls), obs_size, goal_size, min(cfg.duration_s, 1.0))
    if "ws" in cfg.protocols and budget_left("StreamClient"):
        clients["StreamClient_c1"] = await asyncio.to_thread(
            _client_floor, lambda: StreamClient(url, token=token, **tls), obs_size, goal_size, min(cfg.duration_s, 1.0))

    results = {
        "benchmark": "serve_latency",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine, "versions": {**machine["versions"], **versions(("starlette",))},
                    "shared_machine": SHARED_MACHINE},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "model": {k: info.get(k) for k in ("name", contract.OBS_SIZE, contract.GOAL_SIZE, contract.ACTION_SIZE,
                                            "max_batch_size", "max_queue_delay_us", "metadata",
                                            "device", "providers")},
        "load_generator": "raw keep-alive HTTP/1.1 asyncio protocol (uvloop) with pre-encoded bodies; websockets "
                          "asyncio client for WS; servers in their own processes",
        "floors": floors,
        "cells": cells,
        "clients": clients,
        "skipped": skipped,
        "seconds": round(time.monotonic() - started, 1),
    }
    results["summary"] = summary(results)
    results["_samples"] = samples
    return results
