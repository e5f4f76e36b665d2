"""Training wrappers: Brax's episode limit and vmap, plus an auto-reset that draws a fresh goal.

Brax's `AutoResetWrapper` restores the *first* reset state on every episode end, so a goal-conditioned task
would replay one start and goal forever. `GoalAutoResetWrapper` calls the environment's `reset` with a new
key instead: every episode gets its own start and goal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State, Wrapper
from brax.envs.wrappers.training import EpisodeWrapper, VmapWrapper


class GoalAutoResetWrapper(Wrapper):
    """Resets finished episodes of a batched env with fresh keys (new start and goal every time).

    Expects a batched env (e.g. under `VmapWrapper`). Keeps the finishing step's reward, done and metrics
    (so the learner sees the episode end), and replaces the system state, observation and info.
    ``info['episode_id']`` counts episodes per env so transitions of one episode can be told apart.
    """

    def reset(self, rng: jax.Array) -> State:
        keys = jax.vmap(jax.random.split)(rng)  # (n, 2, 2)
        state = self.env.reset(keys[:, 0])
        state.info["reset_key"] = keys[:, 1]
        state.info["episode_id"] = jnp.zeros(rng.shape[:1], jnp.int32)
        return state

    def step(self, state: State, action: jax.Array) -> State:
        if "steps" in state.info:
            state.info["steps"] = jnp.where(state.done > 0, 0, state.info["steps"])
        state = state.replace(done=jnp.zeros_like(state.done))
        state = self.env.step(state, action)
        done = state.done > 0
        keys = jax.vmap(jax.random.split)(state.info["reset_key"])

        def kept():
            info_keys = jax.eval_shape(lambda: self.env.reset(keys[:, 0]).info).keys()
            return state.pipeline_state, state.obs, {k: state.info[k] for k in info_keys}

        def fresh():
            new = self.env.reset(keys[:, 0])
            old = kept()
            return jax.tree.map(lambda n, o: n.astype(o.dtype), (new.pipeline_state, new.obs, new.info), old)

        # Most steps end no episode: skip the (batched) reset then. Under an outer vmap this is a select.
        new_pipeline, new_obs, new_info = jax.lax.cond(jnp.any(done), fresh, kept)

        def pick(new, old):
            mask = jnp.reshape(done, done.shape + (1,) * (old.ndim - done.ndim))
            return jnp.where(mask, new, old)

        info = dict(state.info)
        for key, value in new_info.items():
            info[key] = jax.tree.map(pick, value, state.info[key])
        info["reset_key"] = jnp.where(done[:, None], keys[:, 1], state.info["reset_key"])
        info["episode_id"] = state.info["episode_id"] + done.astype(jnp.int32)
        return state.replace(
            pipeline_state=jax.tree.map(pick, new_pipeline, state.pipeline_state),
            obs=pick(new_obs, state.obs),
            info=info,
        )


def wrap_for_training(env: Env, episode_length: int | None = None, action_repeat: int = 1) -> Env:
    """Episode limit -> vmap -> fresh-goal auto-reset. `reset` then takes a batch of keys, shape (n, 2)."""
    length = episode_length or env.goal_spec.episode_length
    env = EpisodeWrapper(env, length, action_repeat)
    env = VmapWrapper(env)
    return GoalAutoResetWrapper(env)
