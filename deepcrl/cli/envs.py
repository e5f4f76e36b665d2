"""`deepcrl envs`: list the registered environments."""

from __future__ import annotations

import json

from deepcrl.envs.config import EnvsConfig

NUMBERS = {"obs": "obs_size", "goal": "goal_size", "action": "action_size", "episode": "episode_length"}


def run(cfg: EnvsConfig) -> int:
    from rich.table import Table

    from deepcrl.cli import console
    from deepcrl.envs import describe

    rows = describe()
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="deepcrl environments (observation fed to policies = \\[state, goal])")
    table.add_column("id", no_wrap=True)
    for col in NUMBERS:
        table.add_column(col, justify="right")
    table.add_column("backend")
    table.add_column("description")
    table.add_column("paper's task (scaling-crl)?")
    for r in rows:
        table.add_row(r["id"], *(str(r[key]) for key in NUMBERS.values()), r["backend"], r["description"],
                      r["paper"])
    console().print(table)  # off a terminal: full width, one line per env
    return 0
