"""Deadlines and admission control, shown with a model that blocks until the test lets it go (no timing asserts):
a full server refuses with 503 + Retry-After before reading the body, and a request whose deadline has passed
gets 504 without reaching the model."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time

import httpx
import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from deepcrl.serve.runner import DeadlineExceeded, MicroBatcher

JSON = {"content-type": "application/json"}


class Gate:
    """Wraps a model: records every batch it is called with and blocks each call until `release` is set."""

    def __init__(self, model):
        self.model, self.name = model, model.name
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches: list[np.ndarray] = []

    def __call__(self, observation, goal):
        self.batches.append(observation.copy())
        self.entered.set()
        assert self.release.wait(30), "the test never released the model"
        return self.model(observation, goal)

    def saw(self, value: float) -> bool:
        return any(np.any(b[:, 0] == value) for b in self.batches)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from deepcrl.bench.synthetic import write_policy

    return write_policy(tmp_path_factory.mktemp("admission") / "policy.onnx", hidden=(16,))


@pytest.fixture
def gated(synthetic):
    """A server (max 3 in flight, default deadline 20 s) whose one model blocks until the test releases it."""
    from deepcrl.serve.app import RunningServer, create_app

    app = create_app(synthetic, max_batch_size=4, timeout_s=20.0, max_in_flight=3, warmup=1)
    server = app.state.server
    (served,) = server.served.values()
    gate = served.batcher.model = Gate(served.model)
    running = RunningServer(app)
    try:
        yield running, server, gate
    finally:
        gate.release.set()
        running.stop()


def _body(value: float, **extra) -> str:
    return json.dumps({"observation": [value, 0.0], "goal": [0.0, 0.0], **extra})


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def _metric(url: str, line_start: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_full_server_refuses_with_503_and_retry_after_before_reading_the_body(gated):
    running, server, gate = gated
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        held = [pool.submit(httpx.post, running.url + "/v1/act", content=_body(float(i + 1)), headers=JSON,
                            timeout=30) for i in range(3)]
        _wait_for(lambda: server.admission.in_flight == 3 and gate.entered.is_set(), "3 requests in flight")
        keep_alive = httpx.Client()
        refused = keep_alive.post(running.url + "/v1/act", content=_body(9.0), headers=JSON, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "the server is at its limit of 3 requests in flight; retry after 1 s.",
                                  "status": 503}
        # Not even parsed: a malformed body and a v2 request get the same refusal, not a 400 / 422.
        assert httpx.post(running.url + "/v1/act", content=b"{not json", headers=JSON).status_code == 503
        v2 = httpx.post(running.url + "/v2/models/policy/infer", content=b"[]", headers=JSON)
        assert v2.status_code == 503 and "3 requests in flight" in v2.json()["error"] and "retry-after" in v2.headers
        # Reads are not inference: metadata and health still answer.
        assert httpx.get(running.url + "/v1/metadata").status_code == 200
        assert _metric(running.url, 'deepcrl_refused_total{reason="in_flight"}') == 3.0
        gate.release.set()
        assert [f.result().status_code for f in held] == [200, 200, 200]
    assert not gate.saw(9.0)
    assert server.admission.in_flight == 0
    # The refused request's body was skipped cleanly: the same keep-alive connection answers the next one.
    assert keep_alive.post(running.url + "/v1/act", content=_body(5.0), headers=JSON).status_code == 200
    keep_alive.close()


def _raw(url: str, data: bytes, responses: int) -> tuple[socket.socket, list[bytes]]:
    """Send `data` on a new raw connection and read `responses` whole HTTP responses (Content-Length bodies)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(data)
    buf, out = b"", []
    while len(out) < responses:
        while b"\r\n\r\n" not in buf or len(buf) < _response_end(buf):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {len(out)} responses"
            buf += chunk
        end = _response_end(buf)
        out.append(buf[:end])
        buf = buf[end:]
    return sock, out


def _response_end(buf: bytes) -> int:
    head_end = buf.index(b"\r\n\r\n") + 4
    length = next(int(line.split(b":")[1]) for line in buf[:head_end].lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    return head_end + length


def _post(path: str, body: str, *headers: str) -> bytes:
    data = body.encode()
    head = [f"POST {path} HTTP/1.1", "Host: t", "Content-Type: application/json", f"Content-Length: {len(data)}",
            *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def test_whole_requests_are_refused_from_their_bytes_and_the_connection_goes_on(gated):
    """Over the bound, requests that arrive whole are refused before parsing (two pipelined in one write, a
    Connection: close one, a v2 one); a chunked body takes the parser's path to the same refusal; afterwards the
    same connection is answered normally (the parser was never left mid-request)."""
    running, server, gate = gated
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        held = [pool.submit(httpx.post, running.url + "/v1/act", content=_body(float(i + 1)), headers=JSON,
                            timeout=30) for i in range(3)]
        _wait_for(lambda: server.admission.in_flight == 3 and gate.entered.is_set(), "3 requests in flight")
        two = _post("/v1/act", _body(7.0)) + _post("/v2/models/policy/infer", "[]")
        sock, answers = _raw(running.url, two, 2)
        assert all(a.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in a for a in answers)
        assert b'"status":503' in answers[0] and b'"status"' not in answers[1]  # /v1's shape, then v2's
        close, (answer,) = _raw(running.url, _post("/v1/act", _body(7.0), "Connection: close"), 1)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"connection: close" in answer.lower()
        assert close.recv(10) == b""  # and the server closed it
        close.close()
        chunked = (b"POST /v1/act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n1\r\n1\r\n1\r\n}\r\n0\r\n\r\n")
        sock.sendall(chunked)
        buf = b""
        while b"\r\n\r\n" not in buf or len(buf) < _response_end(buf):
            buf += sock.recv(65536)
        assert buf.startswith(b"HTTP/1.1 503 ")
        assert _metric(running.url, 'deepcrl_refused_total{reason="in_flight"}') == 4.0
        gate.release.set()
        assert [f.result().status_code for f in held] == [200, 200, 200]
    assert not gate.saw(7.0) and server.admission.in_flight == 0
    sock.sendall(_post("/v1/act", _body(5.0)))
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf) < _response_end(buf):
        buf += sock.recv(65536)
    assert buf.startswith(b"HTTP/1.1 200 ") and b'"action"' in buf
    sock.close()


def test_an_expired_deadline_is_answered_504_without_calling_the_model(gated):
    running, server, gate = gated
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, running.url + "/v1/act", content=_body(1.0), headers=JSON, timeout=30)
        _wait_for(gate.entered.is_set, "the model to be busy")
        # Queued behind the busy model with a 2 ms deadline (header), 3 ms (body field), 1 ms (v2): each is
        # answered 504 while the model is still blocked, so none of them can have been computed.
        r = httpx.post(running.url + "/v1/act", content=_body(2.0), headers={**JSON, "x-timeout-us": "2000"})
        assert r.status_code == 504 and "0.002 s" in r.json()["error"]
        r = httpx.post(running.url + "/v1/act", content=_body(3.0, timeout_us=3000), headers=JSON)
        assert r.status_code == 504 and "0.003 s" in r.json()["error"]
        v2 = {"inputs": [{"name": "observation", "shape": [1, 2], "datatype": "FP32", "data": [4.0, 0.0]},
                         {"name": "goal", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 0.0]}],
              "parameters": {"timeout": 1000}}
        r = httpx.post(running.url + "/v2/models/policy/infer", json=v2)
        assert r.status_code == 504 and "0.001 s" in r.json()["error"]
        # A zero budget is over before the request is queued.
        r = httpx.post(running.url + "/v1/act", content=_body(6.0), headers={**JSON, "x-timeout-us": "0"})
        assert r.status_code == 504 and "before its inference started" in r.json()["error"]
        with connect(running.url.replace("http", "ws") + "/v1/stream") as ws:
            ws.recv(5)
            ws.send(msgpack.packb({"id": 1, "observation": [7.0, 0.0], "goal": [0.0, 0.0], "timeout_us": 1500}))
            frame = msgpack.unpackb(ws.recv(10))
        assert frame["type"] == "error" and frame["status"] == 504 and frame["id"] == 1
        assert gate.batches and len(gate.batches) == 1  # still blocked in the first call
        gate.release.set()
        assert first.result().status_code == 200
    for value in (2.0, 3.0, 4.0, 6.0, 7.0):
        assert not gate.saw(value), f"the request with observation {value} reached the model"
    counted = sum(_metric(running.url, f'deepcrl_deadline_exceeded_total{{where="{w}"}}')
                  for w in ("arrival", "queue", "waiting"))
    assert counted == 5.0


def test_a_request_may_only_shorten_the_servers_deadline(gated):
    running, server, gate = gated
    server.timeout_s = 0.2  # the server's default; the request asks for 10 s
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, running.url + "/v1/act", content=_body(1.0), headers=JSON, timeout=30)
        _wait_for(gate.entered.is_set, "the model to be busy")
        r = httpx.post(running.url + "/v1/act", content=_body(2.0), headers={**JSON, "x-timeout-us": "10000000"},
                       timeout=30)
        assert r.status_code == 504 and "within 0.2 s" in r.json()["error"]
        gate.release.set()
        assert first.result().status_code == 504  # it waited for the model longer than the 0.2 s default too


@pytest.mark.parametrize("value", ["soon", "-5", "1e3"])
def test_a_malformed_timeout_is_a_400(gated, value):
    running, _, gate = gated
    gate.release.set()
    r = httpx.post(running.url + "/v1/act", content=_body(1.0), headers={**JSON, "x-timeout-us": value})
    assert r.status_code == 400 and "X-Timeout-Us header must be a whole number of microseconds" in r.json()["error"]


def test_the_batcher_drops_a_request_whose_deadline_passed_in_the_queue():
    class Blocking:
        name = "blocking"

        def __init__(self):
            self.release, self.rows = threading.Event(), []

        def __call__(self, observation, goal):
            self.rows.append(observation[:, 0].tolist())
            self.release.wait(30)
            return observation[:, :1]

    async def main():
        model = Blocking()
        batcher = MicroBatcher(model, max_batch=8, max_delay_us=0)
        batcher.start(asyncio.get_running_loop())
        busy = batcher.submit(np.ones((1, 2), np.float32), np.zeros((1, 1), np.float32))
        await asyncio.sleep(0.05)
        late = batcher.submit(np.full((1, 2), 2.0, np.float32), np.zeros((1, 1), np.float32),
                              deadline=time.perf_counter() - 1.0)
        on_time = batcher.submit(np.full((1, 2), 3.0, np.float32), np.zeros((1, 1), np.float32),
                                 deadline=time.perf_counter() + 60.0)
        model.release.set()
        await busy
        with pytest.raises(DeadlineExceeded):
            await late
        await on_time
        batcher.stop()
        return model, batcher

    model, batcher = asyncio.run(main())
    assert model.rows == [[1.0], [3.0]] and batcher.expired == 1


def test_the_refusal_fast_path_recognises_only_whole_inference_requests():
    from deepcrl.serve.connection import _whole_request

    one = _post("/v1/act", _body(1.0))
    assert _whole_request(one) == (len(one), False, True)
    assert _whole_request(one + b"POST /v1/act") == (len(one), False, True)  # a pipelined start stays unread
    assert _whole_request(one[:-3]) is None  # the body has not all arrived: the parser's path
    v2 = _post("/v2/models/policy/versions/2/infer?x=1", "[]", "Connection: close")
    assert _whole_request(v2) == (len(v2), True, False)
    old = _post("/v1/act", "{}").replace(b"HTTP/1.1", b"HTTP/1.0")
    assert _whole_request(old) == (len(old), False, False)  # HTTP/1.0 closes unless it asks to keep alive
    for other in (_post("/v1/metadata", "{}").replace(b"POST", b"GET "), _post("/v2/repository/index", "{}"),
                  _post("/v1/act", "{}", "Transfer-Encoding: chunked"), _post("/v1/act", "{}", "Expect: 100-continue"),
                  _post("/v1/act", "{}", "Content-Length: 2"), _post("/v1/act", "{}").replace(b"Length: 2", b"Length: x")):
        assert _whole_request(other) is None, other


def test_a_standing_queue_tightens_the_bound_and_a_burst_does_not(monkeypatch):
    """CoDel's rule on a fake clock: a window in which every answer took over 5 ms drops the bound to 1/8, and so
    does one answer over 10 ms at once; a window with under half refused at that bound restores it; fast answers
    among slow ones (a burst) never tighten it; a small bound is kept as given."""
    from deepcrl.serve import admission as adm

    clock = [100.0]
    monkeypatch.setattr(adm.time, "perf_counter", lambda: clock[0])

    def window(a: adm.Admission, sojourns_s: list[float], arrivals: int = 0) -> None:
        """One window: its first answer closes the window before, then `arrivals` requests try to enter, then
        the other answers, spread over the window."""
        step = adm.SHED_WINDOW_S / len(sojourns_s)
        assert a.enter()
        a.leave(clock[0] - sojourns_s[0])
        clock[0] += step
        taken = sum(a.enter() for _ in range(arrivals))
        for s in sojourns_s[1:]:
            if taken == 0:
                assert a.enter()
                taken += 1
            a.leave(clock[0] - s)
            taken -= 1
            clock[0] += step
        for _ in range(taken):
            a.leave()
        clock[0] += 0.001

    changes = []
    a = adm.Admission(128, lambda limit, shed: changes.append((limit, shed)))
    window(a, [0.0001])  # the first answer only opens the first window
    window(a, [0.002, 0.008, 0.009])  # a burst: one answer was fast, none late
    window(a, [0.001])
    assert a.limit == 128 and a.sheds == 0
    window(a, [0.006, 0.007, 0.009])  # every answer of the window waited: a standing queue
    window(a, [0.001] * 5, arrivals=40)  # closes it: the bound drops; then 24 of 40 arrivals are refused
    assert a.limit == 16 and a.sheds == 1 and a.shed_in_flight == 16
    window(a, [0.001] * 5, arrivals=10)  # closes the refusing window (the overload went on): still 16
    assert a.limit == 16
    window(a, [0.001])  # closes a window in which every arrival fitted: the bound comes back
    assert a.limit == 128 and a.in_flight == 0
    assert changes == [(128, False), (16, True), (128, False)]  # what /metrics shows (deepcrl_in_flight_limit)
    assert a.enter()
    a.leave(clock[0] - adm.SHED_LATE_S * 1.5)  # one late answer, mid-window: the bound drops at once
    assert a.limit == 16 and a.sheds == 2 and changes[-1] == (16, True)
    clock[0] += adm.SHED_WINDOW_S
    window(a, [0.001])  # closes a window in which every arrival fitted: back
    assert a.limit == 128
    small = adm.Admission(8)
    window(small, [0.0001])
    window(small, [0.050, 0.060])
    window(small, [0.050])
    assert small.limit == 8 and small.sheds == 0
