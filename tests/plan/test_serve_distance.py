"""POST /v1/distance and /v1/plan: values equal the critic's, the /v1/act rules (auth, 4xx, metrics)."""

from __future__ import annotations

import numpy as np
import pytest

TOKEN = "plan-token"


@pytest.fixture(scope="module")
def served(fresh_teacher_dir, critic_onnx, tmp_path_factory):
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export
    from deepcrl.serve.app import RunningServer, create_app

    policy = tmp_path_factory.mktemp("plan_serve") / "policy.onnx"
    export(ExportConfig(run=fresh_teacher_dir, out=policy))
    app = create_app(policy, token=TOKEN, warmup=2, critic=critic_onnx[1], plan={"landmarks": 30})
    with RunningServer(app) as running:
        yield running, app


def _post(url, path, body, token=TOKEN, **kw):
    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=10, **kw)


def test_distances_equal_the_critic_and_goal_blocks_are_cached(served, critic_onnx):
    from deepcrl.plan.critic import OnnxCritic

    running, _ = served
    critic = OnnxCritic(critic_onnx[1])
    rng = np.random.default_rng(0)
    obs, goals = rng.uniform(0.5, 4.5, 2), rng.uniform(0.5, 4.5, (37, 2))
    want = np.linalg.norm(critic.phi(obs[None]) - critic.psi(goals), axis=1)
    first = _post(running.url, "/v1/distance", {"observation": obs.tolist(), "goals": goals.tolist()})
    again = _post(running.url, "/v1/distance", {"observation": obs.tolist(), "goals": goals.tolist()})
    assert first.status_code == 200 and again.status_code == 200
    np.testing.assert_allclose(first.json()["distances"], want, rtol=1e-5, atol=1e-5)
    assert first.json()["goals_cached"] is False and again.json()["goals_cached"] is True
    np.testing.assert_allclose(again.json()["distances"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("body, status, words", [
    ({"observation": [1.0, 1.0]}, 422, "no 'goals'"),
    ({"observation": [1.0, 1.0], "goals": []}, 422, "empty"),
    ({"observation": [1.0, 1.0], "goals": [[1.0, 2.0, 3.0]]}, 422, "expects 2"),
    ({"observation": [1.0, "x"], "goals": [[1.0, 2.0]]}, 422, "non-numeric"),
    ({"observation": [1.0, 1.0], "goals": [[0.0, 0.0]] * 4097}, 422, "at most 4096"),
])
def test_bad_bodies_are_4xx_sentences(served, body, status, words):
    r = _post(served[0].url, "/v1/distance", body)
    assert r.status_code == status and words in r.json()["error"]


def test_token_and_metrics(served):
    import httpx

    running, _ = served
    r = _post(running.url, "/v1/distance", {"observation": [1, 1], "goals": [[2, 2]]}, token=None)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    metrics = httpx.get(running.url + "/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    assert 'deepcrl_requests_total{endpoint="distance",protocol="json",status="401"}' in metrics


def test_plan_answers_the_action_toward_a_waypoint(served, fresh_teacher_dir):
    from deepcrl.policy import load_policy

    running, app = served
    r = _post(running.url, "/v1/plan", {"observation": [1.5, 1.5], "goal": [3.5, 1.5]})
    assert r.status_code == 200, r.text
    reply = r.json()
    policy = load_policy(fresh_teacher_dir)
    want = policy(np.array([[1.5, 1.5]], np.float32), np.array([reply["waypoint"]], np.float32))[0]
    np.testing.assert_allclose(reply["action"], want, atol=1e-5)
    assert reply["landmark"] >= -1 and "plan_us" in reply["timing"]


def test_no_critic_is_404(tmp_path, fresh_teacher_dir):
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export
    from deepcrl.serve.app import RunningServer, create_app

    policy = tmp_path / "policy.onnx"
    export(ExportConfig(run=fresh_teacher_dir, out=policy))
    with RunningServer(create_app(policy, warmup=1)) as running:
        r = _post(running.url, "/v1/distance", {"observation": [1, 1], "goals": [[2, 2]]}, token=None)
    assert r.status_code == 404 and "no critic" in r.json()["error"]
