"""`deepcrl bench teacher|serve`: run a benchmark, write its JSON + PNG, print the summary."""

from __future__ import annotations

from pathlib import Path

from deepcrl.bench.config import BenchConfig, BenchServeConfig, BenchTeacherConfig
from deepcrl.cli import json_output, print_json


def run(cfg: BenchConfig) -> int:
    what = cfg.what
    if isinstance(what, BenchServeConfig):
        return run_serve(what)
    return run_teacher(what)


def run_teacher(cfg: BenchTeacherConfig) -> int:
    from deepcrl.bench import teacher

    with json_output(cfg.json):
        results = teacher.run(depths=tuple(cfg.depths), width=cfg.width, batch_size=cfg.batch_size,
                              remat=tuple(cfg.remat), unrolled=cfg.unrolled,
                              unrolled_budget_s=cfg.unrolled_budget_s,
                              dtype="bfloat16" if cfg.bf16 else "float32", max_reps=cfg.max_reps,
                              actor_random_goal_frac=cfg.actor_random_goal_frac, out=cfg.out)
    if cfg.json:
        print_json(results)
        return 0
    for key, value in results["summary"].items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"wrote {cfg.out} and {Path(cfg.out).with_suffix('.png')}")
    return 0


def run_serve(cfg: BenchServeConfig) -> int:
    from deepcrl.bench.serve import run
    from deepcrl.bench.serve_report import print_summary

    with json_output(cfg.json):
        results = run(cfg)
    if cfg.json:
        print_json({k: v for k, v in results.items() if not k.startswith("_")})
        return 0
    print_summary(results)
    return 0
