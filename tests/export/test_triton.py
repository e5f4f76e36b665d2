"""Triton repository: layout, a config.pbtxt that parses strictly, and a model that runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepcrl.errors import DeepcrlError
from deepcrl.export.config import ExportConfig
from deepcrl.export.onnx import export
from deepcrl.export.runtime import OnnxPolicy
from deepcrl.export.triton import validate_config
from deepcrl.policy import load_policy


def test_triton_repository(tmp_path, tiny_onnx_source):
    repo = tmp_path / "models"
    report = export(ExportConfig(ckpt=Path(tiny_onnx_source), out=repo, format="triton", name="maze_policy",
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
    assert config.HasField("dynamic_batching") and max(config.dynamic_batching.preferred_batch_size) == 64
    assert config.parameters["deepcrl_kind"].string_value == policy.kind

    obs = np.random.default_rng(0).normal(size=(5, policy.obs_size)).astype(np.float32)
    goal = np.random.default_rng(1).normal(size=(5, policy.goal_size)).astype(np.float32)
    np.testing.assert_allclose(policy(obs, goal), load_policy(tiny_onnx_source)(obs, goal), atol=1e-5, rtol=0)


def test_validate_config_rejects_malformed_text():
    with pytest.raises(DeepcrlError, match="invalid Triton config.pbtxt"):
        validate_config('name: "x"\nmax_batch_sise: 8\n')
    with pytest.raises(DeepcrlError, match="invalid Triton config.pbtxt"):
        validate_config('name: "x"\ninput [ { name: "o" data_type: TYPE_FLOAT32 dims: [ 2 ] } ]\n')
