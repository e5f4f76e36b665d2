"""Export -> ONNX Runtime: same actions as JAX, metadata round-trip, closed-loop eval, int8/fp16 bounds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import onnx
import pytest

from deepcrl import artifacts
from deepcrl.errors import DeepcrlError
from deepcrl.export.config import ExportConfig
from deepcrl.export.onnx import export, rollout_states
from deepcrl.onnx_policy import OnnxPolicy
from deepcrl.policy import init_artifact, load_policy


@pytest.fixture(scope="module")
def source(tiny_onnx_source):
    return load_policy(tiny_onnx_source)


@pytest.fixture(scope="module")
def states(source):
    """Random inputs (wide) and states the policy visits in its env, 256 of each."""
    rng = np.random.default_rng(1)
    rand = (rng.normal(0, 3, (256, source.obs_size)).astype(np.float32),
            rng.normal(0, 3, (256, source.goal_size)).astype(np.float32))
    return {"random": rand, "rollout": rollout_states(source, 256, seed=3)}


def test_model_signature_and_checker(tiny_onnx, source):
    model = onnx.load(tiny_onnx)
    onnx.checker.check_model(model, full_check=True)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims == {"observation": ["batch", source.obs_size], "goal": ["batch", source.goal_size],
                    "action": ["batch", source.action_size]}
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])


@pytest.mark.parametrize("batch", [1, 2, 7, 256])
def test_same_actions_as_jax(tiny_onnx, source, states, batch):
    policy = OnnxPolicy(tiny_onnx)
    for obs, goal in states.values():
        got, want = policy(obs[:batch], goal[:batch]), source(obs[:batch], goal[:batch])
        assert got.shape == (batch, source.action_size) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.all(np.abs(got) <= 1.0)


def test_metadata_round_trip(tiny_onnx, tiny_onnx_source):
    manifest = artifacts.read_manifest(tiny_onnx_source)
    meta = OnnxPolicy(tiny_onnx).metadata
    assert {k: meta[k] for k in ("kind", "env_id", "obs_size", "goal_size", "action_size", "source_hash")} == {
        "kind": manifest.kind, "env_id": manifest.env_id, "obs_size": str(manifest.obs_size),
        "goal_size": str(manifest.goal_size), "action_size": str(manifest.action_size),
        "source_hash": manifest.checkpoint_hash}
    assert float(meta["action_low"]) == manifest.action_low and float(meta["action_high"]) == manifest.action_high
    assert meta["format_version"] == "1" and meta["deepcrl_version"] and meta["precision"] == "fp32"
    assert 0.0 <= float(meta["parity_max_abs_diff"]) <= 1e-5
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(meta["export_time"])
    assert dt.timedelta(0) <= age < dt.timedelta(hours=1)
    model = onnx.load(tiny_onnx)
    assert all(isinstance(p.value, str) for p in model.metadata_props)


def test_eval_of_onnx_equals_eval_of_checkpoint(tiny_onnx, source):
    from deepcrl.evaluate import evaluate

    a = evaluate("point_maze", OnnxPolicy(tiny_onnx), episodes=16, seed=5, episode_length=60).as_dict()
    b = evaluate("point_maze", source, episodes=16, seed=5, episode_length=60).as_dict()
    for key in ("episodes", "success", "final_success", "detour_episodes", "episode_length"):
        assert a[key] == b[key], key
    assert a["time_at_goal"] == pytest.approx(b["time_at_goal"], abs=0.1)
    assert a["final_distance"] == pytest.approx(b["final_distance"], abs=1e-3)


def test_parity_failure_writes_nothing(tiny_onnx_source, tmp_path):
    out = tmp_path / "p.onnx"
    with pytest.raises(DeepcrlError, match=r"max \|ONNX - JAX\| = .* at batch \d+ \(tolerance 1e-12\); nothing"):
        export(ExportConfig(run=Path(tiny_onnx_source), out=out, max_diff=1e-12))
    assert list(tmp_path.iterdir()) == []


def test_int8_within_bound_and_refused_beyond(tiny_onnx_source, source, states, tmp_path):
    out = tmp_path / "q.onnx"
    report = export(ExportConfig(run=Path(tiny_onnx_source), out=out, quantize="int8"))
    policy = OnnxPolicy(out)
    assert policy.metadata["precision"] == "int8"
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"}, ops
    obs, goal = states["rollout"]
    err = float(np.max(np.abs(policy(obs, goal) - source(obs, goal))))
    assert 0.0 < err <= 0.1  # the default --max-int8-error; > 0: it really is quantised
    assert report["max_abs_diff"] <= 0.1 and set(report["latency_vs_fp32"]) == {"1", "256"}

    refused = tmp_path / "r.onnx"
    with pytest.raises(DeepcrlError, match=r"int8 model's actions differ .* more than --max-int8-error 1e-06"):
        export(ExportConfig(run=Path(tiny_onnx_source), out=refused, quantize="int8", max_int8_error=1e-6))
    assert not refused.exists()


def test_fp16_keeps_float32_io(tiny_onnx_source, source, states, tmp_path):
    out = tmp_path / "h.onnx"
    export(ExportConfig(run=Path(tiny_onnx_source), out=out, fp16=True))
    model = onnx.load(out)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    policy = OnnxPolicy(out)
    obs, goal = states["rollout"]
    got = policy(obs, goal)
    assert got.dtype == np.float32 and policy.metadata["precision"] == "fp16"
    assert float(np.max(np.abs(got - source(obs, goal)))) <= 1e-2


def test_scanned_teacher_exports_as_loop(tmp_path):
    ckpt = tmp_path / "teacher"
    init_artifact(ckpt, "teacher", "point_maze", {"depth": 8, "width": 32})
    out = tmp_path / "t.onnx"
    report = export(ExportConfig(run=ckpt, out=out))
    loops = [n for n in onnx.load(out).graph.node if n.op_type == "Loop"]
    # one Loop over the blocks, carrying only the activations: the stacked weights are read from outer scope
    assert len(loops) == 1 and len(loops[0].input) == 3 and len(loops[0].output) == 1
    assert report["max_abs_diff"] <= 1e-5 and report["kind"] == "teacher"
    teacher, policy = load_policy(ckpt), OnnxPolicy(out)
    obs = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    np.testing.assert_allclose(policy(obs, obs[::-1].copy()), teacher(obs, obs[::-1].copy()), atol=1e-5, rtol=0)
    with pytest.raises(DeepcrlError, match="--fp16 does not support a scanned teacher"):
        export(ExportConfig(run=ckpt, out=tmp_path / "t16.onnx", fp16=True))


@pytest.mark.slow
def test_deep_teacher_exports(tmp_path):
    """A 64-layer scanned teacher: one Loop, export time and file size independent of unrolling, parity holds."""
    ckpt = tmp_path / "teacher64"
    init_artifact(ckpt, "teacher", "point_maze", {"depth": 64, "width": 64})
    report = export(ExportConfig(run=ckpt, out=tmp_path / "t64.onnx"))
    assert report["max_abs_diff"] <= 1e-5
    model = onnx.load(tmp_path / "t64.onnx")
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    assert len(model.graph.node) < 60  # not unrolled: 64 layers would be hundreds of nodes
