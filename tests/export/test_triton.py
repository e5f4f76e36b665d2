"""Triton repository: layout, a config.pbtxt that parses strictly, a model that runs, and (-m slow) a real
Triton server that loads it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from deepcrl.errors import DeepcrlError
from deepcrl.export.config import ExportConfig
from deepcrl.export.onnx import export
from deepcrl.onnx_policy import OnnxPolicy
from deepcrl.export.triton import validate_config
from deepcrl.policy import load_policy


def test_triton_repository(tmp_path, tiny_onnx_source):
    repo = tmp_path / "models"
    report = export(ExportConfig(run=Path(tiny_onnx_source), out=repo, format="triton", model_name="maze_policy",
                                 max_batch_size=64))
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert files == ["maze_policy/1/model.onnx", "maze_policy/config.pbtxt"]
    assert report["path"] == str(repo / "maze_policy/1/model.onnx")

    config = validate_config((repo / "maze_policy/config.pbtxt").read_text())
    assert (config.name, config.platform, config.max_batch_size) == ("maze_policy", "onnxruntime_onnx", 64)
    policy = OnnxPolicy(repo / "maze_policy/1/model.onnx")
    assert [(t.name, list(t.dims)) for t in config.input] == [("observation", [policy.obs_size]),
                                                              ("goal", [policy.goal_size])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("action", [policy.action_size])]
    fp32 = type(config.input[0]).DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_name["TYPE_FP32"].number
    assert {t.data_type for t in [*config.input, *config.output]} == {fp32}
    assert config.HasField("dynamic_batching") and list(config.dynamic_batching.preferred_batch_size) == [8, 32, 64]
    assert config.parameters["deepcrl_kind"].string_value == policy.kind

    obs = np.random.default_rng(0).normal(size=(5, policy.obs_size)).astype(np.float32)
    goal = np.random.default_rng(1).normal(size=(5, policy.goal_size)).astype(np.float32)
    np.testing.assert_allclose(policy(obs, goal), load_policy(tiny_onnx_source)(obs, goal), atol=1e-5, rtol=0)


def test_validate_config_rejects_malformed_text():
    with pytest.raises(DeepcrlError, match="invalid Triton config.pbtxt"):
        validate_config('name: "x"\nmax_batch_sise: 8\n')
    with pytest.raises(DeepcrlError, match="invalid Triton config.pbtxt"):
        validate_config('name: "x"\ninput [ { name: "o" data_type: TYPE_FLOAT32 dims: [ 2 ] } ]\n')


# ---- a real Triton server (slow, opt-in: `pytest -m slow tests/export/test_triton.py`) ---------------------
#
# PyPI's nvidia-pytriton 0.7.0 wheel ships `tritonserver` 2.51 and its Python backend (not the C++ ONNX Runtime
# backend); it pins numpy<2, so it lives in its own virtualenv, which scripts/provision-slow-checks.sh makes under
# ${XDG_CACHE_HOME:-~/.cache}/deepcrl/venvs/triton (or point DEEPCRL_TRITON_VENV at another one).
# tests/export/triton_backend/onnxruntime/model.py is a Python-based backend named `onnxruntime` that stands in
# for the C++ one, so Triton itself parses the unmodified config.pbtxt, batches dynamically and serves v2; only
# the graph is run by onnxruntime in Python.

BACKEND_SOURCE = Path(__file__).parent / "triton_backend" / "onnxruntime" / "model.py"
BAD_CONFIGS = {  # model name -> (edit of the exported config.pbtxt, words of Triton's refusal in its reply or log)
    "bad_field": (("max_batch_size:", "max_batch_sise:"), "failed to read text proto"),  # protobuf text parse
    "bad_batch": (("max_batch_size: 256", "max_batch_size: 16"),  # Triton's own model-config validation
                  "dynamic batching preferred size must be <= max batch size"),
    "bad_dims": (("dims: [ {obs} ]", "dims: [ {obs_plus} ]"), "the model expects 2 dimensions"),  # the backend
}


def _triton_install(venv: Path):
    """(tritonserver dir, libs dir, python X.Y) inside `venv`, or a reason to skip."""
    found = sorted(venv.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not found:
        return f"no nvidia-pytriton tritonserver under {venv} (or set DEEPCRL_TRITON_VENV to a virtualenv with one)"
    dist = found[0].parents[1]
    libs = dist.parents[1] / "nvidia_pytriton.libs"
    return dist, libs, dist.parents[2].name.removeprefix("python")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Triton:
    """A `tritonserver` process on loopback (explicit model control), killed on exit."""

    def __init__(self, root: Path, repository: Path, venv: Path, install: tuple, timeout_s: float = 120):
        dist, libs, pyver = install
        backends = root / "backends"  # copies, not links: Triton refuses a backend library outside its directory
        (backends / "python").mkdir(parents=True)
        for f in ("backends/python/libtriton_python.so", "backends/python/triton_python_backend_utils.py",
                  f"python_backend_stubs/{pyver}/triton_python_backend_stub"):
            shutil.copy2(dist / f, backends / "python")
        (backends / "onnxruntime").mkdir()
        shutil.copy2(BACKEND_SOURCE, backends / "onnxruntime" / "model.py")
        home = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"  # the Python stub finds the venv through PATH
        base_lib = Path(home.get("home", "/usr/bin")).parent / "lib"  # the stub's libpython, same patch release
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libs), str(base_lib), env.get("LD_LIBRARY_PATH")]))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "tritonserver.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(dist / "bin" / "tritonserver"), f"--model-repository={repository}",
             f"--backend-directory={backends}", "--http-address=127.0.0.1", f"--http-port={self.port}",
             "--allow-grpc=false", "--allow-metrics=false", "--disable-auto-complete-config",
             "--model-control-mode=explicit", "--load-model=policy", "--exit-timeout-secs=5"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                pytest.fail(f"tritonserver exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.close()
        pytest.fail(f"tritonserver not ready within {timeout_s:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


@pytest.fixture(scope="module")
def triton(tiny_onnx_source, tmp_path_factory, venvs_dir, missing_prerequisite):
    """A real Triton serving `deepcrl export --format triton`'s repository as written, plus three broken copies."""
    venv = Path(os.environ.get("DEEPCRL_TRITON_VENV") or venvs_dir / "triton")
    install = _triton_install(venv)
    if isinstance(install, str):
        missing_prerequisite(install)
    root = tmp_path_factory.mktemp("triton")
    repository = root / "models"
    # a 20 ms batching window: one client process sends a burst's requests ~0.1-1 ms apart, so with the default
    # 100 us window every request ran alone on the 2-core CI machine (1,004 executions for 1,328 rows)
    export(ExportConfig(run=Path(tiny_onnx_source), out=repository, format="triton", model_name="policy",
                        max_queue_delay_us=20_000))
    policy = OnnxPolicy(repository / "policy/1/model.onnx")
    text = (repository / "policy/config.pbtxt").read_text()
    sizes = {"obs": policy.obs_size, "obs_plus": policy.obs_size + 1}
    for name, ((old, new), _) in BAD_CONFIGS.items():
        old, new = old.format(**sizes), new.format(**sizes)
        assert old in text
        shutil.copytree(repository / "policy", repository / name)
        (repository / name / "config.pbtxt").write_text(
            text.replace(old, new, 1).replace('name: "policy"', f'name: "{name}"', 1))
    server = Triton(root, repository, venv, install)
    server.policy, server.repository = policy, repository
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow
def test_triton_loads_the_exported_repository_and_batches(triton):
    import tritonclient.http as httpclient

    assert httpx.get(f"{triton.url}/v2/models/policy/ready").status_code == 200
    index = {m["name"]: m for m in httpx.post(f"{triton.url}/v2/repository/index").json()}
    assert index["policy"]["state"] == "READY"
    config = httpx.get(f"{triton.url}/v2/models/policy/config").json()  # as Triton parsed our text
    assert (config["backend"], config["max_batch_size"]) == ("onnxruntime", 256)
    assert config["dynamic_batching"]["preferred_batch_size"] == [8, 32, 256]
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 20_000
    assert config["parameters"]["deepcrl_env_id"]["string_value"] == triton.policy.metadata["env_id"]

    policy = triton.policy
    client = httpclient.InferenceServerClient(f"127.0.0.1:{triton.port}", concurrency=16)
    meta = client.get_model_metadata("policy")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("observation", "FP32", [-1, policy.obs_size]), ("goal", "FP32", [-1, policy.goal_size])]
    rng = np.random.default_rng(0)

    def request(batch, binary):
        obs = rng.uniform(-2, 2, (batch, policy.obs_size)).astype(np.float32)
        goal = rng.uniform(-2, 2, (batch, policy.goal_size)).astype(np.float32)
        inputs = [httpclient.InferInput("observation", list(obs.shape), "FP32"),
                  httpclient.InferInput("goal", list(goal.shape), "FP32")]
        inputs[0].set_data_from_numpy(obs, binary_data=binary)
        inputs[1].set_data_from_numpy(goal, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("action", binary_data=binary)]
        return obs, goal, inputs, outputs

    worst = 0.0
    for batch, binary in [(1, False), (7, True), (64, False), (256, True)]:
        obs, goal, inputs, outputs = request(batch, binary)
        action = client.infer("policy", inputs, outputs=outputs).as_numpy("action")
        assert action.shape == (batch, policy.action_size)
        worst = max(worst, float(np.max(np.abs(action - policy(obs, goal)))))
    assert worst <= 1e-6

    # bursts of 200 concurrent one-row requests until Triton's dynamic batcher has merged some into one call
    # (a single client process rarely outpaces the backend, so a burst may pass unmerged; at most 5 bursts)
    for burst in range(5):
        pending = [request(1, True) for _ in range(200)]
        futures = [client.async_infer("policy", inputs, outputs=outputs) for _, _, inputs, outputs in pending]
        for (obs, goal, _, _), future in zip(pending, futures):
            np.testing.assert_allclose(future.get_result(timeout=60).as_numpy("action"), policy(obs, goal),
                                       atol=1e-6, rtol=0)
        stats = httpx.get(f"{triton.url}/v2/models/policy/stats").json()["model_stats"][0]
        sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
        if any(1 < b < 7 or 7 < b < 64 for b in sizes):
            break
    client.close()
    print(f"\nTriton vs OnnxPolicy: max |diff| {worst:.2e} at batch 1, 7, 64, 256; after {burst + 1} burst(s): "
          f"{stats['execution_count']} executions for {stats['inference_count']} rows, batch sizes run "
          f"{sorted(sizes.items())}")
    assert stats["inference_count"] == 1 + 7 + 64 + 256 + 200 * (burst + 1)
    assert any(1 < b < 7 or 7 < b < 64 for b in sizes), "no concurrent requests were merged"


@pytest.mark.slow
def test_triton_refuses_wrong_configs(triton):
    for name, (_, words) in BAD_CONFIGS.items():
        response = httpx.post(f"{triton.url}/v2/repository/models/{name}/load", timeout=60)
        reply = response.json()["error"].splitlines()[0]
        logged = [line for line in triton.log().splitlines() if words in line]
        print(f"\n{name}: HTTP {response.status_code}: {reply}" + (f"\n  log: {logged[0]}" if logged else ""))
        assert response.status_code >= 400 and (words in reply or logged), reply
        assert httpx.get(f"{triton.url}/v2/models/{name}/ready").status_code != 200
    index = {m["name"]: m.get("state") for m in httpx.post(f"{triton.url}/v2/repository/index").json()}
    assert index["policy"] == "READY" and all(index[name] != "READY" for name in BAD_CONFIGS)


@pytest.mark.slow
def test_eval_through_triton_equals_eval_model(triton, capsys):
    """`deepcrl eval --url` in v2 mode drives the simulator through Triton and scores what `--model` scores."""
    from deepcrl.cli import main

    model = triton.repository / "policy" / "1" / "model.onnx"
    results = []
    for source in (["--model", str(model)], ["--url", triton.url, "--protocol", "v2", "--model-name", "policy"]):
        assert main(["eval", *source, "--eval-episodes", "64", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    with capsys.disabled():
        print(f"\neval --model: {results[0]}\neval --url (Triton, v2): {results[1]}")
    assert results[1]["source"] == f"server {triton.url}" and results[1]["env"] == results[0]["env"]
    for key in ("success", "final_success", "time_at_goal", "final_distance"):
        assert results[1][key] == pytest.approx(results[0][key], abs=1e-6), key
