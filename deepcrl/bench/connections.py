"""The load generator's connections: one `roundtrip(payload) -> status` coroutine per kind.

The HTTP client is a minimal keep-alive HTTP/1.1 client on an asyncio protocol with pre-encoded requests, so
the generator costs little next to what it measures (the numbers still include its cost). The WebSocket one
is the `websockets` asyncio client.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import msgpack

from deepcrl.errors import DeepcrlError



class HttpConnection(asyncio.Protocol):
    """Keep-alive HTTP/1.1 on a raw asyncio protocol: one request in flight, responses framed by Content-Length.

    `roundtrip` returns the response's status; a lost connection or an unreadable response raises
    `ConnectionError` (the caller counts it by kind). A response with ``Connection: close`` marks it `closed`.
    """

    def __init__(self):
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        try:
            at = head.find(b"content-length:")
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15:eol if eol > 0 else None]) if at >= 0 else 0
            status = int(head[9:12])
        except ValueError:
            self._fail(ConnectionError("unreadable response head"))
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        if b"\r\nconnection: close" in head:
            self.closed = True
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._fail(ConnectionResetError("connection lost"))

    async def roundtrip(self, request: bytes) -> int:
        if self.closed:
            raise ConnectionResetError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    async def close(self) -> None:
        self.closed = True
        self.transport.close()


async def http_connect(url: str, tls: ssl.SSLContext | None = None) -> HttpConnection:
    """A keep-alive connection to `url`'s host (over TLS with `tls`, for an https:// server)."""
    parts = urlsplit(url)
    _, conn = await asyncio.get_running_loop().create_connection(HttpConnection, parts.hostname, parts.port, ssl=tls)
    return conn


def http_requests(url: str, path: str, bodies: list[bytes], media: str, token: str | None,
                  timeout_us: int | None = None) -> list[bytes]:
    """Raw HTTP/1.1 POSTs of `bodies` (with the bearer token, and the per-request deadline header when given)."""
    host = urlsplit(url).netloc
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    deadline = f"X-Timeout-Us: {timeout_us}\r\n" if timeout_us is not None else ""
    return [(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media}\r\nAccept: {media}\r\n{auth}"
             f"{deadline}Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


class WsConnection:
    def __init__(self, ws):
        self.ws = ws
        self.closed = False

    async def roundtrip(self, frame: bytes) -> int:
        """The frame's status: 200 for an action or a pong, the error frame's status otherwise."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(frame)
            reply = msgpack.unpackb(await self.ws.recv())
        except ConnectionClosed as exc:
            self.closed = True
            raise ConnectionResetError(f"websocket closed ({exc})") from exc
        return 200 if reply.get("type") in ("action", "pong") else int(reply.get("status", 0))

    async def close(self) -> None:
        await self.ws.close()


async def ws_connect(url: str, token: str | None, tls: ssl.SSLContext | None = None) -> WsConnection:
    from websockets.asyncio.client import connect

    headers = {"authorization": f"Bearer {token}"} if token else None
    ws = await connect(url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/stream",
                       compression=None, max_size=None, additional_headers=headers, ssl=tls)
    meta = msgpack.unpackb(await ws.recv())
    if meta.get("type") != "metadata":
        raise DeepcrlError("the server's WebSocket did not send a metadata frame first.")
    return WsConnection(ws)
