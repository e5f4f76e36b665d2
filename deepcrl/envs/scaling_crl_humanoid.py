"""The published benchmark's humanoid tasks (`wang-kevin3290/scaling-crl`) on MJX: ``humanoid_ref`` and
``humanoid_u_maze_ref`` (see `deepcrl.envs.scaling_crl` for the other ``_ref`` ids and what ``_ref`` means).

Facts taken from the reference's ``envs/humanoid.py``, ``envs/humanoid_maze.py``, their MJCF assets and
``train.py`` (obs_dim 268, goal indices 0-2):

- Body: Brax's humanoid with the reference's two changes: every body geom collides with the floor (and the
  maze walls), not only the feet (default ``contype=1``), and a contact-free target body (a sphere of mass 1 at
  height 1.25 on two slide joints, x and y) whose joints hold the goal. The target is part of the state, so
  qpos has 26 entries (24 + the target's x, y), qvel 25 and there are 12 links.
- Observation (268 + 3): qpos (26), qvel (25), per link its inertia about the centre of mass of the whole
  system, flattened 3x3, and its mass (12 x 10), per link its centre-of-mass velocity (mass-weighted, 3) and
  angular velocity (3) (12 x 6), the actuator forces in joint space (25), then the goal: the target's x, y and
  the fixed height 1.25. The inertia block and the actuator forces are computed the way the reference computes
  them on its Brax ``spring`` backend, so an imported agent sees the numbers it was trained on: rotational
  inertias raised to ``1 - spring_inertia_scale`` = 0 (identity matrices, the model's custom numeric),
  masses to ``1 - spring_mass_scale`` = 1, and the actuator forces with its spring gears (350 on the 11
  abdomen and leg motors, 100 on the 6 arm motors) applied to the control in ``ctrlrange`` (+-0.4).
- Achieved goal: the torso's (x, y, z); success when it is within 0.5 of (goal x, goal y, 1.25), so the
  humanoid must also stand upright there. The episode ends when the torso leaves the height range [1, 2];
  1000 steps. Actions in [-1, 1] are mapped linearly onto ``ctrlrange``.
- humanoid: the humanoid starts exactly at the model's rest pose at the origin, at rest (the reference's reset
  noise is 0); the goal is at a uniform angle and a distance uniform in [1, 5] m from the origin (not uniform
  over the annulus's area).
- humanoid_u_maze: the reference's U-maze layout with 2 m cells (not the ant's 4 m), walls 1 m high; row i,
  column j is the cell centred at world (2 i, 2 j). Start exactly at the 'r' cell's centre; goal the centre
  of one 'g' cell drawn uniformly.

What still differs: the dynamics. The reference simulates on Brax ``spring`` (timestep 0.0015 s x 10 frames,
gears 350/100); here MJX runs Brax's model with MuJoCo's gears (100-300 legs and abdomen, 25 arms), timestep
0.003 s x 5 frames (the same 0.015 s control period) and Brax's fast Newton solver settings (1 iteration,
4 line-search steps). The observation function is the reference's; the forces the body really feels are
MuJoCo's, so the actuator-force entries report the reference's gears, not the simulated ones. Maze wall cells
enclosed by walls are dropped and runs merged (the same surfaces).
"""

from __future__ import annotations

import functools
import warnings
from xml.etree import ElementTree

import jax
import jax.numpy as jnp
import numpy as np
from brax import actuator, base
from brax.envs.base import State
from brax.io import mjcf

from deepcrl.envs.base import GoalSpec, goal_metrics
from deepcrl.envs.brax_envs import Humanoid, _asset_xml
from deepcrl.envs.scaling_crl import add_reference_walls, maze_cells

TARGET_Z = 1.25  # the target body's height: about the standing torso's
HUMANOID_MAZE_SCALE = 2.0  # metres per cell of the humanoid mazes
HUMANOID_WALL_HALF_HEIGHT = 0.5  # the reference: 0.5 x scale / 2
# MJX tests every candidate geom pair each step; with all 17 body geoms colliding (the reference's model) that is
# 7x (floor) to 23x (U-maze walls) slower than Brax's feet-only humanoid on the CPU. MJX's own culling keeps it
# tractable: per pair of geom types only the `max_geom_pairs` closest pairs (by bounding spheres) are tested,
# and only the `max_contact_points` deepest contacts reach the solver.
MJX_CONTACT_LIMITS = {"max_geom_pairs": 8, "max_contact_points": 8}
REFERENCE_GEAR = (350.0,) * 11 + (100.0,) * 6  # the reference's spring gears, motor order of humanoid.xml


@functools.lru_cache(maxsize=None)
def _humanoid_system(layout: str | None = None) -> base.System:
    """Brax's humanoid with every geom colliding, the reference's target body, and the maze's walls if any."""
    root = ElementTree.fromstring(_asset_xml("humanoid"))
    root.find("default/geom").set("contype", "1")
    world = root.find("worldbody")
    reach = "-100 100" if layout else "-20 20"  # the reference's slide ranges (metres)
    target = ElementTree.SubElement(world, "body", {"name": "target", "pos": f"0 0 {TARGET_Z}"})
    for name, axis in (("target_x", "1 0 0"), ("target_y", "0 1 0")):
        ElementTree.SubElement(target, "joint", {"name": name, "type": "slide", "axis": axis, "limited": "true",
                                                 "range": reach, "armature": "0", "damping": "0",
                                                 "stiffness": "0"})
    ElementTree.SubElement(target, "geom", {"name": "target", "type": "sphere", "size": "0.5", "mass": "1",
                                            "contype": "0", "conaffinity": "0", "rgba": "0.9 0.2 0.2 0.3"})
    if layout is not None:
        add_reference_walls(world, layout, HUMANOID_MAZE_SCALE, HUMANOID_WALL_HALF_HEIGHT)
    custom = root.find("custom")
    for name, value in MJX_CONTACT_LIMITS.items():
        ElementTree.SubElement(custom, "numeric", {"name": name, "data": str(value)})
    with warnings.catch_warnings():  # Brax warns on every load that its own pipelines are unmaintained
        warnings.simplefilter("ignore", UserWarning)
        return mjcf.loads(ElementTree.tostring(root, encoding="unicode"))


class HumanoidRef(Humanoid):
    """The reference's humanoid: 271 numbers (268 + goal 3), goal indices 0-2, success within 0.5, 1000 steps.

    See the module docstring for the layout and what differs from the paper's physics.
    """

    # what `deepcrl envs` says still differs from the paper's setup
    PAPER_DIFFERS = ("physics: MJX (MuJoCo solver, MuJoCo's gears, MJX contact culling) here, Brax 'spring' "
                     "(gears 350/100) in the paper; observation computed as the paper's")

    def __init__(self, success_radius: float = 0.5, episode_length: int = 1000, layout: str | None = None):
        super().__init__(success_radius=success_radius, episode_length=episode_length, goal_min=1.0,
                         goal_max=5.0, healthy_z=(1.0, 2.0), _sys=_humanoid_system(layout))
        self.layout = layout
        self.goal_spec = GoalSpec(obs_size=268, goal_size=3, goal_indices=(0, 1, 2),
                                  success_radius=float(success_radius), episode_length=int(episode_length))
        # the observation's inertia: the reference's spring scaling of the model's link inertia
        inertia = self.sys.link.inertia
        diag = np.diagonal(np.asarray(inertia.i), axis1=1, axis2=2) ** (1.0 - float(self.sys.spring_inertia_scale))
        self._obs_inertia = inertia.replace(i=jnp.asarray(np.stack([np.diag(d) for d in diag])),
                                            mass=inertia.mass ** (1.0 - float(self.sys.spring_mass_scale)))
        gear = jnp.asarray(REFERENCE_GEAR, jnp.float32)
        self._obs_sys = self.sys.replace(actuator=self.sys.actuator.replace(gear=gear))
        if layout is not None:
            self.start_xy = jnp.asarray(maze_cells(layout, "r", HUMANOID_MAZE_SCALE)[0])
            self.goal_cells = jnp.asarray(maze_cells(layout, "g", HUMANOID_MAZE_SCALE))

    def _sample(self, rng):
        q = self.sys.init_q
        qd = jnp.zeros(self.sys.qd_size())
        if self.layout is None:
            k_r, k_a = jax.random.split(rng)
            r = jax.random.uniform(k_r, minval=self.goal_min, maxval=self.goal_max)
            angle = 2 * jnp.pi * jax.random.uniform(k_a)
            goal_xy = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)])
        else:
            q = q.at[:2].set(self.start_xy)
            goal_xy = self.goal_cells[jax.random.randint(rng, (), 0, self.goal_cells.shape[0])]
        q = q.at[-2:].set(goal_xy)  # the target body's slide joints: it is drawn at the goal
        return q, qd, jnp.concatenate([goal_xy, jnp.array([TARGET_Z])]), {}

    def observe(self, pipeline_state: base.State, goal: jax.Array,
                ctrl: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The ``[state, goal]`` observation and goal metrics; `ctrl` is the control just applied (zero at reset)."""
        if ctrl is None:
            ctrl = jnp.zeros(self.sys.act_size())
        obs = jnp.concatenate([self._state_obs(pipeline_state, ctrl), goal]).astype(jnp.float32)
        return obs, goal_metrics(self._achieved(pipeline_state), goal, self.goal_spec.success_radius)

    def step(self, state: State, action: jax.Array) -> State:
        ctrl = self._scale_action(action)
        pipeline_state = self.pipeline_step(state.pipeline_state, ctrl)
        obs, metrics = self.observe(pipeline_state, state.info["goal"], ctrl)
        return state.replace(pipeline_state=pipeline_state, obs=obs, reward=metrics["success"],
                             done=self._done(pipeline_state), metrics=metrics)

    def _state_obs(self, pipeline_state, ctrl=None):
        if ctrl is None:
            ctrl = jnp.zeros(self.sys.act_size())
        inertia = self._obs_inertia
        mass = inertia.mass
        total = jnp.sum(mass)
        frames = pipeline_state.x.vmap().do(inertia.transform)  # each link's centre-of-mass frame
        com = jnp.sum(mass[:, None] * frames.pos, axis=0) / total
        about_com = frames.replace(pos=frames.pos - com).vmap().do(inertia)
        n = mass.shape[0]
        cinert = jnp.concatenate([about_com.i.reshape(n, 9), mass[:, None]], axis=1)
        moved = base.Transform.create(pos=frames.pos - pipeline_state.x.pos).vmap().do(pipeline_state.xd)
        cvel = jnp.concatenate([mass[:, None] * moved.vel / total, moved.ang], axis=1)
        forces = actuator.to_tau(self._obs_sys, ctrl, pipeline_state.q, pipeline_state.qd)
        return jnp.concatenate([pipeline_state.q, pipeline_state.qd, cinert.ravel(), cvel.ravel(), forces])

    def _achieved(self, pipeline_state):
        return pipeline_state.q[:3]
