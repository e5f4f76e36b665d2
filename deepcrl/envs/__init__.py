"""Goal-conditioned environments on Brax's Env API, looked up by id.

>>> from deepcrl import envs
>>> env = envs.make("point_maze")
>>> env.goal_spec.obs_size, env.goal_spec.goal_size, env.action_size
(2, 2, 2)
"""

from __future__ import annotations

import dataclasses
import difflib
import pkgutil
from typing import Any, Callable

import contextlib
import io

with contextlib.redirect_stdout(io.StringIO()):  # mujoco.mjx prints "Failed to import warp" on CPU
    import brax.envs.base  # noqa: F401

from deepcrl.envs.base import GoalSpec, achieved_goal, goal_metrics, split_obs
from deepcrl.errors import UnknownEnvError


@dataclasses.dataclass(frozen=True)
class EnvEntry:
    """A registered environment."""

    factory: str
    """`module:callable` returning the env; imported only when the env is made."""
    kwargs: dict[str, Any]
    """Keyword arguments for the factory."""
    backend: str
    """Physics backend, shown by `deepcrl envs`."""
    description: str
    """One line for `deepcrl envs`."""
    paper: bool = False
    """True for the paper's task definitions (`deepcrl.envs.scaling_crl`): numbers compare with its tables."""


REGISTRY: dict[str, EnvEntry] = {
    "point_maze": EnvEntry("deepcrl.envs.point_maze:PointMaze", {"layout": "u_maze"}, "jax",
                           "2-D point mass, U-maze (CPU default)"),
    "point_maze_open": EnvEntry("deepcrl.envs.point_maze:PointMaze", {"layout": "open"}, "jax",
                                "2-D point mass, open 5x5 arena"),
    "point_maze_big": EnvEntry("deepcrl.envs.point_maze:PointMaze", {"layout": "big_maze"}, "jax",
                               "2-D point mass, 8x7 maze"),
    "reacher": EnvEntry("deepcrl.envs.brax_envs:Reacher", {}, "mjx",
                        "2-link arm, goal = fingertip position (Brax)"),
    "ant": EnvEntry("deepcrl.envs.brax_envs:Ant", {}, "mjx", "Brax ant, goal = torso x,y 2-10 m away"),
    "ant_u_maze": EnvEntry("deepcrl.envs.brax_envs:AntMaze", {"layout": "u_maze"}, "mjx",
                           "Brax ant in a U-maze of 4 m cells"),
    "ant_big_maze": EnvEntry("deepcrl.envs.brax_envs:AntMaze", {"layout": "big_maze"}, "mjx",
                             "Brax ant in an 8x7 maze of 4 m cells"),
    "humanoid": EnvEntry("deepcrl.envs.brax_envs:Humanoid", {}, "mjx", "Brax humanoid, goal = torso x,y 1-5 m away"),
    # the paper's task definitions (wang-kevin3290/scaling-crl); see deepcrl.envs.scaling_crl
    "reacher_ref": EnvEntry("deepcrl.envs.scaling_crl:ReacherRef", {}, "mjx",
                            "the paper's reacher: 3-D tip goal, success < 0.05, 1000 steps", paper=True),
    "ant_ref": EnvEntry("deepcrl.envs.scaling_crl:AntRef", {}, "mjx",
                        "the paper's ant: goal 10 m from the origin, success < 0.5 m, 1000 steps", paper=True),
    "ant_u_maze_ref": EnvEntry("deepcrl.envs.scaling_crl:AntMazeRef", {"layout": "u_maze"}, "mjx",
                               "the paper's ant U-maze: 4 m cells, goal = a goal cell's centre", paper=True),
    "ant_big_maze_ref": EnvEntry("deepcrl.envs.scaling_crl:AntMazeRef", {"layout": "big_maze"}, "mjx",
                                 "the paper's ant big maze (8x8 cells of 4 m)", paper=True),
    "ant_u_maze_eval_ref": EnvEntry("deepcrl.envs.scaling_crl:AntMazeRef", {"layout": "u_maze_eval"}, "mjx",
                                    "the paper's U-maze evaluation goals (far arm only)", paper=True),
    "ant_big_maze_eval_ref": EnvEntry("deepcrl.envs.scaling_crl:AntMazeRef", {"layout": "big_maze_eval"}, "mjx",
                                      "the paper's big-maze evaluation goals (far cells only)", paper=True),
    "humanoid_ref": EnvEntry("deepcrl.envs.scaling_crl_humanoid:HumanoidRef", {}, "mjx",
                             "the paper's humanoid: 268-number state, torso x,y,z goal 1-5 m away", paper=True),
    "humanoid_u_maze_ref": EnvEntry("deepcrl.envs.scaling_crl_humanoid:HumanoidRef", {"layout": "u_maze"}, "mjx",
                                    "the paper's humanoid U-maze: 2 m cells, goal = a goal cell's centre",
                                    paper=True),
}


def register(env_id: str, entry: EnvEntry) -> None:
    """Add an environment id (used by the Brax envs module and by users)."""
    REGISTRY[env_id] = entry


def env_ids() -> list[str]:
    return list(REGISTRY)


def check_env_id(env_id: str) -> EnvEntry:
    """The registry entry for `env_id`, or `UnknownEnvError` naming the valid ids, closest first."""
    ids = env_ids()
    if env_id in REGISTRY:
        return REGISTRY[env_id]
    close = difflib.get_close_matches(env_id, ids, n=len(ids), cutoff=0.0)
    raise UnknownEnvError(f"unknown env id {env_id!r}; valid ids are: {', '.join(close)}.")


def factory(env_id: str) -> Callable[..., Any]:
    """The class or function a registered env is built with (its module imported, the env not built)."""
    return pkgutil.resolve_name(check_env_id(env_id).factory)


def make(env_id: str, **overrides: Any):
    """Build a registered environment; `overrides` update the registered keyword arguments."""
    env = factory(env_id)(**{**check_env_id(env_id).kwargs, **overrides})
    env.env_id = env_id
    return env


def _paper_column(entry: EnvEntry) -> str:
    """`deepcrl envs`' "paper" column: whether numbers on this id compare with the paper's, and what differs."""
    if not entry.paper:
        return "no (deepcrl's own task)"
    from deepcrl.envs.scaling_crl import DIFFERS

    return f"yes; {getattr(pkgutil.resolve_name(entry.factory), 'PAPER_DIFFERS', DIFFERS)}"


def describe() -> list[dict[str, Any]]:
    """One row per registered env (what `deepcrl envs` shows): id, sizes, episode length, backend, description."""
    rows = []
    for env_id, entry in REGISTRY.items():
        env = make(env_id)
        spec = env.goal_spec
        rows.append({
            "id": env_id, "obs_size": spec.obs_size, "goal_size": spec.goal_size,
            "action_size": env.action_size, "episode_length": spec.episode_length,
            "success_radius": spec.success_radius, "backend": entry.backend, "description": entry.description,
            "paper": _paper_column(entry),
        })
    return rows


__all__ = [
    "EnvEntry", "GoalSpec", "REGISTRY", "achieved_goal", "check_env_id", "describe", "env_ids", "goal_metrics",
    "make", "register", "split_obs",
]
