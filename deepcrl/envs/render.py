"""Render an episode to a file: a Brax HTML replay (``.html``) or a top-down maze plot (``.png``).

``.html`` works for every Brax env (`brax.io.html`, the 3-D viewer Brax ships). ``.png`` works for envs with a
maze (point_maze and the ant mazes): the walls, the path, the start and the goal, drawn with matplotlib.
Used by ``deepcrl eval --render out.html|out.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from deepcrl.errors import DeepcrlError


def supported_suffixes(env) -> tuple[str, ...]:
    """The file suffixes `render` can write for `env`."""
    env = getattr(env, "unwrapped", env)
    suffixes = []
    if hasattr(env, "sys"):
        suffixes.append(".html")
    if _maze_of(env) is not None:
        suffixes.append(".png")
    return tuple(suffixes)


def render(env, trajectory: Any, path: str | Path, goal: Any = None) -> Path:
    """Write an episode of `env` to `path` (format from its suffix).

    Args:
        env: a deepcrl env (wrappers are looked through).
        trajectory: the episode, in time order: a list of env `State`s, a list of pipeline states, or either
            stacked along a leading time axis; for point_maze also a ``(T, 2)`` array of positions.
        path: output file, ``.html`` (Brax envs) or ``.png`` (maze envs).
        goal: the goal to mark on a ``.png``; taken from the states' ``info['goal']`` when they carry it.

    Returns:
        The path written.
    """
    env = getattr(env, "unwrapped", env)
    path = Path(path)
    suffix = path.suffix.lower()
    allowed = supported_suffixes(env)
    if suffix not in allowed:
        name = getattr(env, "env_id", type(env).__name__)
        raise DeepcrlError(f"cannot render {name} to {path.name!r}: use a file ending in "
                           f"{' or '.join(allowed) if allowed else '(none: this env has no renderer)'}.")
    # numpy from here on: slicing device arrays leaf by leaf would dispatch (and compile) one op per leaf
    goals, pipeline_states = _split_trajectory(jax.device_get(trajectory))
    if goal is None and goals is not None:
        goal = goals[-1]
    if not pipeline_states:
        raise DeepcrlError("cannot render an empty trajectory: pass at least one state.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        from brax.io import html

        path.write_text(html.render(env.sys, pipeline_states))
    else:
        _maze_png(env, pipeline_states, goal, path)
    return path


def _split_trajectory(trajectory: Any) -> tuple[np.ndarray | None, list]:
    """(goals or None, list of unbatched pipeline states) from any accepted trajectory form."""
    from brax.envs.base import State

    items = list(trajectory) if isinstance(trajectory, (list, tuple)) else [trajectory]
    if len(items) == 1 and not isinstance(trajectory, (list, tuple)):
        items = _unstack(items[0])
    goals = None
    if items and isinstance(items[0], State):
        if "goal" in items[0].info:
            goals = np.stack([np.asarray(s.info["goal"]) for s in items])
        items = [s.pipeline_state for s in items]
    return goals, items


def _unstack(tree: Any) -> list:
    """Split a pytree stacked along a leading time axis into a list."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return []
    if isinstance(tree, np.ndarray) and tree.ndim == 1:
        return [tree]  # a single 2-D position
    n = np.shape(leaves[0])[0]
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def _maze_of(env):
    """(point_maze-like geometry, world->cell function, position function) or None for envs without walls."""
    from deepcrl.envs.point_maze import PointMaze

    if isinstance(env, PointMaze):
        return env, (lambda xy: xy), (lambda ps: np.asarray(ps)[..., :2])
    maze = getattr(env, "maze", None)
    if isinstance(maze, PointMaze) and hasattr(env, "to_cells"):
        return maze, (lambda xy: np.asarray(env.to_cells(xy))), (lambda ps: np.asarray(ps.q)[:2])
    return None


def _maze_png(env, pipeline_states: Sequence[Any], goal: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    maze, to_cells, position = _maze_of(env)
    xy = to_cells(np.stack([position(ps) for ps in pipeline_states]))
    walls = maze.walls
    h, w = walls.shape
    fig, ax = plt.subplots(figsize=(0.6 * w + 1, 0.6 * h + 1))
    for r, c in np.argwhere(walls):
        ax.add_patch(Rectangle((c, r), 1, 1, color="0.25"))
    ax.plot(xy[:, 0], xy[:, 1], "-", color="tab:blue", lw=1.5, label="path")
    ax.plot(*xy[0], "o", color="tab:green", ms=8, label="start")
    if goal is not None:
        g = to_cells(np.asarray(goal, np.float32))
        radius = env.goal_spec.success_radius / getattr(env, "cell_size", 1.0)
        ax.add_patch(Circle(tuple(g), radius, color="tab:red", alpha=0.3))
        ax.plot(*g, "*", color="tab:red", ms=14, label="goal")
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)
    ax.set_title(f"{getattr(env, 'env_id', type(env).__name__)}: {len(xy)} steps")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
