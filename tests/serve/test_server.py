"""The server over real loopback sockets: three protocols, bad input, auth, batching, metrics, shutdown."""

from __future__ import annotations

import concurrent.futures
import json
import math
import threading
import time

import httpx
import msgpack
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from deepcrl.errors import ArtifactError

JSON = {"content-type": "application/json"}
MSGPACK = {"content-type": "application/msgpack"}


def _post(url, body, headers, path="/v1/act"):
    return httpx.post(url + path, content=body, headers=headers, timeout=10)


def _assert_alive(server, reference):
    obs = [0.1] * reference.obs_size
    goal = [0.2] * reference.goal_size
    r = _post(server.url, json.dumps({"observation": obs, "goal": goal}), JSON)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["action"], reference(np.array([obs], np.float32),
                                                             np.array([goal], np.float32))[0], atol=1e-6)


def test_health_ready_and_metadata(server, reference):
    assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    meta = httpx.get(server.url + "/v1/metadata").json()
    assert (meta["obs_size"], meta["goal_size"], meta["action_size"]) == (reference.obs_size, reference.goal_size,
                                                                          reference.action_size)
    assert meta["max_batch_size"] == 8
    for key in ("kind", "env_id", "format_version", "action_low", "action_high", "source_hash"):
        assert key in meta["metadata"]
    name = meta["name"]
    assert httpx.get(f"{server.url}/v1/models/{name}/metadata").json()["name"] == name
    assert httpx.get(server.url + "/v1/models/nope/metadata").status_code == 404


def test_json_single_and_batch_equal_in_process(server, reference, inputs):
    obs, goal = inputs
    expected = reference(obs, goal)
    r = _post(server.url, json.dumps({"observation": obs[0].tolist(), "goal": goal[0].tolist()}), JSON)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    np.testing.assert_allclose(body["action"], expected[0], atol=1e-6)
    assert body["timing"]["server_us"] > 0 and body["timing"]["batch_rows"] >= 1
    assert "infer;dur=" in r.headers["server-timing"]
    r = _post(server.url, json.dumps({"observations": obs.tolist(), "goals": goal.tolist()}), JSON)
    np.testing.assert_allclose(r.json()["actions"], expected, atol=1e-6)


def test_msgpack_both_ways_lists_and_bytes(server, reference, inputs):
    obs, goal = inputs
    expected = reference(obs, goal)
    r = _post(server.url, msgpack.packb({"observations": obs.tolist(), "goals": goal.tolist()}), MSGPACK)
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    np.testing.assert_allclose(msgpack.unpackb(r.content)["actions"], expected, atol=1e-6)
    raw = msgpack.packb({"observations": obs.astype("<f4").tobytes(), "goals": goal.astype("<f4").tobytes()})
    r = _post(server.url, raw, {**MSGPACK, "accept": "application/json"})
    assert r.headers["content-type"] == "application/json"
    np.testing.assert_allclose(r.json()["actions"], expected, atol=1e-6)


def test_websocket_metadata_first_then_actions_and_errors_keep_the_connection(server, reference, inputs):
    obs, goal = inputs
    expected = reference(obs, goal)
    with connect(server.url.replace("http", "ws") + "/v1/stream") as ws:
        first = msgpack.unpackb(ws.recv(5))
        assert first["type"] == "metadata" and first["obs_size"] == reference.obs_size
        for i in range(3):
            ws.send(msgpack.packb({"id": i, "observation": obs[i].tolist(), "goal": goal[i].tolist()}))
            reply = msgpack.unpackb(ws.recv(5))
            assert reply["type"] == "action" and reply["id"] == i
            np.testing.assert_allclose(reply["action"], expected[i], atol=1e-6)
        bad_frames = [b"\xc1", msgpack.packb({"observation": [1.0], "goal": goal[0].tolist()}),
                      msgpack.packb({"observation": [math.nan] * reference.obs_size, "goal": goal[0].tolist()}),
                      msgpack.packb({"observations": [], "goals": []})]
        for frame in bad_frames:
            ws.send(frame)
            reply = msgpack.unpackb(ws.recv(5))
            assert reply["type"] == "error" and 400 <= reply["status"] < 500 and reply["error"]
        ws.send("text frame")  # text frames are JSON (tests/serve/test_stream_json.py): answered in JSON text
        reply = json.loads(ws.recv(5))
        assert reply["status"] == 400 and "not valid JSON" in reply["error"]
        ws.send(msgpack.packb({"observations": obs.tolist(), "goals": goal.tolist()}))
        np.testing.assert_allclose(msgpack.unpackb(ws.recv(5))["actions"], expected, atol=1e-6)
        ws.send(msgpack.packb({"type": "ping", "id": 7}))
        assert msgpack.unpackb(ws.recv(5)) == {"type": "pong", "id": 7}


def test_websocket_frame_over_the_size_limit_closes_with_1009(server):
    from websockets.exceptions import ConnectionClosed

    with connect(server.url.replace("http", "ws") + "/v1/stream") as ws:
        ws.recv(5)
        ws.send(b"\x00" * 30_000)  # the server's limit is 20 kB
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(5)
        assert info.value.rcvd.code == 1009  # "message too big"


BAD_HTTP = [
    ("wrong length", lambda o, g: json.dumps({"observation": o[:-1], "goal": g}), JSON, 422, "expects"),
    ("NaN", lambda o, g: msgpack.packb({"observation": [math.nan] * len(o), "goal": g}), MSGPACK, 422, "NaN"),
    ("Inf", lambda o, g: msgpack.packb({"observation": [math.inf] * len(o), "goal": g}), MSGPACK, 422, "infinite"),
    ("JSON Infinity", lambda o, g: b'{"observation": [1e999], "goal": [0]}', JSON, 400, "infinity"),
    ("non-numeric", lambda o, g: json.dumps({"observation": ["a"] * len(o), "goal": g}), JSON, 422, "non-numeric"),
    ("nesting", lambda o, g: json.dumps({"observation": [o], "goal": g}), JSON, 422, "nested"),
    ("empty batch", lambda o, g: json.dumps({"observations": [], "goals": []}), JSON, 422, "empty"),
    ("too large batch", lambda o, g: json.dumps({"observations": [o] * 9, "goals": [g] * 9}), JSON, 422, "at most 8"),
    ("malformed JSON", lambda o, g: b'{"observation": [1, 2', JSON, 400, "not valid JSON"),
    ("malformed msgpack", lambda o, g: b"\x92\xc1", MSGPACK, 400, "not valid msgpack"),
    ("content type", lambda o, g: json.dumps({"observation": o, "goal": g}), {"content-type": "text/plain"}, 415,
     "not supported"),
    ("no content type", lambda o, g: b"x", {}, 415, "no Content-Type"),
    ("body too large", lambda o, g: b" " * 30_000, JSON, 413, "limit"),
]


@pytest.mark.parametrize("name, build, headers, status, words", BAD_HTTP, ids=[b[0] for b in BAD_HTTP])
def test_bad_http_input_is_4xx_with_a_sentence_and_the_server_lives(server, reference, name, build, headers,
                                                                     status, words):
    obs, goal = [0.5] * reference.obs_size, [0.5] * reference.goal_size
    r = _post(server.url, build(obs, goal), headers)
    assert r.status_code == status, r.text
    error = r.json()["error"] if "msgpack" not in r.headers["content-type"] else msgpack.unpackb(r.content)["error"]
    assert words in error and error.endswith(".")
    _assert_alive(server, reference)


def test_chunked_body_over_the_limit_is_413(server, reference):
    def chunks():
        for _ in range(30):
            yield b" " * 1000

    r = httpx.post(server.url + "/v1/act", content=chunks(), headers=JSON)
    assert r.status_code == 413
    _assert_alive(server, reference)


def test_auth_required_when_a_token_is_set(auth_server, reference):
    body = json.dumps({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size})
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": auth_server.token}):
        r = _post(auth_server.url, body, {**JSON, **headers})
        assert r.status_code == 401 and "bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(auth_server.url + "/v1/metadata").status_code == 401
    assert httpx.get(auth_server.url + "/metrics").status_code == 401
    assert httpx.get(auth_server.url + "/healthz").status_code == 200  # probes stay open
    ok = {"authorization": f"Bearer {auth_server.token}"}
    assert _post(auth_server.url, body, {**JSON, **ok}).status_code == 200
    assert httpx.get(auth_server.url + "/v1/metadata", headers=ok).status_code == 200
    ws_url = auth_server.url.replace("http", "ws") + "/v1/stream"
    with pytest.raises(InvalidStatus):
        connect(ws_url, open_timeout=5)
    with connect(ws_url, additional_headers=ok, open_timeout=5) as ws:
        assert msgpack.unpackb(ws.recv(5))["type"] == "metadata"


def test_no_auth_server_accepts_requests_without_a_token(server, reference):
    _assert_alive(server, reference)


def test_micro_batched_results_equal_single_requests(batching_server, reference):
    rng = np.random.default_rng(1)
    n = 12
    obs = rng.uniform(-1, 1, (n, reference.obs_size)).astype(np.float32)
    goal = rng.uniform(-1, 1, (n, reference.goal_size)).astype(np.float32)
    expected = reference(obs, goal)
    barrier = threading.Barrier(n)

    def one(i):
        with httpx.Client() as client:
            barrier.wait()
            r = client.post(batching_server.url + "/v1/act", headers=MSGPACK,
                            content=msgpack.packb({"observation": obs[i].tolist(), "goal": goal[i].tolist()}))
        return msgpack.unpackb(r.content)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(one, range(n)))
    got = np.array([r["action"] for r in replies])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert max(r["timing"]["batch_rows"] for r in replies) > 1  # they really shared ORT calls
    metrics = httpx.get(batching_server.url + "/metrics").text
    assert _sample(metrics, "deepcrl_batch_rows_count") < _sample(metrics, "deepcrl_batch_rows_sum")


def _sample(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_status(server, reference):
    before = httpx.get(server.url + "/metrics").text
    for _ in range(3):
        _assert_alive(server, reference)
    _post(server.url, b"{", JSON)
    after = httpx.get(server.url + "/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    ok, bad = 'endpoint="act",protocol="json",status="200"', 'endpoint="act",protocol="json",status="400"'
    assert _sample(after.text, "deepcrl_requests_total", ok) - _sample(before, "deepcrl_requests_total", ok) == 3
    assert _sample(after.text, "deepcrl_requests_total", bad) - _sample(before, "deepcrl_requests_total", bad) == 1
    assert _sample(after.text, "deepcrl_request_latency_seconds_count", 'endpoint="act",protocol="json"') >= 3
    for name in ("deepcrl_inference_seconds_bucket", "deepcrl_queue_rows", "deepcrl_in_flight_requests"):
        assert name in after.text


def test_timeout_is_504_and_the_server_keeps_answering(policy_onnx, reference):
    from deepcrl.serve.app import RunningServer, create_app

    # Waiting 300 ms for company, with a 50 ms request limit: every lone request times out.
    app = create_app(policy_onnx, max_queue_delay_us=300_000, timeout_s=0.05, warmup=1)
    with RunningServer(app) as running:
        body = json.dumps({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size})
        r = _post(running.url, body, JSON)
        assert r.status_code == 504 and "did not finish within 0.05 s" in r.json()["error"]
        assert httpx.get(running.url + "/healthz").status_code == 200


def test_graceful_shutdown_drains_in_flight_requests(policy_onnx, reference):
    from deepcrl.serve.app import RunningServer, create_app

    # A lone request waits 1.5 s for company: long enough to stop the server while three are queued.
    running = RunningServer(create_app(policy_onnx, max_queue_delay_us=1_500_000, timeout_s=20, warmup=1))
    body = json.dumps({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_post, running.url, body, JSON) for _ in range(3)]
        deadline = time.monotonic() + 10
        while "deepcrl_in_flight_requests 3.0" not in httpx.get(running.url + "/metrics").text:
            assert time.monotonic() < deadline, "the three requests never reached the server"
            time.sleep(0.01)
        # All three wait in the batcher now; a graceful stop answers them before closing.
        stop_started = time.perf_counter()
        running.stop()
        assert [f.result().status_code for f in futures] == [200, 200, 200]
    assert time.perf_counter() - stop_started < 10
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/healthz", timeout=1)


def test_directory_of_models_is_addressed_by_name(tmp_path, reference):
    from deepcrl.serve.app import RunningServer, create_app
    from deepcrl.bench.synthetic import reference as numpy_policy
    from deepcrl.bench.synthetic import write_policy

    write_policy(tmp_path / "alpha.onnx", hidden=(8,), seed=1)
    write_policy(tmp_path / "beta.onnx", hidden=(8,), seed=2)
    (tmp_path / "notes.txt").write_text("ignored")
    with RunningServer(create_app(tmp_path, model_name="beta", warmup=1)) as running:
        listing = httpx.get(running.url + "/v1/models").json()
        assert listing["default"] == "beta" and [m["name"] for m in listing["models"]] == ["alpha", "beta"]
        obs, goal = np.full((1, 2), 0.3, np.float32), np.full((1, 2), -0.2, np.float32)
        body = json.dumps({"observation": obs[0].tolist(), "goal": goal[0].tolist()})
        for path, seed in (("/v1/models/alpha/act", 1), ("/v1/models/beta/act", 2), ("/v1/act", 2)):
            got = _post(running.url, body, JSON, path).json()["action"]
            np.testing.assert_allclose(got, numpy_policy(obs, goal, hidden=(8,), seed=seed)[0], atol=1e-5)
        r = _post(running.url, body, JSON, "/v1/models/gamma/act")
        assert r.status_code == 404 and "alpha, beta" in r.json()["error"]


def test_bad_model_files_raise_one_sentence(tmp_path):
    from deepcrl.serve.app import create_app

    with pytest.raises(ArtifactError, match="does not exist"):
        create_app(tmp_path / "missing.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        create_app(tmp_path / "corrupt.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="holds no .onnx files"):
        create_app(empty)


def test_a_model_failure_is_a_500_sentence_and_the_server_keeps_answering(policy_onnx, reference):
    from websockets.sync.client import connect as ws_connect

    from deepcrl.serve.app import RunningServer, create_app

    app = create_app(policy_onnx, warmup=1)
    batcher = next(iter(app.state.server.served.values())).batcher
    real = batcher.model

    class _Broken:
        name = real.name

        def __call__(self, observation, goal):
            raise RuntimeError("ORT kernel failed")

    body = json.dumps({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size})
    with RunningServer(app) as running:
        batcher.model = _Broken()
        r = _post(running.url, body, JSON)
        assert r.status_code == 500 and r.json()["error"] == "inference failed (RuntimeError: ORT kernel failed)."
        with ws_connect(running.url.replace("http://", "ws://") + "/v1/stream") as ws:
            msgpack.unpackb(ws.recv(10))  # metadata
            ws.send(msgpack.packb({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size,
                                   "id": 7}))
            reply = msgpack.unpackb(ws.recv(10))
            assert (reply["type"], reply["status"], reply["id"]) == ("error", 500, 7)
            batcher.model = real
            ws.send(msgpack.packb({"observation": [0.0] * reference.obs_size, "goal": [0.0] * reference.goal_size}))
            assert msgpack.unpackb(ws.recv(10))["type"] == "action"
        assert _post(running.url, body, JSON).status_code == 200
