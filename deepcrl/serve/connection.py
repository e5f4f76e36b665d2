"""The server's HTTP connection: uvicorn's httptools protocol with two changes for a fleet of keep-alive clients.

1. **Refusal at the headers.** An inference request over the in-flight bound (`admission.py`) is refused as soon
   as its headers are parsed: one canned 503 + Retry-After write, no ASGI task, no request cycle, its body
   skipped by the parser. Through the ASGI app the same refusal costs a large part of an answered request,
   which decides whether a server at twice its capacity keeps up with refusing or drowns.
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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deepcrl.serve.admission import RETRY_AFTER_S, is_inference_path, refusal_body

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


class PolicyHttpProtocol(HttpToolsProtocol):
    _draining = False
    _policy = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._policy = _policy_server(self.app)

    def on_headers_complete(self) -> None:
        server = self._policy
        if server is not None and server.admission.in_flight >= server.admission.max_in_flight:
            try:
                if (self.parser.get_method() == b"POST" and (self.cycle is None or self.cycle.response_complete)
                        and is_inference_path(self.url.split(b"?", 1)[0])):
                    self._refuse(server)
                    return
            except AttributeError:  # another uvicorn: its normal path (and PolicyApp) refuses instead
                pass
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # the last answer on this connection says Connection: close

    def _refuse(self, server) -> None:
        server.metrics.refused.labels("in_flight").inc()
        body = refusal_body(server.admission, self.url.startswith(b"/v2/"))
        keep_alive = self.parser.should_keep_alive() and not self._draining
        head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\nretry-after: " + str(RETRY_AFTER_S).encode() + b"\r\n"
                + (b"" if keep_alive else b"connection: close\r\n") + b"\r\n")
        self.cycle = _Refused()
        self.transport.write(head + body)
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
