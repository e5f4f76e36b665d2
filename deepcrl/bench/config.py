"""Configs of `deepcrl bench teacher|serve`: the benchmarks that prove the README's numbers (plain data)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Union

import tyro

from deepcrl import _checks as checks
from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class BenchTeacherConfig:
    """Compile time, step time and memory of one critic + actor gradient step from depth 4 to 1024,
    scanned vs unrolled blocks, remat on/off; writes JSON + PNG."""

    depths: tuple[int, ...] = (4, 16, 64, 256, 1024)
    """Depths to measure (multiples of 4, 4..1024), for actor and critic alike."""
    width: int = 256
    """Hidden width of every layer."""
    batch_size: int = 256
    """Batch of the gradient step (also the number of contrastive negatives)."""
    remat: tuple[bool, ...] = (False, True)
    """Remat settings measured for the scanned networks."""
    unrolled: bool = True
    """Also measure the unrolled networks (the reference's form; remat off)."""
    unrolled_budget_s: float = 180.0
    """Skip an unrolled depth whose compile time, extrapolated from the previous depth, exceeds this."""
    bf16: bool = False
    """Compute in bfloat16 (parameters stay float32); for GPUs."""
    max_reps: int = 10
    """Most timed steps per configuration (fewer when a step is slow; at least 2)."""
    actor_random_goal_frac: float = 0.0
    """Fraction of the actor's batch trained on another row's goal, as in `deepcrl train` (0 = the reference;
    the point maze defaults use 0.75). The timed step is the training update itself."""
    out: Path = Path("benchmarks/results/teacher_depth.json")
    """JSON output; the plot is written beside it with the suffix .png."""
    json: bool = False
    """Print the results as one JSON object on stdout instead of the summary."""

    def __post_init__(self) -> None:
        """Check the fields (one `DeepcrlError` sentence for the first bad one)."""
        checks.at_least(self, 2, "batch_size", "max_reps")  # a batch of one has no contrastive negatives
        checks.positive(self, "width", "unrolled_budget_s")
        checks.within(self, 0, 1, "actor_random_goal_frac")


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
    """Transports to measure: json, msgpack (both HTTP POST /v1/act), ws (WS /v1/stream) and grpc (KServe v2
    ModelInfer over gRPC; closed loop at concurrency 1 only; needs the grpc extra)."""
    grpc_port: int | None = None
    """With --url and the grpc protocol: the running server's --grpc-port (with --model the benchmark starts its
    server with a free one)."""
    baseline: bool = True
    """Also measure the hand-written baseline (a minimal FastAPI + pydantic endpoint, one ORT call per request)."""
    max_batch_size: int = 64
    """Server --max-batch-size."""
    max_queue_delay_us: int = 0
    """Server --max-queue-delay-us."""
    max_minutes: float = 4.0
    """Hard bound on the whole run's wall time; cells not started by then are skipped (and listed as skipped)."""
    token_env: str | None = None
    """With --url: environment variable holding the server's bearer token."""
    tls_ca: Path | None = None
    """With an https:// --url (a server started with --tls-cert): the PEM CA bundle that signed its
    certificate (unset: the system's trusted CAs). Every connection of the run (HTTP, WebSocket, gRPC) then
    speaks TLS."""
    tls_client_cert: Path | None = None
    """With an https:// --url: a PEM client certificate, for a server started with --tls-client-ca."""
    tls_client_key: Path | None = None
    """With --tls-client-cert: its PEM private key (unset: the key is in the certificate's file)."""
    seed: int = 0
    """Seed of the random observations sent."""
    json: bool = False
    """Print the results as one JSON object on stdout instead of the summary."""
    device: str = "cpu"
    """The server's --device (cpu, cuda, tensorrt) and the providers of the in-process ORT floor; the results
    record the providers that ran."""
    timeout_us: int | None = None
    """Give every request a deadline of this many microseconds (the `X-Timeout-Us` header on /v1, a
    `timeout_us` field in WebSocket frames, v2 `parameters.timeout` on gRPC): the server answers 504 to a
    request still waiting when it passes, and the cells count those as `http_504` errors. Unset: the server's
    own --timeout-s."""

    def __post_init__(self) -> None:
        """Check the fields (one `DeepcrlError` sentence for the first bad one)."""
        checks.positive(self, "duration_s", "max_minutes", "rounds", "timeout_us")
        checks.at_least(self, 1, "max_batch_size")
        checks.at_least(self, 0, "max_queue_delay_us")
        checks.paths(self, "tls_ca", "tls_client_cert", "tls_client_key")
        tls = (self.tls_ca, self.tls_client_cert, self.tls_client_key)
        if any(x is not None for x in tls) and not (self.url or "").startswith("https://"):
            raise DeepcrlError("--tls-ca, --tls-client-cert and --tls-client-key are for an https:// --url.")
        if self.tls_client_key is not None and self.tls_client_cert is None:
            raise DeepcrlError("--tls-client-key needs its --tls-client-cert.")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Run a benchmark: `teacher` (compile time, step time and memory vs depth) or `serve` (latency).

    Results are written as JSON (+ PNG) with the machine's facts; compare ratios measured in one run.
    """

    what: tyro.conf.OmitSubcommandPrefixes[Union[  # type: ignore[valid-type]
        Annotated[BenchTeacherConfig, tyro.conf.subcommand("teacher")],
        Annotated[BenchServeConfig, tyro.conf.subcommand("serve")],
    ]]
    """Which benchmark."""
