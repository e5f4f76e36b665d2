"""The paper's task definitions (`*_ref` ids): sizes, goal indices, goal sampling, success on hand-placed states,
maze geometry, and reset/step shapes under jit+vmap (traced; the physics is compiled only for the cheap parts)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs.scaling_crl import MAZE_SCALE, MAZES, REFERENCE_IDS, maze_cells
from deepcrl.envs.scaling_crl_humanoid import HUMANOID_MAZE_SCALE, REFERENCE_GEAR, TARGET_Z

# the reference's train.py: (obs_dim, goal_start_idx, goal_end_idx) and action size per env_id
REFERENCE = {"reacher": (10, 4, 7, 2), "ant": (29, 0, 2, 8), "ant_u_maze": (29, 0, 2, 8),
             "ant_big_maze": (29, 0, 2, 8), "ant_u_maze_eval": (29, 0, 2, 8), "ant_big_maze_eval": (29, 0, 2, 8),
             "humanoid": (268, 0, 3, 17), "humanoid_u_maze": (268, 0, 3, 17)}


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


def test_reacher_ref_drives_the_arm_with_the_gear_that_matches_the_references_speed():
    from deepcrl import envs

    ref, own = envs.make("reacher_ref"), envs.make("reacher")
    assert np.allclose(np.asarray(ref.sys.actuator_gear)[:, 0], 50.0)
    assert np.allclose(np.asarray(ref.sys.actuator.gear), 50.0)
    assert np.allclose(np.asarray(own.sys.actuator_gear)[:, 0], 200.0)  # deepcrl's own reacher keeps Brax's XML


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


def _check_walls(env, layout: str, scale: float) -> None:
    """Every wall cell next to a free cell is covered by a box; no free cell centre is inside one."""
    model = env.sys.mj_model
    walls = [i for i in range(model.ngeom) if (model.geom(i).name or "").startswith("maze_wall")]
    boxes = [(model.geom_pos[i][:2], model.geom_size[i][:2]) for i in walls]
    inside = lambda p: any(np.all(np.abs(p - c) <= h + 1e-6) for c, h in boxes)  # noqa: E731
    rows = MAZES[layout]
    for i, row in enumerate(rows):
        for j, ch in enumerate(row):
            centre = np.array([i, j]) * scale
            near_free = any(0 <= i + di < len(rows) and 0 <= j + dj < len(row) and rows[i + di][j + dj] != "#"
                            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            if ch != "#":
                assert not inside(centre), (i, j)
            elif near_free:
                assert inside(centre), (i, j)


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
    _check_walls(env, layout, MAZE_SCALE)


def test_humanoid_ref_goal_sampling_and_start():
    env = envs.make("humanoid_ref")
    q, qd, goals, _ = jax.jit(jax.vmap(env._sample))(jax.random.split(jax.random.PRNGKey(3), 4000))
    q, qd, goals = np.asarray(q), np.asarray(qd), np.asarray(goals)
    # the reference's reset noise is 0: the rest pose at the origin, at rest; the target body holds the goal
    np.testing.assert_array_equal(q[:, :-2], np.broadcast_to(np.asarray(env.sys.init_q)[:-2], q[:, :-2].shape))
    assert not qd.any() and np.all(q[:, -2:] == goals[:, :2]) and np.all(goals[:, 2] == np.float32(TARGET_Z))
    r = np.linalg.norm(goals[:, :2], axis=-1)
    assert r.min() >= 1.0 - 1e-5 and r.max() <= 5.0 + 1e-5
    # distance uniform in [1, 5] (a quarter of the goals within 2 m), not uniform over the annulus' area (1/8)
    assert np.mean(r < 2.0) == pytest.approx(0.25, abs=0.03)
    angles = np.arctan2(goals[:, 1], goals[:, 0])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() > 900  # uniform direction


def test_humanoid_ref_observation_is_the_references():
    """The 268 state numbers equal Brax's own humanoid observation function on its spring branch (what the
    reference computes: spring-scaled inertias, its spring gears), on a hand-placed moving state; success and
    termination on hand-placed torsos."""
    from brax.envs.humanoid import Humanoid as BraxHumanoid

    env = envs.make("humanoid_ref")
    rng = np.random.default_rng(0)
    goal = jnp.array([2.0, -1.0, TARGET_Z])
    q = env.sys.init_q.at[:2].set(goal[:2] + jnp.array([0.1, 0.0])).at[-2:].set(goal[:2])
    qd = jnp.asarray(rng.normal(0, 0.5, env.sys.qd_size()), jnp.float32).at[-2:].set(0.0)
    ctrl = jnp.asarray(rng.uniform(-0.4, 0.4, env.action_size), jnp.float32)
    oracle = object.__new__(BraxHumanoid)  # only its observation method is used
    oracle.sys = env.sys.replace(actuator=env.sys.actuator.replace(gear=jnp.asarray(REFERENCE_GEAR)))
    oracle._backend, oracle._exclude_current_positions_from_observation = "spring", False

    @jax.jit  # one program returning only what is compared: XLA drops the unused contact solve (fast compile)
    def observe(q, qd):
        state = env.pipeline_init(q, qd)
        return env.observe(state, goal, ctrl), env._done(state), oracle._get_obs(state, ctrl)

    (obs, m), done, want = observe(q, qd)
    assert obs.shape == (271,) and want.shape == (268,)
    np.testing.assert_allclose(obs[:268], want, rtol=1e-5, atol=1e-4 * float(jnp.abs(want).max()))
    np.testing.assert_allclose(obs[:26], q, atol=1e-6)  # qpos (the target's x, y last), then qvel
    np.testing.assert_allclose(obs[26:51], qd, atol=1e-6)
    masses = np.asarray(obs[51:171]).reshape(12, 10)[:, 9]
    np.testing.assert_allclose(masses, env.sys.link.inertia.mass, rtol=1e-6)  # spring mass scale 0: masses
    assert masses[-1] == pytest.approx(1.0)  # the target sphere
    np.testing.assert_allclose(obs[171:243].reshape(12, 6)[-1], 0.0, atol=1e-6)  # the target is at rest
    tau = np.asarray(obs[243:268])
    assert np.abs(tau[:6]).max() == 0 and np.abs(tau[-2:]).max() == 0  # no motor on the root or the target
    np.testing.assert_allclose(obs[268:], goal)
    # the standing torso (z 1.4) 0.1 m off in x: distance sqrt(0.1^2 + 0.15^2) to (x, y, 1.25)
    assert float(m["dist_to_goal"]) == pytest.approx(np.hypot(0.1, 1.4 - TARGET_Z), abs=1e-5)
    assert float(m["success"]) == 1.0 and float(done) == 0.0
    for dz, dx, success, fallen in ((-0.7, 0.0, 0.0, 1.0), (0.0, 0.6, 0.0, 0.0), (-0.3, 0.2, 1.0, 0.0)):
        (obs, m), done, _ = observe(q.at[2].add(dz).at[0].add(dx), qd)
        assert (float(m["success"]), float(done)) == (success, fallen), (dz, dx)


def test_humanoid_u_maze_ref_start_goals_and_walls():
    env = envs.make("humanoid_u_maze_ref")
    q, qd, goals, _ = jax.jit(jax.vmap(env._sample))(jax.random.split(jax.random.PRNGKey(4), 256))
    start = maze_cells("u_maze", "r", HUMANOID_MAZE_SCALE)[0]
    np.testing.assert_array_equal(np.asarray(q[:, :2]), np.broadcast_to(start, (256, 2)))  # the 'r' centre
    assert np.all(np.asarray(q[:, -2:]) == np.asarray(goals[:, :2])) and not np.asarray(qd).any()
    cells = maze_cells("u_maze", "g", HUMANOID_MAZE_SCALE)
    assert {tuple(g) for g in np.asarray(goals[:, :2]).round(4)} == {tuple(c) for c in cells.round(4)}
    assert np.all(np.asarray(goals[:, 2]) == np.float32(TARGET_Z))
    _check_walls(env, "u_maze", HUMANOID_MAZE_SCALE)
    model = env.sys.mj_model
    walls = [i for i in range(model.ngeom) if (model.geom(i).name or "").startswith("maze_wall")]
    assert all(model.geom_size[i][2] == pytest.approx(0.5) for i in walls)  # 1 m high walls
    # every body geom collides (walls and floor), not only the feet; the target collides with nothing
    body = [i for i in range(model.ngeom) if model.geom_bodyid[i] not in (0, model.body("target").id)]
    assert len(body) == 17 and all(model.geom_contype[i] == 1 for i in body)
    target = model.geom("target").id
    assert model.geom_contype[target] == model.geom_conaffinity[target] == 0


def test_envs_cli_marks_the_paper_tasks(capsys):
    from deepcrl.cli import main

    assert main(["envs", "--json"]) == 0
    import json

    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ant_ref"]["paper"].startswith("yes") and "spring" in rows["ant_ref"]["paper"]
    assert rows["ant"]["paper"].startswith("no")
    for humanoid in ("humanoid_ref", "humanoid_u_maze_ref"):  # their own list of what differs
        assert rows[humanoid]["paper"].startswith("yes") and "gears" in rows[humanoid]["paper"]
        assert (rows[humanoid]["obs_size"], rows[humanoid]["goal_size"]) == (268, 3)
