"""The light clients against a real server: same answers as in-process ONNX Runtime, errors as sentences."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from deepcrl.errors import DeepcrlError
from deepcrl.serve.client import PolicyClient, ServerError, StreamClient


@pytest.mark.parametrize("use_json", [False, True], ids=["msgpack", "json"])
def test_policy_client_equals_in_process_policy(server, reference, inputs, use_json):
    obs, goal = inputs
    with PolicyClient(server.url, use_json=use_json) as client:
        assert (client.obs_size, client.goal_size, client.action_size) == (reference.obs_size, reference.goal_size,
                                                                           reference.action_size)
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)
        np.testing.assert_allclose(client.act(obs[0], goal[0]), reference(obs[:1], goal[:1])[0], atol=1e-6)
        assert client.last_timing["infer_us"] > 0
        assert client.metadata()["metadata"]["env_id"]


def test_policy_call_splits_batches_above_max_batch_size(server, reference):
    rng = np.random.default_rng(3)
    obs = rng.uniform(-1, 1, (19, reference.obs_size)).astype(np.float32)  # server max_batch_size is 8
    goal = rng.uniform(-1, 1, (19, reference.goal_size)).astype(np.float32)
    with PolicyClient(server.url) as client:
        assert client.max_batch_size == 8
        out = client(obs, goal)
    assert out.shape == (19, reference.action_size)
    np.testing.assert_allclose(out, reference(obs, goal), atol=1e-6)


def test_old_keyword_model_still_works_with_a_deprecation_warning(server, reference, inputs):
    obs, goal = inputs
    name = PolicyClient(server.url).metadata()["name"]
    with pytest.warns(DeprecationWarning, match="use model_name="):
        client = PolicyClient(server.url, model=name)
    with client:
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)
        with pytest.warns(DeprecationWarning, match="use max_batch_size"):
            assert client.max_batch == 8
    with pytest.warns(DeprecationWarning, match="use model_name="), StreamClient(server.url, model=name) as stream:
        np.testing.assert_allclose(stream(obs, goal), reference(obs, goal), atol=1e-6)
    with pytest.warns(DeprecationWarning), pytest.raises(DeepcrlError, match="disagree"):
        PolicyClient(server.url, model_name=name, model="other")


def test_stream_client_equals_in_process_policy(server, reference, inputs):
    obs, goal = inputs
    with StreamClient(server.url) as client:
        assert client.obs_size == reference.obs_size
        np.testing.assert_allclose(client(obs, goal), reference(obs, goal), atol=1e-6)
        for i in range(len(obs)):
            np.testing.assert_allclose(client.act(obs[i], goal[i]), reference(obs[i:i + 1], goal[i:i + 1])[0],
                                       atol=1e-6)
        with pytest.raises(ServerError, match="NaN") as info:
            client.act(np.full(reference.obs_size, np.nan), goal[0])
        assert info.value.status == 422
        np.testing.assert_allclose(client.act(obs[0], goal[0]), reference(obs[:1], goal[:1])[0], atol=1e-6)


def test_client_errors_are_sentences(server, auth_server, reference):
    with pytest.raises(ServerError, match="bearer token") as info:
        PolicyClient(auth_server.url)
    assert info.value.status == 401
    with PolicyClient(auth_server.url, token=auth_server.token) as client:
        assert client.act(np.zeros(reference.obs_size), np.zeros(reference.goal_size)).shape == (reference.action_size,)
    with pytest.raises(ServerError, match="cannot open"):
        StreamClient(auth_server.url, token="wrong")
    with StreamClient(auth_server.url, token=auth_server.token) as client:
        assert client.act(np.zeros(reference.obs_size), np.zeros(reference.goal_size)).shape == (reference.action_size,)
    with PolicyClient(server.url) as client:
        with pytest.raises(DeepcrlError, match="expects rows of") as bad_shape:
            client.act(np.zeros(reference.obs_size + 1), np.zeros(reference.goal_size))
        assert not isinstance(bad_shape.value, ServerError)  # refused by the client, before any request
    with pytest.raises(ServerError, match="cannot reach"):
        PolicyClient("http://127.0.0.1:9", timeout=2)


def test_policy_client_reopens_a_connection_the_server_closed(policy_onnx, reference, inputs):
    from urllib.parse import urlsplit

    from deepcrl.serve.app import RunningServer, create_app

    obs, goal = inputs
    first_server = RunningServer(create_app(policy_onnx, warmup=1))
    with PolicyClient(first_server.url) as client:
        client.act(obs[0], goal[0])
        first = client._conn
        # A server that stops closes its idle keep-alive connections from its side (as uvicorn does to one idle
        # past its keep-alive timeout); the client's next request finds that one closed.
        first_server.stop()
        with RunningServer(create_app(policy_onnx, warmup=1), port=urlsplit(first_server.url).port):
            np.testing.assert_allclose(client.act(obs[1], goal[1]), reference(obs[1:2], goal[1:2])[0], atol=1e-6)
        assert client._conn is not first  # it really reconnected


def test_evaluate_through_the_server_equals_in_process(server, reference, policy_onnx):
    from deepcrl.evaluate import evaluate

    with PolicyClient(server.url) as client:
        env_id = client.metadata()["metadata"]["env_id"]
        remote = evaluate(env_id, client, episodes=8, seed=1, episode_length=30)
    local = evaluate(env_id, reference, episodes=8, seed=1, episode_length=30)
    assert remote.as_dict() == pytest.approx(local.as_dict(), abs=1e-5)
    assert remote.episodes == 8


def test_importing_the_client_does_not_import_jax_or_the_server():
    code = ("import sys, deepcrl.serve.client as c; bad = [m for m in ('jax', 'flax', 'onnxruntime', 'fastapi', "
            "'uvicorn', 'deepcrl.serve.app') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_eval_through_the_server_and_the_file_agree(server, policy_onnx, capsys):
    """`deepcrl eval --url` (env from the served metadata) equals `deepcrl eval --model` on the same seed."""
    import json

    from deepcrl.cli import main

    args = ["--eval-episodes", "4", "--episode-length", "20", "--seed", "2", "--json"]
    assert main(["eval", "--url", server.url, *args]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", str(policy_onnx), *args]) == 0
    local = json.loads(capsys.readouterr().out)
    assert remote["env"] == local["env"] and remote["episodes"] == 4
    assert remote["success"] == local["success"]
    assert remote["final_distance"] == pytest.approx(local["final_distance"], abs=1e-4)


def test_cli_eval_with_an_unset_token_variable_is_one_sentence(server, capsys):
    from deepcrl.cli import main

    assert main(["eval", "--url", server.url, "--token-env", "DEEPCRL_NO_SUCH_VAR"]) == 2
    assert "DEEPCRL_NO_SUCH_VAR is not set" in capsys.readouterr().err
