"""The policy server: a FastAPI app around ONNX Runtime micro-batchers, and the ways to run it.

`create_app` loads the models and assembles the routers, each in its own module over one shared
`PolicyServer` (`shared.py`: models, auth, limits, body reading, inference, error answers):

- `v1.py`: ``POST /v1/act``, ``POST /v1/noop``, ``GET /v1/metadata``, ``GET /v1/models``, ``/healthz``,
  ``/readyz``, ``/metrics``;
- `stream.py`: ``WS /v1/stream``;
- `v2.py`: the Open Inference Protocol (KServe v2): ``/v2/health/*``, ``/v2/models/{name}[/ready|/infer]``;
- `repository.py` (the model lifecycle) and `repository_routes.py`: ``/v2/repository/index``,
  ``/v2/repository/models/{name}/load|unload``;
- `grpc_service.py`: the v2 protocol over gRPC (``grpc_port``), a ``grpc.aio`` server started in the lifespan.

A new protocol is one more module with an ``add_routes(app, server)``, called in `create_app`.
Status codes: 400 malformed body, 401 token, 404 unknown model, 413 body too large, 415 content type,
422 well-formed but invalid (sizes, NaN/Inf, non-numbers, nesting, empty or too large batch), 500 the model
failed, 503 + Retry-After too many requests in flight, queue full or shutting down, 504 the request's deadline
passed (`admission.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import functools
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from deepcrl.errors import DeepcrlError
from deepcrl.serve import distance, protocol, repository_routes, stream, v1, v2
from deepcrl.serve.admission import ADMITTED, send_refusal
from deepcrl.serve.control import SharedControl
from deepcrl.serve.repository import CONTROL_MODES, Repository
from deepcrl.serve.metrics import ServeMetrics
from deepcrl.serve.shared import PolicyServer, load_models, load_one

if TYPE_CHECKING:
    from deepcrl.serve.config import ServeConfig
    from deepcrl.serve.tls import ServerTls


class PolicyApp(FastAPI):
    """A FastAPI app whose inference routes (``POST /v1/act``, ``/v1/models/{name}/act``, ``/v1/noop``) skip
    Starlette's middleware and routing layers when it is the ASGI app the server runs.

    Profiling the server under load (py-spy, concurrency 16) showed those layers (error, exception, telemetry,
    body-limit and exit-stack middlewares, route matching, `Response` plumbing) taking about half of its CPU
    time against a quarter for our own handler. The fast path answers the same requests with the same code
    (`fast_act` set by `create_app`); every other route, and these ones when the app is mounted elsewhere,
    go through FastAPI as usual.
    """

    fast_act = None
    server: PolicyServer | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.server is not None:
            path = scope["path"]
            v2 = path.startswith("/v2/models/") and path.endswith("/infer")
            if v2 or path.startswith("/v1/"):  # an inference request: admitted before its body is read
                admission = self.server.admission
                admitted = scope.get(ADMITTED)  # the connection took the slot at the headers (`connection.py`)
                if admitted is None:
                    if not admission.enter():
                        self.server.metrics.refused_in_flight.inc()
                        message = admission.refusal()
                        body = protocol.encode({"error": message} if v2 else {"error": message, "status": 503},
                                               "json")
                        return await send_refusal(send, body)
                    admitted = time.perf_counter()
                try:
                    if path == "/v1/act":
                        return await self.fast_act(scope, receive, send, None, "act")
                    if path == "/v1/noop":
                        return await self.fast_act(scope, receive, send, None, "noop")
                    if path.startswith("/v1/models/") and path.endswith("/act") and path.count("/") == 4:
                        return await self.fast_act(scope, receive, send, path[11:-4], "act")
                    return await super().__call__(scope, receive, send)
                finally:
                    admission.leave(admitted)
        await super().__call__(scope, receive, send)


def create_app(model_path: str | Path, *, max_batch_size: int = 64, max_queue_delay_us: int = 0,
               token: str | None = None, max_body_bytes: int = 1_000_000, timeout_s: float = 2.0,
               model_name: str | None = None, intra_op_threads: int = 1, warmup: int = 32,
               max_in_flight: int = 128, model_control: str = "none", repository_poll_s: float = 1.0,
               device: str = "cpu", critic: str | Path | None = None,
               plan: dict | None = None, grpc_port: int | None = None, grpc_host: str = "127.0.0.1",
               grpc_reuse_port: bool = False, control_dir: str | Path | None = None,
               tls: "ServerTls | None" = None) -> FastAPI:
    """Build the server app: loads every model once and warms it up before returning.

    Args:
        model_path: an .onnx file from `deepcrl export`, or a directory of them (served by file stem).
        max_batch_size: most rows per ORT call and per request.
        max_queue_delay_us: longest a request waits for others to share its call (0: never).
        token: bearer token required on /v1/* and /metrics (None: no auth).
        max_body_bytes: largest accepted body (413 above).
        timeout_s: per-request limit on waiting for inference (504 past it).
        model_name: the model the short routes serve (default: first name in sorted order).
        intra_op_threads: ORT threads per call.
        warmup: inference calls per model before the app is returned.
        max_in_flight: most inference requests held at a time (503 + Retry-After above; `admission.py`).
        model_control: "none", "explicit" (load / unload routes) or "poll" (watch `model_path`); `repository.py`.
        repository_poll_s: seconds between scans of the repository in poll mode.
        device: cpu, cuda or tensorrt; a session that does not run on its provider is refused (`device.py`).
        critic: an exported critic .onnx: adds ``POST /v1/distance`` (`distance.py`).
        plan: with `critic`, the planner's options (a dict, possibly empty): adds ``POST /v1/plan``.
        grpc_port: also serve KServe v2 over gRPC on `grpc_host:grpc_port` (0: a free port, in
            ``app.state.grpc_port`` once started; None: no gRPC), on the same event loop (`grpc_service.py`).
        grpc_reuse_port: let several worker processes share the gRPC port (SO_REUSEPORT).
        control_dir: the model-control directory this app shares with the other workers of one server
            (`control.py`; None: it is the only one).
        tls: the server's certificate and key (`tls.py`): gRPC over TLS on them (HTTP and WebSocket get TLS from
            the ASGI server: `uvicorn_config(..., tls=...)`). None: plain gRPC.

    Returns:
        A FastAPI app (`app.state.server` is its `PolicyServer`); its batcher threads start with the app's
        lifespan (any ASGI server runs it).
    """
    if max_batch_size < 1:
        raise DeepcrlError(f"--max-batch-size must be at least 1, got {max_batch_size}.")
    if max_queue_delay_us < 0:
        raise DeepcrlError(f"--max-queue-delay-us must be 0 or more, got {max_queue_delay_us}.")
    if token is not None and not token:
        raise DeepcrlError("the bearer token is empty; set the variable named by --token-env to a secret.")
    metrics = ServeMetrics(max_batch_size)
    served = load_models(model_path, metrics, max_batch_size=max_batch_size,
                         max_queue_delay_us=max_queue_delay_us,
                         intra_op_threads=intra_op_threads, warmup=warmup, device=device)
    default = model_name or next(iter(served))
    if default not in served:
        raise DeepcrlError(f"--model-name {default!r} is not among the served models ({', '.join(served)}).")
    if max_in_flight < 1:
        raise DeepcrlError(f"max_in_flight must be at least 1, got {max_in_flight}.")
    if model_control not in CONTROL_MODES:
        raise DeepcrlError(f"--model-control is one of {', '.join(CONTROL_MODES)}, not {model_control!r}.")
    if repository_poll_s <= 0:
        raise DeepcrlError(f"--repository-poll-s must be positive, got {repository_poll_s}.")
    grpc_service = _grpc_service() if grpc_port is not None else None
    server = PolicyServer(served, default, metrics, token=token, max_body_bytes=max_body_bytes, timeout_s=timeout_s,
                          max_in_flight=max_in_flight)

    repo = Repository(Path(model_path), server, functools.partial(
        _load_version, metrics=metrics, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
        intra_op_threads=intra_op_threads, warmup=warmup, device=device), control=model_control,
        poll_s=repository_poll_s, shared=SharedControl(control_dir) if control_dir is not None else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        for s in served.values():
            s.batcher.start(loop)
        await repo.start()  # with shared control: the other workers' loads applied before the first request
        grpc_server = None
        if grpc_service is not None:
            grpc_server, app.state.grpc_port = await grpc_service.start(
                server, grpc_host, grpc_port, max_message_bytes=max_body_bytes, reuse_port=grpc_reuse_port,
                repository=repo, credentials=None if tls is None else tls.grpc_credentials())
        # Everything made so far (the libraries, the models) lives as long as the server: moved out of the
        # garbage collector's sight, a full collection no longer walks it (12-18 ms here, a stall of every
        # request in flight, seen as the p99 of a fleet at 4k req/s).
        gc.collect()
        gc.freeze()
        server.ready = True
        try:
            yield
        finally:
            # The ASGI server has drained in-flight requests by now; the batchers finish whatever is queued.
            server.ready = False
            await repo.stop()
            if grpc_server is not None:  # calls in progress finish first (up to GRACE_S)
                await grpc_server.stop(grpc_service.GRACE_S)
            for s in list(served.values()):
                await asyncio.to_thread(s.batcher.stop)

    app = PolicyApp(title="deepcrl policy server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                    openapi_url=None)
    app.state.server, app.state.repository = server, repo
    app.state.served, app.state.metrics, app.state.default = served, metrics, default
    app.state.max_body_bytes = max_body_bytes  # uvicorn_config applies it to WebSocket frames too
    app.state.grpc_port = None
    app.fast_act = v1.add_routes(app, server)
    app.server = server
    stream.add_routes(app, server)
    v2.add_routes(app, server)
    repository_routes.add_routes(app, server, repo)
    distance.add_routes(app, server, *distance.load(critic, plan))
    return app


def _grpc_service():
    try:
        from deepcrl.serve import grpc_service
    except ImportError as exc:
        raise DeepcrlError(f"--grpc-port needs the grpc extra ({exc.name} is missing): pip install "
                           "'deepcrl[grpc]'.") from exc
    return grpc_service


def _load_version(path: Path, version: str, **kwargs):
    return load_one(path, version=version, **kwargs)


# ---- running it -------------------------------------------------------------------------------------------


def uvicorn_config(app, *, log_level: str = "warning", max_body_bytes: int | None = None,
                   graceful_timeout_s: int = 10, tls: "ServerTls | None" = None):
    """uvicorn settings for low latency: uvloop + httptools when installed, no access log, no WS deflate.

    `max_body_bytes` caps WebSocket frames (default: the limit `create_app` was given); `tls` serves HTTP and
    WebSocket over TLS (checked first: `ServerTls.check`).
    """
    import importlib.util

    import uvicorn

    if max_body_bytes is None:
        max_body_bytes = getattr(getattr(app, "state", None), "max_body_bytes", 1_000_000)
    has = importlib.util.find_spec
    # With httptools: refusals right after the headers, clean keep-alive closes (`connection.py`); without it,
    # uvicorn's h11 protocol and `PolicyApp`'s refusals.
    http = "h11"
    if has("httptools"):
        from deepcrl.serve.connection import PolicyHttpProtocol

        http = PolicyHttpProtocol
    return uvicorn.Config(
        app, loop="uvloop" if has("uvloop") else "asyncio", http=http,
        ws="websockets-sansio", ws_max_size=max_body_bytes, ws_per_message_deflate=False, log_level=log_level,
        access_log=False, timeout_graceful_shutdown=graceful_timeout_s, lifespan="on", server_header=False,
        date_header=False, **({} if tls is None else tls.uvicorn_options()))


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: a free one), so callers know the port before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeepcrlError(f"cannot bind {host}:{port} ({exc.strerror}); choose another --port or --host.") from exc
    return sock


def check_port(host: str, port: int) -> None:
    """Refuse (one sentence) a gRPC port another process holds, before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DeepcrlError(f"cannot bind the gRPC port {host}:{port} ({exc.strerror}); choose another "
                               "--grpc-port.") from exc


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class RunningServer:
    """A uvicorn server on a background thread (tests, benchmarks, notebooks). `stop()` shuts it down
    gracefully: in-flight requests finish first."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, **config_kwargs):
        import uvicorn

        self.sock = bind(host, port)
        self.url = url_of(self.sock, "http" if config_kwargs.get("tls") is None else "https")
        self.server = uvicorn.Server(uvicorn_config(app, **config_kwargs))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="deepcrl-serve")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DeepcrlError("the server thread failed to start.")
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(cfg: "ServeConfig") -> None:
    """Run `deepcrl serve` in the foreground until SIGINT/SIGTERM (then drain in-flight requests)."""
    import uvicorn

    tls = cfg.tls()
    if tls is not None:
        tls.check()  # a bad file is one sentence before any model loads or any port is bound
    token = None
    if cfg.token_env:
        token = os.environ.get(cfg.token_env)
        if not token:
            raise DeepcrlError(f"--token-env names {cfg.token_env}, but that environment variable is unset or "
                               "empty.")
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"deepcrl serve: warning: listening on {cfg.host} without a token (--token-env).", file=sys.stderr)
    app = create_app(cfg.model, max_batch_size=cfg.max_batch_size, max_queue_delay_us=cfg.max_queue_delay_us,
                     token=token, max_body_bytes=cfg.max_body_bytes, timeout_s=cfg.timeout_s, model_name=cfg.model_name,
                     intra_op_threads=cfg.intra_op_threads, warmup=cfg.warmup, max_in_flight=cfg.max_in_flight,
                     model_control=cfg.model_control, repository_poll_s=cfg.repository_poll_s, device=cfg.device,
                     critic=cfg.critic, plan=cfg.plan_options(), grpc_port=cfg.grpc_port, grpc_host=cfg.host,
                     tls=tls)
    sock = bind(cfg.host, cfg.port)
    url = url_of(sock, "http" if tls is None else "https")
    if cfg.grpc_port:
        try:
            check_port(cfg.host, cfg.grpc_port)
        except DeepcrlError:
            sock.close()
            raise
    names = ", ".join(app.state.served)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                grpc = "" if cfg.grpc_port is None else \
                    f"gRPC{'' if tls is None else ' (TLS)'} at {cfg.host}:{app.state.grpc_port}; "
                print(f"deepcrl serve: ready at {url} ({grpc}models: {names}; default {app.state.default}; "
                      f"max_batch_size {cfg.max_batch_size}, max_queue_delay_us {cfg.max_queue_delay_us}, "
                      f"auth {'on' if token else 'off'})", flush=True)

    _Server(uvicorn_config(app, log_level=cfg.log_level, tls=tls)).run(sockets=[sock])
