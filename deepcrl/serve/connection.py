"""The server's HTTP connection: uvicorn's httptools protocol with two changes for a fleet of keep-alive clients.

1. **Refusal before parsing.** An inference request over the in-flight bound (`admission.py`) is refused from
   its raw bytes when a whole request arrived in one read on an idle connection (the common case for small
   JSON bodies): a few C-level byte searches find the method, path, Content-Length and Connection header, and
   one canned 503 + Retry-After write answers it; httptools' per-header Python callbacks, the ASGI scope and
   the request cycle never run. A request split over reads (or chunked, or 100-continue) is refused right after
   its headers are parsed instead, its body skipped by the parser. Through the ASGI app the same refusal costs
   a large part of an answered request. The cost of a refusal decides how much of the CPU is left for the
   admitted requests when the server is offered twice its capacity: the admitted rate is about
   (1 - offered x refusal cost) / (answer cost - refusal cost).
2. **Closing keep-alive connections cleanly.** When the server shuts down (SIGTERM, or SIGHUP's rolling restart
   of `--workers`), uvicorn closes every idle keep-alive connection at once; a client that sent its next request
   in that instant gets a reset or a broken pipe. Here an idle connection stays open for `CLOSE_GRACE_S`: a
   request arriving then is answered with ``Connection: close`` (the client reconnects, to a live worker),
   and the connection is closed after that answer or at the end of the grace. A busy connection's answer
   carries ``Connection: close`` as in uvicorn.

Both rely on uvicorn internals (`on_headers_complete`, `cycle`, `on_response_complete`, `shutdown`); an
unexpected attribute falls back to uvicorn's own behaviour, where `PolicyApp` refuses the same requests.
The class lives at module level so that `--workers`' spawned processes can unpickle the uvicorn config.
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deepcrl.serve.admission import ADMITTED, RETRY_AFTER_S, is_inference_path, refusal_body

_RESPONSES: dict[tuple[int, bool, bool], bytes] = {}


def refusal_response(admission, v2: bool, keep_alive: bool) -> bytes:
    """The whole 503 + Retry-After response of a refusal over the in-flight bound, made once per shape."""
    key = (admission.limit, v2, keep_alive)
    response = _RESPONSES.get(key)
    if response is None:
        body = refusal_body(admission, v2)
        response = _RESPONSES[key] = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nretry-after: " + str(RETRY_AFTER_S).encode() + b"\r\n"
            + (b"" if keep_alive else b"connection: close\r\n") + b"\r\n" + body)
    return response

CLOSE_GRACE_S = 1.0
"""How long an idle keep-alive connection stays open after shutdown began, to answer one last request."""


class _Refused:
    """Stands in for uvicorn's request cycle while a refused request's body streams past unread."""

    response_complete = True
    disconnected = False
    keep_alive = True

    class message_event:  # noqa: N801 - uvicorn calls .set() on it when the connection drops
        @staticmethod
        def set() -> None:
            pass


def _policy_server(app):
    """The `PolicyServer` behind uvicorn's app wrappers (None for another app)."""
    while app is not None and getattr(app, "server", None) is None:
        app = getattr(app, "app", None)
    return getattr(app, "server", None)


def _whole_request(data: bytes) -> tuple[int, bool, bool] | None:
    """(end of the request in `data`, is a v2 path, keep the connection) when `data` starts with one whole
    POST to an inference path with a Content-Length body; None for anything else (the parser's path then)."""
    if not data.startswith(b"POST /"):
        return None
    head_end = data.find(b"\r\n\r\n")
    line_end = data.find(b"\r\n")
    if head_end < 0 or line_end < 0:
        return None
    method_path_version = data[:line_end].split(b" ")
    if len(method_path_version) != 3 or not is_inference_path(method_path_version[1].split(b"?", 1)[0]):
        return None
    head = data[line_end:head_end + 2].lower()
    if b"\r\ntransfer-encoding:" in head or b"\r\nexpect:" in head or b"\r\nupgrade:" in head:
        return None
    at = head.find(b"\r\ncontent-length:")
    length = 0
    if at >= 0:
        value = head[at + 17:head.find(b"\r\n", at + 2)].strip()
        if not value.isdigit() or head.find(b"\r\ncontent-length:", at + 2) >= 0:
            return None  # malformed or repeated: the parser's 400
        length = int(value)
    end = head_end + 4 + length
    if end > len(data):
        return None
    version = method_path_version[2]
    connection = head.find(b"\r\nconnection:")
    if version == b"HTTP/1.1":
        keep_alive = connection < 0 or b"close" not in head[connection:head.find(b"\r\n", connection + 2)]
    elif version == b"HTTP/1.0":
        keep_alive = connection >= 0 and b"keep-alive" in head[connection:head.find(b"\r\n", connection + 2)]
    else:
        return None
    return end, method_path_version[1].startswith(b"/v2/"), keep_alive


class PolicyHttpProtocol(HttpToolsProtocol):
    _draining = False
    _policy = None
    _in_message = False  # the parser has begun a request it has not finished

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._policy = _policy_server(self.app)

    def data_received(self, data: bytes) -> None:
        server = self._policy
        while (server is not None and not self._in_message and not self._draining
               and server.admission.in_flight >= server.admission.limit
               and (self.cycle is None or self.cycle.response_complete)):
            found = _whole_request(data)
            if found is None:
                break
            server.admission.full()  # counts the refusal
            end, v2, keep_alive = found
            self._unset_keepalive_if_required()
            self._write_refusal(server, v2, keep_alive)
            if not keep_alive:
                return
            data = data[end:]
            if not data:
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        server = self._policy
        if server is not None:
            try:
                if (self.parser.get_method() == b"POST" and (self.cycle is None or self.cycle.response_complete)
                        and is_inference_path(self.url.split(b"?", 1)[0])):
                    # The slot is taken here, not when the ASGI task first runs: one read of many sockets parses
                    # many requests before any of their tasks runs, and they must not all see the same free slot.
                    if not server.admission.enter():
                        self._refuse(server)
                        return
                    self.scope[ADMITTED] = time.perf_counter()  # PolicyApp leaves the slot when it has answered
            except AttributeError:  # another uvicorn: its normal path (and PolicyApp) admits instead
                pass
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # the last answer on this connection says Connection: close

    def _refuse(self, server) -> None:
        keep_alive = self.parser.should_keep_alive() and not self._draining
        self.cycle = _Refused()
        self._write_refusal(server, self.url.startswith(b"/v2/"), keep_alive)

    def _write_refusal(self, server, v2: bool, keep_alive: bool) -> None:
        server.metrics.refused_in_flight.inc()
        self.transport.write(refusal_response(server.admission, v2, keep_alive))
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()

    def shutdown(self) -> None:
        if self.cycle is None or getattr(self.cycle, "response_complete", True):
            # Idle: keep it open a moment for a request already on its way, answered with Connection: close.
            self._draining = True
            self.loop.call_later(CLOSE_GRACE_S, self._close_if_idle)
        else:
            super().shutdown()
            self._draining = True

    def _close_if_idle(self) -> None:
        if self.cycle is None or getattr(self.cycle, "response_complete", True):
            self.transport.close()
        # else: an answer is on its way; it carries Connection: close and closes the connection after it
