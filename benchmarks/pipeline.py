"""The README's main job, timed: `deepcrl pipeline` on point_maze with its defaults.

Runs train -> distill -> export -> serve benchmark into a run directory and writes its summary, with the
machine's facts and load, to benchmarks/results/pipeline.json (plots stay in the run directory).

    python benchmarks/pipeline.py [--env point_maze] [--out runs/pipeline-bench]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import tyro

from deepcrl._logging import quiet
from deepcrl.bench.common import machine_facts, write_result
from deepcrl.config import PipelineConfig
from deepcrl.cli.pipeline import run_with_progress

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class PipelineBench:
    """Time `deepcrl pipeline` with its defaults."""

    env: str = "point_maze"
    """Environment id."""
    out: Path = Path("runs/pipeline-bench")
    """Run directory of the pipeline."""
    result: Path = RESULTS / "pipeline.json"
    """Where the result JSON goes."""


def main(cfg: PipelineBench) -> int:
    machine = machine_facts()
    started = time.perf_counter()
    with quiet():
        summary = run_with_progress(PipelineConfig(env=cfg.env, out=cfg.out))
    summary = json.loads(json.dumps(summary, default=str))  # paths as strings
    path = write_result(cfg.result, {"machine": machine, "wall_s": time.perf_counter() - started,
                                     "summary": summary})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(PipelineBench)))
