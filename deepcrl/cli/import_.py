"""`deepcrl import`: bring a teacher trained with the paper's code into deepcrl."""

from __future__ import annotations

from deepcrl.interop.config import ImportConfig


def run(cfg: ImportConfig) -> int:
    from deepcrl.cli import json_output, print_json
    from deepcrl.interop.scaling_crl import import_run

    with json_output(cfg.json):
        summary = import_run(cfg.run, cfg.out, checkpoint=cfg.file)
    if cfg.json:
        print_json(summary)
    else:
        print(f"imported {summary['checkpoint']} ({summary['reference_env']}, actor {summary['actor_depth']}x"
              f"{summary['actor_width']}, critic {summary['critic_depth']}x{summary['critic_width']}) as a "
              f"{summary['env']} teacher: {summary['out']}")
    return 0
