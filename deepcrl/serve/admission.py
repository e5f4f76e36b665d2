"""Deadlines and admission control of the policy server: shed load where it builds up, answer late work at once.

A control loop wants an action now or an error now: a late action is a wrong one. Two mechanisms:

- **Deadlines.** Every inference request gets one at arrival: the server's default (`--timeout-s`), which the
  request may only shorten (as Triton's queue policy does with ``parameters.timeout``):
  v2 ``parameters.timeout`` in microseconds, the ``X-Timeout-Us`` header (or a ``timeout_us`` field in the body)
  on /v1, a ``timeout_us`` field in a WebSocket frame. A request whose deadline passes while it waits is not
  computed: the batcher drops it from the batch it would have joined (`runner.DeadlineExceeded`) and the
  event loop answers 504 at the deadline. /metrics counts them (``deepcrl_deadline_exceeded_total``, by where
  the request was when its deadline passed).
- **Admission.** A bound on the requests one process holds at a time (`--max-in-flight`), checked in the ASGI
  entry before the body is read or parsed; a request over it is answered 503 with ``Retry-After`` at once,
  costing the server a few microseconds instead of the ~80 an answered request costs. On a connection, HTTP/1.1
  and the WebSocket stream take one request at a time (uvicorn reads a pipelined request only after answering
  the one before; the stream reads the next frame after answering), so the per-connection bound is 1: further
  requests stay in the socket, where TCP flow control pushes back on that one sender. The batcher's bounded
  queue (503 when full) is the last line.

uvicorn's own ``limit_concurrency`` is not used: it counts open connections with the tasks, so a fleet of idle
keep-alive robots would be refused although nothing is being computed, and its 503 has no ``Retry-After``.
"""

from __future__ import annotations

from deepcrl.serve.protocol import RequestError

TIMEOUT_HEADER = b"x-timeout-us"
"""/v1's per-request deadline header: microseconds from arrival (may only shorten the server's default)."""
TIMEOUT_FIELD = "timeout_us"
"""The same in a /v1 body or a WebSocket frame."""
ADMITTED = "deepcrl.admitted"
"""ASGI scope key: the connection already took this request's admission slot (`connection.py`)."""
RETRY_AFTER_S = 1
"""The ``Retry-After`` of a refusal, in whole seconds as HTTP has it (the smallest that is not 'retry now')."""


def requested_timeout_s(value, where: str) -> float | None:
    """A request's timeout in seconds from microseconds given as an int, a float or a digit string (None when
    absent); 400 for anything else, as Triton answers a malformed timeout."""
    if value is None:
        return None
    if isinstance(value, (bytes, str)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not text.strip().isdigit():
            raise RequestError(400, f"{where} must be a whole number of microseconds, not {text[:40]!r}.")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise RequestError(400, f"{where} must be a number of microseconds (0 or more), not {value!r}.")
    return value * 1e-6


def deadline(start: float, default_s: float, requested_s: float | None) -> float:
    """The request's deadline (a `time.perf_counter()` instant): the server's default or a shorter request."""
    return start + (default_s if requested_s is None else min(default_s, requested_s))


class Admission:
    """The per-process bound on requests in flight (one event loop: plain integers, no lock).

    Args:
        max_in_flight: most inference requests held at a time (reading, queued, computing, answering).
    """

    def __init__(self, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def enter(self) -> bool:
        """Take a slot; False (take nothing) when every slot is held."""
        if self.in_flight >= self.max_in_flight:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> str:
        return (f"the server is at its limit of {self.max_in_flight} requests in flight; retry after "
                f"{RETRY_AFTER_S} s.")


async def send_refusal(send, body: bytes, media: bytes = b"application/json") -> None:
    """Answer 503 + Retry-After as raw ASGI messages without reading the request's body (uvicorn discards it)."""
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body})


def is_inference_path(path: bytes) -> bool:
    """POST paths that admission guards: /v1/act, /v1/noop, /v1/models/NAME/act, /v2/models/NAME[/versions/V]/infer."""
    return path.startswith(b"/v1/") or (path.startswith(b"/v2/models/") and path.endswith(b"/infer"))


_BODIES: dict[tuple[int, bool], bytes] = {}


def refusal_body(admission: Admission, v2: bool) -> bytes:
    """The JSON body of a refusal over the in-flight bound (/v1's shape, or v2's ``{"error"}``), made once."""
    key = (admission.max_in_flight, v2)
    body = _BODIES.get(key)
    if body is None:
        import orjson

        message = admission.refusal()
        body = _BODIES[key] = orjson.dumps({"error": message} if v2 else {"error": message, "status": 503})
    return body
