"""Configs of the verbs that span stages: `deepcrl eval` and `deepcrl pipeline` (plain data, no JAX import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Roll a deterministic policy for K episodes and report success, time at goal and final distance.

    Give exactly one of --ckpt (a teacher or student run directory), --model (an exported .onnx) or --url (a
    running `deepcrl serve`). The same seed gives the same starts and goals for every kind of policy, so their
    numbers compare directly.
    """

    ckpt: str | None = None
    """Teacher or student run directory."""
    model: str | None = None
    """Exported .onnx file (run through ONNX Runtime)."""
    url: str | None = None
    """Base URL of a running `deepcrl serve` (the simulator is driven through the server)."""
    env: str | None = None
    """Environment id; defaults to the one the policy was trained on."""
    episodes: int = 64
    """Number of evaluation episodes (run in parallel)."""
    seed: int = 0
    """Seed of the episodes' starts and goals."""
    episode_length: int | None = None
    """Steps per episode; the env's default if unset."""
    json: bool = False
    """Print one JSON object instead of a table."""
    render: str | None = None
    """Also write a replay of the first episode: .html for Brax envs, .png for point mazes."""
    token_env: str | None = None
    """With --url: name of the environment variable holding the server's bearer token."""


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
