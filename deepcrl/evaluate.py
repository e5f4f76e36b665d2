"""Score any policy in the simulator: success, time at goal, final distance, detour pairs apart.

Each of the K episodes runs in its own env copy (vmapped) from its own reset key, for a full episode.
A `JaxPolicy` runs inside one jitted `deepcrl.envs.rollout`; any other policy (ONNX Runtime, a remote client, random)
is called from a host loop around a jitted env step. Both see the same starts and goals for the same seed,
so their results compare directly.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl import envs
from deepcrl.envs.rollout import rollout
from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Evaluation metrics over K episodes (rates in [0, 1])."""

    episodes: int
    """Number of episodes."""
    success: float
    """Fraction of episodes that came within the success radius of the goal at some step."""
    final_success: float
    """Fraction of episodes that ended within the success radius."""
    time_at_goal: float
    """Mean number of steps within the success radius, per episode."""
    episode_length: int
    """Steps per episode (time at goal is out of this)."""
    final_distance: float
    """Mean distance to the goal at the last step."""
    detour_episodes: int
    """Episodes whose start and goal are separated by a wall (0 for envs without walls)."""
    detour_success: float
    """Success over detour episodes only (NaN when there are none)."""
    direct_success: float
    """Success over episodes whose straight line to the goal is free (NaN when there are none)."""

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in dataclasses.asdict(self).items()}


def _summarise(success_steps: np.ndarray, dists: np.ndarray, detour: np.ndarray) -> EvalResult:
    """success_steps, dists: (T, K); detour: (K,) bool."""
    reached = success_steps.max(axis=0) > 0
    steps = success_steps.shape[0]

    def rate(mask):
        return float(reached[mask].mean()) if mask.any() else float("nan")

    return EvalResult(
        episodes=int(reached.shape[0]),
        success=float(reached.mean()),
        final_success=float(success_steps[-1].mean()),
        time_at_goal=float(success_steps.sum(axis=0).mean()),
        episode_length=int(steps),
        final_distance=float(dists[-1].mean()),
        detour_episodes=int(detour.sum()),
        detour_success=rate(detour),
        direct_success=rate(~detour),
    )


_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 8


def _compiled(env, policy, length: int):
    """(jitted vmapped reset, jitted rollout(params, state) -> (success, distance)) for this env and policy
    shape, made once and reused while the same env object and an equal `trace_key` come back (the last 8 kept).

    Without it every call defined a new jitted function, so each evaluation during training re-traced and
    re-compiled the whole episode (minutes for an MJX body on a loaded CPU)."""
    trace_key = getattr(policy, "trace_key", None)
    key = (id(env), length, trace_key if trace_key is not None else id(policy.apply_fn))
    entry = _COMPILED.get(key)
    if entry is not None and entry[0] is env:
        _COMPILED.move_to_end(key)
        return entry[1], entry[2]
    spec, apply_fn, step = env.goal_spec, policy.apply_fn, jax.vmap(env.step)

    @jax.jit
    def run(params, state):
        _, steps = rollout(step, lambda obs, goal, _: apply_fn(params, obs, goal), state, spec, length)
        return steps.metrics["success"], steps.metrics["dist_to_goal"]

    reset = jax.jit(jax.vmap(env.reset))
    _COMPILED[key] = (env, reset, run)  # the env is kept so its id cannot be reused by another while cached
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return reset, run


def evaluate(env_or_id, policy, episodes: int = 64, seed: int = 0, episode_length: int | None = None) -> EvalResult:
    """Roll `policy` for `episodes` episodes and summarise.

    Args:
        env_or_id: an env id or a deepcrl env.
        policy: a `JaxPolicy` (anything with `apply_fn` and `params`) or a numpy callable
            ``policy(observation[B, obs], goal[B, goal]) -> action[B, act]``.
        episodes: number of episodes (run in parallel).
        seed: seed of the starts and goals.
        episode_length: steps per episode; the env's default if None.
    """
    env = envs.make(env_or_id) if isinstance(env_or_id, str) else env_or_id
    spec = env.goal_spec
    for name, size in (("observation", spec.obs_size), ("goal", spec.goal_size), ("action", env.action_size)):
        have = getattr(policy, f"{'obs' if name == 'observation' else name}_size", size)
        if have != size:
            raise DeepcrlError(f"the policy's {name} size is {have} but {getattr(env, 'env_id', 'the env')} "
                               f"has {size}; evaluate it on the env it was trained for.")
    length = int(episode_length or spec.episode_length)
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    if hasattr(policy, "apply_fn"):
        reset, run = _compiled(env, policy, length)
        state = reset(keys)
        detour = np.asarray(state.info.get("detour", jnp.zeros(episodes))) > 0
        succ, dist = jax.device_get(run(policy.params, state))
    else:
        state = jax.jit(jax.vmap(env.reset))(keys)
        detour = np.asarray(state.info.get("detour", jnp.zeros(episodes))) > 0
        step_jit = jax.jit(jax.vmap(env.step))
        succ, dist = [], []
        for _ in range(length):
            obs, goal = (np.asarray(x) for x in envs.split_obs(spec, state.obs))
            action = np.asarray(policy(obs, goal), np.float32)
            if action.shape != (episodes, env.action_size) or not np.all(np.isfinite(action)):
                raise DeepcrlError(f"the policy returned actions of shape {action.shape} (or non-finite values); "
                                   f"expected ({episodes}, {env.action_size}) finite values.")
            state = step_jit(state, jnp.asarray(action))
            succ.append(np.asarray(state.metrics["success"]))
            dist.append(np.asarray(state.metrics["dist_to_goal"]))
        succ, dist = np.stack(succ), np.stack(dist)
    return _summarise(np.asarray(succ), np.asarray(dist), detour)


def render_episode(env, policy, path, seed: int = 0, episode_length: int | None = None):
    """Roll one episode (the first of `evaluate`'s seed) and write a replay with `deepcrl.envs.render`."""
    from deepcrl.envs.render import render

    spec = env.goal_spec
    length = int(episode_length or spec.episode_length)
    key = jax.random.split(jax.random.PRNGKey(seed), 1)
    state = jax.jit(jax.vmap(env.reset))(key)
    step = jax.jit(jax.vmap(env.step))
    call = (lambda o, g: policy.apply_fn(policy.params, o, g)) if hasattr(policy, "apply_fn") else policy
    states = [jax.tree.map(lambda x: x[0], state.pipeline_state)]
    for _ in range(length):
        action = np.asarray(call(*(np.asarray(x) for x in envs.split_obs(spec, state.obs))))
        state = step(state, jnp.asarray(action, jnp.float32))
        states.append(jax.tree.map(lambda x: x[0], state.pipeline_state))
        if float(state.done[0]):  # a fallen body: the episode (and the replay) ends here
            break
    goal = np.asarray(state.info["goal"][0])
    return render(env, states, path, goal=goal)
