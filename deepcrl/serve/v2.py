"""The Open Inference Protocol (KServe v2) beside /v1, so Triton's, KServe's and MLServer's clients work here.

- ``GET /v2``: server metadata; ``GET /v2/health/live``, ``GET /v2/health/ready``.
- ``GET /v2/models/{name}`` (metadata: tensors ``observation`` [-1, obs] and ``goal`` [-1, goal] in,
  ``action`` [-1, act] out, FP32; ``parameters`` carry max_batch_size and the ONNX file's metadata_props),
  ``GET /v2/models/{name}/ready``.
- ``POST /v2/models/{name}/infer``: JSON tensors (``name``, ``shape``, ``datatype``, ``data`` flat or nested,
  row-major), or the binary tensor extension (an ``Inference-Header-Content-Length`` header; the JSON header
  is followed by the raw little-endian tensors named by ``parameters.binary_data_size``). The action comes
  back as JSON, or binary when the request asks (``outputs[].parameters.binary_data`` or
  ``parameters.binary_data_output``), as Triton does.
- ``/v2/models/{name}/versions/1/...`` address the one version a deepcrl model has.

Requests go through the same micro-batcher, body limit, token and metrics as /v1 and are refused with the
same statuses (400 malformed, 401 token, 404 model, 413 too large, 422 invalid tensors, 503 overloaded,
504 too slow); the answer to a refused request is the protocol's ``{"error": "<one sentence>"}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

import deepcrl
from deepcrl.contract import ACTION, GOAL, OBSERVATION
from deepcrl.serve import protocol
from deepcrl.serve.admission import requested_timeout_s
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.runner import InferenceError
from deepcrl.serve.shared import NEEDS_TOKEN, PolicyServer, Served

_log = logging.getLogger("deepcrl.serve")
HEADER_LENGTH = "inference-header-content-length"
VERSION = "1"
PLATFORM = "onnxruntime_onnx"


def _tensor(name: str, size: int) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [-1, size]}


def model_metadata(s: Served) -> dict[str, Any]:
    """The v2 metadata of a served model."""
    m = s.model
    return {"name": m.name, "versions": [s.version], "platform": PLATFORM,
            "inputs": [_tensor(OBSERVATION, m.obs_size), _tensor(GOAL, m.goal_size)],
            "outputs": [_tensor(ACTION, m.action_size)],
            "parameters": {"max_batch_size": s.info["max_batch_size"],
                           "max_queue_delay_us": s.info["max_queue_delay_us"],
                           "max_batch": s.info["max_batch_size"],  # the old key, for the previous release's client
                           **m.metadata}}


def server_metadata() -> dict[str, Any]:
    """The v2 server metadata."""
    return {"name": "deepcrl", "version": deepcrl.__version__, "extensions": ["binary_tensor_data"]}


def find_model(server: PolicyServer, name: str | None, version: str | None) -> Served:
    """The served model `name` (404 when unknown), checked against a requested `version` (None: any)."""
    s = server.lookup(name)
    if version not in (None, s.version):
        raise RequestError(404, f"model {name!r} has no version {version!r}; it serves version {s.version}.")
    return s


def _shape(value: Any, name: str, size: int, max_batch: int) -> list[int]:
    if not (isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in value)):
        raise RequestError(422, f"input '{name}' needs a 'shape' list of integers, [batch, {size}].")
    if len(value) != 2 or value[1] != size:
        raise RequestError(422, f"input '{name}' has shape {value} but the model expects [batch, {size}].")
    if not 1 <= value[0] <= max_batch:
        raise RequestError(422, f"input '{name}' has a batch of {value[0]} rows; the server takes 1 to "
                                f"{max_batch} per request.")
    return value


def from_bytes(raw, name: str, shape: list[int]) -> np.ndarray:
    """A tensor's float32 array from its raw little-endian bytes (HTTP's binary extension, gRPC's
    ``raw_input_contents``)."""
    if len(raw) != 4 * shape[0] * shape[1]:
        raise _byte_count(name, len(raw), shape)
    return np.frombuffer(raw, "<f4").reshape(shape)


def _byte_count(name: str, sent: int, shape: list[int]) -> RequestError:
    return RequestError(422, f"input '{name}' sends {sent} bytes of binary data; shape {shape} of FP32 needs "
                             f"{4 * shape[0] * shape[1]}.")


def from_numbers(data: Any, name: str, shape: list[int]) -> np.ndarray:
    """A tensor's float32 array from a list of numbers (JSON ``data``, flat or nested; gRPC ``fp32_contents``)."""
    count = shape[0] * shape[1]
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(422, f"input '{name}' has ragged 'data'; send {count} numbers, row-major.") from exc
    if arr.dtype.kind not in "fiu":
        raise RequestError(422, f"input '{name}' holds non-numeric or ragged data; send {count} numbers.")
    if arr.size != count:
        raise RequestError(422, f"input '{name}' has {arr.size} values but its shape {shape} needs {count}.")
    with np.errstate(over="ignore"):
        return arr.reshape(shape).astype(np.float32)


def check_inputs(tensors: Iterable[tuple[Any, Any, Any, Callable[[str, list[int]], np.ndarray]]],
                 s: Served) -> tuple[np.ndarray, np.ndarray]:
    """The v2 rules on input tensors, shared by HTTP (`parse_infer`) and gRPC (`grpc_service.py`):
    ``(observation[B, obs], goal[B, goal])`` from ``(name, datatype, shape, values)`` tuples, where
    ``values(name, shape)`` reads the tensor's float32 array once its name, datatype and shape passed."""
    sizes = {OBSERVATION: s.model.obs_size, GOAL: s.model.goal_size}
    arrays: dict[str, np.ndarray] = {}
    for name, datatype, shape, values in tensors:
        if name not in sizes:
            raise RequestError(422, f"unknown input {name!r}; the model's inputs are '{OBSERVATION}' and '{GOAL}'.")
        if name in arrays:
            raise RequestError(422, f"input '{name}' is sent twice.")
        if datatype != "FP32":
            raise RequestError(422, f"input '{name}' has datatype {datatype!r}; the model expects 'FP32'.")
        arrays[name] = values(name, _shape(shape, name, sizes[name], s.batcher.max_batch))
        if not np.isfinite(arrays[name]).all():
            raise RequestError(422, f"input '{name}' holds NaN or infinite values (or numbers too large for "
                                    "float32).")
    missing = [n for n in sizes if n not in arrays]
    if missing:
        raise RequestError(422, f"the request lacks input '{missing[0]}'.")
    obs, goal = arrays[OBSERVATION], arrays[GOAL]
    if obs.shape[0] != goal.shape[0]:
        raise RequestError(422, f"'{OBSERVATION}' has {obs.shape[0]} rows but '{GOAL}' has {goal.shape[0]}.")
    return obs, goal


def parse_infer(body: bytes, header_length: str | None, s: Served) -> tuple[np.ndarray, np.ndarray, dict, bool]:
    """Validate a v2 infer body: ``(observation[B, obs], goal[B, goal], request, binary)`` (request: the JSON
    part; binary: whether the action goes back as binary data)."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise RequestError(400, f"the Inference-Header-Content-Length {header_length!r} is not a length "
                                    f"within the {len(body)}-byte body.")
        head, binary = body[:int(header_length)], memoryview(body)[int(header_length):]
    else:
        head, binary = body, memoryview(b"")
    if not head:
        raise RequestError(400, "the request body is empty; send a JSON map with 'inputs'.")
    request = protocol.decode(head, "json")
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
        raise RequestError(422, "the body must be a JSON map whose 'inputs' is a list of tensors.")
    binary_output = _binary_output(request)
    offset = 0

    def values(tensor: dict[str, Any]) -> Callable[[str, list[int]], np.ndarray]:
        def read(name: str, shape: list[int]) -> np.ndarray:
            nonlocal offset
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if size is None:
                if not isinstance(tensor.get("data"), list):
                    raise RequestError(422, f"input '{name}' has no 'data' list (and no binary_data_size).")
                return from_numbers(tensor["data"], name, shape)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(400, f"input '{name}' has a binary_data_size that is not a byte count.")
            if size != 4 * shape[0] * shape[1]:
                raise _byte_count(name, size, shape)
            if offset + size > len(binary):
                raise RequestError(400, f"the body ends before the {size} bytes of binary data of input '{name}'.")
            offset += size
            return from_bytes(binary[offset - size:offset], name, shape)
        return read

    obs, goal = check_inputs(((t.get("name"), t.get("datatype"), t.get("shape"), values(t)) for t in inputs), s)
    if offset != len(binary):
        raise RequestError(400, f"the body carries {len(binary) - offset} bytes of binary data that no input "
                                "claims.")
    return obs, goal, request, binary_output


def _binary_output(request: dict) -> bool:
    """Whether the action goes back as binary data (refusing requested outputs the model does not have)."""
    default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    outputs = request.get("outputs")
    if outputs is None:
        return default
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError(422, "'outputs' must be a list of maps with a 'name'.")
    binary = default
    for o in outputs:
        if o.get("name") != ACTION:
            raise RequestError(422, f"unknown output {o.get('name')!r}; the model's output is '{ACTION}'.")
        binary = bool((o.get("parameters") or {}).get("binary_data", default))
    return binary


def infer_reply(s: Served, request: dict, actions: np.ndarray, binary: bool) -> tuple[bytes, list]:
    """The body and extra headers of a v2 infer answer."""
    out: dict[str, Any] = {"name": ACTION, "datatype": "FP32", "shape": list(actions.shape)}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(actions, "<f4").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
    else:
        out["data"] = actions.reshape(-1)
    reply: dict[str, Any] = {"model_name": s.model.name, "model_version": s.version, "outputs": [out]}
    if "id" in request:
        reply["id"] = request["id"]
    head = protocol.encode(reply, "json")
    if not binary:
        return head, []
    return head + raw, [("inference-header-content-length", str(len(head)))]


def add_routes(app: FastAPI, server: PolicyServer) -> None:
    """Add the v2 routes to `app`."""
    metrics = server.metrics

    def error(exc: RequestError) -> Response:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return Response(protocol.encode({"error": str(exc)}, "json"), exc.status, headers=headers,
                        media_type=protocol.JSON)

    def model(request: Request, name: str, version: str | None) -> Served:
        if not server.authorized(request.headers):
            raise RequestError(401, NEEDS_TOKEN)
        return find_model(server, name, version)

    def answer(request: Request, name: str, version: str | None, build) -> Response:
        try:
            return Response(protocol.encode(build(model(request, name, version)), "json"),
                            media_type=protocol.JSON)
        except RequestError as exc:
            return error(exc)

    @app.get("/v2")
    async def metadata_of_server() -> Response:
        return Response(protocol.encode(server_metadata(), "json"), media_type=protocol.JSON)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(b"", 200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(b"", 200 if server.ready else 503)

    async def metadata(request: Request, name: str, version: str | None = None) -> Response:
        return answer(request, name, version, model_metadata)

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        try:
            model(request, name, version)
        except RequestError as exc:
            return error(exc)
        return Response(b"", 200 if server.ready else 503)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        start = time.perf_counter()
        headers = request.headers
        status, timed, extra = 200, False, []
        metrics.in_flight.inc()
        header_length = headers.get(HEADER_LENGTH)
        fmt = "json" if header_length is None else "binary"
        try:
            s = model(request, name, version)
            body = await server.read_body(request.receive, headers.get("content-length"))
            obs, goal, parsed, binary = parse_infer(body, header_length, s)
            params = parsed.get("parameters") or {}
            timeout_s = requested_timeout_s(params.get("timeout") if isinstance(params, dict) else None,
                                            "parameters.timeout")
            actions, timing, s = await server.infer(s, obs, goal, start=start, timeout_s=timeout_s)
            metrics.answered.labels(s.model.name, s.version).inc()
            timed = True
            content, extra = infer_reply(s, parsed, actions, binary)
            total_ms = (time.perf_counter() - start) * 1e3
            extra.append(("server-timing", f"total;dur={total_ms:.3f}, queue;dur={timing.queue_us / 1e3:.3f}, "
                                           f"infer;dur={timing.infer_us / 1e3:.3f}"))
            media = "application/octet-stream" if binary else protocol.JSON
            response = Response(content, 200, media_type=media)
        except RequestError as exc:
            status = exc.status
            response = error(exc)
            if status == 503:
                response.headers["retry-after"] = "1"
        except InferenceError as exc:  # not the client's fault: 500 with a sentence, the server lives on
            _log.error("%s", exc, exc_info=exc.__cause__)
            status = 500
            response = Response(protocol.encode({"error": str(exc)}, "json"), 500, media_type=protocol.JSON)
        finally:
            metrics.in_flight.dec()
        for key, value in extra:
            response.headers[key] = value
        metrics.observe("v2_infer", fmt, status, (time.perf_counter() - start) if timed else None)
        return response

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, metadata, methods=["GET"])
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"])
        app.add_api_route(prefix + "/infer", infer, methods=["POST"])
