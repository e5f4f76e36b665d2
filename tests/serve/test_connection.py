"""A server shutting down closes its keep-alive connections cleanly: the next request on an idle one is still
answered, with Connection: close, instead of meeting a reset (what SIGHUP's rolling restart relies on)."""

from __future__ import annotations

import json
import socket
import time

import httpx

JSON = {"content-type": "application/json"}


def test_a_request_on_an_idle_connection_during_shutdown_gets_its_answer_and_connection_close(tmp_path,
                                                                                            monkeypatch):
    from deepcrl.bench.synthetic import write_policy
    from deepcrl.serve import connection
    from deepcrl.serve.app import RunningServer, create_app

    monkeypatch.setattr(connection, "CLOSE_GRACE_S", 20.0)  # generous: the assert must not depend on speed
    app = create_app(write_policy(tmp_path / "policy.onnx", hidden=(8,)), warmup=1)
    running = RunningServer(app)
    body = json.dumps({"observation": [0.1, 0.2], "goal": [0.0, 0.0]})
    try:
        with httpx.Client() as client:
            first = client.post(running.url + "/v1/act", content=body, headers=JSON)
            assert first.status_code == 200 and first.headers.get("connection") != "close"
            running.server.should_exit = True  # graceful shutdown begins: the listening socket closes first
            host, port = running.sock.getsockname()[:2]
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection((host, port), timeout=1).close()
                except OSError:
                    break
                assert time.monotonic() < deadline, "the server never stopped listening"
                time.sleep(0.01)
            last = client.post(running.url + "/v1/act", content=body, headers=JSON)  # the kept-alive connection
            assert last.status_code == 200 and last.headers["connection"] == "close"
            assert last.json()["action"] == first.json()["action"]
    finally:
        running.stop(timeout=30)
