"""On a CUDA device (`python -m pytest -q -m gpu`; the quick and the full run leave these out): a teacher
iteration runs on the GPU and agrees with the CPU, and ONNX Runtime's session really runs on its CUDA provider
(not the CPU fallback it takes silently when the CUDA libraries do not load). Without a GPU they skip.

The suite pins JAX to the CPU (tests/conftest.py), so the JAX check runs in a subprocess that may see the GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import deepcrl

pytestmark = pytest.mark.gpu

_ITERATION = textwrap.dedent("""
    import json, jax, numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")  # no TF32: the GPU computes what the CPU does
    from deepcrl.teacher import iteration as t
    from deepcrl.teacher.config import TrainConfig
    if not any(d.platform == "gpu" for d in jax.devices()):
        print(json.dumps({"no_gpu": str(jax.devices())}))
        raise SystemExit(0)
    cfg = TrainConfig(env="point_maze", depth=8, width=32, num_envs=16, batch_size=64, unroll_length=10,
                      sgd_steps=4, replay_capacity=80, steps=320, eval_every=2, actor_random_goal_frac=0.0)
    out = {}
    for name, devices in (("gpu", jax.devices("gpu")[:1]), ("cpu", jax.devices("cpu")[:1])):
        setup = t.make_setup(cfg, devices)
        state = t.init_state(setup)
        for _ in range(2):
            state, metrics = t.iteration(setup, state, 3e-4)
        out[name] = {"platforms": sorted({d.platform for x in jax.tree.leaves(state) for d in x.devices()}),
                     "critic_loss": float(metrics["critic_loss"]), "actor_loss": float(metrics["actor_loss"]),
                     "env_steps": int(state.env_steps)}
    print(json.dumps(out))
""")


def _env() -> dict:
    root = str(Path(deepcrl.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # let JAX find the GPU
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return env


def test_teacher_iteration_runs_on_the_gpu_and_agrees_with_the_cpu():
    proc = subprocess.run([sys.executable, "-c", _ITERATION], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if "no_gpu" in res:
        pytest.skip(f"JAX sees no CUDA device ({res['no_gpu']}); install the `gpu` extra on a GPU machine")
    gpu, cpu = res["gpu"], res["cpu"]
    assert gpu["platforms"] == ["gpu"] and cpu["platforms"] == ["cpu"]  # every array of the state lives there
    assert gpu["env_steps"] == cpu["env_steps"] == 2 * 16 * 10
    for key in ("critic_loss", "actor_loss"):
        assert np.isfinite(gpu[key]) and gpu[key] == pytest.approx(cpu[key], rel=1e-3, abs=1e-4), key


def test_onnx_runtime_session_runs_on_its_cuda_provider(tmp_path):
    import onnxruntime as ort

    from deepcrl.bench.synthetic import write_policy
    from deepcrl.export.runtime import OnnxPolicy

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA provider ({ort.get_available_providers()}); install the `gpu` "
                    "extra (README, 'GPU')")
    path = write_policy(tmp_path / "policy.onnx", hidden=(64, 64))
    on_gpu = OnnxPolicy(path)  # the default providers: CUDA first where installed
    assert on_gpu.session.get_providers()[0] == "CUDAExecutionProvider", on_gpu.session.get_providers()
    on_cpu = OnnxPolicy(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    obs, goal = (rng.uniform(-1, 1, (256, 2)).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(on_gpu(obs, goal), on_cpu(obs, goal), atol=1e-5)
