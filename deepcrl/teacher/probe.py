"""The representation probe: does the critic's energy follow the maze's topology or the straight line?

A contrastive critic f(s, a, g) = -||phi(s, a) - psi(g)|| is trained so that its energy ranks reachable goals
(the InfoNCE positives are future states), so its energy should fall with the *shortest-path* (geodesic)
distance through free cells, not with the straight-line distance that cuts through walls. On a point maze
every pair of free-cell centres is scored; the probe reports the Spearman rank correlation of the critic's
implied distance (minus the energy) with the geodesic and with the straight-line distance (1.0 = the same
order, so a critic that learnt the topology scores higher on the first than the second), and draws the
energy over the maze for one goal: a critic that follows the topology bends its map around walls, one that
does not draws a cone.

The action in phi(s, a) is the actor's deterministic action for (s, g) (``action="actor"``, the action the
actor is trained to pick, so the energy is the critic's value of the policy), or zero (``action="zero"``).

    >>> geo = maze_geometry(np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool))  # one free cell
    >>> geo.cells.tolist(), geo.geodesic.tolist()
    ([[1, 1]], [[0.0]])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from deepcrl.errors import DeepcrlError

EnergyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``energy(s [B, 2], g [B, 2]) -> [B]``: the critic's energy of reaching goal position g from position s."""
Action = Literal["actor", "zero"]


@dataclasses.dataclass(frozen=True)
class MazeGeometry:
    """Free cells of a wall grid and the distances between their centres (row 0 at the bottom, x = column)."""

    walls: np.ndarray
    """Boolean grid, True on walls."""
    cells: np.ndarray
    """(n, 2) int (row, col) of every free cell."""
    centres: np.ndarray
    """(n, 2) float32 (x, y) of every free cell's centre."""
    geodesic: np.ndarray
    """(n, n) shortest-path length through free cells (4-connected moves x cell size); inf if unreachable."""
    euclidean: np.ndarray
    """(n, n) straight-line distance between the centres."""
    manhattan: np.ndarray
    """(n, n) |dx| + |dy| between the centres; a pair with geodesic > manhattan needs a detour."""


def maze_geometry(walls: np.ndarray, cell_size: float = 1.0) -> MazeGeometry:
    """Geodesic (BFS over free cells, as the env's `detour` flag uses), straight-line and Manhattan distances."""
    from deepcrl.envs.point_maze import cell_path_lengths

    walls = np.asarray(walls, bool)
    cells = np.argwhere(~walls)
    hops = cell_path_lengths(walls, cells).astype(np.float64)
    geodesic = np.where(hops >= np.iinfo(np.int32).max, np.inf, hops * cell_size)
    centres = ((cells[:, ::-1] + 0.5) * cell_size).astype(np.float32)
    diff = centres[:, None, :].astype(np.float64) - centres[None, :, :]
    return MazeGeometry(walls=walls, cells=cells, centres=centres, geodesic=geodesic,
                        euclidean=np.sqrt((diff ** 2).sum(-1)), manhattan=np.abs(diff).sum(-1))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (as scipy.stats.rankdata, minus one)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray, use_scipy: bool = True) -> float:
    """Spearman rank correlation of two 1-D samples (scipy's when installed, else ranks + Pearson in numpy).

    Returns NaN when either sample is constant or has fewer than two points.
    """
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    if use_scipy:
        try:
            from scipy.stats import spearmanr
        except ImportError:
            pass
        else:
            return float(spearmanr(x, y).statistic)
    rx, ry = _ranks(x) - (len(x) - 1) / 2, _ranks(y) - (len(y) - 1) / 2
    return float((rx * ry).sum() / np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))


def default_goal_cell(geo: MazeGeometry) -> tuple[int, int]:
    """The free cell furthest (by path) from some other cell: an end of the maze's longest shortest path,
    where a straight-line map and a topological one differ most."""
    ecc = np.where(np.isfinite(geo.geodesic), geo.geodesic, -1).max(axis=1)
    return tuple(int(v) for v in geo.cells[int(np.argmax(ecc))])


def probe_energy(walls: np.ndarray, energy: EnergyFn, png: str | Path | None = None,
                 goal_cell: tuple[int, int] | None = None, per_cell: int = 8, title: str = "") -> dict:
    """Score an energy function against the maze's geodesic and straight-line distances.

    Args:
        walls: boolean wall grid (row 0 at the bottom), e.g. ``PointMaze.walls``.
        energy: the critic's energy of (start position, goal position) batches.
        png: where to draw the heatmap (energy over the maze for `goal_cell`, beside the true geodesic map).
        goal_cell: (row, col) of the heatmap's goal; default `default_goal_cell`.
        per_cell: heatmap samples per cell side.
        title: heatmap title.
    Returns:
        ``spearman_geodesic`` and ``spearman_euclidean`` (rank correlation of -energy with each distance over
        every ordered pair of distinct, connected free cells), ``spearman_geodesic_detour`` and
        ``spearman_euclidean_detour`` (the same over detour pairs only; None without two such pairs),
        ``pairs``, ``detour_pairs``,
        ``goal_cell`` and ``png`` (or None).
    """
    geo = maze_geometry(walls)
    n = len(geo.cells)
    i, j = np.nonzero(~np.eye(n, dtype=bool) & np.isfinite(geo.geodesic))
    e = np.asarray(energy(geo.centres[i], geo.centres[j]), np.float64)
    if e.shape != i.shape:
        raise DeepcrlError(f"the energy function returned shape {e.shape} for {len(i)} pairs.")
    if not np.all(np.isfinite(e)):
        raise DeepcrlError("the critic's energy is not finite on some maze pairs.")
    geod, eucl = geo.geodesic[i, j], geo.euclidean[i, j]
    detour = geod > geo.manhattan[i, j] + 1e-9
    def rho(x, y):  # None (valid JSON) where there are too few pairs, e.g. no detour pairs in an open arena
        r = spearman(x, y)
        return None if np.isnan(r) else r

    out = {
        "spearman_geodesic": rho(-e, geod), "spearman_euclidean": rho(-e, eucl),
        "spearman_geodesic_detour": rho(-e[detour], geod[detour]),
        "spearman_euclidean_detour": rho(-e[detour], eucl[detour]),
        "pairs": int(len(i)), "detour_pairs": int(detour.sum()),
    }
    goal_cell = tuple(int(v) for v in (goal_cell or default_goal_cell(geo)))
    matches = np.nonzero((geo.cells == goal_cell).all(axis=1))[0]
    if len(matches) == 0:
        raise DeepcrlError(f"the probe's goal cell {goal_cell} is not a free cell of the maze.")
    out["goal_cell"] = list(goal_cell)
    out["png"] = str(draw_heatmap(geo, energy, int(matches[0]), png, per_cell, title)) if png else None
    return out


def draw_heatmap(geo: MazeGeometry, energy: EnergyFn, goal: int, png: str | Path, per_cell: int = 8,
                 title: str = "") -> Path:
    """Two panels: the energy of reaching free cell `goal` from every point of the maze (walls masked), and
    minus the geodesic distance to it (what a critic that learnt the topology would draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepcrl._io import atomic_path

    h, w = geo.walls.shape
    xs = (np.arange(w * per_cell) + 0.5) / per_cell
    ys = (np.arange(h * per_cell) + 0.5) / per_cell
    gx, gy = np.meshgrid(xs, ys)  # image row k is y = ys[k] (origin="lower")
    free = ~geo.walls[np.floor(gy).astype(int), np.floor(gx).astype(int)]
    pts = np.stack([gx[free], gy[free]], axis=-1).astype(np.float32)
    img = np.full(gx.shape, np.nan)
    img[free] = np.asarray(energy(pts, np.broadcast_to(geo.centres[goal], pts.shape).copy()), np.float64)
    truth = np.full(geo.walls.shape, np.nan)
    truth[geo.cells[:, 0], geo.cells[:, 1]] = -geo.geodesic[:, goal]
    truth[~np.isfinite(truth)] = np.nan

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.25")
    for ax, data, name in ((axes[0], img, "critic energy -||phi(s, a) - psi(g)||"),
                           (axes[1], truth, "minus geodesic distance (the topology)")):
        im = ax.imshow(np.ma.masked_invalid(data), origin="lower", extent=(0, w, 0, h), cmap=cmap)
        ax.plot(*geo.centres[goal], marker="*", color="red", markersize=16, markeredgecolor="white")
        ax.set(title=name, xlabel="x", ylabel="y")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title or f"energy to the goal at cell {tuple(int(v) for v in geo.cells[goal])} (red star)")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return png


def check_maze_env(env_id: str) -> None:
    """Raise `DeepcrlError` unless `env_id` is a point maze (checked on the registry, without building it)."""
    from deepcrl import envs
    from deepcrl.envs.point_maze import PointMaze

    factory = envs.factory(env_id)
    if not (isinstance(factory, type) and issubclass(factory, PointMaze)):
        raise DeepcrlError(f"the probe needs a maze of free cells (a point_maze env); {env_id} has none.")


def critic_energy(run_dir: str | Path, action: Action = "actor") -> tuple[EnergyFn, object, object]:
    """The energy function of a teacher run directory's critic, plus its manifest and env.

    Raises:
        DeepcrlError: a student artifact or a teacher without a critic, or an env that is not a point maze.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from deepcrl import artifacts, envs
    from deepcrl.policy import load_networks

    if action not in ("actor", "zero"):
        raise DeepcrlError(f"the probe's action must be 'actor' or 'zero', got {action!r}.")
    manifest = artifacts.read_manifest(run_dir)  # the kind and the env are checked before the checkpoint is read
    if manifest.kind != "teacher":
        raise DeepcrlError(f"{run_dir} is a {manifest.kind} artifact; the probe needs a teacher's critic.")
    check_maze_env(manifest.env_id)
    nets = load_networks(run_dir, "teacher", critic="the probe needs", deploy=True)
    manifest, env = nets.manifest, envs.make(manifest.env_id)
    c_def, c_state = nnx.split(nets.critic)
    a_def, a_state = nnx.split(nets.actor)

    @jax.jit
    def batch_energy(c_state, a_state, s, g):
        if action == "actor":
            a = nnx.merge(a_def, a_state).act(s, g)
        else:
            a = jnp.zeros((s.shape[0], manifest.action_size), s.dtype)
        return nnx.merge(c_def, c_state).energy(s, a, g)

    def energy(s: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.asarray(batch_energy(c_state, a_state, jnp.asarray(s, jnp.float32), jnp.asarray(g, jnp.float32)))

    return energy, manifest, env


def probe_run(run_dir: str | Path, png: str | Path | None = None, action: Action = "actor",
              goal_cell: tuple[int, int] | None = None) -> dict:
    """Probe a teacher run directory's critic (see `probe_energy`); also returns ``env``, ``step``, ``action``.

    Raises:
        DeepcrlError: a student artifact, a teacher without a critic, or a non-maze env (one sentence).
    """
    energy, manifest, env = critic_energy(run_dir, action)
    depth = manifest.network["critic"].get("depth")
    title = f"{manifest.env_id}, critic depth {depth}, {manifest.step:,} env steps (action: {action})"
    result = probe_energy(env.walls, energy, png=png, goal_cell=goal_cell, title=title)
    return {"env": manifest.env_id, "step": manifest.step, "critic_depth": depth, "action": action, **result}
