"""Goal-conditioned Brax environments built on Brax's shipped MJCF models (reacher, ant, ant mazes, humanoid).

Each env is a `brax.envs.base.PipelineEnv` following deepcrl's goal protocol (`deepcrl.envs.base`): the
observation is ``[state, goal]``, ``info['goal']`` holds the goal, ``metrics`` carry ``dist_to_goal`` and
``success``, and every `reset` draws a new start and goal. The reward is the success indicator (contrastive
RL ignores it; it is there so Brax's tooling has something to sum).

Backend: MJX. Measured on this 2-core CPU (64 parallel envs, steps/s, compile+run seconds, machine shared):
reacher mjx 71k / generalized 21k / positional 39k; ant mjx 13.5k / 7.2k / 4.2k; humanoid mjx 7.7k / 1.1k /
1.2k. MJX is the fastest on every model (and the one Brax recommends on GPU), so it is the only backend
offered; its compile is the slowest part (ant ~25 s, humanoid ~80 s on a loaded 2-core machine). Through
the training wrappers at 1024 envs (benchmarks/env_throughput.py): reacher ~12.7k, ant ~8.5k, humanoid ~5.1k,
ant_u_maze ~2.8k, ant_big_maze ~1.2k steps/s; the maze walls' box-vs-foot contacts are what slow the mazes.

The registry (`deepcrl.envs.REGISTRY`) names these classes as ``reacher``, ``ant``, ``ant_u_maze``,
``ant_big_maze`` and ``humanoid``; it imports this module only when one of them is made.
"""

from __future__ import annotations

import functools
import warnings
from xml.etree import ElementTree

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax import base
from brax.envs.base import PipelineEnv, State
from brax.io import mjcf
from etils import epath

from deepcrl.envs.base import GoalSpec, goal_metrics
from deepcrl.envs.point_maze import LAYOUTS, PointMaze

_ASSETS = epath.resource_path("brax") / "envs/assets"

# Brax's own MJX settings for its legged models: one Newton iteration with a short line search is what makes
# MJX fast on ant and humanoid while keeping the gait stable.
_FAST_MJX = {
    "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
    "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
    "opt.iterations": 1,
    "opt.ls_iterations": 4,
}


def _asset_xml(name: str) -> str:
    return (_ASSETS / f"{name}.xml").read_text()


@functools.lru_cache(maxsize=None)
def _load_system(name: str, layout: str | None = None, cell_size: float = 4.0) -> base.System:
    """A Brax `System` of a shipped model, with maze walls added when `layout` is given (cached: parsing and
    compiling the MJCF is the slow part of construction)."""
    xml = _asset_xml(name)
    if layout is not None:
        xml = add_maze_walls(xml, LAYOUTS[layout], cell_size)
    with warnings.catch_warnings():  # Brax warns on every load that its own pipelines are unmaintained
        warnings.simplefilter("ignore", UserWarning)
        return mjcf.loads(xml)


def wall_boxes(rows: tuple[str, ...], cell_size: float) -> list[tuple[float, float, float, float]]:
    """Wall cells merged into horizontal runs: ``(centre_x, centre_y, half_x, half_y)`` in metres.

    Row 0 of `rows` is the bottom (as in `deepcrl.envs.point_maze`); the maze is centred on the origin.
    Walls enclosed by walls on all sides are dropped, since nothing can touch them; merging runs keeps the
    number of collision pairs (and so MJX's step and compile time) small.
    """
    grid = np.array([[ch == "#" for ch in row] for row in rows], dtype=bool)
    h, w = grid.shape
    padded = np.pad(grid, 1, constant_values=True)
    touches_free = ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    needed = grid & touches_free
    boxes = []
    for r in range(h):
        c = 0
        while c < w:
            if not needed[r, c]:
                c += 1
                continue
            start = c
            while c < w and needed[r, c]:
                c += 1
            x0, x1 = (start - w / 2) * cell_size, (c - w / 2) * cell_size
            y0, y1 = (r - h / 2) * cell_size, (r + 1 - h / 2) * cell_size
            boxes.append(((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2))
    return boxes


def add_maze_walls(xml: str, rows: tuple[str, ...], cell_size: float, height: float = 0.5) -> str:
    """Insert the maze's wall boxes into a model's worldbody (as static geoms the feet collide with).

    `conaffinity=1, contype=0`: the ant's feet (contype 1) hit the walls, while walls and floor (both static)
    are never tested against each other.
    """
    root = ElementTree.fromstring(xml)
    world = root.find("worldbody")
    for i, (x, y, hx, hy) in enumerate(wall_boxes(rows, cell_size)):
        ElementTree.SubElement(world, "geom", {
            "name": f"maze_wall_{i}", "type": "box", "pos": f"{x} {y} {height}",
            "size": f"{hx} {hy} {height}", "contype": "0", "conaffinity": "1", "condim": "3",
            "rgba": "0.7 0.5 0.3 1",
        })
    return ElementTree.tostring(root, encoding="unicode")


class GoalPipelineEnv(PipelineEnv):
    """Shared reset/step of the goal-conditioned Brax envs; subclasses say how to sample and observe.

    Subclasses implement `_sample(rng) -> (q, qd, goal, info)`, `_state_obs(pipeline_state)` (the state part
    of the observation), `_achieved(pipeline_state)` (the goal the state achieves) and may override
    `_done(pipeline_state)` (termination, e.g. a fallen body).
    """

    goal_spec: GoalSpec

    @property
    def observation_size(self) -> int:  # Brax's default runs a reset to find out; the spec already knows
        return self.goal_spec.obs_size + self.goal_spec.goal_size

    def observe(self, pipeline_state: base.State, goal: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The ``[state, goal]`` observation and the goal metrics of a physics state."""
        obs = jnp.concatenate([self._state_obs(pipeline_state), goal]).astype(jnp.float32)
        metrics = goal_metrics(self._achieved(pipeline_state), goal, self.goal_spec.success_radius)
        return obs, metrics

    def reset(self, rng: jax.Array) -> State:
        q, qd, goal, info = self._sample(rng)
        pipeline_state = self.pipeline_init(q, qd)
        obs, metrics = self.observe(pipeline_state, goal)
        return State(
            pipeline_state=pipeline_state,
            obs=obs,
            reward=metrics["success"],
            done=jnp.zeros((), jnp.float32),
            metrics=metrics,
            info={"goal": goal, **info},
        )

    def step(self, state: State, action: jax.Array) -> State:
        pipeline_state = self.pipeline_step(state.pipeline_state, self._scale_action(action))
        obs, metrics = self.observe(pipeline_state, state.info["goal"])
        return state.replace(
            pipeline_state=pipeline_state,
            obs=obs,
            reward=metrics["success"],
            done=self._done(pipeline_state),
            metrics=metrics,
        )

    def _scale_action(self, action: jax.Array) -> jax.Array:
        return action

    def _done(self, pipeline_state: base.State) -> jax.Array:
        return jnp.zeros((), jnp.float32)

    def _sample(self, rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def _state_obs(self, pipeline_state: base.State) -> jax.Array:
        raise NotImplementedError

    def _achieved(self, pipeline_state: base.State) -> jax.Array:
        raise NotImplementedError


# ---- reacher -------------------------------------------------------------------------------------------------


class Reacher(GoalPipelineEnv):
    """Two-link arm; the goal is the point the fingertip should reach (the model's target ball is put there).

    State part (8): cos and sin of both joint angles, both joint velocities, fingertip x, y. Goal (2): target
    x, y, drawn uniformly in the disc of radius 0.2 the arm can reach (links 0.1 + 0.11 m). The episode is
    50 steps (1 s), Brax's and Gym's reacher length: the arm crosses its workspace in well under that, and
    longer episodes would only add steps sitting on the target.
    """

    _TIP = jnp.array([0.11, 0.0, 0.0])  # the fingertip sphere sits 0.11 m along the second link

    def __init__(self, success_radius: float = 0.05, episode_length: int = 50, goal_radius: float = 0.2):
        super().__init__(sys=_load_system("reacher"), backend="mjx", n_frames=2)
        self.goal_radius = float(goal_radius)
        self.goal_spec = GoalSpec(obs_size=8, goal_size=2, goal_indices=(6, 7),
                                  success_radius=float(success_radius), episode_length=int(episode_length))

    def _sample(self, rng):
        k_q, k_qd, k_r, k_a = jax.random.split(rng, 4)
        q = self.sys.init_q + jax.random.uniform(k_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(k_qd, (self.sys.qd_size(),), minval=-0.005, maxval=0.005)
        # sqrt makes the goal uniform over the disc's area, not crowded at its centre
        r = self.goal_radius * jnp.sqrt(jax.random.uniform(k_r))
        angle = 2 * jnp.pi * jax.random.uniform(k_a)
        goal = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)])
        q = q.at[2:].set(goal)  # the target ball's slide joints: only drawn, it has no contacts
        qd = qd.at[2:].set(0.0)
        return q, qd, goal, {}

    def _tip(self, pipeline_state: base.State) -> jax.Array:
        return pipeline_state.x.take(1).do(base.Transform.create(pos=self._TIP)).pos[:2]

    def _state_obs(self, pipeline_state):
        theta = pipeline_state.q[:2]
        return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), pipeline_state.qd[:2], self._tip(pipeline_state)])

    def _achieved(self, pipeline_state):
        return self._tip(pipeline_state)


# ---- ant and ant mazes ---------------------------------------------------------------------------------------


class _TorsoGoalEnv(GoalPipelineEnv):
    """A locomotion model whose goal is its torso's (x, y): state = [qpos, qvel], goal_indices = (0, 1).

    Goals lie at a uniform angle and a distance uniform in [goal_min, goal_max] metres from the start; the
    episode ends when the torso leaves the healthy height range.
    """

    def __init__(self, sys: base.System, success_radius: float, episode_length: int, goal_min: float,
                 goal_max: float, healthy_z: tuple[float, float]):
        super().__init__(sys=sys.tree_replace(_FAST_MJX), backend="mjx", n_frames=5)
        self.goal_min, self.goal_max = float(goal_min), float(goal_max)
        self.healthy_z = tuple(float(z) for z in healthy_z)
        nq, nv = self.sys.q_size(), self.sys.qd_size()
        self.goal_spec = GoalSpec(obs_size=nq + nv, goal_size=2, goal_indices=(0, 1),
                                  success_radius=float(success_radius), episode_length=int(episode_length))

    def _goal_around(self, q: jax.Array, rng: jax.Array) -> jax.Array:
        k_r, k_a = jax.random.split(rng)
        r = jax.random.uniform(k_r, minval=self.goal_min, maxval=self.goal_max)
        angle = 2 * jnp.pi * jax.random.uniform(k_a)
        return q[:2] + jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)])

    def _state_obs(self, pipeline_state):
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd])

    def _achieved(self, pipeline_state):
        return pipeline_state.q[:2]

    def _done(self, pipeline_state):
        z = pipeline_state.q[2]
        low, high = self.healthy_z
        return ((z < low) | (z > high)).astype(jnp.float32)


class Ant(_TorsoGoalEnv):
    """Brax's ant; the goal is a torso (x, y) position.

    State part (29): the full qpos (torso x, y, z, orientation quaternion, 8 joint angles) and qvel (14);
    goal_indices = (0, 1), the torso's x, y. Goals lie at a uniform angle and a distance uniform in
    [goal_min, goal_max] metres from the start. The episode ends early when the torso leaves the healthy
    height range (Brax's ant rule), so the ant is reset rather than flailing on its back.
    """

    def __init__(self, success_radius: float = 0.5, episode_length: int = 1000, goal_min: float = 2.0,
                 goal_max: float = 10.0, healthy_z: tuple[float, float] = (0.2, 1.0),
                 _sys: base.System | None = None):
        super().__init__(_sys if _sys is not None else _load_system("ant"), success_radius, episode_length,
                         goal_min, goal_max, healthy_z)

    def _start_q(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_q, k_qd = jax.random.split(rng)
        q = self.sys.init_q + jax.random.uniform(k_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = 0.1 * jax.random.normal(k_qd, (self.sys.qd_size(),))
        return q, qd

    def _sample(self, rng):
        k_start, k_goal = jax.random.split(rng)
        q, qd = self._start_q(k_start)
        return q, qd, self._goal_around(q, k_goal), {}


class AntMaze(Ant):
    """Brax's ant in a maze whose walls are box geoms added to the shipped MJCF.

    The layouts are point_maze's (`deepcrl.envs.point_maze.LAYOUTS`), each cell `cell_size` metres, centred
    on the origin. Start and goal are drawn over free cells (different cells, within +-0.3 of a cell's
    centre, in cell units), and ``info['detour']`` marks pairs whose straight line crosses a wall, as in
    point_maze.
    """

    def __init__(self, layout: str = "u_maze", cell_size: float = 4.0, success_radius: float = 0.5,
                 episode_length: int = 1000, healthy_z: tuple[float, float] = (0.2, 1.0)):
        super().__init__(success_radius=success_radius, episode_length=episode_length, healthy_z=healthy_z,
                         _sys=_load_system("ant", layout, float(cell_size)))
        self.layout = layout
        self.cell_size = float(cell_size)
        self.maze = PointMaze(layout)  # cell-unit geometry: free cells, wall test, detour test
        h, w = self.maze.walls.shape
        self._origin = jnp.array([w / 2, h / 2], jnp.float32)  # cell-unit point at the world origin

    def to_world(self, cell_xy: jax.Array) -> jax.Array:
        """Maze cell units (as in point_maze) to metres."""
        return (cell_xy - self._origin) * self.cell_size

    def to_cells(self, world_xy: jax.Array) -> jax.Array:
        """Metres to maze cell units."""
        return world_xy / self.cell_size + self._origin

    def _sample(self, rng):
        k_start, k_cells = jax.random.split(rng)
        q, qd = self._start_q(k_start)
        cells = self.maze.reset(k_cells)  # a start/goal pair over free cells, in cell units
        start_cells, goal_cells = cells.pipeline_state, cells.info["goal"]
        q = q.at[:2].set(self.to_world(start_cells))
        return q, qd, self.to_world(goal_cells), {"detour": cells.info["detour"]}


# ---- humanoid ------------------------------------------------------------------------------------------------


class Humanoid(_TorsoGoalEnv):
    """Brax's humanoid; the goal is the torso's (x, y) position.

    State part (47): qpos (24, torso x, y, z first) and qvel (23); goal_indices = (0, 1). Goals at a uniform
    angle and a distance uniform in [goal_min, goal_max] metres. Success radius 0.5 m: about a stride, the
    scale on which the torso sways while walking. The episode ends when the torso falls below 1 m (Brax's
    rule), which a random policy does within a few dozen steps.
    """

    def __init__(self, success_radius: float = 0.5, episode_length: int = 1000, goal_min: float = 1.0,
                 goal_max: float = 5.0, healthy_z: tuple[float, float] = (1.0, 2.0),
                 _sys: base.System | None = None):
        super().__init__(_sys if _sys is not None else _load_system("humanoid"), success_radius, episode_length,
                         goal_min, goal_max, healthy_z)
        ctrl = np.asarray(self.sys.actuator.ctrl_range)
        self._ctrl_low, self._ctrl_high = jnp.asarray(ctrl[:, 0]), jnp.asarray(ctrl[:, 1])

    def _scale_action(self, action):
        return self._ctrl_low + (action + 1.0) * 0.5 * (self._ctrl_high - self._ctrl_low)

    def _sample(self, rng):
        k_q, k_qd, k_goal = jax.random.split(rng, 3)
        q = self.sys.init_q + jax.random.uniform(k_q, (self.sys.q_size(),), minval=-0.01, maxval=0.01)
        qd = jax.random.uniform(k_qd, (self.sys.qd_size(),), minval=-0.01, maxval=0.01)
        return q, qd, self._goal_around(q, k_goal), {}
