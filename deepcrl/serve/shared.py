"""What every router of the policy server shares: the served models, auth, limits, body reading, inference
with its time limit, and error answers.

A router (the /v1 HTTP routes in `v1.py`, the WebSocket stream in `stream.py`, or a new one) gets the one
`PolicyServer` of its app and builds its routes from these pieces, so every protocol refuses the same
requests with the same status and sentence.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from deepcrl import contract
from deepcrl.errors import ArtifactError
from deepcrl.onnx_policy import OnnxPolicy
from deepcrl.policy import open_policy
from deepcrl.serve import protocol
from deepcrl.serve.admission import Admission, deadline
from deepcrl.serve.device import check_providers, providers_for
from deepcrl.serve.metrics import ServeMetrics
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.runner import DeadlineExceeded, MicroBatcher, Overloaded, Timing

MEDIA = {"json": protocol.JSON, "msgpack": protocol.MSGPACK}
MEDIA_BYTES = {k: v.encode() for k, v in MEDIA.items()}
NEEDS_TOKEN = "a valid bearer token is required (Authorization: Bearer <token>)."


class Served:
    """One version of a model, its batcher, and the facts /v1/metadata reports about it.

    A load that replaces it sets `replacement` (requests that looked it up before the swap go there) and
    stops its batcher once the requests already queued on it are answered.
    """

    def __init__(self, model: OnnxPolicy, batcher: MicroBatcher, max_batch_size: int, max_queue_delay_us: int,
                 version: str = "1"):
        self.model, self.batcher, self.version = model, batcher, version
        self.replacement: Served | None = None
        self.retired = False
        self.info = {
            "name": model.name,
            "version": version,
            contract.OBS_SIZE: model.obs_size,
            contract.GOAL_SIZE: model.goal_size,
            contract.ACTION_SIZE: model.action_size,
            "max_batch_size": max_batch_size,
            "max_queue_delay_us": max_queue_delay_us,
            # the same facts under their old keys, for clients of the previous release (drop in the next one)
            "max_batch": max_batch_size,
            "max_delay_us": max_queue_delay_us,
            "metadata": model.metadata,
        }


def model_paths(model_path: Path) -> list[Path]:
    """The .onnx files to serve: `model_path` itself, or every .onnx file in it when it is a directory."""
    if model_path.is_dir():
        paths = sorted(model_path.glob("*.onnx"))
        if not paths:
            raise ArtifactError(f"{model_path} holds no .onnx files; export one with `deepcrl export`.")
        return paths
    if not model_path.exists():
        raise ArtifactError(f"{model_path} does not exist; pass an .onnx file from `deepcrl export` or a "
                            "directory of them.")
    return [model_path]


INLINE_MAX_US = 300.0
"""A model whose calls average less than this is called on the event loop's thread (`runner.MicroBatcher`)."""


def load_one(path: Path, metrics: ServeMetrics, *, max_batch_size: int, max_queue_delay_us: int,
             intra_op_threads: int, warmup: int, version: str = "1", device: str = "cpu") -> Served:
    """Load and warm up one model file on `device` (its provider checked: `device.py`) with its batcher (not
    started yet)."""
    model = open_policy(model=path, onnx_options={"providers": providers_for(device),
                                                  "intra_op_threads": intra_op_threads}).policy
    running = model.session.get_providers()
    check_providers(device, running, path)
    model.warmup(warmup, batch_sizes=tuple(sorted({1, min(8, max_batch_size), max_batch_size})))
    batcher = MicroBatcher(model, max_batch=max_batch_size, max_delay_us=max_queue_delay_us, metrics=metrics,
                           inline_max_us=INLINE_MAX_US)
    served = Served(model, batcher, max_batch_size, max_queue_delay_us, version)
    served.info["device"], served.info["providers"] = device, running
    return served


def load_models(model_path: str | Path, metrics: ServeMetrics, *, max_batch_size: int, max_queue_delay_us: int,
                intra_op_threads: int, warmup: int, device: str = "cpu") -> dict[str, Served]:
    """Load and warm up every model once on `device`, each with its batcher (not started yet)."""
    served: dict[str, Served] = {}
    for path in model_paths(Path(model_path)):
        s = load_one(path, metrics, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                     intra_op_threads=intra_op_threads, warmup=warmup, device=device)
        served[s.model.name] = s
    return served


def timing_fields(total_us: float, timing: Timing) -> dict[str, Any]:
    """The ``timing`` map of an answer, in microseconds."""
    return {"server_us": round(total_us, 1), "queue_us": round(timing.queue_us, 1),
            "infer_us": round(timing.infer_us, 1), "batch_rows": timing.batch_rows}


class PolicyServer:
    """The state of one server app and the pieces its routes are made of.

    Args:
        served: the models by name.
        default: the name the short routes (no model name) serve.
        metrics: the app's Prometheus metrics.
        token: bearer token required on /v1/* and /metrics (None: no auth).
        max_body_bytes: largest accepted body or frame (413 above).
        timeout_s: the default deadline of a request, from its arrival (504 past it); a request may shorten it.
        max_in_flight: most inference requests this process holds at a time (503 + Retry-After above it).
    """

    def __init__(self, served: dict[str, Served], default: str, metrics: ServeMetrics, *, token: str | None,
                 max_body_bytes: int, timeout_s: float, max_in_flight: int = 128):
        self.served, self.default, self.metrics = served, default, metrics
        self.max_body_bytes, self.timeout_s = max_body_bytes, timeout_s

        def on_limit(limit: int, shed: bool) -> None:
            metrics.in_flight_limit.set(limit)
            if shed:
                metrics.sheds.inc()

        self.admission = Admission(max_in_flight, on_limit)
        self.ready = False
        self._expected = f"Bearer {token}".encode() if token else None

    # ---- auth -----------------------------------------------------------------------------------------------

    def token_ok(self, authorization: bytes | None) -> bool:
        """Whether a raw Authorization header carries the token (constant-time; always true without auth)."""
        if self._expected is None:
            return True
        return authorization is not None and hmac.compare_digest(authorization, self._expected)

    def authorized(self, headers) -> bool:
        """`token_ok` for Starlette headers (HTTP requests and WebSocket handshakes)."""
        given = headers.get("authorization")
        return self.token_ok(given.encode("latin-1") if given is not None else None)

    # ---- models and bodies ------------------------------------------------------------------------------------

    def lookup(self, name: str | None) -> Served:
        """The model called `name` (the default one for None); 404 for an unknown name."""
        found = self.served.get(self.default if name is None else name)
        if found is None:
            raise RequestError(404, f"no model named {name!r}; served models: {', '.join(sorted(self.served))}.")
        return found

    async def read_body(self, receive, length: str | None) -> bytes:
        """The body from ASGI messages, refusing more than `max_body_bytes` (announced or actually sent)."""
        limit = self.max_body_bytes
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, "the Content-Length header is not a number.")
            if int(length) > limit:
                raise RequestError(413, f"the body is {length} bytes; the limit is {limit}.")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client disconnected before sending the whole body.")
            body += message.get("body", b"")
            if len(body) > limit:
                raise RequestError(413, f"the body exceeds the limit of {limit} bytes.")
            if not message.get("more_body", False):
                return body

    async def infer(self, s: Served, obs, goal, *, start: float | None = None, timeout_s: float | None = None):
        """``(actions, Timing, the Served version that computed them)`` for validated rows.

        The deadline is `start` (the request's arrival; now when None) plus the server's timeout, or plus
        `timeout_s` when the request asks for less. 504 once it passes (a request still queued then is not
        computed), 503 when the queue is full; a model failure raises `InferenceError` (a 500).
        """
        while s.retired and s.replacement is not None:  # looked up before a load replaced it
            s = s.replacement
        now = time.perf_counter()
        due = deadline(now if start is None else start, self.timeout_s, timeout_s)
        budget = f"{due - (now if start is None else start):.6g} s"
        if due <= now:
            self.metrics.deadline_exceeded.labels("arrival").inc()
            raise RequestError(504, f"the request's deadline ({budget}) passed before its inference started.")
        while True:
            try:
                future = s.batcher.submit(obs, goal, due)
                break
            except Overloaded as exc:
                if s.retired and s.replacement is not None:  # replaced while this request was read: the new one
                    s = s.replacement
                    continue
                if s.retired:
                    raise RequestError(404, f"the model {s.model.name!r} was unloaded.") from exc
                self.metrics.refused.labels("queue").inc()
                raise RequestError(503, f"the server is overloaded ({exc}); retry later.") from exc
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + (due - time.perf_counter())):
                actions, timing = await future
        except DeadlineExceeded as exc:
            self.metrics.deadline_exceeded.labels("queue").inc()
            raise RequestError(504, f"the request's deadline ({budget}) passed while it was queued; it was not "
                                    "computed.") from exc
        except TimeoutError as exc:
            self.metrics.deadline_exceeded.labels("waiting").inc()
            raise RequestError(504, f"inference did not finish within {budget} (the request's deadline).") from exc
        return actions, timing, s

    # ---- answers ---------------------------------------------------------------------------------------------

    @staticmethod
    def error_body(exc: RequestError, fmt: str) -> bytes:
        return protocol.encode({"error": str(exc), "status": exc.status}, fmt)

    def error_response(self, exc: RequestError, fmt: str) -> Response:
        """A Starlette response for a refused request (with the Bearer challenge on 401)."""
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return Response(self.error_body(exc, fmt), exc.status, headers=headers, media_type=MEDIA[fmt])

    def answer(self, request: Request, build: Callable[[], Any]) -> Response:
        """An authorised, read-only answer (JSON or msgpack as the client accepts) of `build()`."""
        fmt = protocol.reply_format(request.headers.get("accept"), "json")
        try:
            if not self.authorized(request.headers):
                raise RequestError(401, NEEDS_TOKEN)
            return Response(protocol.encode(build(), fmt), media_type=MEDIA[fmt])
        except RequestError as exc:
            return self.error_response(exc, fmt)
