"""Model lifecycle: load / replace / unload while requests flow (explicit and poll control), versions in every
answer, failed loads keep the old version serving."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import numpy as np
import pytest

from deepcrl.bench.synthetic import reference, write_policy

HIDDEN = (16,)


def _write(path, seed: int, obs_size: int = 2) -> None:
    """Write version `seed` of the policy atomically (beside, then renamed into place), as a deploy would."""
    tmp = path.with_name(f".{path.name}.{seed}.tmp")
    write_policy(tmp, hidden=HIDDEN, seed=seed, obs_size=obs_size)
    os.replace(tmp, path)


@pytest.fixture
def repo_server(tmp_path, request):
    from deepcrl.serve.app import RunningServer, create_app

    control = getattr(request, "param", "explicit")
    _write(tmp_path / "policy.onnx", seed=1)
    app = create_app(tmp_path, max_batch_size=8, warmup=1, model_control=control, repository_poll_s=0.05)
    with RunningServer(app) as running:
        yield running, tmp_path


def _act(client: httpx.Client, url: str, obs) -> httpx.Response:
    return client.post(url + "/v1/act", json={"observation": list(obs), "goal": [0.5, -0.5]}, timeout=30)


def _expected(seed: int, obs) -> np.ndarray:
    return reference(np.asarray([obs], np.float32), np.asarray([[0.5, -0.5]], np.float32), hidden=HIDDEN,
                     seed=seed)[0]


def test_ten_replacements_under_closed_loop_load_drop_no_request(repo_server):
    running, root = repo_server
    url = running.url
    stop = threading.Event()
    answers: list[tuple[int, str, list[float], list[float]]] = []

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        with httpx.Client() as c:
            while not stop.is_set():
                obs = rng.uniform(-1, 1, 2).round(3).tolist()
                r = _act(c, url, obs)
                answers.append((r.status_code, r.headers.get("x-model-version", ""), obs,
                                r.json().get("action") if r.status_code == 200 else r.text))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for version in range(2, 12):  # versions 2..11: seed == version
            before = len(answers)
            while len(answers) < before + 5:  # requests flow between replacements
                time.sleep(0.01)
            _write(root / "policy.onnx", seed=version)
            r = httpx.post(f"{url}/v2/repository/models/policy/load", timeout=60)
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert len(answers) > 50
    failed = [a for a in answers if a[0] != 200]
    assert failed == []
    versions = {a[1] for a in answers}
    assert versions <= {str(v) for v in range(1, 12)} and "11" in versions and "1" in versions
    # Every answer was computed by the version it names (seed == version), none by a mix.
    for _, version, obs, action in answers[::7]:
        np.testing.assert_allclose(action, _expected(int(version), obs), atol=1e-5)
    index = httpx.post(url + "/v2/repository/index", json={}).json()
    assert index == [{"name": "policy", "state": "READY", "reason": "", "version": "11"}]
    meta = httpx.get(url + "/v2/models/policy").json()
    assert meta["versions"] == ["11"]
    v2 = {"inputs": [{"name": "observation", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.2]},
                     {"name": "goal", "shape": [1, 2], "datatype": "FP32", "data": [0.5, -0.5]}]}
    assert httpx.post(url + "/v2/models/policy/infer", json=v2).json()["model_version"] == "11"
    assert httpx.post(url + "/v2/models/policy/versions/3/infer", json=v2).status_code == 404
    metrics = httpx.get(url + "/metrics").text
    assert 'deepcrl_model_version{model="policy"} 11.0' in metrics
    assert 'deepcrl_model_answers_total{model="policy",version="11"}' in metrics


def test_a_failed_load_keeps_the_old_version_serving(repo_server):
    running, root = repo_server
    url = running.url
    (root / "policy.onnx").write_bytes(b"this is not an onnx file")
    r = httpx.post(f"{url}/v2/repository/models/policy/load")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith("loading model 'policy' failed; version 1 keeps serving:") and "\n" not in error
    with httpx.Client() as c:
        r = _act(c, url, [0.1, 0.2])
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        np.testing.assert_allclose(r.json()["action"], _expected(1, [0.1, 0.2]), atol=1e-5)
    _write(root / "policy.onnx", seed=5, obs_size=3)  # a valid policy with another observation size
    r = httpx.post(f"{url}/v2/repository/models/policy/load")
    assert r.status_code == 409 and "sizes (3, 2, 2) differ" in r.json()["error"]
    (entry,) = httpx.get(url + "/v2/repository/index").json()
    assert entry["state"] == "READY" and entry["version"] == "1" and entry["reason"].startswith("the last load failed")
    assert httpx.post(f"{url}/v2/repository/models/nope/load").status_code == 400
    assert httpx.post(f"{url}/v2/repository/models/..%2Fetc/load").status_code in (400, 404)


def test_unload_then_load_again(repo_server):
    running, root = repo_server
    url = running.url
    assert httpx.post(f"{url}/v2/repository/models/policy/unload").status_code == 200
    assert httpx.post(url + "/v2/repository/index", json={"ready": True}).json() == []
    (entry,) = httpx.post(url + "/v2/repository/index").json()
    assert entry == {"name": "policy", "state": "UNAVAILABLE", "reason": "unloaded"}
    with httpx.Client() as c:
        assert _act(c, url, [0.1, 0.2]).status_code == 404
        assert httpx.post(f"{url}/v2/repository/models/policy/load").status_code == 200
        r = _act(c, url, [0.1, 0.2])
        assert r.status_code == 200 and r.headers["x-model-version"] == "2"


@pytest.mark.parametrize("repo_server", ["none"], indirect=True)
def test_without_model_control_load_is_refused(repo_server):
    running, _ = repo_server
    r = httpx.post(f"{running.url}/v2/repository/models/policy/load")
    assert r.status_code == 400 and "--model-control explicit" in r.json()["error"]
    assert httpx.get(running.url + "/v2/repository/index").json()[0]["state"] == "READY"


@pytest.mark.parametrize("repo_server", ["poll"], indirect=True)
def test_poll_mode_follows_the_directory(repo_server):
    running, root = repo_server
    url = running.url
    assert httpx.post(f"{url}/v2/repository/models/policy/load").status_code == 400  # poll: files, not calls
    _write(root / "policy.onnx", seed=2)
    _write(root / "other.onnx", seed=3)
    deadline = time.monotonic() + 30
    with httpx.Client() as c:
        while True:
            r = _act(c, url, [0.1, 0.2])
            names = {e["name"]: e.get("version") for e in httpx.get(url + "/v2/repository/index").json()}
            if r.headers.get("x-model-version") == "2" and names.get("other") == "1":
                break
            assert time.monotonic() < deadline, f"the poller never loaded the new files: {names}"
            time.sleep(0.05)
        np.testing.assert_allclose(r.json()["action"], _expected(2, [0.1, 0.2]), atol=1e-5)
    (root / "other.onnx").unlink()
    while "version" in {e["name"]: e for e in httpx.get(url + "/v2/repository/index").json()}["other"]:
        assert time.monotonic() < deadline + 30, "the poller never unloaded the removed file"
        time.sleep(0.05)
    assert json.loads(httpx.post(url + "/v1/models/other/act", json={"observation": [0, 0], "goal": [0, 0]}
                                 ).text)["status"] == 404
