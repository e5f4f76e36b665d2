"""The goal-conditioned protocol every deepcrl environment follows on top of Brax's `Env` API.

An environment is a `brax.envs.base.Env` (``reset(rng) -> State``, ``step(state, action) -> State``), so Brax's
wrappers work on it. Its observation is ``[state, goal]``: the first ``obs_size`` entries describe the
system, the last ``goal_size`` entries are the goal. ``goal_indices`` name the entries of the state part that,
taken together, are the goal a state *achieves* (hindsight relabelling uses them). Every ``State.metrics``
carries ``dist_to_goal`` and ``success`` (1.0 within ``success_radius``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GoalSpec:
    """Goal-conditioned facts of an environment."""

    obs_size: int
    """Entries of the observation that describe the system (the state part, without the goal)."""
    goal_size: int
    """Entries of the goal (the tail of the observation)."""
    goal_indices: tuple[int, ...]
    """Indices into the state part whose values form the goal that state achieves."""
    success_radius: float
    """Euclidean distance to the goal under which a step counts as a success."""
    episode_length: int
    """Default episode length in steps."""

    def __post_init__(self) -> None:
        if len(self.goal_indices) != self.goal_size:
            raise ValueError("goal_indices must name exactly goal_size entries")


def split_obs(spec: GoalSpec, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split ``[state, goal]`` observations into their two parts (any leading batch shape)."""
    return obs[..., : spec.obs_size], obs[..., spec.obs_size : spec.obs_size + spec.goal_size]


def achieved_goal(spec: GoalSpec, state_part: jax.Array) -> jax.Array:
    """The goal a state achieves: its ``goal_indices`` entries."""
    return state_part[..., jnp.asarray(spec.goal_indices)]


def goal_metrics(pos: jax.Array, goal: jax.Array, radius: float) -> dict[str, jax.Array]:
    """`dist_to_goal` and `success` for an achieved goal and a target goal."""
    dist = jnp.linalg.norm(pos - goal, axis=-1)
    return {"dist_to_goal": dist, "success": (dist < radius).astype(jnp.float32)}
