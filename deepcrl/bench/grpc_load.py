"""The load generator's gRPC connections (KServe v2 / Triton ``GRPCInferenceService``), for `deepcrl bench serve
--protocols grpc` and `benchmarks/serve_grpc.py`.

Like the HTTP connections, they send pre-serialized requests (what tritonclient.grpc would send: raw tensor
bytes in a ``ModelInferRequest``) so no client-side encoding sits in the timed loop. They need the ``grpc``
extra (grpcio, and tritonclient[grpc] for the generated messages).
"""

from __future__ import annotations

import socket

import numpy as np

from deepcrl.errors import DeepcrlError

SERVICE = "/inference.GRPCInferenceService/"
GRPC_ERROR = 1000  # a call's status is GRPC_ERROR + its gRPC code: never 200, so counted as an error by kind


def require_grpc() -> None:
    """Raise one sentence when the ``grpc`` extra is missing."""
    try:
        import grpc  # noqa: F401
        from tritonclient.grpc import service_pb2  # noqa: F401
    except ImportError as exc:
        raise DeepcrlError(f"the grpc protocol needs the grpc extra (pip install 'deepcrl[grpc]'): {exc}.") from exc


class GrpcUnary:
    """One grpc.aio channel; `roundtrip(bytes)` sends a serialized ModelInferRequest with ``ModelInfer`` (with
    the bearer `token` in the call's metadata when given; over TLS with `credentials`, from
    ``grpc.ssl_channel_credentials``)."""

    def __init__(self, target: str, token: str | None = None, credentials=None):
        import grpc

        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channel = (grpc.aio.insecure_channel(target, options=options) if credentials is None
                        else grpc.aio.secure_channel(target, credentials, options=options))
        self.call = self.channel.unary_unary(SERVICE + "ModelInfer")  # no serializers: bytes in, bytes out
        self.closed = False

    async def roundtrip(self, payload: bytes) -> int:
        import grpc

        try:
            await self.call(payload, timeout=30, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            return GRPC_ERROR + exc.code().value[0]
        return 200

    async def close(self) -> None:
        await self.channel.close()


class GrpcStream(GrpcUnary):
    """One ModelStreamInfer stream: write a request, read its answer."""

    def __init__(self, target: str, token: str | None = None, credentials=None):
        super().__init__(target, token, credentials)
        self.stream = self.channel.stream_stream(SERVICE + "ModelStreamInfer")(metadata=self.metadata)

    async def roundtrip(self, payload: bytes) -> int:
        from tritonclient.grpc import service_pb2 as pb

        await self.stream.write(payload)
        reply = pb.ModelStreamInferResponse.FromString(await self.stream.read())
        return 200 if not reply.error_message else GRPC_ERROR + 400

    async def close(self) -> None:
        await self.stream.done_writing()
        await super().close()


async def grpc_connect(target: str, stream: bool = False, token: str | None = None, credentials=None) -> GrpcUnary:
    """A connection to ``host:port`` for `closed_loop` (a unary channel, or one bidirectional stream; over TLS
    with `credentials`)."""
    return GrpcStream(target, token, credentials) if stream else GrpcUnary(target, token, credentials)


def grpc_requests(model_name: str, rows: list[tuple[np.ndarray, np.ndarray]],
                  timeout_us: int | None = None) -> list[bytes]:
    """Serialized ``ModelInferRequest``s, one (observation, goal) row each, tensors as raw little-endian FP32
    (with v2's ``parameters.timeout`` in µs when `timeout_us` is given)."""
    from tritonclient.grpc import service_pb2 as pb

    out = []
    for obs, goal in rows:
        request = pb.ModelInferRequest(model_name=model_name)
        if timeout_us is not None:
            request.parameters["timeout"].int64_param = timeout_us
        for tensor, value in (("observation", obs), ("goal", goal)):
            request.inputs.add(name=tensor, datatype="FP32", shape=[1, value.size])
            request.raw_input_contents.append(np.asarray(value).astype("<f4").tobytes())
        out.append(request.SerializeToString())
    return out


def free_port() -> int:
    """A loopback TCP port free right now (for ``deepcrl serve --grpc-port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
