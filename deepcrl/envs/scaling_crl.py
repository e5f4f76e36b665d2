"""The published benchmark's task definitions (`wang-kevin3290/scaling-crl`, built on JaxGCRL) on MJX.

These ids end in ``_ref`` and sit beside deepcrl's own tasks, which keep their definitions: a number measured
on a ``*_ref`` id is the one to set beside the paper's tables, a number on the plain id is deepcrl's own task.
What matches the reference (from its code): the observation layout ``[state, goal]``, the goal indices
(which state entries a goal is compared with), the goal sampling, the success radius, the termination rule
and the 1000-step episode. What differs: the reference simulates these bodies with Brax's ``spring``
backend (reacher: 0.005 s timestep x 4 frames, actuator gear 25; ant: 0.005 s x 10 frames), deepcrl with
MJX on Brax's shipped models and MuJoCo's solver (ant: Brax's fast Newton settings, 1 iteration, 4 line-search
steps; 0.01 s x 5 frames) — the same control period (0.02 s, 0.05 s) but not the same contact and joint
dynamics, so a policy carries over only approximately and learning curves compare as tasks, not bit for bit.
The reacher's actuator gear is 50 here (Brax's XML: 200), which gives the reference arm's speed under random
actions on MJX (`ReacherRef.GEAR`).
The reference's target body (two slide joints and a contact-free sphere) is not simulated: the goal lives in
``info['goal']`` as in every deepcrl env.

"Time at goal" is what `deepcrl.evaluate` counts: steps of the episode with ``success`` = 1, out of 1000.

``REFERENCE_IDS`` maps the reference's ``env_id`` to deepcrl's, for `deepcrl import scaling-crl`.
"""

from __future__ import annotations

import functools
import warnings
from xml.etree import ElementTree

import jax
import jax.numpy as jnp
import numpy as np
from brax import base
from brax.io import mjcf

from deepcrl.envs.base import GoalSpec
from deepcrl.envs.brax_envs import Ant, Reacher, _asset_xml, wall_boxes

# the reference's env_id -> deepcrl's env id of the same task definition
REFERENCE_IDS = {"reacher": "reacher_ref", "ant": "ant_ref", "ant_u_maze": "ant_u_maze_ref",
                 "ant_big_maze": "ant_big_maze_ref", "ant_u_maze_eval": "ant_u_maze_eval_ref",
                 "ant_big_maze_eval": "ant_big_maze_eval_ref", "humanoid": "humanoid_ref",
                 "humanoid_u_maze": "humanoid_u_maze_ref"}
# what every *_ref id still differs in from the paper's setup (shown by `deepcrl envs`)
DIFFERS = "physics: MJX (MuJoCo solver) here, Brax 'spring' in the paper"

_TIP = base.Transform.create(pos=jnp.array([0.11, 0.0, 0.0]))  # fingertip: 0.11 m along the second link


class ReacherRef(Reacher):
    """The reference's reacher: 13 numbers, goal indices 4-6, success within 0.05, 1000-step episodes.

    State part (10): cos and sin of both joint angles (4), the fingertip's 3-D position (3) and 3-D velocity
    (3). Goal (3): the target's 3-D position (its height is the target body's 0.01 m). Targets at a uniform
    angle and radius 0.2 x U(0, 1) (denser near the centre, as in the reference), joints start within +-0.1
    rad of the rest pose. No termination.
    """

    TARGET_Z = 0.01  # the target body's height in Brax's reacher.xml
    # Actuator gear on MJX that gives the reference arm's speed. The reference drives gear 25 through Brax's
    # 'spring' backend; Brax's XML gear 200 on MJX made the tip 3.9x faster under uniform random actions
    # (1.34 vs 0.35 m/s), and its critic's InfoNCE loss stayed at chance where the reference's fell. At 50 the
    # tip moves like the reference's (0.37 m/s; 0.065 / 0.174 / 0.190 m in 10 / 50 / 100 steps against
    # 0.067 / 0.169 / 0.190) and the loss falls like it (benchmarks/results/vs_reference_reacher_gear50.json).
    GEAR = 50.0

    def __init__(self, success_radius: float = 0.05, episode_length: int = 1000):
        super().__init__(success_radius=success_radius, episode_length=episode_length, goal_radius=0.2)
        sys_ = self.sys  # MJX reads actuator_gear; Brax's actuator struct is kept equal to it
        self.sys = sys_.replace(actuator_gear=sys_.actuator_gear.at[:, 0].set(self.GEAR),
                                actuator=sys_.actuator.replace(gear=sys_.actuator.gear * 0 + self.GEAR))
        self.goal_spec = GoalSpec(obs_size=10, goal_size=3, goal_indices=(4, 5, 6),
                                  success_radius=float(success_radius), episode_length=int(episode_length))

    def _sample(self, rng):
        k_q, k_qd, k_r, k_a = jax.random.split(rng, 4)
        q = self.sys.init_q + jax.random.uniform(k_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(k_qd, (self.sys.qd_size(),), minval=-0.005, maxval=0.005)
        r = self.goal_radius * jax.random.uniform(k_r)  # not sqrt: the reference's radial law
        angle = 2 * jnp.pi * jax.random.uniform(k_a)
        xy = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)])
        q = q.at[2:].set(xy)
        qd = qd.at[2:].set(0.0)
        # the target body's position in the world (its slide joints move it in x, y from (0, 0, TARGET_Z))
        return q, qd, jnp.concatenate([xy, jnp.array([self.TARGET_Z])]), {}

    def _tip(self, pipeline_state: base.State) -> jax.Array:
        return pipeline_state.x.take(1).do(_TIP).pos

    def _state_obs(self, pipeline_state):
        theta = pipeline_state.q[:2]
        tip_vel = _TIP.do(pipeline_state.xd.take(1)).vel  # the reference's expression for the tip's velocity
        return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), self._tip(pipeline_state), tip_vel])

    def _achieved(self, pipeline_state):
        return self._tip(pipeline_state)


class AntRef(Ant):
    """The reference's ant: 31 numbers, goal indices 0-1, success within 0.5 m, 1000-step episodes.

    State part (29): qpos (15, torso x, y first) and qvel (14). Goal (2): a point 10 m from the world origin at
    a uniform angle (not relative to the start, which is the origin +- 0.1). The episode ends when the torso
    leaves the height range [0.2, 1.0].
    """

    GOAL_DISTANCE = 10.0

    def __init__(self, success_radius: float = 0.5, episode_length: int = 1000):
        super().__init__(success_radius=success_radius, episode_length=episode_length,
                         goal_min=self.GOAL_DISTANCE, goal_max=self.GOAL_DISTANCE, healthy_z=(0.2, 1.0))

    def _sample(self, rng):
        k_start, k_goal = jax.random.split(rng)
        q, qd = self._start_q(k_start)
        angle = 2 * jnp.pi * jax.random.uniform(k_goal)
        goal = self.GOAL_DISTANCE * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        return q, qd, goal, {}


# The reference's maze layouts: row i, column j is the cell centred at world (x, y) = (4 i, 4 j); '#' wall,
# 'r' the start cell, 'g' a goal cell, '.' free. The "_eval" layouts (same walls, only the far goal cells) are what
# the paper evaluates its maze agents on (its job script passes --eval_env_id ant_big_maze_eval).
MAZES = {
    "u_maze": ("#####",
               "#rgg#",
               "###g#",
               "#ggg#",
               "#####"),
    "big_maze": ("########",
                 "#rg##gg#",
                 "#gg#ggg#",
                 "##ggg###",
                 "#gg#ggg#",
                 "#g#gg#g#",
                 "#ggg#gg#",
                 "########"),
    "u_maze_eval": ("#####",
                    "#r..#",
                    "###.#",
                    "#ggg#",
                    "#####"),
    "big_maze_eval": ("########",
                      "#r.##gg#",
                      "#..#..g#",
                      "##...###",
                      "#..#...#",
                      "#.#g.#g#",
                      "#.gg#gg#",
                      "########"),
}
MAZE_SCALE = 4.0  # metres per cell
WALL_HEIGHT = 1.0  # half-height of a wall box (the reference: 0.5 x scale / 2)


def maze_cells(layout: str, char: str, scale: float = MAZE_SCALE) -> np.ndarray:
    """World (x, y) centres of a layout's cells marked `char`, in row-major order (cells `scale` metres)."""
    rows = MAZES[layout]
    return np.array([(i * scale, j * scale) for i, row in enumerate(rows) for j, c in enumerate(row)
                     if c == char], np.float32)


def add_reference_walls(world: ElementTree.Element, layout: str, scale: float, half_height: float) -> None:
    """Add a reference maze's walls to an MJCF worldbody: merged runs of the wall cells next to free cells (the
    same surfaces as the reference's one box per cell, fewer collision pairs), static, hit by contype-1 geoms."""
    rows = MAZES[layout]
    # wall_boxes reads row r as y and column c as x, centred on the origin; the reference puts row i at x
    columns = tuple("".join("#" if rows[i][j] == "#" else "." for i in range(len(rows)))
                    for j in range(len(rows[0])))
    shift = np.array([(len(rows) - 1) / 2, (len(rows[0]) - 1) / 2]) * scale
    for k, (x, y, hx, hy) in enumerate(wall_boxes(columns, scale)):
        ElementTree.SubElement(world, "geom", {
            "name": f"maze_wall_{k}", "type": "box", "pos": f"{x + shift[0]} {y + shift[1]} {half_height}",
            "size": f"{hx} {hy} {half_height}", "contype": "0", "conaffinity": "1", "condim": "3",
            "rgba": "0.7 0.5 0.3 1"})


@functools.lru_cache(maxsize=None)
def _maze_system(layout: str) -> base.System:
    """Brax's ant with the reference maze's walls (merged runs of the wall cells next to free cells: the same
    surfaces, fewer collision pairs)."""
    root = ElementTree.fromstring(_asset_xml("ant"))
    add_reference_walls(root.find("worldbody"), layout, MAZE_SCALE, WALL_HEIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return mjcf.loads(ElementTree.tostring(root, encoding="unicode"))


class AntMazeRef(Ant):
    """The reference's ant mazes (u_maze, big_maze): 31 numbers, goal indices 0-1, success within 0.5 m.

    Cells are 4 m; the ant starts on the 'r' cell (+- 0.1 on every joint, as the plain ant), the goal is the
    centre of one 'g' cell drawn uniformly. 1000-step episodes, ending early when the torso leaves [0.2, 1.0].
    """

    def __init__(self, layout: str = "u_maze", success_radius: float = 0.5, episode_length: int = 1000):
        super().__init__(success_radius=success_radius, episode_length=episode_length, healthy_z=(0.2, 1.0),
                         _sys=_maze_system(layout))
        self.layout = layout
        self.start_xy = jnp.asarray(maze_cells(layout, "r")[0])
        self.goal_cells = jnp.asarray(maze_cells(layout, "g"))

    def _sample(self, rng):
        k_start, k_goal = jax.random.split(rng)
        q, qd = self._start_q(k_start)
        q = q.at[:2].add(self.start_xy)
        goal = self.goal_cells[jax.random.randint(k_goal, (), 0, self.goal_cells.shape[0])]
        return q, qd, goal, {}
