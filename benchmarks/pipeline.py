"""The README's main job, timed: `deepcrl pipeline` with its defaults (point_maze, or --env reacher).

Runs train -> distill -> export -> eval through a server -> serve benchmark into a run directory and writes its
summary, with the machine's facts and load (start and end), to benchmarks/results/pipeline.json
(pipeline_<env>.json for other envs; plots stay in the run directory).

    python benchmarks/pipeline.py [--env reacher] [--out runs/pipeline-bench]
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
    result: Path | None = None
    """Where the result JSON goes (default benchmarks/results/pipeline.json, pipeline_<env>.json off point_maze)."""


def main(cfg: PipelineBench) -> int:
    machine = machine_facts()
    started = time.perf_counter()
    with quiet():
        summary = run_with_progress(PipelineConfig(env=cfg.env, out=cfg.out))
    summary = json.loads(json.dumps(summary, default=str))  # paths as strings
    result = cfg.result or RESULTS / ("pipeline.json" if cfg.env == "point_maze" else f"pipeline_{cfg.env}.json")
    path = write_result(result, {"machine": machine, "wall_s": time.perf_counter() - started, "summary": summary})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(PipelineBench)))
