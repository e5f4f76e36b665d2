"""`deepcrl pipeline`: every stage in a row on a CPU budget."""

from __future__ import annotations

from deepcrl.config import PipelineConfig


def run(cfg: PipelineConfig) -> int:
    from deepcrl.cli import json_output, print_json
    from deepcrl.pipeline import run_pipeline

    with json_output(cfg.json):
        summary = run_pipeline(cfg)
    if cfg.json:
        print_json(summary)
    return 0
