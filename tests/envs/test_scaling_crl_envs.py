"""The paper's task definitions (`*_ref` ids): sizes, goal indices, goal sampling, success on hand-placed states,
maze geometry, and reset/step shapes under jit+vmap (traced; the physics is compiled only for the cheap parts)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs.scaling_crl import MAZE_SCALE, MAZES, REFERENCE_IDS, maze_cells

# the reference's train.py: (obs_dim, goal_start_idx, goal_end_idx) and action size per env_id
REFERENCE = {"reacher": (10, 4, 7, 2), "ant": (29, 0, 2, 8), "ant_u_maze": (29, 0, 2, 8),
             "ant_big_maze": (29, 0, 2, 8), "ant_u_maze_eval": (29, 0, 2, 8), "ant_big_maze_eval": (29, 0, 2, 8)}


@pytest.mark.parametrize("ref_id", sorted(REFERENCE))
def test_sizes_goal_indices_and_episode_match_the_reference(ref_id):
    env = envs.make(REFERENCE_IDS[ref_id])
    obs_dim, start, end, act = REFERENCE[ref_id]
    spec = env.goal_spec
    assert (spec.obs_size, spec.goal_indices, env.action_size) == (obs_dim, tuple(range(start, end)), act)
    assert spec.goal_size == end - start and spec.episode_length == 1000
    assert spec.success_radius == (0.05 if ref_id == "reacher" else 0.5)
    assert envs.REGISTRY[REFERENCE_IDS[ref_id]].paper
    assert ref_id not in envs.REGISTRY or not envs.REGISTRY[ref_id].paper  # deepcrl's own ids stay its own


# the maze ids trace the same ant as ant_ref (3-4 s each): the full run traces them
@pytest.mark.parametrize("env_id", [e if "maze" not in e else pytest.param(e, marks=pytest.mark.slow)
                                    for e in sorted(REFERENCE_IDS.values())])
def test_reset_and_step_shapes_under_jit_vmap(env_id):
    env = envs.make(env_id)
    n = 3

    def run(key):
        s = jax.vmap(env.reset)(jax.random.split(key, n))
        return s, jax.vmap(env.step)(s, jnp.zeros((n, env.action_size)))

    first, nxt = jax.eval_shape(jax.jit(run), jax.random.PRNGKey(0))
    size = env.goal_spec.obs_size + env.goal_spec.goal_size
    for s in (first, nxt):
        assert s.obs.shape == (n, size) and s.obs.dtype == jnp.float32
        assert s.reward.shape == s.done.shape == s.metrics["success"].shape == (n,)
        assert s.info["goal"].shape == (n, env.goal_spec.goal_size)


def test_reacher_ref_layout_and_success_on_hand_placed_states():
    env = envs.make("reacher_ref")
    observe = jax.jit(lambda q, goal: env.observe(env.pipeline_init(q, jnp.zeros(env.sys.qd_size())), goal))
    q = env.sys.init_q.at[:2].set(jnp.array([0.3, -0.7]))
    obs, _ = observe(q, jnp.zeros(3))
    tip = np.asarray(obs[4:7])
    # cos, sin of both joints first; the tip 0.21 m from the base (links 0.1 + 0.11) at the target's height
    np.testing.assert_allclose(obs[:4], [np.cos(0.3), np.cos(-0.7), np.sin(0.3), np.sin(-0.7)], atol=1e-6)
    assert np.linalg.norm(tip[:2]) == pytest.approx(np.hypot(0.1 + 0.11 * np.cos(-0.7), 0.11 * np.sin(-0.7)),
                                                    abs=1e-5)
    for offset, success in ((0.0, 1.0), (0.04, 1.0), (0.06, 0.0)):
        goal = jnp.asarray(tip + np.array([offset, 0.0, 0.0]), jnp.float32)
        obs, m = observe(q, goal)
        np.testing.assert_allclose(obs[10:], goal)
        assert float(m["success"]) == success and float(m["dist_to_goal"]) == pytest.approx(offset, abs=1e-5)


def test_reacher_ref_goal_sampling():
    env = envs.make("reacher_ref")
    goals = np.asarray(jax.jit(jax.vmap(lambda k: env._sample(k)[2]))(jax.random.split(jax.random.PRNGKey(0), 4000)))
    r = np.linalg.norm(goals[:, :2], axis=-1)
    assert r.max() <= 0.2 and np.all(goals[:, 2] == np.float32(0.01))
    # radius 0.2 x U(0, 1): uniform in radius (half the goals within 0.1), not uniform over the disc (1/4)
    assert np.mean(r < 0.1) == pytest.approx(0.5, abs=0.03)


def test_ant_ref_goal_at_ten_metres_and_success_radius():
    env = envs.make("ant_ref")
    q, _, goals, _ = jax.jit(jax.vmap(env._sample))(jax.random.split(jax.random.PRNGKey(1), 512))
    np.testing.assert_allclose(np.linalg.norm(goals, axis=-1), 10.0, rtol=1e-5)
    assert np.abs(np.asarray(q[:, :2])).max() <= 0.1  # starts at the origin +- 0.1, goals about the origin
    angles = np.arctan2(goals[:, 1], goals[:, 0])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() > 90  # uniform direction
    observe = jax.jit(lambda q, goal: env.observe(env.pipeline_init(q, jnp.zeros(env.sys.qd_size())), goal))
    goal = jnp.array([10.0, 0.0])
    for xy, success in (([10.0, 0.0], 1.0), ([10.3, 0.3], 1.0), ([10.0, 0.6], 0.0)):
        obs, m = observe(env.sys.init_q.at[:2].set(jnp.array(xy)), goal)
        assert float(m["success"]) == success
        np.testing.assert_allclose(obs[:2], xy, atol=1e-5)
        np.testing.assert_allclose(obs[29:], goal)


@pytest.mark.parametrize("layout", sorted(MAZES))
def test_ant_maze_ref_starts_goals_and_walls(layout):
    env = envs.make(f"ant_{layout}_ref")
    q, _, goals, _ = jax.jit(jax.vmap(env._sample))(jax.random.split(jax.random.PRNGKey(2), 512))
    start = maze_cells(layout, "r")[0]
    assert np.abs(np.asarray(q[:, :2]) - start).max() <= 0.1 + 1e-6
    cells = maze_cells(layout, "g")
    hits = {tuple(g) for g in np.asarray(goals).round(4)}
    assert hits == {tuple(c) for c in cells.round(4)}  # every goal cell drawn, nothing else
    if layout == "big_maze_eval":  # the paper's evaluation goals: the 9 far cells only
        assert len(cells) == 9 and min(np.abs(cells - start).sum(-1)) >= 4 * MAZE_SCALE
    # walls: every wall cell next to a free cell is covered by a box; no free cell centre is inside one
    model = env.sys.mj_model
    walls = [i for i in range(model.ngeom) if (model.geom(i).name or "").startswith("maze_wall")]
    boxes = [(model.geom_pos[i][:2], model.geom_size[i][:2]) for i in walls]
    inside = lambda p: any(np.all(np.abs(p - c) <= h + 1e-6) for c, h in boxes)  # noqa: E731
    rows = MAZES[layout]
    for i, row in enumerate(rows):
        for j, ch in enumerate(row):
            centre = np.array([i, j]) * MAZE_SCALE
            near_free = any(0 <= i + di < len(rows) and 0 <= j + dj < len(row) and rows[i + di][j + dj] != "#"
                            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            if ch != "#":
                assert not inside(centre), (i, j)
            elif near_free:
                assert inside(centre), (i, j)


def test_envs_cli_marks_the_paper_tasks(capsys):
    from deepcrl.cli import main

    assert main(["envs", "--json"]) == 0
    import json

    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ant_ref"]["paper"].startswith("yes") and "spring" in rows["ant_ref"]["paper"]
    assert rows["ant"]["paper"].startswith("no")
