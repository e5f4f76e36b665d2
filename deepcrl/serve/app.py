"""The policy server: FastAPI routes around ONNX Runtime micro-batchers.

Routes (``/v1/models/{name}/...`` addresses one model of a directory; the short forms use the default model):

- ``POST /v1/act``        ``{"observation", "goal"}`` -> ``{"action"}``, or ``{"observations", "goals"}`` ->
  ``{"actions"}``; JSON or msgpack both ways; every answer carries ``timing`` (µs) and a Server-Timing header.
- ``WS /v1/stream``       msgpack frames: a metadata frame first, then one answer per request frame (an
  ``id`` in a frame is echoed back; ``{"type": "ping"}`` gets a pong); a bad frame gets an error frame and the
  connection stays open. A frame over the size limit closes it (code 1009, enforced by uvicorn). The
  bearer token, when set, goes in the handshake's Authorization header (refused handshake: HTTP 403).
- ``POST /v1/noop``       reads and checks the body like /v1/act but skips the model: the transport's floor.
- ``GET /v1/metadata``, ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

The hot path reads the raw body and validates it with numpy instead of a pydantic model: at a few hundred
microseconds per request, model validation and `jsonable_encoder` would cost more than the inference.
Status codes: 400 malformed body, 401 token, 404 unknown model, 413 body too large, 415 content type,
422 well-formed but invalid (sizes, NaN/Inf, non-numbers, nesting, empty or too large batch), 503 queue full
or shutting down, 504 inference slower than the per-request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from deepcrl.errors import ArtifactError, DeepcrlError
from deepcrl.serve import protocol
from deepcrl.serve.metrics import ServeMetrics
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.runner import MicroBatcher, OnnxModel, Overloaded

if TYPE_CHECKING:
    from deepcrl.serve.config import ServeConfig

_log = logging.getLogger("deepcrl.serve")
_MEDIA = {"json": protocol.JSON, "msgpack": protocol.MSGPACK}
_MEDIA_BYTES = {k: v.encode() for k, v in _MEDIA.items()}


def _token_ok(given: bytes | None, expected: bytes) -> bool:
    """Constant-time comparison of an Authorization header with ``Bearer <token>``."""
    return given is not None and hmac.compare_digest(given, expected)


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

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.fast_act is not None:
            path = scope["path"]
            if path == "/v1/act":
                return await self.fast_act(scope, receive, send, None, "act")
            if path == "/v1/noop":
                return await self.fast_act(scope, receive, send, None, "noop")
            if path.startswith("/v1/models/") and path.endswith("/act") and path.count("/") == 4:
                return await self.fast_act(scope, receive, send, path[11:-4], "act")
        await super().__call__(scope, receive, send)


class _Served:
    """One model and its batcher."""

    def __init__(self, model: OnnxModel, batcher: MicroBatcher, max_batch: int, max_delay_us: int):
        self.model, self.batcher = model, batcher
        self.info = {
            "name": model.name,
            "obs_size": model.obs_size,
            "goal_size": model.goal_size,
            "action_size": model.action_size,
            "max_batch": max_batch,
            "max_delay_us": max_delay_us,
            "metadata": model.metadata,
        }


def _model_paths(model_path: Path) -> list[Path]:
    if model_path.is_dir():
        paths = sorted(model_path.glob("*.onnx"))
        if not paths:
            raise ArtifactError(f"{model_path} holds no .onnx files; export one with `deepcrl export`.")
        return paths
    if not model_path.exists():
        raise ArtifactError(f"{model_path} does not exist; pass an .onnx file from `deepcrl export` or a "
                            "directory of them.")
    return [model_path]


def create_app(model_path: str | Path, *, max_batch: int = 64, max_delay_us: int = 0, token: str | None = None,
               max_body_bytes: int = 1_000_000, timeout_s: float = 2.0, default_model: str | None = None,
               intra_op_threads: int = 1, warmup: int = 32) -> FastAPI:
    """Build the server app: loads every model once and warms it up before returning.

    Args:
        model_path: an .onnx file from `deepcrl export`, or a directory of them (served by file stem).
        max_batch: most rows per ORT call and per request.
        max_delay_us: longest a request waits for others to share its call (0: never).
        token: bearer token required on /v1/* and /metrics (None: no auth).
        max_body_bytes: largest accepted body (413 above).
        timeout_s: per-request limit on waiting for inference (504 past it).
        default_model: the model the short routes serve (default: first name in sorted order).
        intra_op_threads: ORT threads per call.
        warmup: inference calls per model before the app is returned.

    Returns:
        A FastAPI app; its batcher threads start with the app's lifespan (any ASGI server runs it).
    """
    if max_batch < 1:
        raise DeepcrlError(f"max_batch must be at least 1, got {max_batch}.")
    if max_delay_us < 0:
        raise DeepcrlError(f"max_delay_us must be 0 or more, got {max_delay_us}.")
    if token is not None and not token:
        raise DeepcrlError("the bearer token is empty; set the variable named by --token-env to a secret.")
    metrics = ServeMetrics(max_batch)
    served: dict[str, _Served] = {}
    for path in _model_paths(Path(model_path)):
        model = OnnxModel(path, intra_op_threads=intra_op_threads)
        model.warmup(warmup, batch_sizes=tuple(sorted({1, min(8, max_batch), max_batch})))
        batcher = MicroBatcher(model, max_batch=max_batch, max_delay_us=max_delay_us, metrics=metrics)
        served[model.name] = _Served(model, batcher, max_batch, max_delay_us)
    default = default_model or next(iter(served))
    if default not in served:
        raise DeepcrlError(f"--default-model {default!r} is not among the served models ({', '.join(served)}).")
    state = {"ready": False}
    expected_auth = f"Bearer {token}".encode() if token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        for s in served.values():
            s.batcher.start(loop)
        state["ready"] = True
        try:
            yield
        finally:
            # The ASGI server has drained in-flight requests by now; the batchers finish whatever is queued.
            state["ready"] = False
            for s in served.values():
                await asyncio.to_thread(s.batcher.stop)

    app = PolicyApp(title="deepcrl policy server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.served, app.state.metrics, app.state.default = served, metrics, default
    app.state.max_body_bytes = max_body_bytes  # uvicorn_config applies it to WebSocket frames too

    def authorized(headers) -> bool:
        if expected_auth is None:
            return True
        given = headers.get("authorization")
        return _token_ok(given.encode("latin-1") if given is not None else None, expected_auth)

    def lookup(name: str | None) -> _Served:
        found = served.get(default if name is None else name)
        if found is None:
            raise RequestError(404, f"no model named {name!r}; served models: {', '.join(sorted(served))}.")
        return found

    def error_response(exc: RequestError, fmt: str) -> Response:  # for the non-inference routes
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return Response(protocol.encode({"error": str(exc), "status": exc.status}, fmt), exc.status,
                        headers=headers, media_type=_MEDIA[fmt])

    async def read_body(receive, length: str | None) -> bytes:
        """The body from ASGI messages, refusing more than `max_body_bytes` (announced or actually sent)."""
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, "the Content-Length header is not a number.")
            if int(length) > max_body_bytes:
                raise RequestError(413, f"the body is {length} bytes; the limit is {max_body_bytes}.")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client disconnected before sending the whole body.")
            body += message.get("body", b"")
            if len(body) > max_body_bytes:
                raise RequestError(413, f"the body exceeds the limit of {max_body_bytes} bytes.")
            if not message.get("more_body", False):
                return body

    async def infer(s: _Served, obs, goal):
        try:
            future = s.batcher.submit(obs, goal)
        except Overloaded as exc:
            raise RequestError(503, f"the server is overloaded ({exc}); retry later.") from None
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise RequestError(504, f"inference did not finish within {timeout_s} s.") from None

    async def act(headers: dict[bytes, bytes], receive, name: str | None, endpoint: str):
        """Answer one /v1/act (or /v1/noop) request: ``(status, media type, body, extra headers)``."""
        start = time.perf_counter()
        get = headers.get
        accept = get(b"accept")
        accept = accept.decode("latin-1") if accept else None
        fmt = protocol.reply_format(accept, "json")
        status, timed, extra = 200, False, []
        metrics.in_flight.inc()
        try:
            if expected_auth is not None and not _token_ok(get(b"authorization"), expected_auth):
                raise RequestError(401, "a valid bearer token is required (Authorization: Bearer <token>).")
            content_type = get(b"content-type")
            in_fmt = protocol.body_format(content_type.decode("latin-1") if content_type else None)
            fmt = protocol.reply_format(accept, in_fmt)
            s = lookup(name)
            length = get(b"content-length")
            body = await read_body(receive, length.decode("latin-1") if length is not None else None)
            obs, goal, batched = protocol.parse_act(protocol.decode(body, in_fmt), s.model.obs_size,
                                                    s.model.goal_size, s.batcher.max_batch)
            if endpoint == "noop":
                reply: dict[str, Any] = {"ok": True}
            else:
                actions, timing = await infer(s, obs, goal)
                timed = True
                total_us = (time.perf_counter() - start) * 1e6
                if fmt == "msgpack":
                    actions = actions.tolist()
                reply = {"actions" if batched else "action": actions if batched else actions[0],
                         "timing": {"server_us": round(total_us, 1), "queue_us": round(timing.queue_us, 1),
                                    "infer_us": round(timing.infer_us, 1), "batch_rows": timing.batch_rows}}
                extra.append((b"server-timing", (f"total;dur={total_us / 1e3:.3f}, queue;dur="
                                                 f"{timing.queue_us / 1e3:.3f}, infer;dur="
                                                 f"{timing.infer_us / 1e3:.3f}").encode()))
            content = protocol.encode(reply, fmt)
        except RequestError as exc:
            status = exc.status
            content = protocol.encode({"error": str(exc), "status": exc.status}, fmt)
            if status == 401:
                extra.append((b"www-authenticate", b"Bearer"))
        except Exception as exc:  # not the client's fault (e.g. ORT failed): 500 with a sentence, server lives on
            _log.exception("inference failed")
            status = 500
            content = protocol.encode({"error": f"inference failed ({type(exc).__name__}: {exc}).",
                                       "status": 500}, fmt)
        finally:
            metrics.in_flight.dec()
        metrics.observe(endpoint, fmt, status, (time.perf_counter() - start) if timed else None)
        return status, _MEDIA_BYTES[fmt], content, extra

    async def act_route(request: Request, name: str | None, endpoint: str) -> Response:
        status, media, content, extra = await act(dict(request.scope["headers"]), request.receive, name, endpoint)
        response = Response(content, status, media_type=media.decode())
        for key, value in extra:
            response.headers[key.decode()] = value.decode()
        return response

    async def fast_act(scope, receive, send, name: str | None, endpoint: str) -> None:
        """The same answer as the routes, sent as raw ASGI messages (see `PolicyApp`)."""
        status, media, content, extra = await act(dict(scope["headers"]), receive, name, endpoint)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", media), (b"content-length", str(len(content)).encode()), *extra]})
        await send({"type": "http.response.body", "body": content})

    app.fast_act = fast_act

    @app.post("/v1/act")
    async def act_default(request: Request) -> Response:
        return await act_route(request, None, "act")

    @app.post("/v1/models/{name}/act")
    async def act_named(request: Request, name: str) -> Response:
        return await act_route(request, name, "act")

    @app.post("/v1/noop")
    async def noop(request: Request) -> Response:
        return await act_route(request, None, "noop")

    def json_or_error(request: Request, build) -> Response:
        fmt = protocol.reply_format(request.headers.get("accept"), "json")
        try:
            if not authorized(request.headers):
                raise RequestError(401, "a valid bearer token is required (Authorization: Bearer <token>).")
            return Response(protocol.encode(build(), fmt), media_type=_MEDIA[fmt])
        except RequestError as exc:
            return error_response(exc, fmt)

    @app.get("/v1/metadata")
    async def metadata_default(request: Request) -> Response:
        return json_or_error(request, lambda: {**lookup(None).info, "models": sorted(served)})

    @app.get("/v1/models/{name}/metadata")
    async def metadata_named(request: Request, name: str) -> Response:
        return json_or_error(request, lambda: {**lookup(name).info, "models": sorted(served)})

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return json_or_error(request, lambda: {"default": default, "models": [s.info for s in served.values()]})

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"alive"}', media_type=protocol.JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = state["ready"]
        body = protocol.encode({"ready": ok, "models": sorted(served)}, "json")
        return Response(body, 200 if ok else 503, media_type=protocol.JSON)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        if not authorized(request.headers):
            return error_response(RequestError(401, "a valid bearer token is required."), "json")
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def stream(ws: WebSocket, name: str | None) -> None:
        if not authorized(ws.headers):
            await ws.close(code=1008, reason="a valid bearer token is required")  # before accept: HTTP 403
            return
        try:
            s = lookup(name)
        except RequestError as exc:
            await ws.close(code=1008, reason=str(exc)[:120])
            return
        await ws.accept()
        pack = msgpack.Packer(default=protocol._msgpack_default, use_bin_type=True).pack
        try:
            await ws.send_bytes(pack({"type": "metadata", **s.info}))
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                start = time.perf_counter()
                frame_id, status, timed = None, 200, False
                try:
                    data = message.get("bytes")
                    if data is None:
                        raise RequestError(400, "send binary msgpack frames; text frames are not accepted.")
                    payload = protocol.decode(data, "msgpack")
                    if isinstance(payload, dict):
                        frame_id = payload.pop("id", None)
                        if payload.get("type") == "ping":
                            await ws.send_bytes(pack({"type": "pong", "id": frame_id}))
                            metrics.observe("noop", "ws", 200, None)
                            continue
                    obs, goal, batched = protocol.parse_act(payload, s.model.obs_size, s.model.goal_size,
                                                            s.batcher.max_batch)
                    actions, timing = await infer(s, obs, goal)
                    timed = True
                    actions = actions.tolist()
                    reply = {"type": "action", "id": frame_id,
                             "actions" if batched else "action": actions if batched else actions[0],
                             "timing": {"server_us": round((time.perf_counter() - start) * 1e6, 1),
                                        "queue_us": round(timing.queue_us, 1), "infer_us": round(timing.infer_us, 1),
                                        "batch_rows": timing.batch_rows}}
                except RequestError as exc:
                    status = exc.status
                    reply = {"type": "error", "id": frame_id, "status": exc.status, "error": str(exc)}
                await ws.send_bytes(pack(reply))
                metrics.observe("stream", "ws", status, (time.perf_counter() - start) if timed else None)
        except WebSocketDisconnect:
            return

    @app.websocket("/v1/stream")
    async def stream_default(ws: WebSocket) -> None:
        await stream(ws, None)

    @app.websocket("/v1/models/{name}/stream")
    async def stream_named(ws: WebSocket, name: str) -> None:
        await stream(ws, name)

    return app


# ---- running it -------------------------------------------------------------------------------------------


def uvicorn_config(app, *, log_level: str = "warning", max_body_bytes: int | None = None,
                   graceful_timeout_s: int = 10):
    """uvicorn settings for low latency: uvloop + httptools when installed, no access log, no WS deflate.

    `max_body_bytes` caps WebSocket frames (default: the limit `create_app` was given).
    """
    import importlib.util

    import uvicorn

    if max_body_bytes is None:
        max_body_bytes = getattr(getattr(app, "state", None), "max_body_bytes", 1_000_000)
    has = importlib.util.find_spec
    return uvicorn.Config(
        app, loop="uvloop" if has("uvloop") else "asyncio", http="httptools" if has("httptools") else "h11",
        ws="websockets-sansio", ws_max_size=max_body_bytes, ws_per_message_deflate=False, log_level=log_level,
        access_log=False, timeout_graceful_shutdown=graceful_timeout_s, lifespan="on", server_header=False,
        date_header=False)


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: a free one), so callers know the port before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeepcrlError(f"cannot bind {host}:{port} ({exc.strerror}); choose another --port or --host.") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RunningServer:
    """A uvicorn server on a background thread (tests, benchmarks, notebooks). `stop()` shuts it down
    gracefully: in-flight requests finish first."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, **config_kwargs):
        import uvicorn

        self.sock = bind(host, port)
        self.url = url_of(self.sock)
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

    token = None
    if cfg.token_env:
        token = os.environ.get(cfg.token_env)
        if not token:
            raise DeepcrlError(f"--token-env names {cfg.token_env}, but that environment variable is unset or "
                               "empty.")
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"deepcrl serve: warning: listening on {cfg.host} without a token (--token-env).", file=sys.stderr)
    app = create_app(cfg.model, max_batch=cfg.max_batch, max_delay_us=cfg.max_delay_us, token=token,
                     max_body_bytes=cfg.max_body_bytes, timeout_s=cfg.timeout_s, default_model=cfg.default_model,
                     intra_op_threads=cfg.intra_op_threads, warmup=cfg.warmup)
    sock = bind(cfg.host, cfg.port)
    url = url_of(sock)
    names = ", ".join(app.state.served)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                print(f"deepcrl serve: ready at {url} (models: {names}; default {app.state.default}; "
                      f"max_batch {cfg.max_batch}, max_delay_us {cfg.max_delay_us}, "
                      f"auth {'on' if token else 'off'})", flush=True)

    _Server(uvicorn_config(app, log_level=cfg.log_level)).run(sockets=[sock])
