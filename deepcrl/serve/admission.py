"""Deadlines and admission control of the policy server: shed load where it builds up, answer late work at once.

A control loop wants an action now or an error now: a late action is a wrong one. Two mechanisms:

- **Deadlines.** Every inference request gets one at arrival: the server's default (`--timeout-s`), which the
  request may only shorten (as Triton's queue policy does with ``parameters.timeout``):
  v2 ``parameters.timeout`` in microseconds, the ``X-Timeout-Us`` header (or a ``timeout_us`` field in the body)
  on /v1, a ``timeout_us`` field in a WebSocket frame. A request whose deadline passes while it waits is not
  computed: the batcher drops it from the batch it would have joined (`runner.DeadlineExceeded`) and the
  event loop answers 504 at the deadline. /metrics counts them (``deepcrl_deadline_exceeded_total``, by where
  the request was when its deadline passed).
- **Admission.** A bound on the requests one process holds at a time (`--max-in-flight`, tightened to an eighth
  of it while a queue stands: `Admission`), checked when the request's headers are parsed (or, for a request
  that arrived whole, from its raw bytes: `connection.py`) before the body is read or parsed; a request over it is answered 503 with ``Retry-After`` at once,
  costing the server a few microseconds instead of the ~80 an answered request costs. On a connection, HTTP/1.1
  and the WebSocket stream take one request at a time (uvicorn reads a pipelined request only after answering
  the one before; the stream reads the next frame after answering), so the per-connection bound is 1: further
  requests stay in the socket, where TCP flow control pushes back on that one sender. The batcher's bounded
  queue (503 when full) is the last line.

uvicorn's own ``limit_concurrency`` is not used: it counts open connections with the tasks, so a fleet of idle
keep-alive robots would be refused although nothing is being computed, and its 503 has no ``Retry-After``.
"""

from __future__ import annotations

import time

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


SHED_WINDOW_S = 0.02
"""The window over which admission decides whether a queue stands (CoDel's interval; 100 ms let a full bound's
queue stand long enough at the onset of an overload to put ~1% of a 10 s overload's answers over 10 ms)."""
SHED_TARGET_S = 0.005
"""A queue stands when every request answered in a whole window took longer than this (CoDel's target)."""
SHED_LATE_S = 0.010
"""An answer that took longer than this (the latency a control loop is promised) tightens the bound at once."""
SHED_DIVISOR = 8
"""While a queue stands, the bound is `max_in_flight // SHED_DIVISOR` (at least 1)."""


class Admission:
    """The per-process bound on requests in flight (one event loop: plain numbers, no lock), tightened while a
    queue stands.

    A fixed bound cannot serve both ends: bursts at half the capacity want room (a burst of robots sending
    at once is not an overload), while at twice the capacity every admitted request makes each turn of the
    event loop longer, and every request, admitted or refused, waits for that turn. So, in CoDel's manner:
    when every request answered during a whole `SHED_WINDOW_S` took longer than `SHED_TARGET_S` (a standing
    queue, not a burst), or as soon as one answer took longer than `SHED_LATE_S` (the queue behind it is already
    too long for a control loop), the bound drops to `max_in_flight // SHED_DIVISOR`; it returns to `max_in_flight` after
    a window in which fewer than half the arriving requests were refused at the tighter bound (the overload has
    eased: at twice the capacity about 3 in 4 are; a burst at half the capacity refuses a few). A bound under `2 * SHED_DIVISOR` is kept as it is. `limit` is the bound in force.

    Args:
        max_in_flight: most inference requests held at a time (reading, queued, computing, answering).
        on_limit: called with ``(limit, shed)`` at start and whenever the bound in force changes (the server
            sets its /metrics gauge ``deepcrl_in_flight_limit`` and counts ``deepcrl_sheds_total``).
    """

    def __init__(self, max_in_flight: int, on_limit=None):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = self.limit = max_in_flight
        # a small bound is taken as it is (shedding below 2 in flight would serialise the server)
        self.shed_in_flight = max_in_flight // SHED_DIVISOR if max_in_flight >= 2 * SHED_DIVISOR else max_in_flight
        self.in_flight = 0
        self.sheds = 0  # times a standing queue tightened the bound
        self._window_end = 0.0
        self._fastest = float("inf")  # the shortest answer of this window (s)
        self._admitted = self._refused = 0  # in this window
        self._on_limit = on_limit  # called with (limit, shed: bool) when the bound in force changes
        if on_limit is not None:
            on_limit(self.limit, False)

    def enter(self) -> bool:
        """Take a slot; False (take nothing, count a refusal) when every slot is held."""
        if self.in_flight >= self.limit:
            self._refused += 1
            return False
        self.in_flight += 1
        self._admitted += 1
        return True

    def full(self) -> bool:
        """Whether a request arriving now is refused (and counted as one): for the refusal that never enters."""
        if self.in_flight >= self.limit:
            self._refused += 1
            return True
        return False

    def leave(self, started: float | None = None) -> None:
        """Give the slot back; `started` (a `time.perf_counter()` instant: when the request was admitted) lets
        its time in flight count towards detecting a standing queue."""
        self.in_flight -= 1
        if started is None:
            return
        now = time.perf_counter()
        took = now - started
        if took > SHED_LATE_S and self.limit == self.max_in_flight and self.shed_in_flight < self.max_in_flight:
            self._shed(now)  # a late answer: the queue behind it is as long, no need to wait for the window
        elif now >= self._window_end:  # the first answer after a window closes it; it belongs to the next
            self._roll(now)
        if took < self._fastest:
            self._fastest = took

    def _shed(self, now: float) -> None:
        self.limit = self.shed_in_flight
        self.sheds += 1
        if self._on_limit is not None:
            self._on_limit(self.limit, True)
        self._new_window(now)

    def _roll(self, now: float) -> None:
        if self.limit == self.max_in_flight:
            if self._fastest > SHED_TARGET_S and self._window_end and self.shed_in_flight < self.max_in_flight:
                self._shed(now)
                return
        elif self._refused * 2 < self._admitted + self._refused:
            self.limit = self.max_in_flight
            if self._on_limit is not None:
                self._on_limit(self.limit, False)
        self._new_window(now)

    def _new_window(self, now: float) -> None:
        self._fastest, self._admitted, self._refused = float("inf"), 0, 0
        self._window_end = now + SHED_WINDOW_S

    def refusal(self) -> str:
        return (f"the server is at its limit of {self.limit} requests in flight; retry after "
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
    key = (admission.limit, v2)
    body = _BODIES.get(key)
    if body is None:
        import orjson

        message = admission.refusal()
        body = _BODIES[key] = orjson.dumps({"error": message} if v2 else {"error": message, "status": 503})
    return body
