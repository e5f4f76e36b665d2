"""The Open Inference Protocol (KServe v2) routes, driven by the official client (`tritonclient.http`) and by
deepcrl's own `PolicyClient(protocol="v2")`, against a live `deepcrl serve` on loopback."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http", reason="the official v2 client (dev extra: tritonclient[http])")
from tritonclient.utils import InferenceServerException  # noqa: E402

from deepcrl.errors import DeepcrlError  # noqa: E402
from deepcrl.serve.client import PolicyClient, ServerError  # noqa: E402

NAME = "policy"  # the server serves policy.onnx under its file stem


def _client(running, **kwargs) -> "httpclient.InferenceServerClient":
    return httpclient.InferenceServerClient(urlsplit(running.url).netloc, **kwargs)


def _inputs(obs, goal, binary: bool, datatype: str = "FP32"):
    tensors = []
    for name, value in (("observation", obs), ("goal", goal)):
        tensor = httpclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors.append(tensor)
    return tensors


def _rows(reference, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (batch, reference.obs_size)).astype(np.float32),
            rng.uniform(-1, 1, (batch, reference.goal_size)).astype(np.float32))


def test_tritonclient_metadata_and_health(server, reference):
    with _client(server) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
        assert not client.is_model_ready("nope")
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        meta = client.get_model_metadata(NAME)
        assert client.get_model_metadata(NAME, model_version="1") == meta
        with pytest.raises(InferenceServerException, match="has no version '2'") as info:
            client.get_model_metadata(NAME, model_version="2")
        assert info.value.status() == "404"
    assert meta["name"] == NAME and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("observation", "FP32", [-1, reference.obs_size]), ("goal", "FP32", [-1, reference.goal_size])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("action", "FP32", [-1, reference.action_size])]
    assert meta["parameters"]["max_batch_size"] == 8 and meta["parameters"]["env_id"] == reference.metadata["env_id"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("batch", [1, 7])
def test_tritonclient_infer_equals_onnx_policy(server, reference, batch, binary):
    obs, goal = _rows(reference, batch, seed=batch)
    outputs = [httpclient.InferRequestedOutput("action", binary_data=binary)]
    with _client(server) as client:
        result = client.infer(NAME, _inputs(obs, goal, binary), outputs=outputs, request_id="r-7")
        plain = client.infer(NAME, _inputs(obs, goal, binary))  # no outputs named: binary, as Triton answers
    assert result.get_response()["id"] == "r-7"
    action = result.as_numpy("action")
    assert action.dtype == np.float32 and action.shape == (batch, reference.action_size)
    np.testing.assert_allclose(action, reference(obs, goal), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(plain.as_numpy("action"), action)


@pytest.mark.parametrize("change, status, words", [
    ({"obs_size": +1}, 422, "the model expects [batch, {obs}]"),
    ({"batch": 9}, 422, "the server takes 1 to 8 per request"),
    ({"datatype": "FP64"}, 422, "the model expects 'FP32'"),
    ({"nan": True}, 422, "NaN or infinite"),
    ({"model": "nope"}, 404, "no model named 'nope'"),
])
def test_tritonclient_bad_requests_are_4xx_with_a_sentence(server, reference, change, status, words):
    batch = change.get("batch", 2)
    obs = np.zeros((batch, reference.obs_size + change.get("obs_size", 0)),
                   np.float64 if "datatype" in change else np.float32)
    goal = np.zeros((batch, reference.goal_size), obs.dtype)
    if change.get("nan"):
        obs[0, 0] = np.nan
    with _client(server) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer(change.get("model", NAME), _inputs(obs, goal, True, change.get("datatype", "FP32")))
        message = info.value.message()
        assert info.value.status() == str(status)
        assert words.format(obs=reference.obs_size) in message and message.count(". ") == 0, message
        np.testing.assert_allclose(client.infer(NAME, _inputs(*_rows(reference, 1), True)).as_numpy("action"),
                                   reference(*_rows(reference, 1)), atol=1e-6)  # the server lives on


@pytest.mark.parametrize("body, headers, status, words", [
    (b"{not json", {}, 400, "not valid JSON"),
    (b"", {}, 400, "body is empty"),
    (b'{"inputs": 3}', {}, 422, "'inputs' is a list"),
    (b'{"inputs": [{"name": "observation", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]}', {}, 422,
     "non-numeric"),
    (b'{"inputs": []}', {}, 422, "lacks input 'observation'"),
    (b'{"inputs": [], "outputs": [{"name": "value"}]}', {}, 422, "unknown output 'value'"),
    (b'{"inputs": []}', {"inference-header-content-length": "99"}, 400, "Inference-Header-Content-Length"),
    (b"x" * 30_000, {}, 413, "the limit is 20000"),
])
def test_malformed_bodies_are_4xx_with_a_sentence(server, body, headers, status, words):
    response = httpx.post(f"{server.url}/v2/models/{NAME}/infer", content=body, headers=headers)
    assert response.status_code == status
    assert words in response.json()["error"], response.text


def test_auth_metrics_and_the_shared_batcher(auth_server, batching_server, reference):
    bearer = {"Authorization": f"Bearer {auth_server.token}"}  # tritonclient adds to the dict it is given: copies
    obs, goal = _rows(reference, 3)
    with _client(auth_server) as client:
        assert client.is_server_live()  # health needs no token, like /healthz
        with pytest.raises(InferenceServerException, match="bearer token"):
            client.infer(NAME, _inputs(obs, goal, True))
        with pytest.raises(InferenceServerException, match="bearer token"):
            client.get_model_metadata(NAME)
        result = client.infer(NAME, _inputs(obs, goal, True), headers=dict(bearer))
        np.testing.assert_allclose(result.as_numpy("action"), reference(obs, goal), atol=1e-6)
    metrics = httpx.get(f"{auth_server.url}/metrics", headers=bearer).text
    assert 'deepcrl_requests_total{endpoint="v2_infer",protocol="binary",status="401"} 1.0' in metrics
    assert 'deepcrl_requests_total{endpoint="v2_infer",protocol="binary",status="200"} 1.0' in metrics

    # three v2 requests and one /v1 request sent together share ONNX Runtime calls (the server waits 30 ms)
    barrier = threading.Barrier(4)

    def send(i):
        with httpx.Client(base_url=batching_server.url, timeout=30) as http:
            if i < 3:
                tensors = [{"name": n, "shape": [1, x.shape[1]], "datatype": "FP32", "data": x[i].tolist()}
                           for n, x in (("observation", obs), ("goal", goal))]
                barrier.wait(10)
                reply = http.post(f"/v2/models/{NAME}/infer", json={"inputs": tensors}).json()
                return reply["outputs"][0]["data"], None
            barrier.wait(10)
            reply = http.post("/v1/act", json={"observation": obs[0].tolist(), "goal": goal[0].tolist()}).json()
            return reply["action"], reply["timing"]["batch_rows"]

    with ThreadPoolExecutor(4) as pool:
        answers = [f.result(timeout=30) for f in [pool.submit(send, i) for i in range(4)]]
    np.testing.assert_allclose([a for a, _ in answers], reference(obs[[0, 1, 2, 0]], goal[[0, 1, 2, 0]]), atol=1e-6)
    assert answers[3][1] > 1  # the /v1 request's ORT call carried rows of v2 requests too


def test_policy_client_speaks_v2(server, auth_server, reference):
    obs, goal = _rows(reference, 19, seed=5)  # above the server's max_batch of 8: the client splits
    with PolicyClient(server.url, protocol="v2", model_name=NAME) as client:
        assert (client.obs_size, client.goal_size, client.action_size, client.max_batch_size) == (
            reference.obs_size, reference.goal_size, reference.action_size, 8)
        assert client.metadata()["metadata"]["env_id"] == reference.metadata["env_id"]
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6, rtol=0)
        with pytest.raises(ServerError, match="not valid JSON") as info:  # JSON has no NaN
            client.act(np.full(reference.obs_size, np.nan), goal[0])
        assert info.value.status == 400
        np.testing.assert_allclose(client.act(obs[0], goal[0]), reference(obs[:1], goal[:1])[0], atol=1e-6)
    with pytest.raises(ServerError, match="bearer token"):
        PolicyClient(auth_server.url, protocol="v2", model_name=NAME)
    with PolicyClient(auth_server.url, token=auth_server.token, protocol="v2", model_name=NAME) as client:
        np.testing.assert_allclose(client(obs[:2], goal[:2]), reference(obs[:2], goal[:2]), atol=1e-6)
    with pytest.raises(ServerError, match="no model named 'nope'"):
        PolicyClient(server.url, protocol="v2", model_name="nope")
    with pytest.raises(DeepcrlError, match="model_name=NAME"):
        PolicyClient(server.url, protocol="v2")


def test_cli_eval_url_v2_equals_eval_model(server, policy_onnx, capsys):
    """`deepcrl eval --url URL --protocol v2 --model-name NAME` scores what `deepcrl eval --model` scores."""
    from deepcrl.cli import main

    args = ["--eval-episodes", "4", "--episode-length", "20", "--seed", "2", "--json"]
    results = []
    for source in (["--model", str(policy_onnx)], ["--url", server.url, "--protocol", "v2", "--model-name", NAME]):
        assert main(["eval", *source, *args]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[1]["source"] == f"server {server.url}" and results[1]["env"] == results[0]["env"]
    for key in ("success", "final_success", "time_at_goal", "final_distance"):
        assert results[1][key] == pytest.approx(results[0][key], abs=1e-6), key


def test_eval_config_refuses_v2_flags_without_what_they_need():
    from deepcrl.config import EvalConfig

    with pytest.raises(DeepcrlError, match="pass --model-name NAME"):
        EvalConfig(url="http://127.0.0.1:1", protocol="v2")
    with pytest.raises(DeepcrlError, match="they need --url URL"):
        EvalConfig(model="policy.onnx", model_name=NAME)
