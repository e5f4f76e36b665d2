"""`deepcrl export --part critic`: phi and psi callable separately, equal to JAX, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from deepcrl.errors import ArtifactError, DeepcrlError


def test_critic_file_matches_jax_and_encodes_parts_separately(critic_onnx, fresh_teacher_dir):
    from deepcrl.plan.critic import DISTANCE_MEANING, OnnxCritic
    from deepcrl.plan.build import JaxCritic

    report, path = critic_onnx
    assert path.is_file() and report["part"] == "critic"
    assert report["max_abs_diff"] <= 1e-5
    assert set(report["parity"]["fp32"]["rollout"]) == {"1", "2", "7", "256"}
    onnx_c, jax_c = OnnxCritic(path), JaxCritic(fresh_teacher_dir)
    assert onnx_c.metadata["part"] == "critic" and onnx_c.metadata["distance"] == DISTANCE_MEANING
    rng = np.random.default_rng(0)
    s, a, g = rng.uniform(0, 4, (5, 2)), rng.uniform(-1, 1, (5, 2)), rng.uniform(0, 4, (3, 2))
    np.testing.assert_allclose(onnx_c.phi(s, a), jax_c.phi(s, a), atol=1e-5)
    np.testing.assert_allclose(onnx_c.psi(g), jax_c.psi(g), atol=1e-5)
    assert onnx_c.phi(s).shape == (5, 16) and onnx_c.psi(g).shape == (3, 16)
    np.testing.assert_allclose(onnx_c.phi(s), jax_c.phi(s, np.zeros((5, 2))), atol=1e-5)  # action defaults to 0
    with pytest.raises(DeepcrlError, match=r"goal has shape \(3, 5\)"):
        onnx_c.psi(np.zeros((3, 5)))


def test_student_without_critic_is_one_sentence(fresh_student_dir, tmp_path):
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import export_critic
    from deepcrl.plan.build import JaxCritic

    with pytest.raises(ArtifactError, match="holds no critic"):
        export_critic(ExportConfig(run=fresh_student_dir, out=tmp_path / "c.onnx", part="critic"))
    assert not (tmp_path / "c.onnx").exists()
    with pytest.raises(ArtifactError, match="no distance head"):
        JaxCritic(fresh_student_dir)


def test_student_distance_head_exports_like_the_teachers(student_with_head_dir, tmp_path):
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import export_critic
    from deepcrl.plan.build import JaxCritic
    from deepcrl.plan.critic import OnnxCritic
    from deepcrl.plan.planner import Planner

    report = export_critic(ExportConfig(run=student_with_head_dir, out=tmp_path / "head.onnx", part="critic"))
    assert report["kind"] == "student" and report["max_abs_diff"] <= 1e-5
    onnx_c, jax_c = OnnxCritic(tmp_path / "head.onnx"), JaxCritic(student_with_head_dir)
    assert onnx_c.metadata["kind"] == "student" and onnx_c.metadata["repr_size"] == "8"
    rng = np.random.default_rng(1)
    s, g = rng.uniform(0, 4, (6, 2)).astype(np.float32), rng.uniform(0, 4, (4, 2)).astype(np.float32)
    np.testing.assert_allclose(onnx_c.phi(s), jax_c.phi(s), atol=1e-5)
    np.testing.assert_allclose(onnx_c.psi(g), jax_c.psi(g), atol=1e-5)
    assert onnx_c.phi(s).shape == (6, 8)
    planner = Planner(onnx_c, s, s, cutoff_quantile=0.5)  # the planner takes a student's head as a teacher's
    assert planner.edges > 0 and planner.waypoints(s[:1], g[:1])[1].shape == (1,)


def test_policy_file_is_not_a_critic(tmp_path, fresh_teacher_dir):
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import export_critic
    from deepcrl.plan.critic import OnnxCritic
    from deepcrl.export.onnx import export

    policy = tmp_path / "policy.onnx"
    export(ExportConfig(run=fresh_teacher_dir, out=policy))
    with pytest.raises(ArtifactError, match="has no distance head"):
        OnnxCritic(policy)
    with pytest.raises(DeepcrlError, match="float32 .onnx file only"):
        export_critic(ExportConfig(run=fresh_teacher_dir, out=tmp_path / "c.onnx", part="critic", fp16=True))


def test_cli_part_critic(fresh_teacher_dir, tmp_path, capsys):
    import json

    from deepcrl.cli import main

    out = tmp_path / "critic.onnx"
    assert main(["export", "--run", str(fresh_teacher_dir), "--out", str(out), "--part", "critic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and out.is_file() and report["metadata"]["part"] == "critic"
