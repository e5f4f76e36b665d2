"""A server that answers every HTTP/1.1 request with the same 200 and does nothing else: the load generator's floor.

What a load generator measures against it is the generator's own lateness, the kernel's loopback and the
machine's scheduling, at the same offered rate and fleet shape as the real run: the part of a latency that no
server could remove. `benchmarks/serve_overload.py` runs its overload rate against it (pinned like the server).

Usage: python -m deepcrl.bench.floor PORT   (prints "ready at http://127.0.0.1:PORT" once it listens; PORT 0
picks a free one)
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop

BODY = b'{"action":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]}'
ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)) + BODY


class FloorProtocol(asyncio.Protocol):
    """Finds each request's end (headers, then Content-Length bytes) and writes `ANSWER` for it."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while (head := buffer.find(b"\r\n\r\n")) >= 0:
            headers = buffer[:head].lower()
            at = headers.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                end = headers.find(b"\r\n", at + 2)
                length = int(headers[at + 17:end if end >= 0 else head])
            if len(buffer) < head + 4 + length:
                break
            buffer = buffer[head + 4 + length:]
            self.transport.write(ANSWER)
        self.buffer = buffer


async def _serve(port: int) -> None:
    sock = socket.create_server(("127.0.0.1", port), backlog=4096)
    server = await asyncio.get_running_loop().create_server(FloorProtocol, sock=sock)
    print(f"ready at http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    uvloop.run(_serve(int(args[0]) if args else 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
