"""The Open Inference Protocol (KServe v2) over gRPC, in the same process and event loop as the HTTP server.

The service is ``inference.GRPCInferenceService`` from the code Triton generates from its ``grpc_service.proto``
and ships in ``tritonclient.grpc.service_pb2`` / ``service_pb2_grpc`` (the ``grpc`` extra), a superset of KServe's
``open_inference_grpc.proto`` with the same package, messages and field numbers, so KServe's and Triton's gRPC
clients both talk to it and no .proto is vendored here. A ``grpc.aio`` server is started in the app's lifespan
on uvicorn's event loop (`start`), so a gRPC request goes through the very `PolicyServer` an HTTP one does:
the in-flight bound (`--max-in-flight`), the bearer token (metadata ``authorization: Bearer <token>``), the
deadline (v2 ``parameters.timeout`` in microseconds and the call's gRPC deadline, whichever is sooner), the
micro-batcher, model versions and the Prometheus metrics (endpoint ``v2_infer`` / ``v2_stream_infer``, protocol
``grpc``). Request validation is v2.py's (`v2.check_inputs`); the largest message is ``--max-body-bytes``.

RPCs: ``ServerLive``, ``ServerReady``, ``ServerMetadata``, ``ModelReady``, ``ModelMetadata`` (these two need the
token, as their HTTP routes do), ``ModelInfer``, ``ModelStreamInfer``, and the model repository's
``RepositoryIndex``, ``RepositoryModelLoad`` and ``RepositoryModelUnload`` (the token too; the same `Repository`
as ``/v2/repository/*``, so ``--model-control`` and, under ``--workers N``, every worker apply; a load cannot
carry Triton's ``config`` or ``file:`` parameters). Triton's other RPCs (model config, statistics, shared
memory, trace, logs) answer UNIMPLEMENTED. Inputs come as
``raw_input_contents`` (what tritonclient sends) or ``contents.fp32_contents``; the action goes back as
``raw_output_contents``, as Triton answers.

A refused request gets the gRPC status of its HTTP one (`CODES`) and the same sentence; /metrics counts it under
its HTTP status number, and a call its client cancelled under 499. On a stream, a refused
message is answered in the stream (``error_message``, with the request's ``id`` in ``infer_response``) and the
stream goes on, as Triton does; a wrong token ends the stream with UNAUTHENTICATED. A stream computes up to
`STREAM_WINDOW` of its requests at a time (they share micro-batches) and answers each when it is ready: match
answers to requests by ``id``. It reads no further message while its window is full, so HTTP/2 flow control
pushes back on that one client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from deepcrl.contract import ACTION
from deepcrl.errors import DeepcrlError
from deepcrl.serve.admission import RETRY_AFTER_S, requested_timeout_s
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.control import check_load_parameters
from deepcrl.serve.repository import Repository
from deepcrl.serve.runner import InferenceError
from deepcrl.serve.shared import NEEDS_TOKEN, PolicyServer, Served
from deepcrl.serve.v2 import check_inputs, find_model, from_bytes, from_numbers, model_metadata, server_metadata

_log = logging.getLogger("deepcrl.serve")
S = grpc.StatusCode
CODES = {400: S.INVALID_ARGUMENT, 401: S.UNAUTHENTICATED, 404: S.NOT_FOUND, 409: S.FAILED_PRECONDITION,
         413: S.RESOURCE_EXHAUSTED, 415: S.INVALID_ARGUMENT, 422: S.INVALID_ARGUMENT, 500: S.INTERNAL,
         503: S.UNAVAILABLE, 504: S.DEADLINE_EXCEEDED}
"""The gRPC status of each HTTP status the server answers (gRPC's own mapping where it has one)."""
STREAM_WINDOW = 16
"""Most requests of one stream being computed at a time."""
GRACE_S = 5.0
"""At shutdown, how long calls in progress may take to finish before they are cancelled."""


def _parameter(params, key: str) -> Any:
    """The value of ``params[key]`` (an ``InferParameter``), None when absent."""
    if key not in params:
        return None
    p = params[key]
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def parse_request(request: pb.ModelInferRequest, s: Served) -> tuple[np.ndarray, np.ndarray]:
    """Validate a ModelInferRequest for `s` with v2's rules: ``(observation[B, obs], goal[B, goal])``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(400, f"the request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
                                "send one per input, or none and the values in contents.")

    def values(i: int, tensor):
        def read(name: str, shape: list[int]) -> np.ndarray:
            return from_bytes(raw[i], name, shape) if raw else from_numbers(list(tensor.contents.fp32_contents),
                                                                             name, shape)
        return read

    obs, goal = check_inputs(((t.name, t.datatype, list(t.shape), values(i, t))
                              for i, t in enumerate(request.inputs)), s)
    for out in request.outputs:
        if out.name != ACTION:
            raise RequestError(422, f"unknown output {out.name!r}; the model's output is '{ACTION}'.")
    return obs, goal


def infer_response(s: Served, request: pb.ModelInferRequest, actions: np.ndarray) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=s.model.name, model_version=s.version, id=request.id)
    out = response.outputs.add(name=ACTION, datatype="FP32")
    out.shape.extend(actions.shape)
    response.raw_output_contents.append(np.ascontiguousarray(actions, "<f4").tobytes())
    return response


def _tensors(tensors: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in tensors]


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 RPCs over one app's `PolicyServer`."""

    def __init__(self, server: PolicyServer, repository: Repository | None = None):
        self.server, self.repository = server, repository

    # ---- refusals ---------------------------------------------------------------------------------------------

    def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        given = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        if isinstance(given, str):
            given = given.encode("latin-1", "replace")
        if not self.server.token_ok(given):
            raise RequestError(401, NEEDS_TOKEN)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, exc: RequestError) -> None:
        trailers = (("retry-after", str(RETRY_AFTER_S)),) if exc.status == 503 else ()
        await context.abort(CODES.get(exc.status, S.UNKNOWN), str(exc), trailing_metadata=trailers)

    async def _model(self, request, context) -> Served:
        try:
            self._check_token(context)
            return find_model(self.server, request.name, request.version or None)
        except RequestError as exc:
            await self._abort(context, exc)

    # ---- health and metadata ---------------------------------------------------------------------------------

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**server_metadata())

    async def ModelReady(self, request, context):
        await self._model(request, context)
        return pb.ModelReadyResponse(ready=self.server.ready)

    async def ModelMetadata(self, request, context):
        meta = model_metadata(await self._model(request, context))
        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                        inputs=_tensors(meta["inputs"]), outputs=_tensors(meta["outputs"]))

    # ---- model repository (the same `Repository` as the HTTP routes) ------------------------------------------

    async def _repository(self, context) -> Repository:
        try:
            self._check_token(context)
            if self.repository is None:
                raise RequestError(400, "this server has no model repository.")
            return self.repository
        except RequestError as exc:
            await self._abort(context, exc)

    async def RepositoryIndex(self, request, context):
        repo = await self._repository(context)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**entry)
                                                  for entry in repo.index(request.ready)])

    async def _control(self, request, context, operation: str) -> None:
        repo = await self._repository(context)
        try:
            repo.check_control()
            check_load_parameters(dict(request.parameters))
            # shielded: a client that gives up does not cut a load short (it completes, the call is cancelled)
            await asyncio.shield((repo.load if operation == "load" else repo.unload)(request.model_name))
        except RequestError as exc:
            await self._abort(context, exc)

    async def RepositoryModelLoad(self, request, context):
        await self._control(request, context, "load")
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self._control(request, context, "unload")
        return pb.RepositoryModelUnloadResponse()

    # ---- inference -------------------------------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, context, start: float,
                     endpoint: str) -> pb.ModelInferResponse | RequestError:
        """One inference request through admission, validation, deadline and batcher: its answer or refusal."""
        server, metrics = self.server, self.server.metrics
        if not server.admission.enter():
            metrics.refused.labels("in_flight").inc()
            return RequestError(503, server.admission.refusal())
        metrics.in_flight.inc()
        status, timed = 200, False
        try:
            s = find_model(server, request.model_name, request.model_version or None)
            obs, goal = parse_request(request, s)
            timeout_s = requested_timeout_s(_parameter(request.parameters, "timeout"), "parameters.timeout")
            remaining = context.time_remaining()  # the call's gRPC deadline (None: none)
            if remaining is not None:
                timeout_s = remaining if timeout_s is None else min(timeout_s, remaining)
            actions, _, s = await server.infer(s, obs, goal, start=start, timeout_s=timeout_s)
            metrics.answered.labels(s.model.name, s.version).inc()
            timed = True
            return infer_response(s, request, actions)
        except RequestError as exc:
            status = exc.status
            return exc
        except InferenceError as exc:  # not the client's fault: INTERNAL with a sentence, the server lives on
            _log.error("%s", exc, exc_info=exc.__cause__)
            status = 500
            return RequestError(500, str(exc))
        except asyncio.CancelledError:
            # gRPC cancels the call when its deadline passes (or the client goes): count the deadline as HTTP does.
            status = 499
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                status = 504
                metrics.deadline_exceeded.labels("waiting").inc()
            raise
        finally:
            metrics.in_flight.dec()
            server.admission.leave(start)
            metrics.observe(endpoint, "grpc", status, (time.perf_counter() - start) if timed else None)

    async def ModelInfer(self, request, context):
        start = time.perf_counter()
        try:
            self._check_token(context)
        except RequestError as exc:
            await self._abort(context, exc)
        answer = await self._infer(request, context, start, "v2_infer")
        if isinstance(answer, RequestError):
            await self._abort(context, answer)
        return answer

    async def ModelStreamInfer(self, request_iterator, context):
        try:
            self._check_token(context)
        except RequestError as exc:
            await self._abort(context, exc)
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def one(request: pb.ModelInferRequest, start: float) -> None:
            try:
                answer = await self._infer(request, context, start, "v2_stream_infer")
            except Exception as exc:  # noqa: BLE001 - a bug must not end the stream silently
                _log.exception("gRPC stream request failed")
                answer = RequestError(500, f"the server failed on this request ({type(exc).__name__}).")
            finally:
                window.release()
            if isinstance(answer, RequestError):
                answers.put_nowait(pb.ModelStreamInferResponse(
                    error_message=str(answer),
                    infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id)))
            else:
                answers.put_nowait(pb.ModelStreamInferResponse(infer_response=answer))

        async def read() -> None:
            tasks: set[asyncio.Task] = set()
            requests = request_iterator.__aiter__()
            try:
                while True:
                    await window.acquire()
                    request = await anext(requests, None)
                    if request is None:
                        break
                    task = loop.create_task(one(request, time.perf_counter()))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(set(tasks))
            finally:
                for task in tasks:
                    task.cancel()
                answers.put_nowait(None)

        reader = loop.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()


async def start(server: PolicyServer, host: str, port: int, *, max_message_bytes: int,
                reuse_port: bool = False, repository: Repository | None = None,
                credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC service of `server` on `host:port` (0: a free port) in the running event loop.

    Returns the ``grpc.aio`` server (stop it with ``await g.stop(GRACE_S)``) and the bound port. `reuse_port`
    lets several worker processes share the port (SO_REUSEPORT, as ``--workers N``); without it a port
    already in use is refused. `repository` answers the repository RPCs (the app's `Repository`). With
    `credentials` (``grpc.ssl_server_credentials``, `tls.ServerTls.grpc_credentials`) the port speaks TLS only.
    """
    g = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                 ("grpc.max_send_message_length", max_message_bytes),
                                 ("grpc.so_reuseport", int(reuse_port))])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(server, repository), g)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = g.add_insecure_port(address) if credentials is None else g.add_secure_port(address, credentials)
    except RuntimeError as exc:
        bound = 0
        cause = exc
    else:
        cause = None
    if not bound:
        raise DeepcrlError(f"cannot bind the gRPC port {address}; choose another --grpc-port.") from cause
    await g.start()
    return g, bound
