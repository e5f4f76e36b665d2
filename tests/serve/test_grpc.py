"""The KServe v2 gRPC service, driven by the official client (`tritonclient.grpc`) and by the raw generated stub,
against a live server (uvicorn + the grpc.aio server on one event loop): the same answers, limits, token,
deadlines and metrics as the HTTP path."""

from __future__ import annotations

import concurrent.futures
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="the official gRPC client (grpc / dev extra)")
import grpc  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

NAME = "policy"  # the server serves policy.onnx under its file stem
TOKEN = "grpc-s3cret"
BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(policy_onnx):
    """HTTP + gRPC on free loopback ports, with a token, max_batch_size 8 and a 20 kB body limit."""
    from deepcrl.serve.app import RunningServer, create_app

    app = create_app(policy_onnx, max_batch_size=8, max_body_bytes=20_000, warmup=2, token=TOKEN, grpc_port=0)
    with RunningServer(app) as running:
        running.grpc = f"127.0.0.1:{app.state.grpc_port}"
        yield running


@pytest.fixture
def client(served):
    with grpcclient.InferenceServerClient(served.grpc) as c:
        yield c


def _rows(reference, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (batch, reference.obs_size)).astype(np.float32),
            rng.uniform(-1, 1, (batch, reference.goal_size)).astype(np.float32))


def _inputs(obs, goal, datatype: str = "FP32"):
    tensors = []
    for name, value in (("observation", obs), ("goal", goal)):
        tensor = grpcclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def _metric(url: str, line_start: str) -> float:
    for line in httpx.get(url + "/metrics", headers=BEARER).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _status(exc: InferenceServerException) -> str:
    return exc.status().removeprefix("StatusCode.")


def test_health_and_metadata(client, reference):
    assert client.is_server_live() and client.is_server_ready()  # health needs no token, as over HTTP
    assert client.get_server_metadata(as_json=True)["name"] == "deepcrl"
    assert client.is_model_ready(NAME, headers=dict(BEARER))
    meta = client.get_model_metadata(NAME, headers=dict(BEARER), as_json=True)
    assert meta["name"] == NAME and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("observation", "FP32", ["-1", str(reference.obs_size)]), ("goal", "FP32", ["-1", str(reference.goal_size)])]
    assert [(t["name"], t["shape"]) for t in meta["outputs"]] == [("action", ["-1", str(reference.action_size)])]
    for name, version, words in (("nope", "", "no model named 'nope'"), (NAME, "2", "has no version '2'")):
        with pytest.raises(InferenceServerException, match=words) as info:
            client.get_model_metadata(name, model_version=version, headers=dict(BEARER))
        assert _status(info.value) == "NOT_FOUND"
    with pytest.raises(InferenceServerException, match="bearer token") as info:
        client.get_model_metadata(NAME)
    assert _status(info.value) == "UNAUTHENTICATED"


@pytest.mark.parametrize("batch", [1, 7])
def test_infer_equals_onnx_policy(client, reference, batch):
    obs, goal = _rows(reference, batch, seed=batch)
    result = client.infer(NAME, _inputs(obs, goal), request_id=f"r-{batch}", headers=dict(BEARER),
                          outputs=[grpcclient.InferRequestedOutput("action")])
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == (f"r-{batch}", NAME, "1")
    action = result.as_numpy("action")
    assert action.dtype == np.float32 and action.shape == (batch, reference.action_size)
    np.testing.assert_allclose(action, reference(obs, goal), atol=1e-6, rtol=0)
    versioned = client.infer(NAME, _inputs(obs, goal), model_version="1", headers=dict(BEARER))
    np.testing.assert_array_equal(versioned.as_numpy("action"), action)


def test_stream_answers_every_request_by_id_and_survives_a_bad_one(served, reference):
    answers: queue.Queue = queue.Queue()
    sent = {f"s-{b}": _rows(reference, b, seed=10 + b) for b in (1, 2, 3, 5, 7, 8)}
    with grpcclient.InferenceServerClient(served.grpc) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=dict(BEARER))
        for i, (rid, (obs, goal)) in enumerate(sent.items()):
            client.async_stream_infer(NAME, _inputs(obs, goal), request_id=rid)
            if i == 2:  # a wrong shape in the middle: answered in the stream, which goes on
                client.async_stream_infer(NAME, _inputs(np.zeros((1, reference.obs_size + 1), np.float32),
                                                        goal[:1]), request_id="bad")
        got = [answers.get(timeout=30) for _ in range(len(sent) + 1)]
        client.stop_stream()
    errors = [e for r, e in got if e is not None]
    assert len(errors) == 1 and f"the model expects [batch, {reference.obs_size}]" in errors[0].message()
    results = {r.get_response().id: r.as_numpy("action") for r, e in got if e is None}
    assert results.keys() == sent.keys()
    for rid, (obs, goal) in sent.items():
        np.testing.assert_allclose(results[rid], reference(obs, goal), atol=1e-6, rtol=0)


def test_a_stream_without_the_token_ends_unauthenticated(served, reference):
    answers: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(served.grpc) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        result, error = answers.get(timeout=30)  # refused when the stream opens, before any request
        with pytest.raises(InferenceServerException, match="no longer in valid state"):
            client.async_stream_infer(NAME, _inputs(*_rows(reference, 1)))
        client.stop_stream()
    assert result is None and _status(error) == "UNAUTHENTICATED" and "bearer token" in error.message()


@pytest.mark.parametrize("change, code, words", [
    ({"obs_size": +1}, "INVALID_ARGUMENT", "the model expects [batch, {obs}]"),
    ({"batch": 9}, "INVALID_ARGUMENT", "the server takes 1 to 8 per request"),
    ({"datatype": "FP64"}, "INVALID_ARGUMENT", "the model expects 'FP32'"),
    ({"nan": True}, "INVALID_ARGUMENT", "NaN or infinite"),
    ({"model": "nope"}, "NOT_FOUND", "no model named 'nope'"),
    ({"token": None}, "UNAUTHENTICATED", "a valid bearer token is required"),
    ({"token": "wrong"}, "UNAUTHENTICATED", "a valid bearer token is required"),
    ({"timeout_us": 0}, "DEADLINE_EXCEEDED", "deadline (0 s) passed before its inference started"),
])
def test_bad_requests_get_the_right_status_and_one_sentence(client, reference, change, code, words):
    batch = change.get("batch", 2)
    dtype = np.float64 if "datatype" in change else np.float32
    obs = np.zeros((batch, reference.obs_size + change.get("obs_size", 0)), dtype)
    goal = np.zeros((batch, reference.goal_size), dtype)
    if change.get("nan"):
        obs[0, 0] = np.nan
    token = change.get("token", TOKEN)
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    with pytest.raises(InferenceServerException) as info:
        client.infer(change.get("model", NAME), _inputs(obs, goal, change.get("datatype", "FP32")), headers=headers,
                     timeout=change.get("timeout_us"))
    message = info.value.message()
    assert _status(info.value) == code
    assert words.format(obs=reference.obs_size) in message and message.count(". ") == 0, message
    assert "Traceback" not in message
    obs, goal = _rows(reference, 1)  # the server lives on
    np.testing.assert_allclose(client.infer(NAME, _inputs(obs, goal), headers=dict(BEARER)).as_numpy("action"),
                               reference(obs, goal), atol=1e-6)


def test_raw_stub_contents_limits_and_malformed_requests(served, reference):
    """What tritonclient never sends: values in `contents` rather than raw bytes, a message over the body limit,
    raw contents that do not match the inputs."""
    obs, goal = _rows(reference, 3, seed=4)

    def request(**overrides) -> pb.ModelInferRequest:
        r = pb.ModelInferRequest(model_name=NAME, id="raw")
        for name, value in (("observation", obs), ("goal", goal)):
            t = r.inputs.add(name=name, datatype="FP32", shape=list(value.shape))
            t.contents.fp32_contents.extend(value.reshape(-1).tolist())
        for key, value in overrides.items():
            r.ClearField(key)
            getattr(r, key).extend(value)
        return r

    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = tuple(BEARER.items())
        reply = stub.ModelInfer(request(), metadata=metadata, timeout=30)
        action = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(list(reply.outputs[0].shape))
        np.testing.assert_allclose(action, reference(obs, goal), atol=1e-6, rtol=0)
        for overrides, code, words in (
                ({"raw_input_contents": [b"\0" * 8]}, grpc.StatusCode.INVALID_ARGUMENT, "1 raw_input_contents for 2"),
                ({"raw_input_contents": [b"\0" * 8, b"\0" * 8]}, grpc.StatusCode.INVALID_ARGUMENT,
                 "sends 8 bytes of binary data"),
                ({"raw_input_contents": [b"\0" * 30_000, b""]}, grpc.StatusCode.RESOURCE_EXHAUSTED, "")):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request(**overrides), metadata=metadata, timeout=30)
            assert info.value.code() == code and words in info.value.details(), info.value.details()
        assert stub.ModelInfer(request(), metadata=metadata, timeout=30).id == "raw"  # still serving


def test_metrics_count_grpc_requests_beside_http(served, client, reference):
    ok = 'deepcrl_requests_total{endpoint="v2_infer",protocol="grpc",status="200"}'
    bad = 'deepcrl_requests_total{endpoint="v2_infer",protocol="grpc",status="422"}'
    latency = 'deepcrl_request_latency_seconds_count{endpoint="v2_infer",protocol="grpc"}'
    before = [_metric(served.url, key) for key in (ok, bad, latency)]
    obs, goal = _rows(reference, 2)
    for _ in range(3):
        client.infer(NAME, _inputs(obs, goal), headers=dict(BEARER))
    with pytest.raises(InferenceServerException):
        client.infer(NAME, _inputs(obs[:, :1], goal), headers=dict(BEARER))
    after = [_metric(served.url, key) for key in (ok, bad, latency)]
    assert [a - b for a, b in zip(after, before)] == [3, 1, 3]
    assert _metric(served.url, f'deepcrl_model_answers_total{{model="{NAME}",version="1"}}') >= 3


@pytest.fixture
def gated(policy_onnx):
    """A gRPC server (2 in flight at most, default deadline 20 s) whose model blocks until the test sets
    `release`; `seen` gets the first observation value of every row the model is called with."""
    from deepcrl.serve.app import RunningServer, create_app

    app = create_app(policy_onnx, max_batch_size=4, timeout_s=20.0, max_in_flight=2, warmup=1, grpc_port=0)
    (s,) = app.state.server.served.values()
    model, release, seen = s.model, threading.Event(), []

    def blocked(observation, goal):
        seen.extend(observation[:, 0].tolist())
        assert release.wait(30), "the test never released the model"
        return model(observation, goal)

    blocked.name = model.name
    s.batcher.model = blocked
    running = RunningServer(app)
    running.grpc = f"127.0.0.1:{app.state.grpc_port}"
    try:
        yield running, app.state.server, release, seen
    finally:
        release.set()
        running.stop()


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_deadlines_and_admission_over_grpc(gated, reference):
    running, server, release, seen = gated

    def rows(value: float):
        obs, goal = _rows(reference, 1)
        obs[0, 0] = value
        return _inputs(obs, goal)

    def metric(key: str) -> float:
        for line in httpx.get(running.url + "/metrics").text.splitlines():
            if line.startswith(key):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    deadlines = 'deepcrl_deadline_exceeded_total{where="'
    with grpcclient.InferenceServerClient(running.grpc) as client, concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = pool.submit(client.infer, NAME, rows(0.5))
        _wait_for(lambda: seen, "the model to be busy")
        # queued behind the busy model: a 2 ms v2 timeout and a 300 ms gRPC deadline both pass uncomputed
        with pytest.raises(InferenceServerException, match="within 0.002 s") as info:
            client.infer(NAME, rows(0.25), timeout=2000)
        assert _status(info.value) == "DEADLINE_EXCEEDED"
        with pytest.raises(InferenceServerException) as info:
            client.infer(NAME, rows(0.125), client_timeout=0.3)
        assert _status(info.value) == "DEADLINE_EXCEEDED"
        _wait_for(lambda: sum(metric(deadlines + w + '"}') for w in ("queue", "waiting")) == 2,
                  "both deadlines counted")
        # the in-flight bound (2) is per process, over HTTP and gRPC together: an HTTP request fills it
        http = pool.submit(httpx.post, running.url + "/v1/act", timeout=30,
                           json={"observation": [0.75] * reference.obs_size, "goal": [0.0] * reference.goal_size})
        _wait_for(lambda: server.admission.in_flight == 2, "2 requests in flight")
        with pytest.raises(InferenceServerException, match="limit of 2 requests in flight") as info:
            client.infer(NAME, rows(0.0625))
        assert _status(info.value) == "UNAVAILABLE"
        assert metric('deepcrl_refused_total{reason="in_flight"}') == 1
        release.set()
        assert held.result(30).as_numpy("action").shape == (1, reference.action_size)
        assert http.result(30).status_code == 200
    assert seen.count(0.5) == 1 and not {0.25, 0.125, 0.0625} & set(seen)  # the late and refused: never computed
    assert server.admission.in_flight == 0


def test_serve_help_documents_grpc_port(capsys):
    from deepcrl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("--grpc-port", "KServe v2 gRPC service", "SO_REUSEPORT"):
        assert phrase in text, phrase


def test_config_refuses_grpc_ports_it_cannot_serve(policy_onnx):
    from deepcrl.errors import DeepcrlError
    from deepcrl.serve.config import ServeConfig

    with pytest.raises(DeepcrlError, match="with --workers give a fixed port"):
        ServeConfig(model=policy_onnx, grpc_port=0, workers=2)
    with pytest.raises(DeepcrlError, match="give gRPC a port of its own"):
        ServeConfig(model=policy_onnx, port=8000, grpc_port=8000)
    with pytest.raises(DeepcrlError, match="--grpc-port must lie in"):
        ServeConfig(model=policy_onnx, grpc_port=70000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a real `deepcrl serve --workers 2 --grpc-port P` (two server processes)
def test_cli_serves_grpc_from_every_worker(policy_onnx, reference, tmp_path, stop_served):
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the workers' metric files land under tmp_path
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(policy_onnx), "--port", "0",
                             "--grpc-port", str(port), "--workers", "2", "--warmup", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert f"(gRPC at 127.0.0.1:{port}; 2 workers" in line, line + proc.stderr.read()
        url = line.split("ready at ")[1].split()[0]
        obs, goal = _rows(reference, 3, seed=9)
        expected = reference(obs, goal)

        def one(_):  # a new connection per call (no shared subchannel), so the kernel hands them to both workers
            with grpcclient.InferenceServerClient(f"127.0.0.1:{port}",
                                                  channel_args=[("grpc.use_local_subchannel_pool", 1)]) as c:
                return c.infer(NAME, _inputs(obs, goal)).as_numpy("action")

        n = 40
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            actions = list(pool.map(one, range(n)))
        np.testing.assert_allclose(np.stack(actions), np.stack([expected] * n), atol=1e-6)
        pids = {f.name for f in tmp_path.glob("deepcrl-metrics-*/counter_*.db")}
        assert len(pids) == 2, pids  # both workers answered gRPC requests (each writes its own counter file)
        text = httpx.get(url + "/metrics", timeout=30).text  # summed over both workers
        assert f'deepcrl_requests_total{{endpoint="v2_infer",protocol="grpc",status="200"}} {float(n)}' in text
    finally:
        stop_served(proc, 60)  # the supervisor drains both workers
    assert proc.returncode == 0, proc.stderr.read()[-3000:]


def test_serve_refuses_a_grpc_port_in_use_in_one_sentence(policy_onnx):
    from deepcrl.errors import DeepcrlError
    from deepcrl.serve.app import serve
    from deepcrl.serve.config import ServeConfig

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = ServeConfig(model=policy_onnx, port=0, grpc_port=taken.getsockname()[1], warmup=1)
        with pytest.raises(DeepcrlError, match="cannot bind the gRPC port 127.0.0.1:.*choose another --grpc-port"):
            serve(cfg)


# ---- the model repository RPCs (the same `Repository` as /v2/repository/*) ------------------------------------


def test_repository_rpcs_need_the_token_and_model_control(client, served):
    index = client.get_model_repository_index(headers=BEARER, as_json=True)
    assert index["models"] == [{"name": NAME, "version": "1", "state": "READY"}]
    assert httpx.get(served.url + "/v2/repository/index", headers=BEARER).json() == [{**index["models"][0],
                                                                                      "reason": ""}]
    for call in (client.get_model_repository_index, lambda: client.load_model(NAME),
                 lambda: client.unload_model(NAME)):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert _status(info.value) == "UNAUTHENTICATED"
    for call in (client.load_model, client.unload_model):  # this server runs with --model-control none
        with pytest.raises(InferenceServerException) as info:
            call(NAME, headers=BEARER)
        assert _status(info.value) == "INVALID_ARGUMENT"
        assert "--model-control explicit" in info.value.message()
    assert client.is_model_ready(NAME, headers=BEARER)


def test_repository_rpcs_load_replace_and_unload(tmp_path):
    from deepcrl.bench.synthetic import reference as synthetic_reference
    from deepcrl.bench.synthetic import write_policy
    from deepcrl.serve.app import RunningServer, create_app

    def deploy(seed: int, obs_size: int = 2) -> None:
        tmp = tmp_path / f".{seed}.tmp"
        write_policy(tmp, hidden=(16,), seed=seed, obs_size=obs_size)
        os.replace(tmp, tmp_path / "policy.onnx")

    obs, goal = np.full((2, 2), 0.3, np.float32), np.full((2, 2), -0.2, np.float32)
    deploy(seed=1)
    app = create_app(tmp_path, max_batch_size=8, warmup=1, model_control="explicit", grpc_port=0)
    with RunningServer(app), grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}") as c:
        def infer():
            result = c.infer(NAME, _inputs(obs, goal))
            return result.get_response().model_version, result.as_numpy("action")

        def refused(call, *args, **kwargs) -> InferenceServerException:
            with pytest.raises(InferenceServerException) as info:
                call(*args, **kwargs)
            assert "\n" not in info.value.message() and "Traceback" not in info.value.message()
            return info.value

        deploy(seed=2)
        c.load_model(NAME)
        version, action = infer()
        assert version == "2"
        np.testing.assert_allclose(action, synthetic_reference(obs, goal, hidden=(16,), seed=2), atol=1e-5)
        assert c.get_model_repository_index(as_json=True)["models"] == [{"name": NAME, "version": "2",
                                                                          "state": "READY"}]
        error = refused(c.load_model, NAME, config="{}")  # Triton's config override: refused, not ignored
        assert _status(error) == "INVALID_ARGUMENT" and "cannot carry 'config'" in error.message()
        error = refused(c.load_model, NAME, config="{}", files={"file:1/model.onnx": b"x"})
        assert "'config', 'file:1/model.onnx'" in error.message()
        error = refused(c.load_model, "nope")
        assert _status(error) == "INVALID_ARGUMENT" and "has no model 'nope'" in error.message()
        deploy(seed=3, obs_size=3)
        error = refused(c.load_model, NAME)
        assert _status(error) == "FAILED_PRECONDITION" and "sizes (3, 2, 2) differ" in error.message()
        (tmp_path / "policy.onnx").write_bytes(b"not an onnx file")
        error = refused(c.load_model, NAME)
        assert _status(error) == "INVALID_ARGUMENT"
        assert error.message().startswith("loading model 'policy' failed; version 2 keeps serving: ")
        assert infer()[0] == "2"  # the failures changed nothing
        (entry,) = c.get_model_repository_index(as_json=True)["models"]
        assert entry["version"] == "2" and entry["reason"].startswith("the last load failed")
        c.unload_model(NAME)
        assert _status(refused(infer)) == "NOT_FOUND"
        assert c.get_model_repository_index(as_json=True)["models"] == [{"name": NAME, "state": "UNAVAILABLE",
                                                                          "reason": "unloaded"}]
        with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:  # `ready` (not in tritonclient)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert list(stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models) == []
            assert len(stub.RepositoryIndex(pb.RepositoryIndexRequest()).models) == 1
        assert _status(refused(c.unload_model, NAME)) == "INVALID_ARGUMENT"
