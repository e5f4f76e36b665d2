"""Config of `deepcrl serve` (plain data: the server is imported only when the verb runs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from deepcrl import _checks as checks
from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Serve an exported ONNX policy over HTTP (JSON or msgpack), WebSocket and optionally gRPC, with
    micro-batching."""

    model: Path
    """An .onnx file written by `deepcrl export`, or a directory of them (each served under its file stem)."""
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; `0.0.0.0` exposes the server to the network (set a token)."""
    port: int = 8000
    """TCP port (0 picks a free one; the ready line prints it)."""
    max_batch_size: int = 64
    """Most rows gathered into one ONNX Runtime call (also the largest batch one request may send)."""
    max_queue_delay_us: int = 0
    """Longest a request waits for others to share its call, in microseconds (0: never wait; requests that
    arrive while a call runs still share the next one)."""
    token_env: str | None = None
    """Name of an environment variable holding a bearer token; when set, /v1/* and /metrics require it."""
    max_body_bytes: int = 1_000_000
    """Largest request body or WebSocket frame accepted (413 above it)."""
    timeout_s: float = 2.0
    """Per-request limit on waiting for inference (504 past it)."""
    model_name: str | None = None
    """With a directory of models: the one /v1/act serves (default: the first name in sorted order)."""
    intra_op_threads: int = 1
    """ONNX Runtime threads per call (1 is fastest for small policies and leaves cores to the server)."""
    warmup: int = 32
    """Inference calls made at start-up, before the server reports ready."""
    log_level: str = "warning"
    """uvicorn log level (debug, info, warning, error)."""
    workers: int = 1
    """Server processes sharing the port, each with its own ONNX Runtime sessions and micro-batchers; /metrics
    sums over all of them and SIGTERM drains all of them (deepcrl/serve/workers.py)."""
    max_in_flight: int = 128
    """Most inference requests one server process holds at a time (reading, queued, computing); above it a
    request is refused at once with 503 and Retry-After, before its body is read (deepcrl/serve/admission.py).
    While a queue stands (every answer of a 100 ms window took over 5 ms) the bound is an eighth of this, so that
    a server offered more than it can answer keeps its admitted requests fast; a bound under 16 is kept as it
    is. With --workers N the bound is per worker."""
    model_control: str = "none"
    """Who changes the served models while the server runs (Triton's model control modes): none; explicit
    (POST /v2/repository/models/NAME/load and /unload re-read NAME.onnx from --model's directory); poll (every
    --repository-poll-s the directory is scanned: new or changed files load, removed ones unload). A load swaps
    versions without dropping requests; a failed one keeps the old version (deepcrl/serve/repository.py).
    Under --workers N a load or unload answered by any worker takes effect on every worker before it answers
    (deepcrl/serve/control.py)."""
    repository_poll_s: float = 1.0
    """Seconds between scans of the model directory with --model-control poll."""
    device: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    """Where the sessions run: ONNX Runtime's CPU, CUDA or TensorRT provider (cuda and tensorrt need the gpu
    extra). The server refuses to start when a session does not run on the requested provider (ONNX Runtime
    otherwise falls back to the CPU silently; deepcrl/serve/device.py)."""
    critic: Path | None = None
    """An exported critic .onnx (`deepcrl export --part critic`): adds POST /v1/distance (learned distances
    from one observation to up to 4096 goals)."""
    plan: bool = False
    """With --critic: adds POST /v1/plan, where the robot sends only its final goal and the server answers the
    default policy's action toward the current waypoint of a landmark plan."""
    plan_landmarks: int = 500
    """With --plan: landmark states drawn from the critic's env."""
    plan_cutoff: float | None = None
    """With --plan: longest graph edge in learned distance (unset: --plan-cutoff-quantile of landmark pairs)."""
    plan_cutoff_quantile: float = 0.07
    """With --plan and no --plan-cutoff: the quantile of landmark pair distances used as the cutoff."""
    grpc_port: int | None = None
    """Also serve the KServe v2 gRPC service (ModelInfer, ModelStreamInfer, health and metadata; Triton's and
    KServe's gRPC clients) on this port of --host, through the same batcher, limits, token and metrics (needs
    the grpc extra; unset: no gRPC; 0: a free port, printed in the ready line). With --workers N every worker
    serves it on the same port (SO_REUSEPORT; a fixed port is needed), and a client's connection stays on the
    worker that accepted it (deepcrl/serve/grpc_service.py)."""
    tls_cert: Path | None = None
    """With --tls-key: serve HTTP, WebSocket and gRPC over TLS (https://, wss://) with this PEM certificate (its
    chain after it, if any). Both files are loaded once at start-up; a bad one is one sentence
    (deepcrl/serve/tls.py)."""
    tls_key: Path | None = None
    """With --tls-cert: its unencrypted PEM private key."""
    tls_client_ca: Path | None = None
    """With --tls-cert: mutual TLS; every client (HTTP, WebSocket, gRPC) must present a certificate that this
    PEM CA bundle signed, or its TLS handshake fails."""

    def tls(self):
        """The `deepcrl.serve.tls.ServerTls` of the --tls-* flags (None: plain HTTP and gRPC)."""
        from deepcrl.serve.tls import server_tls

        return server_tls(self.tls_cert, self.tls_key, self.tls_client_ca)

    def plan_options(self) -> dict | None:
        """The planner's options for `create_app` (None without --plan)."""
        if not self.plan:
            return None
        return {"landmarks": self.plan_landmarks, "cutoff": self.plan_cutoff,
                "cutoff_quantile": self.plan_cutoff_quantile}

    def __post_init__(self) -> None:
        """Check the fields (one `DeepcrlError` sentence for the first bad one); `model` becomes a `Path`."""
        checks.paths(self, "model", "tls_cert", "tls_key", "tls_client_ca")
        self.tls()  # both of --tls-cert and --tls-key or neither (their contents are checked at start-up)
        checks.at_least(self, 1, "max_batch_size", "intra_op_threads", "workers")
        checks.at_least(self, 0, "max_queue_delay_us", "warmup")
        checks.within(self, 0, 65535, "port", "grpc_port")
        checks.positive(self, "max_body_bytes", "timeout_s", "max_in_flight", "repository_poll_s")
        if self.grpc_port == 0 and self.workers > 1:
            raise DeepcrlError("--grpc-port 0 picks a different free port in each worker; with --workers give a "
                               "fixed port.")
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise DeepcrlError(f"--grpc-port {self.grpc_port} is also --port; give gRPC a port of its own.")
        if self.plan and self.critic is None:
            raise DeepcrlError("--plan needs --critic FILE.onnx (`deepcrl export --part critic`).")
