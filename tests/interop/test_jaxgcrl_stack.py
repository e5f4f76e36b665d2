"""Against JaxGCRL's own code (marked `reference` and `slow`; needs the reference virtualenv and a JaxGCRL
checkout): its Actor/Encoder pickled with run.py's statements (reacher), and one tiny epoch of its run.main on ant;
deepcrl imports each and must give its deterministic actions and ``norm`` energies within 1e-5.

The virtualenv is test_reference_stack.py's (scripts/provision-reference.sh: python 3.10, jax 0.4.23, flax
0.7.4, brax 0.10.1, tyro, wandb, wandb-osh; JaxGCRL pins jax 0.4.25 / flax >= 0.8.3 / brax 0.12.1, whose array
pickles are the same). The checkout (MichalBortkiewicz/JaxGCRL: run.py and jaxgcrl/) defaults to
~/.cache/deepcrl/jaxgcrl-src; DEEPCRL_JAXGCRL_SRC overrides it. Without them the checks skip with that reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_reference_stack import VENV

_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepcrl"
SRC = Path(os.environ.get("DEEPCRL_JAXGCRL_SRC", _CACHE / "jaxgcrl-src"))
DRIVER = Path(__file__).with_name("jaxgcrl_stack_driver.py")


def _drive(mode: str, out: Path, timeout: float) -> None:
    python = VENV / "bin" / "python"
    if not python.exists() or not (SRC / "run.py").is_file() or not (SRC / "jaxgcrl").is_dir():
        pytest.skip(f"no reference venv at {VENV} or JaxGCRL checkout at {SRC} (set DEEPCRL_JAXGCRL_SRC)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(JAX_PLATFORMS="cpu", WANDB_MODE="disabled", MUJOCO_GL="disable", PYTHONPATH=str(SRC))
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(python), str(DRIVER), mode, str(out)], cwd=out, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _import_and_compare(out: Path, dest: Path) -> dict:
    from deepcrl.interop.jaxgcrl import import_run
    from deepcrl.policy import load_networks, load_policy

    want = np.load(out / "outputs.npz")
    (run,) = list(out.glob("runs/run_*"))
    summary = import_run(run, dest)
    s, g, a = want["s"], want["g"], want["a"]
    assert np.isfinite(want["action"]).all() and np.isfinite(want["energy"]).all(), "JaxGCRL's run diverged"
    got = {"action": load_policy(dest)(s, g),
           "energy": np.asarray(load_networks(dest, critic="the comparison needs").critic.energy(s, a, g))}
    for key, value in got.items():
        np.testing.assert_allclose(value, want[key], rtol=0, atol=1e-5, err_msg=key)
    print("max |diff| vs JaxGCRL's own networks:", {k: float(np.abs(v - want[k]).max()) for k, v in got.items()})
    return summary


@pytest.mark.slow
@pytest.mark.reference
def test_networks_built_and_pickled_by_jaxgcrl_import_with_its_outputs(tmp_path):
    _drive("init", tmp_path / "jg", 600)
    summary = _import_and_compare(tmp_path / "jg", tmp_path / "imported")
    assert summary["env"] == "reacher_ref" and summary["actor_hidden"] == [32, 32] and summary["critic_layer_norm"]


@pytest.mark.slow
@pytest.mark.reference
def test_a_checkpoint_trained_by_jaxgcrl_imports_with_its_outputs(tmp_path):
    """One tiny epoch of JaxGCRL's run.main (ant, spring backend, CPU; minutes of compiling on 2 loaded cores):
    args.pkl, ckpt/final and the step_N.pkl in --checkpoint_logdir are its own files."""
    _drive("train", tmp_path / "jg", 2400)
    assert list((tmp_path / "jg" / "ckpts").glob("step_*.pkl"))
    summary = _import_and_compare(tmp_path / "jg", tmp_path / "imported")
    assert summary["env"] == "ant_ref" and summary["step"] == 160
