"""`deepcrl export --format savedmodel` for real: TensorFlow loads the SavedModel and its actions match JAX.

TensorFlow is not part of the default stack (the `tf` extra). Run these in a virtualenv that has it, beside
the default packages:

    python3 -m venv --system-site-packages /work/venvs/tf
    /work/venvs/tf/bin/pip install tensorflow-cpu          # or: pip install -e '.[tf]'
    PYTHONPATH=$PWD JAX_PLATFORMS=cpu /work/venvs/tf/bin/python -m pytest -q -m slow tests/export/test_savedmodel.py

Without TensorFlow they skip (and tests/export/test_errors.py checks the "not installed" sentence instead).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deepcrl.cli import main

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5  # the export tolerance (ExportConfig.max_diff)


@pytest.fixture(scope="module", autouse=True)
def _tensorflow():
    try:
        import tensorflow  # noqa: F401
        from jax.experimental import jax2tf  # noqa: F401
    except ModuleNotFoundError as exc:
        pytest.skip(f"TensorFlow is not importable here ({exc}); run this file in a virtualenv with the `tf` "
                    "extra (see its docstring)")


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """A depth-8 teacher actor (two residual blocks under `lax.scan`), freshly initialised."""
    from deepcrl.policy import init_artifact

    path = tmp_path_factory.mktemp("sm_teacher") / "teacher"
    init_artifact(path, "teacher", "point_maze", {"depth": 8, "width": 32}, seed=3)
    return path


# Loads the SavedModel in a fresh interpreter that imports TensorFlow only (no JAX, no deepcrl), as a
# TensorFlow Serving user would, and writes its actions for the given inputs.
_TF_ONLY = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    model, inputs, out = sys.argv[1:]
    serving = tf.saved_model.load(model).signatures["serving_default"]
    x = np.load(inputs)
    spec = serving.structured_input_signature[1]
    np.savez(out, **{f"b{b}": serving(observation=tf.constant(x["observation"][:b]),
                                       goal=tf.constant(x["goal"][:b]))["action"].numpy() for b in (1, 17)},
             obs_shape=[-1 if d is None else d for d in spec["observation"].shape.as_list()],
             goal_shape=[-1 if d is None else d for d in spec["goal"].shape.as_list()])
""")


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_savedmodel_loads_in_tensorflow_and_matches_jax(which, request, tmp_path, capsys):
    from deepcrl.export.source import parity_inputs
    from deepcrl.policy import load_policy

    ckpt = request.getfixturevalue("tiny_onnx_source" if which == "student" else "small_teacher")
    out = tmp_path / f"{which}_savedmodel"
    assert main(["export", "--run", str(ckpt), "--out", str(out), "--format", "savedmodel", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "savedmodel" and report["kind"] == which and report["path"] == str(out)
    assert report["max_abs_diff"] <= TOLERANCE
    assert set(report["parity"]["fp32"]["rollout"]) >= {"1", "17", "256"}
    metadata = json.loads((out / "assets.extra" / "deepcrl_metadata.json").read_text())
    assert metadata["kind"] == which and metadata["format"] == "savedmodel"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    policy = load_policy(ckpt, deploy=True)
    inputs = parity_inputs(policy, seed=1)  # other inputs than the export's own check (seed 0)
    worst = {}
    for name, (obs, goal) in inputs.items():
        np.savez(tmp_path / "in.npz", observation=obs, goal=goal)
        subprocess.run([sys.executable, "-c", _TF_ONLY, str(out), str(tmp_path / "in.npz"), str(tmp_path / "tf.npz")],
                       check=True, capture_output=True, timeout=300)
        got = np.load(tmp_path / "tf.npz")
        assert got["obs_shape"].tolist() == [-1, policy.obs_size]  # a symbolic batch
        assert got["goal_shape"].tolist() == [-1, policy.goal_size]
        for b in (1, 17):
            want = policy(obs[:b], goal[:b])
            assert got[f"b{b}"].shape == want.shape == (b, policy.action_size)
            worst[(name, b)] = float(np.max(np.abs(got[f"b{b}"].astype(np.float64) - want)))
    with capsys.disabled():
        print(f"\n{which}: max |TF - JAX| " + ", ".join(f"{n}@{b}={v:.2e}" for (n, b), v in sorted(worst.items())))
    assert max(worst.values()) <= TOLERANCE
