"""`deepcrl import`: bring a teacher trained with the paper's code into deepcrl."""

from __future__ import annotations

import json

from deepcrl.interop.config import ImportConfig


def run(cfg: ImportConfig) -> int:
    from deepcrl.interop.scaling_crl import import_run

    summary = import_run(cfg.run, cfg.out, checkpoint=cfg.checkpoint)
    if cfg.json:
        print(json.dumps(summary))
    else:
        print(f"imported {summary['checkpoint']} ({summary['reference_env']}, actor {summary['actor_depth']}x"
              f"{summary['actor_width']}, critic {summary['critic_depth']}x{summary['critic_width']}) as a "
              f"{summary['env']} teacher: {summary['out']}")
    return 0
