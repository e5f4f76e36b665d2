"""A planner from a teacher run directory or an exported critic: `JaxCritic` and `build_planner`.

Apart from `planner.py` because it reads artifacts through `deepcrl.export.critic` (JAX); the server plans
with `OnnxCritic` and `planner.py` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepcrl.errors import DeepcrlError
from deepcrl.plan.critic import OnnxCritic
from deepcrl.plan.planner import Planner, coverage_landmarks


class JaxCritic:
    """A run directory's critic as an `Encoder` (jitted phi and psi; the action defaults to zeros)."""

    def __init__(self, run_dir: str | Path):
        import jax

        from deepcrl.export.critic import _encoders, load_critic

        self.manifest, critic = load_critic(run_dir)
        self.obs_size, self.goal_size = self.manifest.obs_size, self.manifest.goal_size
        self.action_size = self.manifest.action_size
        phi, psi, self._params = _encoders(critic)
        self._phi, self._psi = jax.jit(phi), jax.jit(psi)

    def phi(self, observation, action=None) -> np.ndarray:
        o = np.asarray(observation, np.float32)
        a = np.zeros((len(o), self.action_size), np.float32) if action is None else np.asarray(action, np.float32)
        return np.asarray(self._phi(self._params, o, a))

    def psi(self, goal) -> np.ndarray:
        return np.asarray(self._psi(self._params, np.asarray(goal, np.float32)))


def build_planner(critic: str | Path, env, landmarks: int = 500, cutoff: float | None = None,
                  cutoff_quantile: float = 0.07, seed: int = 0) -> Planner:
    """A planner on `env`'s coverage landmarks with the critic of a run directory or an exported critic .onnx.

    Raises:
        DeepcrlError: no critic (a student or policy file: no distance head), an empty landmark set, or a
            critic trained on other sizes than `env` (one sentence).
    """
    path = Path(critic)
    if path.suffix == ".onnx":
        encoder = OnnxCritic(path)
    else:
        encoder = JaxCritic(path)
    spec = env.goal_spec
    if (encoder.obs_size, encoder.goal_size) != (spec.obs_size, spec.goal_size):
        raise DeepcrlError(f"the critic of {path} takes {encoder.obs_size}-d states and {encoder.goal_size}-d goals; "
                           f"the env has {spec.obs_size} and {spec.goal_size}.")
    obs, goals = coverage_landmarks(env, landmarks, seed)
    return Planner(encoder, obs, goals, cutoff=cutoff, cutoff_quantile=cutoff_quantile)
