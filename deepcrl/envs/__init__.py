"""Goal-conditioned environments on Brax's Env API, looked up by id.

>>> from deepcrl import envs
>>> env = envs.make("point_maze")
>>> env.goal_spec.obs_size, env.goal_spec.goal_size, env.action_size
(2, 2, 2)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
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


REGISTRY: dict[str, EnvEntry] = {
    "point_maze": EnvEntry("deepcrl.envs.point_maze:PointMaze", {"layout": "u_maze"}, "jax",
                           "2-D point mass, U-maze (CPU default)"),
    "point_maze_open": EnvEntry("deepcrl.envs.point_maze:PointMaze", {"layout": "open"}, "jax",
                                "2-D point mass, open 5x5 arena"),
    "point_maze_big": EnvEntry("deepcrl.envs.point_maze:PointMaze", {"layout": "big_maze"}, "jax",
                               "2-D point mass, 8x7 maze"),
}


def register(env_id: str, entry: EnvEntry) -> None:
    """Add an environment id (used by the Brax envs module and by users)."""
    REGISTRY[env_id] = entry


def env_ids() -> list[str]:
    _load_brax_entries()
    return list(REGISTRY)


def _load_brax_entries() -> None:
    try:  # the Brax-backed envs register themselves; absent until their module exists
        importlib.import_module("deepcrl.envs.brax_envs")
    except ModuleNotFoundError as exc:
        if exc.name != "deepcrl.envs.brax_envs":
            raise


def check_env_id(env_id: str) -> EnvEntry:
    """The registry entry for `env_id`, or `UnknownEnvError` naming the valid ids, closest first."""
    ids = env_ids()
    if env_id in REGISTRY:
        return REGISTRY[env_id]
    close = difflib.get_close_matches(env_id, ids, n=len(ids), cutoff=0.0)
    raise UnknownEnvError(f"unknown env id {env_id!r}; valid ids are: {', '.join(close)}.")


def make(env_id: str, **overrides: Any):
    """Build a registered environment; `overrides` update the registered keyword arguments."""
    entry = check_env_id(env_id)
    module, _, name = entry.factory.partition(":")
    factory: Callable[..., Any] = getattr(importlib.import_module(module), name)
    env = factory(**{**entry.kwargs, **overrides})
    env.env_id = env_id
    return env


__all__ = [
    "EnvEntry", "GoalSpec", "REGISTRY", "achieved_goal", "check_env_id", "env_ids", "goal_metrics",
    "make", "register", "split_obs",
]
