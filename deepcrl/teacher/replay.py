"""Device-resident trajectory replay with hindsight goals drawn a geometric number of steps ahead.

The buffer holds, for each of the N parallel envs, its last ``capacity`` time steps in order (circular over
time, shape ``(capacity, N, ...)``), with each step's episode id. A transition (s_t, a_t) is paired with the
goal its own trajectory achieved k steps later, k >= 1, drawn from the geometric distribution
P(k) ∝ gamma^(k-1) truncated to the steps of the same episode still in the buffer (the reference's
"future state" relabelling). Transitions with no later step in their episode are never drawn.

Drawing k by inverting the truncated geometric's CDF costs O(1) per sample; the only O(capacity) work,
finding where each episode ends, is done once per training iteration by `prepare`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ReplayState(NamedTuple):
    """The buffer. Time-major: index ``[t % capacity, env]``."""

    obs: jax.Array
    """(capacity, N, obs_size) state part of the observation before acting."""
    action: jax.Array
    """(capacity, N, action_size) action taken."""
    episode_id: jax.Array
    """(capacity, N) int32 episode counter of the env (increases by one at every reset)."""
    inserted: jax.Array
    """() int32 time steps written per env so far (all envs advance together)."""


class SampleIndex(NamedTuple):
    """Per-iteration lookup tables for sampling (see `prepare`)."""

    future: jax.Array
    """(capacity, N) int32 number of later steps of the same episode held in the buffer."""
    cumulative: jax.Array
    """(capacity * N,) int32 running count of drawable transitions (future >= 1), flattened."""


class HindsightBatch(NamedTuple):
    """A batch of transitions with hindsight goals."""

    obs: jax.Array
    """(B, obs_size) state part s_t."""
    action: jax.Array
    """(B, action_size) a_t."""
    goal: jax.Array
    """(B, goal_size) the goal achieved by s_{t+k}."""
    time: jax.Array
    """(B,) int32 buffer time index of s_t."""
    env: jax.Array
    """(B,) int32 env index."""
    offset: jax.Array
    """(B,) int32 k >= 1: the goal comes from time index (time + k) % capacity."""


def init(capacity: int, num_envs: int, obs_size: int, action_size: int) -> ReplayState:
    """An empty buffer."""
    return ReplayState(
        obs=jnp.zeros((capacity, num_envs, obs_size), jnp.float32),
        action=jnp.zeros((capacity, num_envs, action_size), jnp.float32),
        episode_id=jnp.zeros((capacity, num_envs), jnp.int32),
        inserted=jnp.zeros((), jnp.int32),
    )


def capacity_of(buffer: ReplayState) -> int:
    return buffer.obs.shape[0]


def insert(buffer: ReplayState, obs: jax.Array, action: jax.Array, episode_id: jax.Array) -> ReplayState:
    """Append an unroll of T steps (arrays with leading shape (T, N)), overwriting the oldest steps."""
    capacity = capacity_of(buffer)
    rows = (buffer.inserted + jnp.arange(obs.shape[0])) % capacity
    return ReplayState(
        obs=buffer.obs.at[rows].set(obs.astype(buffer.obs.dtype)),
        action=buffer.action.at[rows].set(action.astype(buffer.action.dtype)),
        episode_id=buffer.episode_id.at[rows].set(episode_id.astype(jnp.int32)),
        inserted=buffer.inserted + obs.shape[0],
    )


def prepare(buffer: ReplayState) -> SampleIndex:
    """Where each stored episode ends, and the table to draw drawable transitions uniformly."""
    capacity = capacity_of(buffer)
    size = jnp.minimum(buffer.inserted, capacity)
    start = (buffer.inserted - size) % capacity  # oldest row
    # Chronological order per env: episode ids never decrease, so "last step of my episode" is a searchsorted.
    ids = jnp.roll(buffer.episode_id, -start, axis=0)
    valid = jnp.arange(capacity)[:, None] < size
    ids = jnp.where(valid, ids, jnp.iinfo(jnp.int32).max)
    last = jax.vmap(lambda col: jnp.searchsorted(col, col, side="right"), in_axes=1, out_axes=1)(ids) - 1
    future = jnp.where(valid, last - jnp.arange(capacity)[:, None], 0).astype(jnp.int32)
    future = jnp.roll(future, start, axis=0)
    cumulative = jnp.cumsum((future >= 1).reshape(-1).astype(jnp.int32))
    return SampleIndex(future=future, cumulative=cumulative)


def truncated_geometric(key: jax.Array, limit: jax.Array, gamma: float) -> jax.Array:
    """k in {1..limit} with P(k) ∝ gamma^(k-1), by inverting the CDF (1 - gamma^k) / (1 - gamma^limit)."""
    u = jax.random.uniform(key, limit.shape)
    limit = jnp.maximum(limit, 1)
    tail = 1.0 - u * (1.0 - gamma ** limit.astype(jnp.float32))
    k = 1 + jnp.floor(jnp.log(tail) / jnp.log(gamma)).astype(jnp.int32)
    return jnp.clip(k, 1, limit)


def sample(buffer: ReplayState, index: SampleIndex, key: jax.Array, batch_size: int,
           goal_indices: tuple[int, ...], gamma: float) -> HindsightBatch:
    """Draw `batch_size` transitions uniformly among those with a later step in their episode.

    Args:
        buffer: the replay state.
        index: `prepare(buffer)` (computed once per iteration).
        key: PRNG key.
        batch_size: B.
        goal_indices: entries of the state part that form the goal a state achieves.
        gamma: discount of the geometric goal offset.
    """
    capacity, num_envs = buffer.episode_id.shape
    k_pick, k_offset = jax.random.split(key)
    total = jnp.maximum(index.cumulative[-1], 1)
    u = jax.random.randint(k_pick, (batch_size,), 0, total)
    flat = jnp.searchsorted(index.cumulative, u, side="right").astype(jnp.int32)
    time, env = flat // num_envs, flat % num_envs
    offset = truncated_geometric(k_offset, index.future[time, env], gamma)
    goal_time = (time + offset) % capacity
    goal = buffer.obs[goal_time, env][:, jnp.asarray(goal_indices)]
    return HindsightBatch(obs=buffer.obs[time, env], action=buffer.action[time, env], goal=goal,
                          time=time, env=env, offset=offset)
