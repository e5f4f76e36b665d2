"""Bad input: one sentence on stderr and exit code 2 from the CLI; ArtifactError from OnnxPolicy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from deepcrl.cli import main
from deepcrl.errors import ArtifactError, DeepcrlError
from deepcrl.onnx_policy import OnnxPolicy


def _fails(capsys, *args: str) -> str:
    assert main(["export", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error:")
    return " ".join(err.split())


def test_missing_checkpoint(capsys, tmp_path):
    err = _fails(capsys, "--run", tmp_path / "nope", "--out", tmp_path / "p.onnx")
    assert "does not exist" in err and not (tmp_path / "p.onnx").exists()


def test_corrupt_checkpoint(capsys, tmp_path, tiny_onnx_source):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_onnx_source, bad)
    (bad / "manifest.json").write_text("{not json")
    assert "is corrupt" in _fails(capsys, "--run", bad, "--out", tmp_path / "p.onnx")


def test_incompatible_checkpoint(capsys, tmp_path, tiny_onnx_source):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_onnx_source, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["network"]["actor"]["hidden"] = [3]  # the checkpoint holds other shapes
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert "does not match its manifest" in _fails(capsys, "--run", bad, "--out", tmp_path / "p.onnx")


def test_unwritable_output(capsys, tmp_path, tiny_onnx_source):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot write to" in _fails(capsys, "--run", tiny_onnx_source, "--out", blocker / "p.onnx")


def test_output_must_be_onnx(capsys, tmp_path, tiny_onnx_source):
    assert "must end in .onnx" in _fails(capsys, "--run", tiny_onnx_source, "--out", tmp_path / "p.pt")


def test_savedmodel_without_tensorflow(capsys, tmp_path, tiny_onnx_source):
    try:
        import tensorflow  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        pytest.skip("TensorFlow is installed here")
    err = _fails(capsys, "--run", tiny_onnx_source, "--out", tmp_path / "sm", "--format", "savedmodel")
    assert "pip install deepcrl[tf]" in err
    assert not (tmp_path / "sm").exists()  # a refused export leaves nothing behind


def test_cli_writes_a_verified_model(capsys, tmp_path, tiny_onnx_source):
    out = tmp_path / "sub" / "p.onnx"
    assert main(["export", "--run", str(tiny_onnx_source), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and report["size_bytes"] == out.stat().st_size
    assert report["max_abs_diff"] <= 1e-5 and set(report["parity"]["fp32"]) == {"random", "rollout"}
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_onnx_policy_rejects_bad_files(tmp_path, tiny_onnx):
    with pytest.raises(ArtifactError, match="does not exist"):
        OnnxPolicy(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx.read_bytes()[: 200])
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        OnnxPolicy(corrupt)
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    onnx.save(model, foreign)
    with pytest.raises(ArtifactError, match="not a deepcrl policy"):
        OnnxPolicy(foreign)
    newer = tmp_path / "newer.onnx"
    model = onnx.load(tiny_onnx)
    next(p for p in model.metadata_props if p.key == "format_version").value = "99"
    onnx.save(model, newer)
    with pytest.raises(ArtifactError, match="newer than this deepcrl reads"):
        OnnxPolicy(newer)


def test_onnx_policy_rejects_bad_shapes(tiny_onnx):
    policy = OnnxPolicy(tiny_onnx)
    with pytest.raises(DeepcrlError, match=r"observation has shape \(3, 5\)"):
        policy(np.zeros((3, 5)), np.zeros((3, policy.goal_size)))
    with pytest.raises(DeepcrlError, match="batch sizes differ"):
        policy(np.zeros((3, policy.obs_size)), np.zeros((2, policy.goal_size)))


def test_thresholds_must_be_positive(capsys, tmp_path, tiny_onnx_source):
    err = _fails(capsys, "--run", tiny_onnx_source, "--out", tmp_path / "p.onnx", "--max-int8-error", "0")
    assert "--max-int8-error must be positive, got 0.0." in err
    err = _fails(capsys, "--run", tiny_onnx_source, "--out", tmp_path / "p.onnx", "--quantize", "int8", "--fp16")
    assert "--quantize int8 and --fp16 exclude each other" in err
    err = _fails(capsys, "--run", tiny_onnx_source, "--out", tmp_path / "r", "--format", "triton",
                 "--model-name", "../up")
    assert "--model-name '../up' must be a plain directory name" in err


def test_bf16_remat_teacher_exports_in_float32_with_parity(tmp_path):
    """A teacher trained with bf16 compute and remat is exported as its float32 network (same parameters)."""
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export
    from deepcrl.policy import init_artifact

    init_artifact(tmp_path / "t", "teacher", "point_maze", {"depth": 4, "width": 16, "dtype": "bfloat16",
                                                           "remat": True})
    report = export(ExportConfig(run=tmp_path / "t", out=tmp_path / "t.onnx"))
    assert report["max_abs_diff"] <= 1e-5
    assert (tmp_path / "t.onnx").is_file()


def test_contract_checks_are_one_sentence_each():
    from deepcrl import contract

    meta = contract.metadata(kind="student", env_id="point_maze", obs_size=4, goal_size=2, action_size=2)
    names = (list(contract.INPUT_NAMES), [contract.OUTPUT_NAME])
    sig = contract.check("p.onnx", meta, *names)
    assert (sig.obs_size, sig.goal_size, sig.action_size, sig.action_low, sig.format_version) == (4, 2, 2, -1.0, 1)
    with pytest.raises(ArtifactError, match="lacks kind, env_id"):
        contract.check("p.onnx", {k: v for k, v in meta.items() if k not in ("kind", "env_id")}, *names)
    with pytest.raises(ArtifactError, match=r"signature .* it has inputs \['obs', 'goal'\]"):
        contract.check("p.onnx", meta, ["obs", "goal"], [contract.OUTPUT_NAME])
    with pytest.raises(ArtifactError, match="non-numeric size") as info:
        contract.check("p.onnx", {**meta, "obs_size": "four"}, *names)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ArtifactError, match=r"format 2, newer than this deepcrl reads \(1\)"):
        contract.check("p.onnx", {**meta, "format_version": "2"}, *names)


def test_the_contract_imports_without_jax_or_onnxruntime():
    import subprocess
    import sys

    code = ("import sys, deepcrl.contract; "
            "print([m for m in ('jax', 'onnxruntime', 'onnx', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
