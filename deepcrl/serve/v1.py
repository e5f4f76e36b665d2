"""The /v1 HTTP routes (and /healthz, /readyz, /metrics) of the policy server.

- ``POST /v1/act`` (``/v1/models/{name}/act``): ``{"observation", "goal"}`` -> ``{"action"}``, or
  ``{"observations", "goals"}`` -> ``{"actions"}``; JSON or msgpack both ways; every answer carries ``timing``
  (µs) and a Server-Timing header.
- ``POST /v1/noop``: reads and checks the body like /v1/act but skips the model: the transport's floor.
- ``GET /v1/metadata`` (``/v1/models/{name}/metadata``), ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``,
  ``GET /metrics``.

The hot path reads the raw body and validates it with numpy instead of a pydantic model: at a few hundred
microseconds per request, model validation and `jsonable_encoder` would cost more than the inference.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from deepcrl.serve import protocol
from deepcrl.serve.admission import TIMEOUT_FIELD, TIMEOUT_HEADER, requested_timeout_s
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.runner import InferenceError
from deepcrl.serve.shared import MEDIA_BYTES, NEEDS_TOKEN, PolicyServer, timing_fields

_log = logging.getLogger("deepcrl.serve")


def add_routes(app: FastAPI, server: PolicyServer):
    """Add the /v1 HTTP routes to `app`; returns the raw-ASGI act handler
    ``fast_act(scope, receive, send, name, endpoint)`` that `PolicyApp` calls on its fast path."""
    metrics = server.metrics

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
            if not server.token_ok(get(b"authorization")):
                raise RequestError(401, NEEDS_TOKEN)
            content_type = get(b"content-type")
            in_fmt = protocol.body_format(content_type.decode("latin-1") if content_type else None)
            fmt = protocol.reply_format(accept, in_fmt)
            s = server.lookup(name)
            timeout_s = requested_timeout_s(get(TIMEOUT_HEADER), "the X-Timeout-Us header")
            length = get(b"content-length")
            body = await server.read_body(receive, length.decode("latin-1") if length is not None else None)
            payload = protocol.decode(body, in_fmt)
            if isinstance(payload, dict) and TIMEOUT_FIELD in payload:
                field_s = requested_timeout_s(payload.pop(TIMEOUT_FIELD), f"'{TIMEOUT_FIELD}'")
                timeout_s = field_s if timeout_s is None else min(timeout_s, field_s)
            obs, goal, batched = protocol.parse_act(payload, s.model.obs_size, s.model.goal_size,
                                                    s.batcher.max_batch)
            if endpoint == "noop":
                reply: dict[str, Any] = {"ok": True}
            else:
                actions, timing, s = await server.infer(s, obs, goal, start=start, timeout_s=timeout_s)
                timed = True
                extra.append((b"x-model-version", s.version.encode()))
                metrics.answered.labels(s.model.name, s.version).inc()
                total_us = (time.perf_counter() - start) * 1e6
                if fmt == "msgpack":
                    actions = actions.tolist()
                reply = {**protocol.act_reply(actions, batched), "timing": timing_fields(total_us, timing)}
                extra.append((b"server-timing", (f"total;dur={total_us / 1e3:.3f}, queue;dur="
                                                 f"{timing.queue_us / 1e3:.3f}, infer;dur="
                                                 f"{timing.infer_us / 1e3:.3f}").encode()))
            content = protocol.encode(reply, fmt)
        except RequestError as exc:
            status = exc.status
            content = server.error_body(exc, fmt)
            if status == 401:
                extra.append((b"www-authenticate", b"Bearer"))
            elif status == 503:
                extra.append((b"retry-after", b"1"))
        except InferenceError as exc:  # not the client's fault: 500 with a sentence, the server lives on
            _log.error("%s", exc, exc_info=exc.__cause__)
            status = 500
            content = protocol.encode({"error": str(exc), "status": 500}, fmt)
        finally:
            metrics.in_flight.dec()
        metrics.observe(endpoint, fmt, status, (time.perf_counter() - start) if timed else None)
        return status, MEDIA_BYTES[fmt], content, extra

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

    @app.post("/v1/act")
    async def act_default(request: Request) -> Response:
        return await act_route(request, None, "act")

    @app.post("/v1/models/{name}/act")
    async def act_named(request: Request, name: str) -> Response:
        return await act_route(request, name, "act")

    @app.post("/v1/noop")
    async def noop(request: Request) -> Response:
        return await act_route(request, None, "noop")

    @app.get("/v1/metadata")
    async def metadata_default(request: Request) -> Response:
        return server.answer(request, lambda: {**server.lookup(None).info, "models": sorted(server.served)})

    @app.get("/v1/models/{name}/metadata")
    async def metadata_named(request: Request, name: str) -> Response:
        return server.answer(request, lambda: {**server.lookup(name).info, "models": sorted(server.served)})

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return server.answer(request, lambda: {"default": server.default,
                                               "models": [s.info for s in server.served.values()]})

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"alive"}', media_type=protocol.JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = server.ready
        body = protocol.encode({"ready": ok, "models": sorted(server.served)}, "json")
        return Response(body, 200 if ok else 503, media_type=protocol.JSON)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        if not server.authorized(request.headers):
            return server.error_response(RequestError(401, NEEDS_TOKEN), "json")
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return fast_act
