"""The WebSocket stream of the policy server: ``WS /v1/stream`` (``/v1/models/{name}/stream``).

For control loops: a metadata frame first, then one answer per request frame (an ``id`` in a frame is echoed
back; ``{"type": "ping"}`` gets a pong). Binary frames are msgpack (the fast path); text frames are JSON and
are answered with JSON text frames holding the same fields, so a browser console or ``websocat`` can talk to
it. The metadata frame is msgpack unless the URL asks for ``?format=json``. A bad frame gets an error frame,
in the format it came in, with the HTTP status and sentence a POST would get, and the connection stays open.
A frame over the size limit closes it (code 1009, enforced by uvicorn). The bearer token, when set, goes in
the handshake's Authorization header (refused handshake: HTTP 403).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from deepcrl.serve import protocol
from deepcrl.serve.admission import RETRY_AFTER_S, TIMEOUT_FIELD, requested_timeout_s
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.runner import InferenceError
from deepcrl.serve.shared import PolicyServer, Served, timing_fields

_log = logging.getLogger("deepcrl.serve")


FRAME_FORMATS = ("msgpack", "json")


def frame_format(message: dict[str, Any]) -> str:
    """How a received WebSocket message is encoded, and its answer too: text frames JSON, binary msgpack."""
    return "msgpack" if message.get("bytes") is not None else "json"


def frame_payload(message: dict[str, Any]) -> Any:
    """The decoded request of one received WebSocket message (400 for malformed JSON or msgpack)."""
    if message.get("bytes") is not None:
        return protocol.decode(message["bytes"], "msgpack")
    return protocol.decode((message.get("text") or "").encode("utf-8"), "json")


async def answer_frame(server: PolicyServer, s: Served, payload: Any, frame_id: Any, start: float):
    """The reply to one request frame and whether it reached the model: ``(reply, status, timed)``.

    A frame's ``timeout_us`` shortens its deadline (counted from its arrival); past the process's bound on
    requests in flight the frame gets a 503 error frame with ``retry_after_s``.
    """
    admission = server.admission
    if not admission.enter():
        server.metrics.refused.labels("in_flight").inc()
        return ({"type": "error", "id": frame_id, "status": 503, "error": admission.refusal(),
                 "retry_after_s": RETRY_AFTER_S}, 503, False)
    try:
        timeout_s = None
        if isinstance(payload, dict) and TIMEOUT_FIELD in payload:
            timeout_s = requested_timeout_s(payload.pop(TIMEOUT_FIELD), f"'{TIMEOUT_FIELD}'")
        obs, goal, batched = protocol.parse_act(payload, s.model.obs_size, s.model.goal_size, s.batcher.max_batch)
        actions, timing, s = await server.infer(s, obs, goal, start=start, timeout_s=timeout_s)
    except RequestError as exc:
        return {"type": "error", "id": frame_id, "status": exc.status, "error": str(exc)}, exc.status, False
    except InferenceError as exc:  # not the client's fault: an error frame, the connection stays open
        _log.error("%s", exc, exc_info=exc.__cause__)
        return {"type": "error", "id": frame_id, "status": 500, "error": str(exc)}, 500, False
    finally:
        admission.leave(start)
    server.metrics.answered.labels(s.model.name, s.version).inc()
    actions = actions.tolist()
    reply = {"type": "action", "id": frame_id, **protocol.act_reply(actions, batched),
             "model_version": s.version, "timing": timing_fields((time.perf_counter() - start) * 1e6, timing)}
    return reply, 200, True


def add_routes(app: FastAPI, server: PolicyServer) -> None:
    """Add the WebSocket stream routes to `app`."""
    metrics = server.metrics

    async def stream(ws: WebSocket, name: str | None) -> None:
        if not server.authorized(ws.headers):
            await ws.close(code=1008, reason="a valid bearer token is required")  # before accept: HTTP 403
            return
        try:
            s = server.lookup(name)
        except RequestError as exc:
            await ws.close(code=1008, reason=str(exc)[:120])
            return
        first = ws.query_params.get("format", "msgpack")
        if first not in FRAME_FORMATS:
            await ws.close(code=1008, reason=f"format must be msgpack or json, not {first[:40]!r}")
            return
        await ws.accept()
        pack = msgpack.Packer(default=protocol.msgpack_default, use_bin_type=True).pack

        async def send(obj: Any, fmt: str) -> None:
            if fmt == "json":
                await ws.send_text(protocol.encode(obj, "json").decode("utf-8"))
            else:
                await ws.send_bytes(pack(obj))

        try:
            await send({"type": "metadata", **s.info}, first)
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                start = time.perf_counter()
                frame_id, fmt = None, frame_format(message)
                try:
                    payload = frame_payload(message)
                except RequestError as exc:
                    reply, status, timed = {"type": "error", "id": None, "status": exc.status,
                                            "error": str(exc)}, exc.status, False
                else:
                    if isinstance(payload, dict):
                        frame_id = payload.pop("id", None)
                        if payload.get("type") == "ping":
                            await send({"type": "pong", "id": frame_id}, fmt)
                            metrics.observe("noop", "ws", 200, None)
                            continue
                    reply, status, timed = await answer_frame(server, s, payload, frame_id, start)
                await send(reply, fmt)
                metrics.observe("stream", "ws", status, (time.perf_counter() - start) if timed else None)
        except WebSocketDisconnect:
            return

    @app.websocket("/v1/stream")
    async def stream_default(ws: WebSocket) -> None:
        await stream(ws, None)

    @app.websocket("/v1/models/{name}/stream")
    async def stream_named(ws: WebSocket, name: str) -> None:
        await stream(ws, name)
