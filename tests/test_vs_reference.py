"""benchmarks/vs_reference.py: its seed aggregation and metric parsing (fast), and (vs_reference_envs.py) its fix of
the reference's reacher timestep (marked `reference` and `slow`: runs the paper's reacher in its own pinned virtualenv)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = _ROOT / "benchmarks" / "vs_reference.py"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepcrl"
VENV = Path(os.environ.get("DEEPCRL_SCALING_CRL_VENV", _CACHE / "venvs" / "scaling-crl"))
SRC = Path(os.environ.get("DEEPCRL_SCALING_CRL_SRC", _CACHE / "scaling-crl-src"))


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("vs_reference", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_reference"] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _run(system, seed, rows):
    return {"system": system, "seed": seed, "rows": [
        {"env_steps": s, "wall_s": w, "success": su, "time_at_goal": t, "critic_loss": c} for s, w, su, t, c in rows]}


def test_curves_give_mean_min_max_over_the_seeds_that_reached_each_evaluation(vs):
    results = {"runs": [
        _run("reference", 1, [(100, 10.0, 0.0, 0.0, 4.0), (200, 20.0, 0.5, 30.0, 3.0)]),
        _run("deepcrl", 1, [(100, 5.0, 0.25, 1.0, 5.0)]),
        _run("reference", 2, [(100, 14.0, 0.5, 10.0, 2.0), (200, 30.0, 1.0, 50.0, 1.0)]),
        _run("reference", 3, [(100, 12.0, 0.25, 2.0, 3.0)]),  # stopped by its time bound after one evaluation
        _run("deepcrl", 2, []),  # nothing finished: no point
    ]}
    out = vs.curves(results)
    assert list(out) == ["reference", "deepcrl"]
    first, second = out["reference"]
    assert (first["env_steps"], first["seeds"], first["wall_s"]) == (100, 3, 12.0)
    assert first["success"] == {"mean": 0.25, "min": 0.0, "max": 0.5}
    assert first["time_at_goal"] == {"mean": 4.0, "min": 0.0, "max": 10.0}
    assert (second["env_steps"], second["seeds"], second["wall_s"]) == (200, 2, 25.0)
    assert second["success"] == {"mean": 0.75, "min": 0.5, "max": 1.0}
    assert second["critic_loss"] == {"mean": 2.0, "min": 1.0, "max": 3.0}
    assert [p["seeds"] for p in out["deepcrl"]] == [1]


def test_a_reference_epoch_line_parses_to_its_numbers(vs):
    line = ("epoch 3 out of 20 complete. metrics: {'eval/walltime': 13.3, 'training/envsteps': 36704.0, "
            "'training/critic_loss': Array(4.25, dtype=float32), 'eval/episode_success': Array(12., dtype=float32), "
            "'eval/episode_success_any': Array(0.5, dtype=float32), 'training/actor_loss': Array(nan, dtype=float32)}")
    m = vs.parse_reference_line(line)
    assert m["epoch"] == 3 and m["training/envsteps"] == 36704.0 and m["training/critic_loss"] == 4.25
    row = vs.reference_row(m, 99.0)
    assert (row["env_steps"], row["success"], row["time_at_goal"]) == (36704, 0.5, 12.0)
    assert row["actor_loss"] != row["actor_loss"]  # NaN kept as NaN, so finite_losses can see it
    assert vs.parse_reference_line("Time elapsed: 0.015 hours") is None


def test_reacher_reference_command_goes_through_the_timestep_fix_and_ant_does_not(vs):
    reacher = vs.reference_command(vs.Config(env="reacher"), 2)
    assert reacher[1:3] == [str(_SCRIPT.with_name("vs_reference_envs.py")), "--reference-reacher-dt-fix"]
    assert reacher[reacher.index("--env_id") + 1] == "reacher"
    ant = vs.reference_command(vs.Config(), 2)
    assert ant[1] == "train.py" and ant[ant.index("--env_id") + 1] == "ant"
    assert vs.deepcrl_config(vs.Config(env="reacher"), 2, Path("x"))["env"] == "reacher_ref"
    assert vs.Config(env="reacher").out_path().name == "vs_reference_reacher.json"


_PROBE = """
import json, sys, jax, jax.numpy as jnp
sys.path.insert(0, {script_dir!r})
if sys.argv[1] == "fixed":
    import vs_reference_envs
    vs_reference_envs.patch_reference_reacher()
sys.path.insert(0, ".")
from envs.reacher import Reacher
env = Reacher(backend="spring")
state, step = env.reset(jax.random.PRNGKey(0)), jax.jit(env.step)
speeds = []
for _ in range(50):
    state = step(state, jnp.zeros(2))
    speeds.append(float(jnp.abs(state.pipeline_state.qd).max()))
print(json.dumps({{"dt": float(env.sys.dt), "control_dt": float(env.dt), "max_joint_speed": max(speeds)}}))
"""


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("variant", ["as_is", "fixed"])
def test_the_reference_reacher_diverges_at_zero_action_unless_its_timestep_is_fixed(variant):
    python = VENV / "bin" / "python"
    if not python.exists() or not (SRC / "envs" / "reacher.py").is_file():
        pytest.skip(f"no reference venv at {VENV} or checkout at {SRC} (scripts/provision-reference.sh)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([str(python), "-c", _PROBE.format(script_dir=str(_SCRIPT.parent)), variant], cwd=SRC,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    if variant == "fixed":
        assert probe["dt"] == pytest.approx(0.005) and probe["control_dt"] == pytest.approx(0.02)
        assert probe["max_joint_speed"] < 1.0  # at rest with zero torque it barely moves
    else:  # the reference's own code under its pin: opt.timestep is set, spring steps with sys.dt = 0.01
        assert probe["dt"] == pytest.approx(0.01)
        assert not probe["max_joint_speed"] < 1e3  # diverged (huge or NaN)
