"""The task-side pieces of benchmarks/vs_reference.py: the reference reacher's timestep fix (run inside the
reference's own virtualenv, python 3.10, so this module imports only the standard library at the top), its
random-action baselines, and the diagnostic gear change of deepcrl's reacher_ref.

Usage (vs_reference.py launches these; cwd: the reference's checkout, python: its venv):
    python vs_reference_envs.py --reference-reacher-dt-fix TRAIN_PY_ARGS...
    python vs_reference_envs.py --reference-reacher-baselines EPISODES
"""

from __future__ import annotations

import json
import os
import sys


def patch_reference_reacher() -> None:
    """In the reference's venv (cwd: its checkout): give its reacher the timestep the way Brax 0.10.1 reads it.

    The reference's reacher sets `sys.tree_replace({"opt.timestep": 0.005})` for the spring backend, but Brax
    0.10.1 (the reference's pin) steps spring with `sys.dt`, which stays at the XML's 0.01; with gear 25 and 4 frames
    the arm's joint velocity grows from 1e-3 to 2e9 in 4 steps even at zero action, and every loss is NaN from the
    first epoch. Brax's own reacher sets `sys.replace(dt=0.005)`; this does the same and changes nothing else."""
    sys.path.insert(0, os.getcwd())
    import envs.reacher as reacher  # the reference's module

    original = reacher.Reacher.__init__

    def init(self, backend="generalized", **kwargs):
        original(self, backend=backend, **kwargs)
        if backend in ("spring", "positional"):
            self.sys = self.sys.replace(dt=0.005)
            print(f"vs_reference: reacher sys.dt set to {self.sys.dt} (control period {self.dt})", flush=True)

    reacher.Reacher.__init__ = init


def _reference_reacher_child(train_args: list[str]) -> None:
    """In the reference's venv: train.py with `patch_reference_reacher` applied."""
    import runpy

    patch_reference_reacher()
    sys.argv = ["train.py", *train_args]
    runpy.run_path("train.py", run_name="__main__")


def _reference_reacher_baselines(episodes: int) -> None:
    """In the reference's venv: its (timestep-fixed) reacher under uniform random and zero actions, scored as its
    evaluator does (success: within 0.05 at some step; time at goal: steps within 0.05); prints one JSON line."""
    import jax
    import jax.numpy as jnp

    patch_reference_reacher()
    from envs.reacher import Reacher

    env = Reacher(backend="spring")
    step = jax.vmap(env.step)

    @jax.jit
    def episode(key):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))

        def body(carry, k):
            state, scale = carry
            action = scale * jax.random.uniform(k, (episodes, env.action_size), minval=-1, maxval=1)
            state = step(state, action)
            return (state, scale), (state.metrics["success"], state.metrics["dist"])

        out = {}
        for name, scale in (("uniform_random", 1.0), ("zero", 0.0)):
            _, (succ, dist) = jax.lax.scan(body, (state, scale), jax.random.split(k_act, 1000))
            out[name] = (succ, dist)
        return out

    result = {name: {"episodes": episodes, "success": float((succ.max(axis=0) > 0).mean()),
                     "time_at_goal": float(succ.sum(axis=0).mean()), "final_distance": float(dist[-1].mean())}
              for name, (succ, dist) in jax.device_get(episode(jax.random.PRNGKey(1))).items()}
    print(json.dumps(result), flush=True)


def patch_deepcrl_reacher_gear(gear: float) -> None:
    """Make `deepcrl.envs.make("reacher_ref")` return the env with both actuators' gear set to `gear` (MJX reads
    the model's actuator_gear; Brax's actuator struct is kept equal)."""
    from deepcrl import envs

    make = envs.make

    def patched(env_id: str, **overrides):
        env = make(env_id, **overrides)
        if env_id == "reacher_ref":
            sys_ = env.sys
            env.sys = sys_.replace(actuator_gear=sys_.actuator_gear.at[:, 0].set(gear),
                                   actuator=sys_.actuator.replace(gear=sys_.actuator.gear * 0 + gear))
        return env

    envs.make = patched


def baselines(env_id: str, episodes: int, gear: float | None = None, reference_python: str | None = None,
              reference_src: str | None = None) -> dict:
    """Success and time at goal of uniform random and of zero actions in deepcrl's ENV_ref and (reacher, given the
    reference's python and checkout) in the reference's env: what 'moved' means for each learner, whose physics
    differ."""
    import subprocess

    import numpy as np

    from deepcrl import envs
    from deepcrl.evaluate import evaluate

    if gear:
        patch_deepcrl_reacher_gear(gear)
    env = envs.make(f"{env_id}_ref")
    rng = np.random.default_rng(0)
    policies = {"uniform_random": lambda obs, goal: rng.uniform(-1, 1, (len(obs), env.action_size)),
                "zero": lambda obs, goal: np.zeros((len(obs), env.action_size))}
    out = {"deepcrl": {name: {k: v for k, v in evaluate(env, policy, episodes, seed=1).as_dict().items()
                              if k in ("episodes", "success", "time_at_goal", "final_distance")}
                       for name, policy in policies.items()}}
    if env_id == "reacher" and reference_python and os.path.exists(reference_python):
        env_vars = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        done = subprocess.run([reference_python, os.path.abspath(__file__), "--reference-reacher-baselines",
                               str(episodes)], cwd=reference_src, env={**env_vars, "JAX_PLATFORMS": "cpu"},
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        out["reference"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--reference-reacher-baselines":
        _reference_reacher_baselines(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--reference-reacher-dt-fix":
        _reference_reacher_child(sys.argv[2:])
    else:
        sys.exit(__doc__)
