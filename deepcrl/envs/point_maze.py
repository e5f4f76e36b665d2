"""A 2-D point mass in a maze of walls, in pure JAX: the CPU default of deepcrl.

The point moves by ``action * max_step`` per step (actions in [-1, 1]^2). A move into a wall is not thrown
away: each axis is resolved in turn and the point stops at the wall's face, so it slides along walls (a
move blocked in x still makes progress in y). Starts and goals are drawn uniformly over free cells on every
reset. ``info['detour']`` marks start/goal pairs that need a detour: the shortest path between their cells
through free cells is longer than the Manhattan distance, so heading for the goal and sliding along walls
is not enough. Those pairs are the real test of a goal-reaching policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State

from deepcrl.envs.base import GoalSpec, goal_metrics

# '#' wall, '.' free. Row 0 is the bottom (y in [0, 1)); column 0 the left (x in [0, 1)).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "open": (
        "#######",
        "#.....#",
        "#.....#",
        "#.....#",
        "#.....#",
        "#.....#",
        "#######",
    ),
    "u_maze": (
        "#####",
        "#...#",
        "###.#",
        "#...#",
        "#####",
    ),
    "big_maze": (
        "##########",
        "#..#.....#",
        "#..#.##..#",
        "#....#...#",
        "##.#...#.#",
        "#..#.#...#",
        "#.##...#.#",
        "#....#...#",
        "##########",
    ),
}

_JITTER = 0.3  # starts and goals lie within +-0.3 of a free cell's centre


class PointMaze(Env):
    """Goal-conditioned point mass in a maze (see module docstring)."""

    def __init__(
        self,
        layout: str = "u_maze",
        max_step: float = 0.2,
        success_radius: float = 0.3,
        episode_length: int | None = None,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
        rows = LAYOUTS[layout]
        grid = np.array([[ch == "#" for ch in row] for row in rows], dtype=bool)
        self.layout = layout
        self._walls_np = grid
        self._walls = jnp.asarray(grid)
        free = np.argwhere(~grid)
        self._free = jnp.asarray(free, dtype=jnp.float32)  # (n, 2) rows of (r, c)
        path = cell_path_lengths(grid, free)
        manhattan = np.abs(free[:, None, :] - free[None, :, :]).sum(-1)
        self._detour_table = jnp.asarray(path > manhattan)
        self.max_step = float(max_step)
        default_len = {"open": 100, "u_maze": 100, "big_maze": 300}[layout]
        self.goal_spec = GoalSpec(
            obs_size=2,
            goal_size=2,
            goal_indices=(0, 1),
            success_radius=float(success_radius),
            episode_length=int(episode_length or default_len),
        )

    # -- Brax Env API ---------------------------------------------------------------------------------
    @property
    def observation_size(self) -> int:
        return self.goal_spec.obs_size + self.goal_spec.goal_size

    @property
    def action_size(self) -> int:
        return 2

    @property
    def backend(self) -> str:
        return "jax"

    def reset(self, rng: jax.Array) -> State:
        k_start, k_goal, k_js, k_jg = jax.random.split(rng, 4)
        n = self._free.shape[0]
        i_start = jax.random.randint(k_start, (), 0, n)
        # the goal cell differs from the start cell: a goal in the same cell is no task
        i_goal = (i_start + jax.random.randint(k_goal, (), 1, n)) % n
        pos = self._cell_centre(i_start) + jax.random.uniform(k_js, (2,), minval=-_JITTER, maxval=_JITTER)
        goal = self._cell_centre(i_goal) + jax.random.uniform(k_jg, (2,), minval=-_JITTER, maxval=_JITTER)
        metrics = goal_metrics(pos, goal, self.goal_spec.success_radius)
        info = {"goal": goal, "detour": self._detour_table[i_start, i_goal].astype(jnp.float32)}
        return State(
            pipeline_state=pos,
            obs=jnp.concatenate([pos, goal]),
            reward=metrics["success"],
            done=jnp.zeros(()),
            metrics=metrics,
            info=info,
        )

    def step(self, state: State, action: jax.Array) -> State:
        pos = self.move(state.pipeline_state, action)
        goal = state.info["goal"]
        metrics = goal_metrics(pos, goal, self.goal_spec.success_radius)
        return state.replace(
            pipeline_state=pos,
            obs=jnp.concatenate([pos, goal]),
            reward=metrics["success"],
            metrics=metrics,
        )

    # -- geometry ---------------------------------------------------------------------------------------
    def _cell_centre(self, index: jax.Array) -> jax.Array:
        rc = self._free[index]
        return jnp.stack([rc[1] + 0.5, rc[0] + 0.5])

    def is_wall(self, pos: jax.Array) -> jax.Array:
        """True where a point (x, y) lies in a wall cell (or outside the maze)."""
        h, w = self._walls_np.shape
        col = jnp.floor(pos[..., 0]).astype(jnp.int32)
        row = jnp.floor(pos[..., 1]).astype(jnp.int32)
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        return jnp.where(inside, self._walls[jnp.clip(row, 0, h - 1), jnp.clip(col, 0, w - 1)], True)

    def move(self, pos: jax.Array, action: jax.Array) -> jax.Array:
        """One step with wall sliding: each axis moves on its own and stops at a wall's face."""
        delta = jnp.clip(action, -1.0, 1.0) * self.max_step
        eps = 1e-3
        for axis in (0, 1):
            cand = pos.at[axis].add(delta[axis])
            cell = jnp.floor(pos[axis])
            face = jnp.where(delta[axis] > 0, cell + 1.0 - eps, cell + eps)
            pos = jnp.where(self.is_wall(cand), pos.at[axis].set(face), cand)
        return pos

    def needs_detour(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """Whether the cells of points a and b are further apart by free path than by Manhattan distance."""
        free = np.asarray(self._free)

        def index(p):
            rc = jnp.stack([jnp.floor(p[1]), jnp.floor(p[0])])
            return jnp.argmax(jnp.all(jnp.asarray(free) == rc, axis=-1))

        return self._detour_table[index(a), index(b)]

    @property
    def walls(self) -> np.ndarray:
        """Boolean wall grid, row 0 at the bottom."""
        return self._walls_np


def cell_path_lengths(walls: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Shortest path lengths (in cell moves, 4-connected) between every pair of free cells, by BFS.

    Args:
        walls: boolean grid, True where a cell is a wall.
        free: (n, 2) rows of (row, col) of the free cells, in the order of the result's axes.
    Returns:
        (n, n) int64; unreachable pairs hold the int32 maximum.
    """
    index = {tuple(rc): i for i, rc in enumerate(free)}
    n = len(free)
    out = np.full((n, n), np.iinfo(np.int32).max, np.int64)
    for src in range(n):
        out[src, src] = 0
        frontier = [tuple(free[src])]
        while frontier:
            nxt = []
            for r, c in frontier:
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    j = index.get((r + dr, c + dc))
                    if j is not None and out[src, j] > out[src, index[(r, c)]] + 1:
                        out[src, j] = out[src, index[(r, c)]] + 1
                        nxt.append((r + dr, c + dc))
            frontier = nxt
    return out
