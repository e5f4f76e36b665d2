"""What every export format needs from the artifact: its policy, the parity inputs and JAX's reference actions.

The ONNX export (`onnx.py`) and the SavedModel export (`savedmodel.py`) both load the source here and check
their converted model against JAX on the same inputs, at the same batch sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepcrl.errors import ArtifactError, DeepcrlError

PARITY_BATCHES = (1, 2, 7, 256)
"""Batch sizes of the parity check: one row, a few, an odd count and a full batch."""


def load_source(ckpt: Path):
    """The artifact's `JaxPolicy` in its deploy form, with a clear error for anything that is not an
    exportable artifact."""
    from deepcrl.policy import load_policy

    try:
        return load_policy(ckpt, deploy=True)
    except DeepcrlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a manifest that validates but whose network the builder rejects
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ArtifactError(f"{ckpt} cannot be rebuilt for export: its network config is incompatible "
                            f"with this deepcrl ({type(exc).__name__}: {first}).") from exc


def rollout_states(policy, n: int = 256, seed: int = 0, envs_: int = 32, steps: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Observations and goals visited by the policy itself in its env (`envs_` episodes x `steps`), `n` of
    them drawn at random.

    Parity on these matters more than on random inputs: they are what the robot will send.
    """
    import jax

    from deepcrl import envs
    from deepcrl.envs.rollout import rollout

    env = envs.make(policy.manifest.env_id)
    spec = env.goal_spec
    apply_fn = policy.apply_fn

    @jax.jit
    def collect(params, key):
        state = jax.vmap(env.reset)(jax.random.split(key, envs_))
        _, trace = rollout(jax.vmap(env.step), lambda o, g, _k: apply_fn(params, o, g), state, spec, steps)
        return trace.obs, trace.goal

    obs, goal = jax.device_get(collect(policy.params, jax.random.PRNGKey(seed)))
    obs = np.asarray(obs, np.float32).reshape(-1, spec.obs_size)
    goal = np.asarray(goal, np.float32).reshape(-1, spec.goal_size)
    pick = np.random.default_rng(seed).choice(len(obs), size=n, replace=len(obs) < n)
    return obs[pick], goal[pick]


def parity_inputs(policy, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """256 random and 256 rollout (observation, goal) rows; the random ones span each input's rollout range and
    half of it again on either side.

    Per input, and relative to that input's own spread: a student that standardises its inputs divides each by
    its std, so a pad in absolute units put inputs that barely vary far out of range. A shared scale set by
    reacher's joint velocities (|v| ~ 20) put its fingertip coordinates (std 0.09) ~200 std out; a pad of at
    least 1 put humanoid inputs with std 0.0014 ~700 std out, where float32 rounding alone gave 3.0e-5 against
    the 1e-5 bound on a correct export (4.4e-6 with the relative pad; 2.2e-6 on rollout rows).
    """
    rng = np.random.default_rng(seed)
    obs, goal = rollout_states(policy, 256, seed)

    def around(x: np.ndarray) -> np.ndarray:
        lo, hi = x.min(0), x.max(0)
        pad = np.maximum(0.5 * (hi - lo), 1e-3)  # an input constant over the rollouts still varies a little
        return rng.uniform(lo - pad, hi + pad, x.shape).astype(np.float32)

    return {"random": (around(obs), around(goal)), "rollout": (obs, goal)}


def jax_actions(policy, inputs: dict) -> dict[str, dict[int, np.ndarray]]:
    """Reference actions from the jitted JAX policy, per input set and batch size, in full float32.

    On a GPU, XLA runs float32 matmuls in TF32 by default: an H200 export of an ant student then "disagreed" with
    ONNX Runtime by 3.6e-3 (a depth-64 teacher by 5.9e-4), the GPU's rounding rather than the export's.
    """
    import jax

    with jax.default_matmul_precision("highest"):
        return {name: {b: policy(o[:b], g[:b]) for b in PARITY_BATCHES} for name, (o, g) in inputs.items()}


def worst(errors: dict[str, dict[int, float]]) -> tuple[float, str, int]:
    """The largest error of a `{input set: {batch: error}}` table, with its input set and batch."""
    value, name, batch = max((v, n, b) for n, per in errors.items() for b, v in per.items())
    return value, name, batch
