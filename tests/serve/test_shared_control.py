"""Model control shared by the workers of one server (`deepcrl/serve/control.py`): a load or unload answered by
any worker takes effect on every worker before it answers, a failed one changes nothing anywhere, the index is
the same on every worker, and poll mode gives every worker the same versions.

The quick tests run two (or three) apps in this process on one control directory, each on its own port, so
each "worker" is addressed directly; the slow ones run a real ``deepcrl serve --workers 2`` and reach the
workers through fresh connections on the shared port."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from deepcrl.bench.synthetic import reference, write_policy

HIDDEN = (16,)
GOAL = [0.5, -0.5]


def _write(path, seed: int, obs_size: int = 2) -> None:
    """Version `seed` of the policy, written beside and renamed into place (as a deploy would)."""
    tmp = path.with_name(f".{path.name}.{seed}.tmp")
    write_policy(tmp, hidden=HIDDEN, seed=seed, obs_size=obs_size)
    os.replace(tmp, path)


def _expected(seed: int, obs) -> np.ndarray:
    return reference(np.asarray([obs], np.float32), np.asarray([GOAL], np.float32), hidden=HIDDEN, seed=seed)[0]


def _act(url: str, obs=(0.1, 0.2), name: str | None = None) -> httpx.Response:
    """One request on a fresh connection."""
    path = "/v1/act" if name is None else f"/v1/models/{name}/act"
    return httpx.post(url + path, json={"observation": list(obs), "goal": GOAL}, timeout=30)


def _index(url: str) -> list[dict]:
    return httpx.get(url + "/v2/repository/index", timeout=30).json()


@contextlib.contextmanager
def _workers(root, control, n: int = 2, mode: str = "explicit", grpc: bool = False):
    """`n` apps on one repository and one control directory, each a "worker" on its own port."""
    from deepcrl.serve.app import RunningServer, create_app

    with contextlib.ExitStack() as stack:
        running = []
        for _ in range(n):
            app = create_app(root, max_batch_size=8, warmup=1, model_control=mode, repository_poll_s=0.05,
                             control_dir=control, grpc_port=0 if grpc else None)
            server = stack.enter_context(RunningServer(app))
            server.app = app
            running.append(server)
        yield running


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _write(root / "policy.onnx", seed=1)
    return root, tmp_path / "control"


def test_a_load_on_one_worker_is_served_by_every_worker_when_it_answers(repo):
    root, control = repo
    with _workers(root, control) as (a, b):
        for w in (a, b):
            assert _act(w.url).headers["x-model-version"] == "1"
        _write(root / "policy.onnx", seed=2)
        assert httpx.post(f"{a.url}/v2/repository/models/policy/load", timeout=60).status_code == 200
        # No waiting: the call answered after every worker swapped.
        for w in (a, b):
            r = _act(w.url, (0.3, -0.4))
            assert r.status_code == 200 and r.headers["x-model-version"] == "2"
            np.testing.assert_allclose(r.json()["action"], _expected(2, (0.3, -0.4)), atol=1e-5)
        assert _index(a.url) == _index(b.url) == [{"name": "policy", "state": "READY", "reason": "", "version": "2"}]

        # A corrupt file loaded through the other worker: 400, and nothing changes anywhere but the index's reason.
        (root / "policy.onnx").write_bytes(b"not an onnx file")
        r = httpx.post(f"{b.url}/v2/repository/models/policy/load", timeout=60)
        assert r.status_code == 400 and r.json()["error"].startswith("loading model 'policy' failed; version 2 keeps")
        for w in (a, b):
            r = _act(w.url)
            assert r.headers["x-model-version"] == "2"
            np.testing.assert_allclose(r.json()["action"], _expected(2, (0.1, 0.2)), atol=1e-5)
        (entry,) = _index(a.url)
        assert _index(b.url) == [entry]
        assert entry["version"] == "2" and entry["state"] == "READY"
        assert entry["reason"].startswith("the last load failed:")

        # Triton's config / file overrides are refused, not ignored.
        r = httpx.post(f"{a.url}/v2/repository/models/policy/load", json={"parameters": {"config": "{}"}})
        assert r.status_code == 400 and "cannot carry 'config'" in r.json()["error"]

        # A file of other sizes: 409, nothing changes.
        _write(root / "policy.onnx", seed=7, obs_size=3)
        assert httpx.post(f"{a.url}/v2/repository/models/policy/load", timeout=60).status_code == 409
        assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"2"}

        # Unload on one worker: every worker refuses the model.
        assert httpx.post(f"{b.url}/v2/repository/models/policy/unload", timeout=60).status_code == 200
        for w in (a, b):
            assert _act(w.url).status_code == 404
            assert _index(w.url) == [{"name": "policy", "state": "UNAVAILABLE", "reason": "unloaded"}]
        assert httpx.post(f"{a.url}/v2/repository/models/policy/unload").status_code == 400  # not loaded anywhere

        # Load again: the versions go on counting on every worker (a failed load counts none); old snapshots
        # are removed.
        _write(root / "policy.onnx", seed=4)
        assert httpx.post(f"{a.url}/v2/repository/models/policy/load", timeout=60).status_code == 200
        for w in (a, b):
            r = _act(w.url)
            assert r.headers["x-model-version"] == "3"
            np.testing.assert_allclose(r.json()["action"], _expected(4, (0.1, 0.2)), atol=1e-5)
        assert [p.name for p in (control / "models").iterdir()] == [str(json.loads(
            (control / "state.json").read_text())["generation"])]

        # A worker that starts later (a SIGHUP restart, a replaced worker) applies the state before it answers.
        _write(root / "policy.onnx", seed=9)  # the directory changed since; the late worker still gets version 3
        with _workers(root, control, n=1) as (c,):
            r = _act(c.url)
            assert r.headers["x-model-version"] == "3"
            np.testing.assert_allclose(r.json()["action"], _expected(4, (0.1, 0.2)), atol=1e-5)
            assert _index(c.url) == _index(a.url)
            # ... and takes part in the next load.
            assert httpx.post(f"{c.url}/v2/repository/models/policy/load", timeout=60).status_code == 200
            assert {_act(w.url).headers["x-model-version"] for w in (a, b, c)} == {"4"}


def test_a_new_model_loaded_on_one_worker_is_served_everywhere(repo):
    root, control = repo
    with _workers(root, control) as (a, b):
        _write(root / "other.onnx", seed=3)
        assert _act(b.url, name="other").status_code == 404
        assert httpx.post(f"{a.url}/v2/repository/models/other/load", timeout=60).status_code == 200
        r = _act(b.url, name="other")
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        np.testing.assert_allclose(r.json()["action"], _expected(3, (0.1, 0.2)), atol=1e-5)


def test_a_worker_that_does_not_apply_a_load_is_named(repo, monkeypatch):
    from deepcrl.serve import control as control_module

    root, control = repo
    monkeypatch.setattr(control_module, "APPLY_TIMEOUT_S", 0.5)
    with _workers(root, control) as (a, b):
        stuck = control / "workers" / f"{os.getpid()}.999.json"  # a live process that never acks
        stuck.write_text(json.dumps({"generation": 0, "errors": []}))
        _write(root / "policy.onnx", seed=2)
        r = httpx.post(f"{a.url}/v2/repository/models/policy/load", timeout=60)
        assert r.status_code == 500
        error = r.json()["error"]
        assert error == (f"model 'policy' version 2 serves on this worker, but not on every worker: worker "
                         f"{os.getpid()}.999: did not apply it within 0.5 s.")
        assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"2"}  # the live workers did
        stuck.write_text(json.dumps({"generation": 99, "errors": ["loading 'policy' version 3 failed: no memory"]}))
        r = httpx.post(f"{b.url}/v2/repository/models/policy/load", timeout=60)
        assert r.status_code == 500 and "no memory" in r.json()["error"]


def test_poll_mode_gives_every_worker_the_same_versions(repo):
    root, control = repo
    with _workers(root, control, mode="poll") as (a, b):
        _write(root / "policy.onnx", seed=2)
        deadline = time.monotonic() + 30
        while {_act(w.url).headers["x-model-version"] for w in (a, b)} != {"2"}:
            assert time.monotonic() < deadline, [_index(w.url) for w in (a, b)]
            time.sleep(0.05)
        time.sleep(0.5)  # ten more scans by each worker: nobody loads the same file again
        assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"2"}
        assert _index(a.url) == _index(b.url) == [{"name": "policy", "state": "READY", "reason": "", "version": "2"}]
        tmp = root / ".broken.tmp"
        tmp.write_bytes(b"half a file")
        os.replace(tmp, root / "policy.onnx")  # in one step, so every scan sees the same (mtime, size)
        while "failed" not in _index(a.url)[0]["reason"] or "failed" not in _index(b.url)[0]["reason"]:
            assert time.monotonic() < deadline + 30
            time.sleep(0.05)
        assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"2"}
        generation = json.loads((control / "state.json").read_text())["generation"]
        assert generation == 2  # one load, one failure: each published once, not once per worker


def test_grpc_repository_rpcs_reach_every_worker(repo):
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="the official gRPC client (grpc / dev extra)")
    from tritonclient.utils import InferenceServerException

    root, control = repo
    with _workers(root, control, grpc=True) as (a, b):
        with grpcclient.InferenceServerClient(f"127.0.0.1:{a.app.state.grpc_port}") as client:
            index = client.get_model_repository_index(as_json=True)
            assert index["models"] == [{"name": "policy", "version": "1", "state": "READY"}]
            _write(root / "policy.onnx", seed=2)
            client.load_model("policy")
            assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"2"}
            client.unload_model("policy")
            assert {_act(w.url).status_code for w in (a, b)} == {404}
            assert _index(b.url) == [{"name": "policy", "state": "UNAVAILABLE", "reason": "unloaded"}]
            client.load_model("policy")
            assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"3"}
            (root / "policy.onnx").write_bytes(b"not an onnx file")
            with pytest.raises(InferenceServerException) as info:
                client.load_model("policy")
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            message = info.value.message()
            assert message.startswith("loading model 'policy' failed; version 3 keeps serving: ")
            assert str(root / "policy.onnx") in message and "\n" not in message
            assert {_act(w.url).headers["x-model-version"] for w in (a, b)} == {"3"}


# ---- a real `deepcrl serve --workers 2` ------------------------------------------------------------------------


@contextlib.contextmanager
def _serve_workers(root, tmp_path, mode: str, stop_served):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(root), "--port", "0",
                             "--workers", "2", "--warmup", "1", "--max-batch-size", "8", "--model-control", mode,
                             "--repository-poll-s", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert "ready at http://127.0.0.1:" in line and "2 workers" in line, line + proc.stderr.read()
        yield line.split("ready at ")[1].split()[0]
    finally:
        code = stop_served(proc, 60)
    assert code == 0, proc.stderr.read()[-3000:]
    assert not list(tmp_path.glob("deepcrl-control-*"))  # the control directory goes with the server


def _fresh(url: str, n: int, name: str | None = None) -> list[tuple[int, str, object]]:
    """`n` requests, each on its own connection (so the kernel spreads them over both workers): (status,
    version, action)."""
    obs = (0.25, -0.75)

    def one(_):
        r = _act(url, obs, name)
        return r.status_code, r.headers.get("x-model-version", ""), r.json().get("action")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def _answers_by_version(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    return {s.labels["version"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "deepcrl_model_answers" for s in f.samples if s.name == "deepcrl_model_answers_total"}


def _per_worker(counter_file) -> dict[str, float]:
    """One worker's answers by model version, from its own metric file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return {s.labels["version"]: s.value for f in MultiProcessCollector.merge([str(counter_file)])
            if f.name == "deepcrl_model_answers" for s in f.samples if s.name == "deepcrl_model_answers_total"}


@pytest.mark.slow  # two server processes
def test_explicit_control_reaches_both_workers_of_a_real_server(repo, tmp_path, stop_served):
    root, _ = repo
    obs = (0.25, -0.75)
    with _serve_workers(root, tmp_path, "explicit", stop_served) as url:
        assert {v for _, v, _ in _fresh(url, 40)} == {"1"}
        pids_before = {p.name for p in tmp_path.glob("deepcrl-metrics-*/counter_*.db")}
        assert len(pids_before) == 2  # both workers answered
        _write(root / "policy.onnx", seed=2)
        assert httpx.post(f"{url}/v2/repository/models/policy/load", timeout=60).status_code == 200
        answers = _fresh(url, 80)
        assert {(s, v) for s, v, _ in answers} == {(200, "2")}
        np.testing.assert_allclose([a for *_, a in answers], np.tile(_expected(2, obs), (80, 1)), atol=1e-5)
        assert _answers_by_version(url) == {"1": 40.0, "2": 80.0}  # summed over both workers
        per_worker = [_per_worker(path) for path in tmp_path.glob("deepcrl-metrics-*/counter_*.db")]
        assert len(per_worker) == 2 and all(w.get("2", 0) > 0 for w in per_worker)  # both served version 2
        indexes = {json.dumps(_index(url)) for _ in range(20)}  # fresh connections: both workers answer
        assert indexes == {json.dumps([{"name": "policy", "state": "READY", "reason": "", "version": "2"}])}

        (root / "policy.onnx").write_bytes(b"not an onnx file")
        assert httpx.post(f"{url}/v2/repository/models/policy/load", timeout=60).status_code == 400
        answers = _fresh(url, 40)
        assert {(s, v) for s, v, _ in answers} == {(200, "2")}
        assert len({json.dumps(_index(url)) for _ in range(20)}) == 1

        assert httpx.post(f"{url}/v2/repository/models/policy/unload", timeout=60).status_code == 200
        assert {s for s, _, _ in _fresh(url, 40)} == {404}
        assert {json.dumps(_index(url)) for _ in range(20)} == {
            json.dumps([{"name": "policy", "state": "UNAVAILABLE", "reason": "unloaded"}])}


@pytest.mark.slow  # two server processes
def test_poll_mode_across_the_workers_of_a_real_server(repo, tmp_path, stop_served):
    root, _ = repo
    with _serve_workers(root, tmp_path, "poll", stop_served) as url:
        _write(root / "policy.onnx", seed=2)
        deadline = time.monotonic() + 60
        while {v for _, v, _ in _fresh(url, 16)} != {"2"}:
            assert time.monotonic() < deadline, "the workers never both served the new file"
            time.sleep(0.1)
        time.sleep(0.5)
        answers = _fresh(url, 60)
        assert {(s, v) for s, v, _ in answers} == {(200, "2")}
        np.testing.assert_allclose([a for *_, a in answers], np.tile(_expected(2, (0.25, -0.75)), (60, 1)),
                                   atol=1e-5)
        (root / "policy.onnx").unlink()
        while {s for s, _, _ in _fresh(url, 16)} != {404}:
            assert time.monotonic() < deadline + 30, "the workers never both unloaded the removed file"
            time.sleep(0.1)
