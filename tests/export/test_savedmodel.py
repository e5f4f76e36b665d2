"""`deepcrl export --format savedmodel` for real: TensorFlow loads the SavedModel and its actions match JAX.

TensorFlow is not part of the default stack (the `tf` extra). scripts/provision-slow-checks.sh makes a
virtualenv with it over this Python's packages, ${XDG_CACHE_HOME:-~/.cache}/deepcrl/venvs/tf (DEEPCRL_TF_VENV
names another one); the export and TensorFlow's load run in that virtualenv's interpreter, in subprocesses, so
this test process (and the rest of the suite) never imports TensorFlow. Where TensorFlow is installed in this
environment itself (`pip install -e '.[tf]'`), that interpreter is used instead.

Without either, the tests skip in the quick run and fail in the full one (tests/export/test_errors.py checks
the "not installed" sentence).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import deepcrl

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5  # the export tolerance (ExportConfig.max_diff)


@pytest.fixture(scope="module")
def tf_python(venvs_dir, missing_prerequisite) -> str:
    """An interpreter that imports TensorFlow beside deepcrl's stack."""
    venv = Path(os.environ.get("DEEPCRL_TF_VENV") or venvs_dir / "tf")
    if (venv / "bin" / "python").exists() and list(venv.glob("lib/python3.*/site-packages/tensorflow")):
        return str(venv / "bin" / "python")
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable
    missing_prerequisite(f"TensorFlow is not importable here and there is no TensorFlow virtualenv at {venv} "
                         "(or set DEEPCRL_TF_VENV)")


def _env() -> dict:
    """This checkout's deepcrl first on the path, JAX on the CPU."""
    root = str(Path(deepcrl.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}


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
def test_savedmodel_loads_in_tensorflow_and_matches_jax(which, request, tmp_path, capsys, tf_python):
    from deepcrl.export.source import parity_inputs
    from deepcrl.policy import load_policy

    ckpt = request.getfixturevalue("tiny_onnx_source" if which == "student" else "small_teacher")
    out = tmp_path / f"{which}_savedmodel"
    export = subprocess.run([tf_python, "-m", "deepcrl.cli", "export", "--run", str(ckpt), "--out", str(out),
                             "--format", "savedmodel", "--json"], env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    report = json.loads(export.stdout[export.stdout.index("{"):])  # --json: one JSON document
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
        subprocess.run([tf_python, "-c", _TF_ONLY, str(out), str(tmp_path / "in.npz"), str(tmp_path / "tf.npz")],
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
