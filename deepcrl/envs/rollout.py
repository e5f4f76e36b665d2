"""One rollout loop for every stage: training's collection, distillation's data, evaluation and export's inputs.

`rollout` runs `length` steps of a (vmapped) env as one `lax.scan`: at each step the state's observation is
split into its state and goal parts, `act` chooses the action, the env steps, and a `Step` of per-step
arrays is stacked. Call it inside `jax.jit`.

    >>> final, steps = rollout(jax.vmap(env.step), act, state, env.goal_spec, 100, key)  # doctest: +SKIP
    >>> steps.obs.shape   # (100, num_envs, obs_size)                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from deepcrl.envs.base import GoalSpec, split_obs


class Step(NamedTuple):
    """What one step of a rollout records (leading axes: time, then envs)."""

    obs: jax.Array
    """State part of the observation the action was chosen on."""
    goal: jax.Array
    """Goal part of that observation."""
    action: jax.Array
    """Action sent to the env."""
    aux: Any
    """Whatever `act` returned beside the action (None if only an action)."""
    metrics: dict
    """The env's metrics after the step (success, dist_to_goal, ...)."""
    info: dict
    """The `info` entries named in `keep_info`, before the step (e.g. episode_id)."""


def rollout(step: Callable[[Any, jax.Array], Any], act: Callable[..., Any], state: Any, spec: GoalSpec,
            length: int, key: jax.Array | None = None, keep_info: Sequence[str] = ()) -> tuple[Any, Step]:
    """Roll `length` steps from `state`.

    Args:
        step: the (batched) env step, `step(state, action) -> state`.
        act: `act(obs, goal, key) -> action` or `-> (action, aux)`; `key` is None when no `key` is given.
        state: the (batched) env state to start from.
        spec: the env's goal spec (how observations split into state and goal).
        length: number of steps.
        key: PRNG key, split into one key per step for `act`.
        keep_info: `state.info` entries to record (before each step).
    Returns:
        The final state and the stacked `Step`s.
    """
    keys = None if key is None else jax.random.split(key, length)

    def body(s, k):
        obs, goal = split_obs(spec, s.obs)
        out = act(obs, goal, k)
        action, aux = out if isinstance(out, tuple) else (out, None)
        info = {name: s.info[name] for name in keep_info}
        s = step(s, action)
        return s, Step(obs=obs, goal=goal, action=action, aux=aux, metrics=s.metrics, info=info)

    return jax.lax.scan(body, state, keys, length)
