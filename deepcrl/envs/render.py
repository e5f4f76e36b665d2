"""Render an episode to a file: a video (``.mp4``/``.gif``), an HTML replay (``.html``) or a maze plot (``.png``).

``.mp4`` and ``.gif`` work for every MJX env (reacher, ant, the ant mazes, humanoid): MuJoCo's own renderer
offscreen, the goal marked (`deepcrl.envs.video`).

``.html`` works for every Brax env: one file holding the episode (each geom in its body's frame, the bodies'
poses per frame) and a small canvas viewer (``replay.html`` beside this module) that orbits, zooms and plays it
with no network access. Brax's own viewer (`brax.io.html`) loads three.js and its scripts from CDNs, so it is a
blank page on an offline robot or lab machine; no installed package ships those scripts. ``.png`` works for envs
with a maze (point_maze and the ant mazes): the walls, the path, the start and the goal, drawn with matplotlib.
Used by ``deepcrl eval --render out.html|out.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import html
import json
from importlib import resources

import jax
import numpy as np

from deepcrl.errors import DeepcrlError


def supported_suffixes(env) -> tuple[str, ...]:
    """The file suffixes `render` can write for `env`."""
    env = getattr(env, "unwrapped", env)
    from deepcrl.envs.video import VIDEO_SUFFIXES, has_body

    suffixes = []
    if has_body(env):
        suffixes.extend(VIDEO_SUFFIXES)
    if hasattr(env, "sys"):
        suffixes.append(".html")
    if _maze_of(env) is not None:
        suffixes.append(".png")
    return tuple(suffixes)


def _one_of(options: tuple[str, ...]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def render(env, trajectory: Any, path: str | Path, goal: Any = None, size: tuple[int, int] = (480, 360)) -> Path:
    """Write an episode of `env` to `path` (format from its suffix).

    Args:
        env: a deepcrl env (wrappers are looked through).
        trajectory: the episode, in time order: a list of env `State`s, a list of pipeline states, or either
            stacked along a leading time axis; for point_maze also a ``(T, 2)`` array of positions.
        path: output file, ``.mp4``/``.gif`` (MJX envs), ``.html`` (Brax envs) or ``.png`` (maze envs).
        goal: the goal to mark; taken from the states' ``info['goal']`` when they carry it.
        size: a video's (width, height) in pixels.

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
                           f"{_one_of(allowed) if allowed else '(none: this env has no renderer)'}.")
    # numpy from here on: slicing device arrays leaf by leaf would dispatch (and compile) one op per leaf
    goals, pipeline_states = _split_trajectory(jax.device_get(trajectory))
    if goal is None and goals is not None:
        goal = goals[-1]
    if not pipeline_states:
        raise DeepcrlError("cannot render an empty trajectory: pass at least one state.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".mp4", ".gif"):
        from deepcrl.envs.video import render_frames, write_video

        frames = render_frames(env, pipeline_states, goal, *size)
        write_video(frames, path, fps=1.0 / float(getattr(env, "dt", 0.05)))
    elif suffix == ".html":
        path.write_text(replay_html(env, pipeline_states, goal))
    else:
        _maze_png(env, pipeline_states, goal, path)
    return path


# MuJoCo geom type ids -> the names the viewer draws (a height field is not drawn)
_GEOM_TYPES = {0: "Plane", 2: "Sphere", 3: "Capsule", 4: "Ellipsoid", 5: "Cylinder", 6: "Box", 7: "Mesh"}
_MUJOCO_GREY = (0.5, 0.5, 0.5, 1.0)
_BRAX_BROWN = (0.4, 0.33, 0.26, 1.0)  # what Brax's viewer draws MuJoCo's default grey as


def replay_data(env, pipeline_states: Sequence[Any], goal: Any = None) -> dict:
    """The JSON the HTML viewer plays: geoms in their body's frame and every body's pose per frame.

    Raises:
        DeepcrlError: the states carry a batch axis (pass one env's episode).
    """
    sys = env.sys
    pos = np.stack([np.asarray(ps.x.pos, np.float64) for ps in pipeline_states])
    rot = np.stack([np.asarray(ps.x.rot, np.float64) for ps in pipeline_states])
    if pos.ndim != 3 or rot.ndim != 3:
        raise DeepcrlError(f"cannot render states with a batch axis (body positions have shape {pos.shape[1:]}, "
                           "expected (bodies, 3)): pass one env's episode.")
    model = sys.mj_model
    geoms = []
    for i, kind in enumerate(np.asarray(sys.geom_type).tolist()):
        if kind not in _GEOM_TYPES:
            continue
        rgba = tuple(float(v) for v in model.geom_rgba[i])
        geom = {"type": _GEOM_TYPES[kind], "link": int(sys.geom_bodyid[i]) - 1,
                "pos": _rounded(sys.geom_pos[i]), "rot": _rounded(sys.geom_quat[i]), "size": _rounded(sys.geom_size[i]),
                "rgba": list(_BRAX_BROWN if np.allclose(rgba, _MUJOCO_GREY) else rgba)}
        if kind == 7:
            mesh = int(model.geom_dataid[i])
            start, n = int(model.mesh_vertadr[mesh]), int(model.mesh_vertnum[mesh])
            fstart, nf = int(model.mesh_faceadr[mesh]), int(model.mesh_facenum[mesh])
            geom["vert"] = _rounded(model.mesh_vert[start:start + n])
            geom["face"] = np.asarray(model.mesh_face[fstart:fstart + nf]).tolist()
        geoms.append(geom)
    goal = None if goal is None else np.asarray(goal, np.float64).ravel()
    spec = getattr(env, "goal_spec", None)
    return {"title": getattr(env, "env_id", type(env).__name__), "dt": float(getattr(env, "dt", 0.05)),
            "geoms": geoms, "pos": _rounded(pos), "rot": _rounded(rot),
            # a goal is drawn as a ring on the ground when it is a world (x, y[, z]) point, as for every Brax env here
            "goal": _rounded(goal) if goal is not None and goal.size in (2, 3) else None,
            "goal_radius": float(getattr(spec, "success_radius", 0.1))}


def replay_html(env, pipeline_states: Sequence[Any], goal: Any = None) -> str:
    """One self-contained HTML page (no external script, style or font) that plays the episode."""
    data = replay_data(env, pipeline_states, goal)
    page = resources.files("deepcrl.envs").joinpath("replay.html").read_text(encoding="utf-8")
    # "</" inside a <script> element would end it early; "<\/" is the same string to JSON
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return page.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)


def _rounded(x) -> list:
    """A float array as nested lists at 0.1 mm / 1e-5 precision (the page stays small)."""
    return np.round(np.asarray(x, np.float64), 5).tolist()


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
