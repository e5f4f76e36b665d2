"""Configs of `deepcrl serve` and `deepcrl bench serve` (light: the server is imported only in `run()`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Serve an exported ONNX policy over HTTP (JSON or msgpack) and WebSocket, with micro-batching."""

    model: Path
    """An .onnx file written by `deepcrl export`, or a directory of them (each served under its file stem)."""
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; `0.0.0.0` exposes the server to the network (set a token)."""
    port: int = 8000
    """TCP port (0 picks a free one; the ready line prints it)."""
    max_batch: int = 64
    """Most rows gathered into one ONNX Runtime call (also the largest batch one request may send)."""
    max_delay_us: int = 0
    """Longest a request waits for others to share its call, in microseconds (0: never wait; requests that
    arrive while a call runs still share the next one)."""
    token_env: str | None = None
    """Name of an environment variable holding a bearer token; when set, /v1/* and /metrics require it."""
    max_body_bytes: int = 1_000_000
    """Largest request body or WebSocket frame accepted (413 above it)."""
    timeout_s: float = 2.0
    """Per-request limit on waiting for inference (504 past it)."""
    default_model: str | None = None
    """With a directory of models: the one /v1/act serves (default: the first name in sorted order)."""
    intra_op_threads: int = 1
    """ONNX Runtime threads per call (1 is fastest for small policies and leaves cores to the server)."""
    warmup: int = 32
    """Inference calls made at start-up, before the server reports ready."""
    log_level: str = "warning"
    """uvicorn log level (debug, info, warning, error)."""

    def run(self) -> int:
        from deepcrl.serve.app import serve

        serve(self)
        return 0


@dataclasses.dataclass(frozen=True)
class BenchServeConfig:
    """Measure the policy server's latency and throughput on loopback against floors and a hand-written
    baseline; writes JSON + PNG."""

    model: Path | None = None
    """Exported .onnx to serve (the benchmark starts its own servers). One of --model or --url is needed."""
    url: str | None = None
    """Measure an already running deepcrl server instead (loopback only; floors that need the model and the
    hand-written baseline are skipped)."""
    out: Path = Path("benchmarks/results/serve_latency")
    """Output path without extension: writes OUT.json and OUT.png."""
    duration_s: float = 1.5
    """Seconds measured per cell (one protocol x one concurrency or rate)."""
    concurrency: tuple[int, ...] = (1, 8, 16, 64)
    """Closed-loop concurrencies (connections each sending its next request when the last one returns)."""
    rounds: int = 3
    """Each load level is measured in this many slices alternating between the servers (fairer on a shared
    machine); a cell's figures pool its slices."""
    rates: tuple[int, ...] = (500, 2000)
    """Open-loop request rates per second (latency counted from each request's scheduled send time)."""
    protocols: tuple[str, ...] = ("json", "msgpack", "ws")
    """Transports to measure: json, msgpack (both HTTP POST /v1/act) and ws (WS /v1/stream)."""
    baseline: bool = True
    """Also measure the hand-written baseline (a minimal FastAPI + pydantic endpoint, one ORT call per request)."""
    max_batch: int = 64
    """Server --max-batch."""
    max_delay_us: int = 0
    """Server --max-delay-us."""
    time_limit_s: float = 240.0
    """Hard bound on the whole run; cells not started by then are skipped (and listed as skipped)."""
    token_env: str | None = None
    """With --url: environment variable holding the server's bearer token."""
    seed: int = 0
    """Seed of the random observations sent."""

    def run(self) -> int:
        from deepcrl.serve.bench import print_summary, run

        print_summary(run(self))
        return 0
