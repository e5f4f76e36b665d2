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
- the hand-written baseline (`deepcrl.serve.baseline`) under the same load, so figures are ratios to it;
- the shipped clients (`PolicyClient`, `StreamClient`) at concurrency 1.

Every cell runs for a fixed time and the whole run has a hard time limit. Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import msgpack
import numpy as np

from deepcrl.errors import DeepcrlError
from deepcrl.bench.config import BenchServeConfig

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TARGETS = {"http_json_c1_p50_us": 500.0, "http_json_c1_p99_us": 2000.0, "ws_c1_p99_us": 1000.0,
           "throughput_ratio_c16_64": 3.0,
           # Not in the issue: the same 3x asked of server CPU per request, which a shared machine's load
           # barely moves (wall-clock throughput there also measures the neighbours).
           "server_cpu_efficiency_ratio_c16_64": 3.0}
_READY = re.compile(r"ready at (http://\S+)")


# ---- connections: one roundtrip(payload) -> ok coroutine per kind ------------------------------------------


class _HttpConnection(asyncio.Protocol):
    """Keep-alive HTTP/1.1 on a raw asyncio protocol: one request in flight, responses framed by Content-Length."""

    def __init__(self):
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def roundtrip(self, request: bytes) -> bool:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter == 200

    async def close(self) -> None:
        self.transport.close()


async def _http_connect(url: str) -> _HttpConnection:
    parts = urlsplit(url)
    _, conn = await asyncio.get_running_loop().create_connection(_HttpConnection, parts.hostname, parts.port)
    return conn


def _http_requests(url: str, path: str, bodies: list[bytes], media: str, token: str | None) -> list[bytes]:
    host = urlsplit(url).netloc
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media}\r\nAccept: {media}\r\n{auth}"
             f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


class _WsConnection:
    def __init__(self, ws):
        self.ws = ws

    async def roundtrip(self, frame: bytes) -> bool:
        await self.ws.send(frame)
        reply = msgpack.unpackb(await self.ws.recv())
        return reply.get("type") in ("action", "pong")

    async def close(self) -> None:
        await self.ws.close()


async def _ws_connect(url: str, token: str | None) -> _WsConnection:
    from websockets.asyncio.client import connect

    headers = {"authorization": f"Bearer {token}"} if token else None
    ws = await connect(url.replace("http://", "ws://", 1) + "/v1/stream", compression=None, max_size=None,
                       additional_headers=headers)
    meta = msgpack.unpackb(await ws.recv())
    if meta.get("type") != "metadata":
        raise DeepcrlError("the server's WebSocket did not send a metadata frame first.")
    return _WsConnection(ws)


# ---- load patterns ------------------------------------------------------------------------------------------


def _stats(latencies_ns: list[int] | np.ndarray, seconds: float, errors: int) -> dict[str, Any]:
    lat = np.asarray(latencies_ns, np.float64) / 1e3
    if lat.size == 0:
        return {"requests": 0, "errors": errors, "throughput_rps": 0.0}
    p = np.percentile(lat, [50, 90, 99, 99.9])
    return {"requests": int(lat.size), "errors": int(errors), "throughput_rps": round(lat.size / seconds, 1),
            "p50_us": round(p[0], 1), "p90_us": round(p[1], 1), "p99_us": round(p[2], 1),
            "p999_us": round(p[3], 1), "max_us": round(float(lat.max()), 1), "mean_us": round(float(lat.mean()), 1)}


class _Run:
    """Raw measurements of one cell, accumulated over interleaved rounds."""

    def __init__(self):
        self.latencies: list[int] = []
        self.lateness: list[int] = []
        self.seconds = 0.0
        self.errors = 0
        self.server_cpu: float | None = 0.0

    def add_cpu(self, before: float | None, after: float | None) -> None:
        if self.server_cpu is not None and before is not None and after is not None:
            self.server_cpu += after - before
        else:
            self.server_cpu = None

    def stats(self) -> dict[str, Any]:
        out = _stats(self.latencies, self.seconds, self.errors)
        if self.server_cpu is not None and self.latencies:
            # CPU time the server process spent per answered request: unlike wall-clock figures it barely
            # moves with the other jobs on a shared machine, so its ratio to the baseline is the steady one.
            out["server_cpu_us_per_request"] = round(self.server_cpu / len(self.latencies) * 1e6, 1)
        if self.lateness:
            out["generator_lateness_p99_us"] = round(float(np.percentile(self.lateness, 99)) / 1e3, 1)
        return out


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere or without a pid)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def _closed_loop(connect: Callable[[], Awaitable], payloads: list[bytes], concurrency: int,
                       duration: float, run: _Run, pid: int | None = None, warmup: float = 0.2) -> None:
    conns = [await connect() for _ in range(concurrency)]
    n = len(payloads)
    clock = time.perf_counter_ns

    async def worker(conn, k: int, stop_ns: int, record: bool) -> None:
        i = k
        while clock() < stop_ns:
            t = clock()
            try:
                ok = await conn.roundtrip(payloads[i % n])
            except (ConnectionError, OSError):
                ok = False
            if record:
                run.latencies.append(clock() - t)
                run.errors += not ok
            i += 1

    try:
        await asyncio.gather(*(worker(c, k, clock() + int(warmup * 1e9), False) for k, c in enumerate(conns)))
        cpu = _cpu_seconds(pid)
        start = clock()
        await asyncio.gather(*(worker(c, k, start + int(duration * 1e9), True) for k, c in enumerate(conns)))
        run.seconds += (clock() - start) / 1e9
        run.add_cpu(cpu, _cpu_seconds(pid))
    finally:
        for c in conns:
            await c.close()


async def _open_loop(connect: Callable[[], Awaitable], payloads: list[bytes], rate: float, duration: float,
                     run: _Run, pid: int | None = None, pool: int = 64) -> None:
    """Requests due at t0 + i/rate; a timer thread (µs-precise sleeps, unlike the loop's ms timers) releases
    them. Latency is measured from the due time, including any wait for a free connection."""
    loop = asyncio.get_running_loop()
    conns = [await connect() for _ in range(pool)]
    free: asyncio.Queue = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    total = max(1, int(rate * duration))
    done = asyncio.Event()
    finished = 0
    n = len(payloads)
    cpu = _cpu_seconds(pid)
    t0 = time.perf_counter_ns() + 50_000_000
    due = [t0 + int(i * 1e9 / rate) for i in range(total)]

    async def one(i: int) -> None:
        nonlocal finished
        run.lateness.append(time.perf_counter_ns() - due[i])
        conn = await free.get()
        try:
            ok = await conn.roundtrip(payloads[i % n])
        except (ConnectionError, OSError):
            ok = False
        run.latencies.append(time.perf_counter_ns() - due[i])
        run.errors += not ok
        free.put_nowait(conn)
        finished += 1
        if finished == total:
            done.set()

    def start(i: int) -> None:
        loop.create_task(one(i))

    def timer() -> None:
        for i, t in enumerate(due):
            wait = (t - time.perf_counter_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
            loop.call_soon_threadsafe(start, i)

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    try:
        await asyncio.wait_for(done.wait(), duration + 10.0)
    except TimeoutError:
        run.errors += total - finished
    thread.join(1.0)
    run.seconds += (time.perf_counter_ns() - t0) / 1e9
    run.add_cpu(cpu, _cpu_seconds(pid))
    for c in conns:
        await c.close()


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


def _machine() -> dict[str, Any]:
    versions = {}
    for name in ("onnxruntime", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "websockets", "httpx",
                 "msgpack", "orjson", "numpy", "pydantic", "prometheus-client"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "versions": versions,
            "shared_machine": "2 cores shared with other jobs while measuring: absolute latencies are noisy "
                              "upper bounds; compare the ratios measured side by side in this run."}


def _payloads(obs_size: int, goal_size: int, seed: int, count: int = 64) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    pairs = [{"observation": rng.uniform(-1, 1, obs_size).astype(np.float32).tolist(),
              "goal": rng.uniform(-1, 1, goal_size).astype(np.float32).tolist()} for _ in range(count)]
    return ([json.dumps(p).encode() for p in pairs], [msgpack.packb(p) for p in pairs])


def _ort_floor(model_path: Path, obs_size: int, goal_size: int, duration: float) -> dict[str, Any]:
    from deepcrl.serve.runner import OnnxModel

    model = OnnxModel(model_path)
    model.warmup()
    obs, goal = np.zeros((1, obs_size), np.float32), np.zeros((1, goal_size), np.float32)
    lat = []
    start = time.perf_counter_ns()
    stop = start + int(duration * 1e9)
    while (t := time.perf_counter_ns()) < stop:
        model(obs, goal)
        lat.append(time.perf_counter_ns() - t)
    return _stats(lat, (time.perf_counter_ns() - start) / 1e9, 0)


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
    return _stats(lat, (time.perf_counter_ns() - start) / 1e9, errors)


# ---- the run --------------------------------------------------------------------------------------------------


def run(cfg: BenchServeConfig) -> dict[str, Any]:
    """Run the benchmark; writes ``cfg.out`` + .json and .png and returns the results dict."""
    if (cfg.model is None) == (cfg.url is None):
        raise DeepcrlError("give exactly one of --model (the benchmark starts its servers) or --url.")
    unknown = set(cfg.protocols) - {"json", "msgpack", "ws"}
    if unknown:
        raise DeepcrlError(f"unknown protocol(s) {sorted(unknown)}; choose from json, msgpack, ws.")
    token = None
    if cfg.url is not None:
        if urlsplit(cfg.url).hostname not in LOOPBACK:
            raise DeepcrlError(f"{cfg.url} is not a loopback address; the benchmark only measures 127.0.0.1/::1.")
        if cfg.token_env:
            token = os.environ.get(cfg.token_env) or None
    else:
        from deepcrl.serve.runner import OnnxModel

        OnnxModel(cfg.model)  # fail early, with ArtifactError's sentence, on a bad file
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
                                "0", "--max-batch", str(cfg.max_batch), "--max-delay-us", str(cfg.max_delay_us)])
            procs.append(proc)
            pids["deepcrl"] = proc.pid
            base_url = None
            if cfg.baseline:
                proc, base_url = _start([sys.executable, "-m", "deepcrl.serve.baseline", "--model", str(cfg.model)])
                procs.append(proc)
                pids["baseline"] = proc.pid
        else:
            url, base_url = cfg.url.rstrip("/"), None
        results = runner(_measure(cfg, url, base_url, token, pids))
    finally:
        for proc in procs:
            _stop(proc)
    _write(cfg, results)
    return results


async def _measure(cfg: BenchServeConfig, url: str, base_url: str | None, token: str | None,
                   pids: dict[str, int]) -> dict[str, Any]:
    import httpx

    from deepcrl.serve.client import PolicyClient, StreamClient

    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    deadline = started + cfg.time_limit_s
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers) as http:
        info = (await http.get(url + "/v1/metadata")).json()
    obs_size, goal_size = info["obs_size"], info["goal_size"]
    json_bodies, msgpack_bodies = _payloads(obs_size, goal_size, cfg.seed)
    cells: list[dict[str, Any]] = []
    skipped: list[str] = []
    samples: dict[str, np.ndarray] = {}

    def budget_left(name: str, cells_: int = 1) -> bool:
        if time.monotonic() + cells_ * (cfg.duration_s + 0.5) + 1.0 > deadline:
            skipped.append(name)
            return False
        return True

    def http_target(server_url: str, path: str, fmt: str):
        bodies = json_bodies if fmt == "json" else msgpack_bodies
        media = "application/json" if fmt == "json" else "application/msgpack"
        return (lambda: _http_connect(server_url)), _http_requests(server_url, path, bodies, media, token)

    def ws_target(frames: list[bytes]):
        return (lambda: _ws_connect(url, token)), frames

    targets: list[tuple[str, str, str, Any]] = []  # (server, protocol, label, (connect, payloads))
    for proto in cfg.protocols:
        if proto == "ws":
            targets.append(("deepcrl", "ws", "deepcrl ws", ws_target(msgpack_bodies)))
        else:
            targets.append(("deepcrl", proto, f"deepcrl http+{proto}", http_target(url, "/v1/act", proto)))
    if base_url:
        targets.append(("baseline", "json", "baseline http+json", http_target(base_url, "/v1/act", "json")))

    floors: dict[str, Any] = {}
    if cfg.model is not None:
        floors["ort_in_process"] = _ort_floor(cfg.model, obs_size, goal_size, min(cfg.duration_s, 1.0))
    for name, label, (connect, payloads) in (
            ("noop_http_json", "noop http+json c=1", http_target(url, "/v1/noop", "json")),
            ("noop_ws", "noop ws c=1", ws_target([msgpack.packb({"type": "ping"})]))):
        if (name == "noop_ws" and "ws" not in cfg.protocols) or not budget_left(label):
            continue
        run = _Run()
        await _closed_loop(connect, payloads, 1, cfg.duration_s, run, pids.get("deepcrl"))
        floors[name], samples[label] = run.stats(), np.asarray(run.latencies)

    # Every load level is measured in `rounds` slices that alternate between the targets, so the cells that
    # are compared share the background load of the shared machine instead of each catching its own gusts.
    rounds = max(1, cfg.rounds)
    slice_s = cfg.duration_s / rounds
    levels = [("closed", c) for c in cfg.concurrency] + [("open", r) for r in cfg.rates]
    for mode, level in levels:
        tag = f"c={level}" if mode == "closed" else f"{level}/s"
        if not budget_left(f"{mode} {tag}", len(targets)):
            continue
        runs = [_Run() for _ in targets]
        for _ in range(rounds):
            for (server, proto, label, (connect, payloads)), run in zip(targets, runs):
                if mode == "closed":
                    await _closed_loop(connect, payloads, level, slice_s, run, pids.get(server))
                else:
                    await _open_loop(connect, payloads, level, slice_s, run, pids.get(server))
        for (server, proto, label, _), run in zip(targets, runs):
            key = {"concurrency": level} if mode == "closed" else {"rate": level, "offered_rps": level}
            cells.append({"server": server, "protocol": proto, "mode": mode, **key, **run.stats()})
            if mode == "closed" and level == 1:
                samples[f"{label} c=1"] = np.asarray(run.latencies)

    clients: dict[str, Any] = {}
    if budget_left("PolicyClient"):
        clients["PolicyClient_msgpack_c1"] = await asyncio.to_thread(
            _client_floor, lambda: PolicyClient(url, token=token), obs_size, goal_size, min(cfg.duration_s, 1.0))
    if "ws" in cfg.protocols and budget_left("StreamClient"):
        clients["StreamClient_c1"] = await asyncio.to_thread(
            _client_floor, lambda: StreamClient(url, token=token), obs_size, goal_size, min(cfg.duration_s, 1.0))

    results = {
        "benchmark": "serve_latency",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**_machine(), "load_average_at_start": load_at_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "model": {k: info.get(k) for k in ("name", "obs_size", "goal_size", "action_size", "max_batch",
                                            "max_delay_us", "metadata")},
        "load_generator": "raw keep-alive HTTP/1.1 asyncio protocol (uvloop) with pre-encoded bodies; websockets "
                          "asyncio client for WS; servers in their own processes",
        "floors": floors,
        "cells": cells,
        "clients": clients,
        "skipped": skipped,
        "seconds": round(time.monotonic() - started, 1),
    }
    results["summary"] = _summary(results)
    results["_samples"] = samples
    return results


def _cell(results, server, proto, mode="closed", **key):
    for c in results["cells"]:
        if c["server"] == server and c["protocol"] == proto and c["mode"] == mode and all(c.get(k) == v for k, v
                                                                                          in key.items()):
            return c
    return None


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """Targets and ratios to the baseline (None where a cell was skipped)."""
    out: dict[str, Any] = {}
    j1, w1 = _cell(results, "deepcrl", "json", concurrency=1), _cell(results, "deepcrl", "ws", concurrency=1)
    b1 = _cell(results, "baseline", "json", concurrency=1)
    if j1:
        out["http_json_c1_p50_us"] = j1.get("p50_us")
        out["http_json_c1_p99_us"] = j1.get("p99_us")
    if w1:
        out["ws_c1_p99_us"] = w1.get("p99_us")
    # The transport floors at concurrency 1: a target the floor itself misses is the machine's, not the model's.
    for name in ("noop_http_json", "noop_ws"):
        if results["floors"].get(name):
            out[f"floor_{name}_c1_p50_us"] = results["floors"][name].get("p50_us")
            out[f"floor_{name}_c1_p99_us"] = results["floors"][name].get("p99_us")
    ratios = {}
    for c in results["cells"]:
        if c["server"] != "deepcrl" or c["mode"] != "closed":
            continue
        b = _cell(results, "baseline", "json", concurrency=c["concurrency"])
        if b and b.get("throughput_rps"):
            cpu, base_cpu = c.get("server_cpu_us_per_request"), b.get("server_cpu_us_per_request")
            ratios[f"{c['protocol']}_c{c['concurrency']}"] = {
                "throughput_x": round(c["throughput_rps"] / b["throughput_rps"], 2),
                "server_cpu_per_request_x": round(base_cpu / cpu, 2) if cpu and base_cpu else None,
                "p50_speedup_x": round(b["p50_us"] / c["p50_us"], 2) if c.get("p50_us") else None,
                "p99_speedup_x": round(b["p99_us"] / c["p99_us"], 2) if c.get("p99_us") else None}
    out["vs_baseline"] = ratios
    high = [v for k, v in ratios.items() if k.startswith("json_") and int(k.split("_c")[1]) >= 16]
    out["throughput_ratio_c16_64"] = min(v["throughput_x"] for v in high) if high else None
    cpu_high = [v["server_cpu_per_request_x"] for v in high if v["server_cpu_per_request_x"]]
    # Requests per CPU-second of the server, relative to the baseline: its capacity on a dedicated core.
    out["server_cpu_efficiency_ratio_c16_64"] = min(cpu_high) if cpu_high else None
    if b1 and j1:
        out["baseline_http_json_c1_p50_us"] = b1.get("p50_us")
    checks = {}
    for name, target in TARGETS.items():
        value = out.get(name)
        if value is not None:
            checks[name] = {"value": value, "target": target,
                            "met": bool(value >= target if "ratio" in name else value <= target
                                        if "p50" in name or "json_c1_p99" in name else value < target)}
    out["targets"] = checks
    return out


def _write(cfg: BenchServeConfig, results: dict[str, Any]) -> None:
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = results.pop("_samples", {})
    results["json"], results["png"] = str(out.with_suffix(".json")), str(out.with_suffix(".png"))
    _plot(results, samples, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


def _plot(results: dict[str, Any], samples: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3, ax4) = plt.subplots(1, 4, figsize=(22, 5))
    for label, lat in samples.items():
        if len(lat):
            x = np.sort(np.asarray(lat) / 1e3)
            ax1.plot(x, np.arange(1, len(x) + 1) / len(x), label=label, lw=1.4,
                     ls="--" if label.startswith(("noop", "baseline")) else "-")
    floor = results["floors"].get("ort_in_process")
    if floor:
        ax1.axvline(floor["p50_us"], color="grey", lw=1, ls=":", label=f"ORT in-process p50 {floor['p50_us']} µs")
    ax1.set(xscale="log", xlabel="latency (µs, log)", ylabel="fraction of requests",
            title="Latency CDF, closed loop, concurrency 1")
    ax1.grid(alpha=0.3, which="both")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    for server, proto in sorted({(c["server"], c["protocol"]) for c in results["cells"]}):
        rows = sorted((c["concurrency"], c["throughput_rps"], c.get("p99_us")) for c in results["cells"]
                      if c["server"] == server and c["protocol"] == proto and c["mode"] == "closed")
        if rows:
            cs, tp, p99 = zip(*rows)
            style = {"marker": "o", "label": f"{server} {proto}", "ls": "--" if server == "baseline" else "-"}
            ax2.plot(cs, tp, **style)
            ax3.plot(cs, p99, **style)
            cpu = [(c["concurrency"], c["server_cpu_us_per_request"]) for c in results["cells"]
                   if c["server"] == server and c["protocol"] == proto and c["mode"] == "closed"
                   and c.get("server_cpu_us_per_request")]
            if cpu:
                ax4.plot(*zip(*sorted(cpu)), **style)
    ax2.set(xscale="log", xlabel="concurrent connections", ylabel="requests / s", title="Closed-loop throughput")
    ax3.set(xscale="log", yscale="log", xlabel="concurrent connections", ylabel="p99 latency (µs)",
            title="Closed-loop p99 latency")
    ax4.set(xscale="log", xlabel="concurrent connections", ylabel="server CPU µs per request",
            title="Server CPU per request (steady under shared load)")
    ax4.set_ylim(bottom=0)
    for ax in (ax2, ax3, ax4):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"deepcrl serve on loopback ({results['machine']['cpu_count']} shared cores; "
                 f"{results['time']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(results: dict[str, Any]) -> None:
    """A rich table of the cells, the floors and the targets."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 130))
    table = Table(title="deepcrl bench serve (latency in µs)")
    for col in ("server", "protocol", "load", "p50", "p90", "p99", "p99.9", "max", "req/s", "errors"):
        table.add_column(col, justify="right" if col not in ("server", "protocol") else "left")
    rows = [("floor", "ORT call", "in-process", results["floors"].get("ort_in_process")),
            ("floor", "http+json", "/v1/noop c=1", results["floors"].get("noop_http_json")),
            ("floor", "ws", "ping c=1", results["floors"].get("noop_ws"))]
    rows += [(c["server"], c["protocol"], f"c={c['concurrency']}" if c["mode"] == "closed" else f"{c['rate']}/s", c)
             for c in results["cells"]]
    rows += [("client", name, "c=1", s) for name, s in results["clients"].items()]
    for server, proto, load, s in rows:
        if s:
            table.add_row(server, proto, load, *(str(s.get(k, "")) for k in ("p50_us", "p90_us", "p99_us", "p999_us",
                                                                             "max_us", "throughput_rps", "errors")))
    console.print(table)
    for name, check in results["summary"]["targets"].items():
        mark = "[green]met[/]" if check["met"] else "[red]missed[/]"
        console.print(f"{name}: {check['value']} (target {check['target']}) {mark}")
    console.print(f"wrote {results['json']} and {results['png']}")
