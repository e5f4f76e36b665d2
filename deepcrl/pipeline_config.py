"""`deepcrl pipeline`: train -> distill -> export -> serve benchmark, sized for a CPU, in one command."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Run every stage in a row with CPU-sized defaults and end with a one-screen summary.

    Writes OUT/teacher (artifact, curves.png), OUT/student (artifact, report.json, curves.png),
    OUT/policy.onnx, OUT/serve_latency.{json,png} and OUT/summary.json. Re-running with --resume continues
    the teacher from its checkpoint.
    """

    env: str = "point_maze"
    """Environment id (`deepcrl envs`)."""
    out: Path = Path("runs/pipeline")
    """Directory for every stage's output."""
    seed: int = 0
    """Seed of every stage."""
    steps: int | None = None
    """Teacher environment steps; the env's default if unset."""
    depth: int | None = None
    """Teacher depth (multiple of 4); the env's default if unset."""
    teacher_minutes: float | None = None
    """Stop teacher training after this much wall time (the run's artifact is still written)."""
    resume: bool = False
    """Continue the teacher from OUT/teacher's training checkpoint."""
    hidden: str = "32,32"
    """Student hidden sizes."""
    method: Literal["action", "dagger"] = "dagger"
    """Student data: teacher rollouts (action) or DAgger on the student's own states."""
    distill_steps: int = 4000
    """Student gradient steps."""
    bench_seconds: float = 1.0
    """Seconds per serve-benchmark cell (0 skips the serve benchmark)."""
    eval_episodes: int = 256
    """Episodes of the final evaluations."""

    def run(self) -> int:
        from deepcrl.pipeline import run_pipeline

        run_pipeline(self)
        return 0
