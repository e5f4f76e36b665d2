"""point_maze family: API under jit+vmap, goal metrics, wall sliding, fresh goals across auto-resets, detours."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs.wrappers import wrap_for_training

POINT_MAZES = ("point_maze", "point_maze_open", "point_maze_big")


@pytest.mark.parametrize("env_id", POINT_MAZES)
def test_reset_step_under_jit_vmap(env_id):
    env = envs.make(env_id)
    spec = env.goal_spec
    n = 5
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    state = reset(jax.random.split(jax.random.PRNGKey(0), n))
    actions = jax.random.uniform(jax.random.PRNGKey(1), (n, env.action_size), minval=-1, maxval=1)
    for s in (state, step(state, actions)):
        assert s.obs.shape == (n, spec.obs_size + spec.goal_size) and s.obs.dtype == jnp.float32
        assert s.reward.shape == (n,) and s.reward.dtype == jnp.float32
        assert s.done.shape == (n,) and s.done.dtype == jnp.float32
        assert set(s.metrics) >= {"dist_to_goal", "success"}
        assert s.info["goal"].shape == (n, spec.goal_size)
        # the goal is the observation's tail, the achieved goal sits at goal_indices of the state part
        np.testing.assert_array_equal(s.obs[:, spec.obs_size:], s.info["goal"])
        achieved = envs.achieved_goal(spec, envs.split_obs(spec, s.obs)[0])
        np.testing.assert_allclose(s.metrics["dist_to_goal"],
                                   np.linalg.norm(achieved - s.info["goal"], axis=-1), rtol=1e-5)
    assert env.observation_size == spec.obs_size + spec.goal_size


def _state_at(env, pos, goal):
    state = env.reset(jax.random.PRNGKey(0))
    pos, goal = jnp.asarray(pos, jnp.float32), jnp.asarray(goal, jnp.float32)
    return state.replace(pipeline_state=pos, info={**state.info, "goal": goal})


def test_success_and_distance_on_hand_placed_states(point_maze):
    env = point_maze
    goal = jnp.array([1.5, 1.5])  # centre of the free cell (row 1, col 1) of the U-maze
    at_goal = env.step(_state_at(env, goal, goal), jnp.zeros(2))
    assert float(at_goal.metrics["dist_to_goal"]) == pytest.approx(0.0, abs=1e-6)
    assert float(at_goal.metrics["success"]) == 1.0 and float(at_goal.reward) == 1.0

    one_away = env.step(_state_at(env, [2.5, 1.5], goal), jnp.zeros(2))  # same corridor, 1 unit along x
    assert float(one_away.metrics["dist_to_goal"]) == pytest.approx(1.0, abs=1e-6)
    assert float(one_away.metrics["success"]) == 0.0 and float(one_away.reward) == 0.0

    just_inside = env.step(_state_at(env, [1.5 + 0.29, 1.5], goal), jnp.zeros(2))
    assert float(just_inside.metrics["success"]) == 1.0  # radius 0.3


def test_move_into_wall_keeps_parallel_component(point_maze):
    env = point_maze
    # (1.5, 1.15): free cell (1, 1), the wall row 0 lies below. Push down-right: y is blocked, x still moves.
    pos = jnp.array([1.5, 1.15])
    new = env.move(pos, jnp.array([1.0, -1.0]))
    assert float(new[0]) == pytest.approx(1.5 + env.max_step, abs=1e-6)
    assert 1.0 < float(new[1]) <= 1.15 and not bool(env.is_wall(new))
    # straight into the wall: stopped at the wall's face, not inside and not thrown back
    stopped = env.move(pos, jnp.array([0.0, -1.0]))
    assert float(stopped[1]) == pytest.approx(1.0 + 1e-3, abs=1e-6) and float(stopped[0]) == 1.5


@pytest.mark.parametrize("env_id", ["point_maze", "point_maze_big"])
def test_walls_never_entered_over_long_random_rollouts(env_id):
    env = envs.make(env_id)
    n, steps = 64, 400

    @jax.jit
    def rollout(key):
        state = jax.vmap(env.reset)(jax.random.split(key, n))

        def body(s, k):
            s = jax.vmap(env.step)(s, jax.random.uniform(k, (n, 2), minval=-1, maxval=1))
            return s, s.pipeline_state

        return jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    positions = rollout(jax.random.PRNGKey(3))  # (steps, n, 2)
    assert not bool(jnp.any(jax.vmap(env.is_wall)(positions.reshape(-1, 2))))
    travelled = jnp.linalg.norm(positions[-1] - positions[0], axis=-1)
    assert float(travelled.mean()) > 0.5  # the points did move, so the check above means something


def test_detour_flag_on_hand_picked_pairs(point_maze):
    env = point_maze
    # U-maze: rows 1 and 3 are corridors joined only by column 3 (row 2 is wall elsewhere)
    assert not bool(env.needs_detour(jnp.array([1.5, 1.5]), jnp.array([3.5, 1.5])))  # along the bottom corridor
    assert not bool(env.needs_detour(jnp.array([3.5, 1.5]), jnp.array([3.5, 3.5])))  # up the right column
    assert not bool(env.needs_detour(jnp.array([2.5, 1.5]), jnp.array([3.5, 3.5])))  # right then up: Manhattan
    assert bool(env.needs_detour(jnp.array([1.5, 1.5]), jnp.array([1.5, 3.5])))  # round the middle wall
    assert bool(env.needs_detour(jnp.array([1.5, 3.5]), jnp.array([2.5, 1.5])))
    # the reset's flag agrees with the geometry, and both kinds of pair are drawn
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 256))
    expected = jax.vmap(env.needs_detour)(state.pipeline_state, state.info["goal"])
    np.testing.assert_array_equal(state.info["detour"], expected.astype(jnp.float32))
    assert 0 < float(state.info["detour"].mean()) < 1


def test_goals_and_starts_differ_across_auto_resets(point_maze):
    n, length, episodes = 8, 3, 4
    env = wrap_for_training(point_maze, episode_length=length)

    @jax.jit
    def rollout(key):
        state = env.reset(jax.random.split(key, n))

        def body(s, _):
            s = env.step(s, jnp.zeros((n, 2)))
            return s, (s.info["goal"], s.info["episode_id"], s.pipeline_state, s.done)

        return state, jax.lax.scan(body, state, None, length * episodes)[1]

    first, (goals, episode_ids, positions, dones) = rollout(jax.random.PRNGKey(0))
    assert int(dones.sum()) == n * episodes  # every env ended every episode at the limit
    np.testing.assert_array_equal(episode_ids[-1], np.full(n, episodes))
    for env_i in range(n):
        per_episode = [goals[episode_ids[:, env_i] == e, env_i] for e in range(1, episodes)]
        episode_goals = np.stack([np.asarray(first.info["goal"][env_i])] + [g[0] for g in per_episode])
        # within an episode the goal is fixed; across episodes it is new every time
        for g in per_episode:
            assert np.all(g == g[0])
        assert len({tuple(g) for g in episode_goals.round(6)}) == episodes
    # starts are new too: the first position of episode 2 is not the first reset's start
    second_start = positions[length - 1]  # the step where episode 1 ended holds the fresh reset state
    assert not np.allclose(second_start, first.pipeline_state)
