"""Fixtures of the env tests: the compiled Brax rollouts are made once and shared."""

from __future__ import annotations

import jax
import pytest

from deepcrl import envs
from deepcrl.envs.wrappers import wrap_for_training


@pytest.fixture(scope="session")
def reacher_rollout():
    """8 reacher envs, 2-step episodes, 8 steps, through the training wrappers (one compile)."""
    env = envs.make("reacher")
    wrapped = wrap_for_training(env, episode_length=2)
    n, steps = 8, 8

    @jax.jit
    def run(key):
        state = wrapped.reset(jax.random.split(key, n))

        def body(s, k):
            s = wrapped.step(s, jax.random.uniform(k, (n, env.action_size), minval=-1, maxval=1))
            return s, s

        return state, jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    first, states = run(jax.random.PRNGKey(0))
    return env, first, states
