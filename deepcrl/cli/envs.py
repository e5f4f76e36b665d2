"""`deepcrl envs`: list the registered environments."""

from __future__ import annotations

from deepcrl.envs.config import EnvsConfig


def run(cfg: EnvsConfig) -> int:
    from deepcrl.envs.table import print_table

    print_table(as_json=cfg.json)
    return 0
