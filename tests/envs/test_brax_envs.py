"""Goal-conditioned Brax envs (MJX): shapes under jit+vmap, fresh goals across auto-resets, metrics on
hand-placed states, maze walls.

MJX compiles slowly on CPU (ant ~25 s, humanoid ~80 s on a loaded 2-core machine), so the default run
compiles and runs reacher (the cheapest model) and ant's kinematics, and checks every Brax env's reset+step
under jit+vmap by tracing (`jax.eval_shape`, the whole trace without the XLA compile). Running every model's
physics is behind `-m slow`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs import brax_envs
from deepcrl.envs.point_maze import LAYOUTS
from deepcrl.envs.wrappers import wrap_for_training

BRAX_IDS = ("reacher", "ant", "ant_u_maze", "ant_big_maze", "humanoid")
TRACED_IDS = BRAX_IDS[1:]  # reacher is compiled and run by default, so it needs no trace-only check
SIZES = {  # (state part, goal, action)
    "reacher": (8, 2, 2), "ant": (29, 2, 8), "ant_u_maze": (29, 2, 8), "ant_big_maze": (29, 2, 8),
    "humanoid": (47, 2, 17),
}


def _reset_and_step(env, n: int, steps: int):
    def run(key):
        k_reset, k_act = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(k_reset, n))

        def body(s, k):
            action = jax.random.uniform(k, (n, env.action_size), minval=-1, maxval=1)
            s = jax.vmap(env.step)(s, action)
            return s, s

        return state, jax.lax.scan(body, state, jax.random.split(k_act, steps))[1]

    return run


def _check_api(env, state, batch: tuple[int, ...]):
    obs_size, goal_size, action_size = SIZES[env.env_id]
    spec = env.goal_spec
    assert (spec.obs_size, spec.goal_size, env.action_size) == (obs_size, goal_size, action_size)
    assert env.observation_size == obs_size + goal_size
    assert state.obs.shape == (*batch, obs_size + goal_size) and state.obs.dtype == jnp.float32
    for name in ("reward", "done"):
        assert getattr(state, name).shape == batch and getattr(state, name).dtype == jnp.float32
    for name in ("dist_to_goal", "success"):
        assert state.metrics[name].shape == batch and state.metrics[name].dtype == jnp.float32
    assert state.info["goal"].shape == (*batch, goal_size)


# the quick run traces reacher and ant; the mazes and humanoid (3-5 s of tracing each) are traced in the full run,
# which also compiles and steps every body (test_reset_and_step_run_under_jit_vmap below)
@pytest.mark.parametrize("env_id", [e if e in ("reacher", "ant") else pytest.param(e, marks=pytest.mark.slow)
                                    for e in TRACED_IDS])
def test_reset_and_step_trace_under_jit_vmap(env_id):
    env = envs.make(env_id)
    first, states = jax.eval_shape(jax.jit(_reset_and_step(env, n=3, steps=2)), jax.random.PRNGKey(0))
    _check_api(env, first, (3,))
    _check_api(env, states, (2, 3))
    _assert_same_avals(first, states)


def _assert_same_avals(first, states):
    """Reset and step give the same pytree of the same avals (no weak types), so a jitted step never
    recompiles on its own output."""
    assert jax.tree.structure(first) == jax.tree.structure(states)
    mismatched = [(path, a, b) for (path, a), b in zip(jax.tree.leaves_with_path(first), jax.tree.leaves(states))
                  if (a.shape, a.dtype, getattr(a, "weak_type", False))
                  != (b.shape[1:], b.dtype, getattr(b, "weak_type", False))]
    assert not mismatched


def _check_goal_metrics(env, states):
    """dist_to_goal is the distance from the state part's goal_indices to the goal tail; reward = success.

    Steps that ended an episode are left out: the auto-reset keeps their metrics but shows the next
    episode's first observation.
    """
    spec = env.goal_spec
    live = np.asarray(states.done) == 0
    assert live.any()
    state_part, goal = envs.split_obs(spec, np.asarray(states.obs)[live])
    np.testing.assert_array_equal(goal, np.asarray(states.info["goal"])[live])
    dist = np.linalg.norm(np.asarray(envs.achieved_goal(spec, state_part)) - goal, axis=-1)
    np.testing.assert_allclose(np.asarray(states.metrics["dist_to_goal"])[live], dist, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(states.metrics["success"])[live],
                                  (dist < spec.success_radius).astype(np.float32))
    np.testing.assert_array_equal(states.reward, states.metrics["success"])


@pytest.mark.slow  # the reacher_rollout fixture compiles MJX's reacher (~20 s)
def test_reacher_runs_through_training_wrappers_with_fresh_goals(reacher_rollout):
    env, first, states = reacher_rollout
    _check_api(env, first, (8,))
    _check_api(env, states, (8, 8))
    _assert_same_avals(first, states)
    assert np.all(np.isfinite(np.asarray(states.obs)))
    _check_goal_metrics(env, states)
    goals = np.asarray(states.info["goal"])  # (T, n, 2)
    ids = np.asarray(states.info["episode_id"])
    assert ids[-1].tolist() == [4] * 8  # 8 steps of 2-step episodes
    for i in range(8):
        per_episode = [goals[ids[:, i] == e, i] for e in range(1, 4)]
        episode_goals = [np.asarray(first.info["goal"][i])] + [g[0] for g in per_episode]
        assert len({tuple(g.round(6)) for g in episode_goals}) == 4  # a new goal every episode
        assert all(np.all(g == g[0]) for g in per_episode)  # fixed within an episode
    radius = np.linalg.norm(goals, axis=-1)
    assert radius.max() <= env.goal_radius + 1e-6
    # the target ball is moved to the goal, so the HTML replay shows it
    np.testing.assert_allclose(np.asarray(states.pipeline_state.q[..., 2:]), goals, atol=1e-5)


def test_ant_goal_metrics_on_hand_placed_qpos():
    env = envs.make("ant")
    observe = jax.jit(lambda q, qd, goal: env.observe(env.pipeline_init(q, qd), goal))
    goal = jnp.array([3.0, -2.0])
    q0, qd = env.sys.init_q, jnp.zeros(env.sys.qd_size())

    def at(xy):
        return q0.at[:2].set(jnp.asarray(xy, jnp.float32))

    obs, metrics = observe(at([3.0, -2.0]), qd, goal)
    assert float(metrics["dist_to_goal"]) == pytest.approx(0.0, abs=1e-5) and float(metrics["success"]) == 1.0
    np.testing.assert_allclose(obs[:2], goal, atol=1e-6)  # goal_indices (0, 1) are the torso's x, y
    np.testing.assert_allclose(obs[-2:], goal)
    obs, metrics = observe(at([3.0, -1.0]), qd, goal)  # 1 m away
    assert float(metrics["dist_to_goal"]) == pytest.approx(1.0, abs=1e-5) and float(metrics["success"]) == 0.0
    _, metrics = observe(at([3.3, -2.3]), qd, goal)  # 0.42 m: inside the 0.5 m radius
    assert float(metrics["success"]) == 1.0


@pytest.mark.parametrize("layout", ["u_maze", "big_maze"])
def test_maze_wall_boxes_cover_exactly_the_walls_next_to_free_cells(layout):
    rows = LAYOUTS[layout]
    grid = np.array([[ch == "#" for ch in row] for row in rows])
    h, w = grid.shape
    cell = 4.0
    boxes = brax_envs.wall_boxes(rows, cell)
    covered = np.zeros_like(grid)
    for x, y, hx, hy in boxes:
        c0, c1 = round((x - hx) / cell + w / 2), round((x + hx) / cell + w / 2)
        r0, r1 = round((y - hy) / cell + h / 2), round((y + hy) / cell + h / 2)
        assert r1 - r0 == 1 and c1 > c0  # one row tall, whole cells
        assert not covered[r0:r1, c0:c1].any()  # boxes do not overlap
        covered[r0:r1, c0:c1] = True
    assert not (covered & ~grid).any()  # never over a free cell
    padded = np.pad(~grid, 1)
    next_to_free = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    np.testing.assert_array_equal(covered, grid & next_to_free)
    assert len(boxes) < grid.sum()  # merged runs: fewer collision geoms than wall cells
    # the boxes are in the MJX model the ant env steps
    env = envs.make(f"ant_{layout}")
    names = [env.sys.mj_model.geom(i).name for i in range(env.sys.ngeom)]
    assert sum(n.startswith("maze_wall_") for n in names) == len(boxes)


def test_ant_maze_coordinates_round_trip():
    env = envs.make("ant_u_maze")
    cells = jnp.array([[1.5, 1.5], [3.5, 3.5]])
    np.testing.assert_allclose(env.to_cells(env.to_world(cells)), cells, atol=1e-6)
    np.testing.assert_allclose(env.to_world(jnp.array([2.5, 2.5])), [0.0, 0.0])  # the maze is centred


# ---- slow: every model's physics -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env_id", BRAX_IDS)
def test_reset_and_step_run_under_jit_vmap(env_id):
    env = envs.make(env_id)
    first, states = jax.jit(_reset_and_step(env, n=2, steps=3))(jax.random.PRNGKey(0))
    _check_api(env, first, (2,))
    _check_api(env, states, (3, 2))
    assert np.all(np.isfinite(np.asarray(states.obs)))
    _check_goal_metrics(env, states)
    assert not np.allclose(first.obs[0], first.obs[1])  # two keys, two different starts and goals


@pytest.mark.slow
def test_ant_goals_differ_across_auto_resets():
    env = envs.make("ant")
    wrapped = wrap_for_training(env, episode_length=2)
    n = 2

    @jax.jit
    def run(key):
        state = wrapped.reset(jax.random.split(key, n))

        def body(s, _):
            s = wrapped.step(s, jnp.zeros((n, env.action_size)))
            return s, (s.info["goal"], s.info["episode_id"])

        return state, jax.lax.scan(body, state, None, 6)[1]

    first, (goals, ids) = run(jax.random.PRNGKey(0))
    assert np.asarray(ids[-1]).tolist() == [3, 3]
    for i in range(n):
        episode_goals = [np.asarray(first.info["goal"][i])] + [np.asarray(goals[ids[:, i] == e, i][0])
                                                                for e in (1, 2)]
        assert len({tuple(g.round(5)) for g in episode_goals}) == 3


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["ant_u_maze", "ant_big_maze"])
def test_ant_maze_starts_and_goals_on_free_cells_with_detour_flag(env_id):
    env = envs.make(env_id)
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 64))
    start = env.to_cells(state.pipeline_state.q[:, :2])
    goal = env.to_cells(state.info["goal"])
    assert not bool(jnp.any(jax.vmap(env.maze.is_wall)(start)))
    assert not bool(jnp.any(jax.vmap(env.maze.is_wall)(goal)))
    np.testing.assert_array_equal(state.info["detour"],
                                  jax.vmap(env.maze.needs_detour)(start, goal).astype(jnp.float32))
    assert 0 < float(state.info["detour"].mean()) < 1
    assert float(state.metrics["dist_to_goal"].min()) > env.goal_spec.success_radius  # goal in another cell


@pytest.mark.slow
def test_reacher_trains_checkpoints_and_resumes(tmp_path):
    # MJX's pipeline state holds arrays with no elements, which Orbax refuses to save: this once crashed every
    # Brax-env run at its first checkpoint.
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.train import train

    small = dict(env="reacher", depth=4, width=16, num_envs=4, unroll_length=10, sgd_steps=1, batch_size=16,
                 replay_capacity=20, eval_every=1, eval_episodes=4, out=tmp_path / "run")
    train(TrainConfig(steps=40, **small))
    assert (tmp_path / "run" / "train_state").is_dir()
    result = train(TrainConfig(steps=80, resume=True, **small))
    rows = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert result["env_steps"] == 80 and len(rows) == 2  # one iteration before the resume, one after
