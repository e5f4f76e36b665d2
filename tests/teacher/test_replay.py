"""Replay: hindsight goals come from later steps of the same episode, at geometric offsets."""

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl.teacher import replay

_insert = jax.jit(replay.insert)


def _fill(capacity, num_envs, steps, unroll, seed=0):
    """A buffer whose state part is (global time, episode id); episodes have random lengths per env."""
    rng = np.random.default_rng(seed)
    buf = replay.init(capacity, num_envs, obs_size=3, action_size=1)
    episode = np.zeros(num_envs, np.int32)
    for start in range(0, steps, unroll):
        times = np.arange(start, start + unroll)
        ids = np.zeros((unroll, num_envs), np.int32)
        for t in range(unroll):
            ids[t] = episode
            episode = episode + (rng.random(num_envs) < 0.08)  # episode ends with prob 0.08 per step
        obs = np.stack([np.broadcast_to(times[:, None], ids.shape), ids, np.zeros_like(ids)], -1)
        buf = _insert(buf, jnp.asarray(obs, jnp.float32), jnp.asarray(ids[..., None], jnp.float32),
                            jnp.asarray(ids))
    return buf


def test_goals_are_later_steps_of_the_same_episode_after_wrap_around():
    capacity, steps = 64, 200  # wrapped around three times
    buf = _fill(capacity, num_envs=5, steps=steps, unroll=10)
    index = replay.prepare(buf)
    batch = replay.sample(buf, index, jax.random.PRNGKey(1), 4096, goal_indices=(0, 1), gamma=0.9)
    t, eid = np.asarray(batch.obs[:, 0]), np.asarray(batch.obs[:, 1])
    goal_t, goal_eid = np.asarray(batch.goal[:, 0]), np.asarray(batch.goal[:, 1])
    assert np.all(goal_eid == eid)
    assert np.all(goal_t > t)
    np.testing.assert_array_equal(goal_t - t, np.asarray(batch.offset))
    assert t.min() >= steps - capacity  # only steps still held in the buffer
    assert np.array_equal(np.asarray(batch.action[:, 0]), eid)  # transitions stay whole
    # every drawable transition (one with a later step in its episode) is drawn
    future = np.asarray(index.future)
    assert len(np.unique(np.stack([batch.time, batch.env]), axis=1).T) == (future >= 1).sum()
    # a transition's future count is the number of later steps of its episode still held
    ids = np.asarray(buf.episode_id)
    order = np.roll(np.arange(capacity), -(steps % capacity))
    for e in range(5):
        col = ids[order, e]
        expect = np.array([(col[i + 1:] == col[i]).sum() for i in range(capacity)])
        np.testing.assert_array_equal(future[order, e], expect)


def test_partly_filled_buffer_never_reads_empty_rows():
    buf = _fill(capacity=100, num_envs=3, steps=20, unroll=10)
    batch = replay.sample(buf, replay.prepare(buf), jax.random.PRNGKey(0), 2048, (0, 1), 0.99)
    assert np.asarray(batch.time).max() < 20 and np.asarray(batch.goal[:, 0]).max() < 20


def test_truncated_geometric_matches_its_pmf():
    gamma, limit, n = 0.9, 30, 200_000
    k = np.asarray(replay.truncated_geometric(jax.random.PRNGKey(0), jnp.full((n,), limit), gamma))
    assert k.min() >= 1 and k.max() <= limit
    pmf = gamma ** np.arange(limit) / (1 - gamma ** limit) * (1 - gamma)
    hist = np.bincount(k, minlength=limit + 1)[1:] / n
    assert np.abs(hist - pmf).max() < 0.005
    assert abs(k.mean() - (np.arange(1, limit + 1) * pmf).sum()) < 0.05


def test_sampled_offsets_follow_the_truncated_geometric_of_each_episode():
    # One long episode per env: the offset of a transition with L later steps is geometric truncated at L.
    gamma, capacity = 0.99, 1000
    buf = replay.init(capacity, 2, obs_size=1, action_size=1)
    t = jnp.arange(capacity, dtype=jnp.float32)[:, None, None] * jnp.ones((1, 2, 1))
    buf = replay.insert(buf, t, t, jnp.zeros((capacity, 2), jnp.int32))
    index = replay.prepare(buf)
    batch = replay.sample(buf, index, jax.random.PRNGKey(3), 100_000, (0,), gamma)
    limit = np.asarray(index.future)[np.asarray(batch.time), np.asarray(batch.env)]
    offset = np.asarray(batch.offset)
    assert np.all(offset <= limit) and np.all(offset >= 1)
    # expected mean of each draw: sum k gamma^(k-1) / sum gamma^(k-1) over k <= L
    ks = np.arange(1, capacity)
    w = gamma ** (ks - 1)
    mean_by_limit = np.cumsum(ks * w) / np.cumsum(w)
    expected = mean_by_limit[limit - 1]
    assert abs(offset.mean() - expected.mean()) / expected.mean() < 0.02
    # far from the episode end the truncation vanishes: plain geometric, mean 1 / (1 - gamma) = 100
    far = limit >= 800
    assert abs(offset[far].mean() - 1 / (1 - gamma)) < 3.0
    assert abs(np.median(offset[far]) - np.ceil(np.log(0.5) / np.log(gamma))) <= 2
