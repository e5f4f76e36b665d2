"""The `deepcrl envs` table."""

from __future__ import annotations

import json

from deepcrl import envs


def describe() -> list[dict]:
    """One row per registered env: id, sizes, episode length, backend, description."""
    rows = []
    for env_id in envs.env_ids():
        entry = envs.REGISTRY[env_id]
        env = envs.make(env_id)
        spec = env.goal_spec
        rows.append({
            "id": env_id, "obs_size": spec.obs_size, "goal_size": spec.goal_size,
            "action_size": env.action_size, "episode_length": spec.episode_length,
            "success_radius": spec.success_radius, "backend": entry.backend, "description": entry.description,
        })
    return rows


def print_table(as_json: bool = False) -> None:
    rows = describe()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="deepcrl environments (observation fed to policies = \\[state, goal])")
    for col in ("id", "obs", "goal", "action", "episode", "backend", "description"):
        table.add_column(col, justify="right" if col in ("obs", "goal", "action", "episode") else "left")
    for r in rows:
        table.add_row(r["id"], str(r["obs_size"]), str(r["goal_size"]), str(r["action_size"]),
                      str(r["episode_length"]), r["backend"], r["description"])
    Console().print(table)
