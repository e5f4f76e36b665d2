"""`deepcrl pipeline`: every stage in a row on a CPU budget."""

from __future__ import annotations

from deepcrl.config import PipelineConfig


def run(cfg: PipelineConfig) -> int:
    from deepcrl.pipeline import run_pipeline

    run_pipeline(cfg)
    return 0
